"""Write a run's figures: results/<stamp>.json (+ latest.json), RESULTS.md (a Markdown table of
each figure against its goal) and docs/bench-scaling.png (the horizontal-scale chart)."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def _yes(flag) -> str:
    return "met" if flag else "**missed**"


def _ok(res: dict, name: str) -> dict | None:
    value = res.get(name)
    return value if isinstance(value, dict) and "error" not in value else None


def rows(res: dict) -> list[tuple[str, str, str, str, str]]:
    """(scenario, baseline, tidyq, ratio, goal/verdict) per figure."""
    out = []
    if b := _ok(res, "bulk"):
        out.append((f"1. bulk, {b['items']} mock items, 1 worker -c 2",
                    f"DSPy loop on DummyLM {b['loop_items_per_s']:.0f}/s", f"{b['queue_items_per_s']:.0f}/s",
                    f"{b['ratio']:.2f}x", f"{b['goal']}: {_yes(b['met'])}"))
    if r := _ok(res, "roundtrip"):
        out.append(("2. round trip, one predict",
                    f"bare Celery no-op p50 {r['celery_noop_p50_ms']} ms, p99 {r['celery_noop_p99_ms']} ms",
                    f"p50 {r['tidyq_p50_ms']} ms, p99 {r['tidyq_p99_ms']} ms", f"{r['ratio_p50']:.2f}x",
                    f"{r['goal']}: {_yes(r['met'])}"))
    if i := _ok(res, "io_bound"):
        out.append((f"3. I/O-bound, {i['latency_s']*1000:.0f} ms provider, 1 worker process, "
                    f"{i['concurrency']} in flight",
                    f"threaded DSPy (lm15) {i['dspy_threaded_items_per_s']:.0f}/s", f"{i['queue_items_per_s']:.0f}/s",
                    f"{i['ratio']:.2f}x", f"{i['goal']}: {_yes(i['met'])}"))
    if i := _ok(res, "io_bound"):
        if "ratio_adaptive" in i:
            out.append((f"3b. I/O-bound, {i['latency_s']*1000:.0f} ms provider, 1 worker process, adaptive in flight",
                        f"threaded DSPy (lm15, {i['concurrency']} threads) {i['dspy_threaded_items_per_s']:.0f}/s",
                        f"{i['queue_adaptive_items_per_s']:.0f}/s", f"{i['ratio_adaptive']:.2f}x",
                        f"{i['goal_adaptive']}: {_yes(i['met_adaptive'])}"))
    if s := _ok(res, "scale"):
        ips = s["items_per_s"]
        out.append((f"4. scale, {s['latency_s']:.0f} s provider, {s['per_worker_concurrency']} in flight per worker",
                    f"1 worker {ips['1']:.1f}/s", " / ".join(f"{k}: {v:.1f}/s" for k, v in ips.items()),
                    " / ".join(f"{k}: {v:.2f}x" for k, v in s["speedup"].items()), f"{s['goal']}: {_yes(s['met'])}"))
    if m := _ok(res, "memory"):
        large = f"worker_after_{m['producer_large']['lines']}"
        wk = next(v for k, v in m.items() if k.startswith("worker_after_") and k != large)
        out.append((f"5a. memory, worker after a {m['producer_small']['lines']}-item batch", "-",
                    f"{wk['max_process_mb']:.0f} MB max per process ({wk['total_mb']:.0f} MB for {wk['processes']})",
                    "-", f"{m['worker_goal']}: {_yes(m['worker_met'])}"))
        ps, pl = m["producer_small"], m["producer_large"]
        out.append(("5b. memory, producer submit + read back JSONL",
                    f"{ps['lines']:,} lines: peak {ps['peak_rss_mb']:.0f} MB",
                    f"{pl['lines']:,} lines: peak {pl['peak_rss_mb']:.0f} MB", f"{m['producer_peak_growth']:.2f}x",
                    f"{m['producer_goal']}: {_yes(m['producer_met'])}"))
    if c := _ok(res, "cache"):
        out.append((f"6. cache, {c['items']} items twice, new worker process each run",
                    f"first run {min(c['first_seconds']):.2f}-{max(c['first_seconds']):.2f} s",
                    f"second run {min(c['second_seconds']):.2f}-{max(c['second_seconds']):.2f} s, "
                    f"provider calls {c['provider_calls_second_run']}"
                    + (f" (LM-call cache only: {c['lm_cache_only_speedup']:.1f}x)"
                       if "lm_cache_only_speedup" in c else ""),
                    f"{c['speedup']:.1f}x", f"{c['goal']}: {_yes(c['met'])}"))
    if p := _ok(res, "provider_limit"):
        conf, lrn, base = p["configured"], p["learned"], p["dspy_batch_32_threads"]
        out.append((f"8. provider limit {p['limit_requests_per_s']:.0f}/s, {p['latency_s']:.0f} s calls, "
                    "1 worker process",
                    f"DSPy batch(32 threads) {base['items_per_s']:.0f}/s ({p['dspy_fraction_of_limit']:.0%}), "
                    f"429s {base['refused_429']}",
                    f"configured {conf['items_per_s']:.0f}/s ({p['configured_fraction_of_limit']:.0%}, "
                    f"429s {conf['refused_fraction']:.1%}); learned {lrn['items_per_s']:.0f}/s "
                    f"({p['learned_fraction_of_limit']:.0%}, 429s {lrn['refused_fraction']:.1%})",
                    f"{p['ratio']:.2f}x / {p['learned_ratio']:.2f}x", f"{p['goal']}: {_yes(p['met'])}"))
    if o := _ok(res, "overhead"):
        out.append(("7. wrapper overhead on the mock (CPU per call)", f"dspy.Predict {o['plain_predict_cpu_ms']} ms",
                    f"wrapper {o['wrapper_cpu_ms']} ms (no cache {o['wrapper_no_cache_cpu_ms']} ms, "
                    f"hit {o['wrapper_cache_hit_cpu_ms']} ms)",
                    f"{o['overhead_pct']:+}% (no cache {o['overhead_no_cache_pct']:+}%)",
                    f"{o['goal']}: {_yes(o['met'])}"))
    if a := _ok(res, "api_load"):
        out.append((f"9. REST API predict ?wait; {a['concurrent']} concurrent waits on one server process",
                    f"Python client p50 {a['client_p50_ms']} ms, p99 {a['client_p99_ms']} ms",
                    f"API p50 {a['api_p50_ms']} ms, p99 {a['api_p99_ms']} ms; {a['concurrent_answered']}/"
                    f"{a['concurrent']} answered in {a['concurrent_seconds']} s, "
                    f"server peak {a['server_peak_rss_mb']} MB",
                    f"{a['ratio_p50']:.2f}x", f"{a['goal']}: {_yes(a['met'])}"))
    return out


def markdown(res: dict) -> str:
    meta = res["meta"]
    lines = [f"# tidyq benchmark ({meta['started']}, {meta['cpus']} CPUs, "
             f"load average at start {meta['load_avg']})", "",
             f"`{meta['command']}`: {meta['seconds']:.0f} s. Medians over interleaved repeats; every ratio is "
             "against a baseline measured in the same run.", "",
             "| scenario | baseline | tidyq | ratio | goal |", "|---|---|---|---|---|"]
    lines += [f"| {' | '.join(r)} |" for r in rows(res)]
    errors = {k: v["error"] for k, v in res.items() if isinstance(v, dict) and "error" in v}
    if errors:
        lines += ["", "Scenarios that did not finish:"] + [f"- {k}: {v}" for k, v in errors.items()]
    return "\n".join(lines) + "\n"


def chart(scale: dict, path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    ks = [int(k) for k in scale["items_per_s"]]
    got = [scale["items_per_s"][str(k)] for k in ks]
    ideal = [scale["ideal_items_per_s"][str(k)] for k in ks]
    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=110)
    ax.plot(ks, ideal, "--", color="grey", label="ideal (workers x in-flight / latency)")
    ax.plot(ks, got, "o-", color="tab:blue", label="measured (median)")
    for k, v, in zip(ks, got, strict=False):
        ax.annotate(f"{v:.1f}/s", (k, v), textcoords="offset points", xytext=(6, -12), fontsize=8)
    ax.set_xticks(ks)
    ax.set_xlabel("worker processes")
    ax.set_ylabel("items / s")
    ax.set_title(f"Horizontal scale: {scale['latency_s']:.0f} s provider, "
                 f"{scale['per_worker_concurrency']} in flight per worker",
                 fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def write(res: dict, *, results_dir: Path, markdown_path: Path, chart_path: Path) -> dict[str, str]:
    results_dir.mkdir(parents=True, exist_ok=True)
    stamp = res["meta"]["started"].replace(":", "").replace("-", "")
    out = {}
    for name in (f"{stamp}.json", "latest.json"):
        (results_dir / name).write_text(json.dumps(res, indent=2))
    out["json"] = str(results_dir / f"{stamp}.json")
    markdown_path.write_text(markdown(res))
    out["markdown"] = str(markdown_path)
    if isinstance(res.get("scale"), dict) and "items_per_s" in res["scale"]:
        png = chart(res["scale"], chart_path)
        if png:
            out["chart"] = str(png)
    return out
