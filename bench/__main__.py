"""``python -m bench``: start a private redis-server, workers and the stand-in provider, run every
scenario, write bench/results/*.json, bench/RESULTS.md and docs/bench-scaling.png.

    python -m bench                 # the full run (about 5-8 minutes on 2 cores)
    python -m bench --quick         # fewer items and repeats (about 2-3 minutes)
    python -m bench --only bulk,roundtrip
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from bench import report  # noqa: E402
from bench.harness import Env  # noqa: E402

ROOT = Path(__file__).resolve().parent
SCENARIOS = ("overhead", "bulk", "roundtrip", "io_bound", "cache", "scale", "memory", "api_load", "provider_limit")

# (full, quick) keyword arguments per scenario
SIZES = {
    "overhead": ({"n": 400, "rounds": 5}, {"n": 200, "rounds": 3}),
    "bulk": ({"n": 5000, "repeats": 3}, {"n": 2000, "repeats": 2}),
    "roundtrip": ({"n": 300, "block": 50}, {"n": 100, "block": 25}),
    "io_bound": ({"n": 1000, "repeats": 3}, {"n": 400, "repeats": 2}),
    "cache": ({"n": 1000, "repeats": 2}, {"n": 400, "repeats": 1}),
    "scale": ({"n": 96, "passes": 2}, {"n": 64, "passes": 1}),
    "memory": ({"small": 10_000, "large": 100_000}, {"small": 5_000, "large": 20_000}),
    "api_load": ({"n": 200, "block": 25, "concurrent": 200}, {"n": 100, "block": 25, "concurrent": 200}),
    "provider_limit": ({"n": 4500, "dspy_n": 960, "chunk_size": 4500}, {"n": 3000, "dspy_n": 640, "chunk_size": 3000}),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer items and repeats")
    parser.add_argument("--only", default="", help=f"comma-separated subset of: {', '.join(SCENARIOS)}")
    parser.add_argument("--out", default=str(ROOT / "RESULTS.md"), help="Markdown table path")
    parser.add_argument("--chart", default=str(ROOT.parent / "docs" / "bench-scaling.png"))
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.only.split(",") if s.strip()] or list(SCENARIOS)
    unknown = [s for s in chosen if s not in SCENARIOS]
    if unknown:
        print(f"unknown scenario(s) {unknown}; choose from {', '.join(SCENARIOS)}", file=sys.stderr)
        return 2
    started = time.time()
    res: dict = {"meta": {"started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
                          "cpus": os.cpu_count(), "load_avg": round(os.getloadavg()[0], 2),
                          "command": "python -m bench" + (" --quick" if args.quick else "")
                          + (f" --only {args.only}" if args.only else ""), "quick": args.quick}}
    with tempfile.TemporaryDirectory(prefix="tidyq-bench-") as tmp, Env(Path(tmp)) as env:
        for name in chosen:
            module = __import__(f"bench.{name}", fromlist=["run"])
            kwargs = SIZES[name][1 if args.quick else 0]
            t0 = time.time()
            print(f"[bench] {name} {kwargs} ...", file=sys.stderr, flush=True)
            try:
                with env.scope():
                    res[name] = module.run(env, **kwargs)
            except Exception as exc:  # one broken scenario must not lose the others' figures
                traceback.print_exc()
                res[name] = {"error": f"{type(exc).__name__}: {exc}"}
            res[name]["seconds"] = round(time.time() - t0, 1)
            print(f"[bench] {name}: {json.dumps(res[name])}", file=sys.stderr, flush=True)
            env.flush()
    res["meta"]["seconds"] = round(time.time() - started, 1)
    paths = report.write(res, results_dir=ROOT / "results", markdown_path=Path(args.out), chart_path=Path(args.chart))
    print(report.markdown(res))
    print(json.dumps(paths), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
