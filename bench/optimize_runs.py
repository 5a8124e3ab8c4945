"""Optimizer runs measured: wall time, LM calls, baseline vs optimized score on the valset.

    python -m bench.optimize_runs [--provider mock|icl] [optimizer ...]

mock: the deterministic offline backend (answers ignore demos, so scores stay flat: this
measures the optimizers' own cost). icl: the stand-in OpenAI server answering by copying the
nearest demo in the prompt (an in-context learner), so few-shot optimizers move the score.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("TIDYQ_CACHE_ENABLED", "false")

DEFAULT = ["labeled-fewshot", "bootstrap-fewshot", "bootstrap-random-search", "mipro-v2", "copro", "simba", "gepa"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--provider", choices=["mock", "icl"], default="mock")
    p.add_argument("optimizers", nargs="*", default=DEFAULT)
    args = p.parse_args(argv)
    logging.disable(logging.WARNING)
    import dspy

    from shared import UnifiedConfig, UnifiedDSPyWrapper
    from shared.optimize import resolve_metric, run_optimization, to_examples
    from tests.optimize_support import icl_reply, sentiment_rows

    fake = None
    if args.provider == "icl":
        from tests.fakes.openai_server import OpenAIFake

        fake = OpenAIFake(responder=icl_reply).start()
        w = UnifiedDSPyWrapper(UnifiedConfig(backend="direct", model="openai/gpt-4o-mini", api_base=fake.base_url,
                                             api_key="sk-bench"))
    else:
        w = UnifiedDSPyWrapper(UnifiedConfig(backend="mock"))
    train, val = to_examples(sentiment_rows(24), ["review"]), to_examples(sentiment_rows(20, 100), ["review"])
    try:
        for name in args.optimizers:
            started = time.perf_counter()
            out = run_optimization(dspy.Predict("review -> sentiment"), trainset=train, valset=val, optimizer=name,
                                   settings={}, metric=resolve_metric("exact_match"), lm=w.lm,
                                   backend=w.backend_name, model=w.model, time_limit=300)
            print(json.dumps({"provider": args.provider, "optimizer": name,
                              "seconds": round(time.perf_counter() - started, 2), "lm_calls": out.lm_calls,
                              "metric_calls": out.metric_calls, "baseline": out.baseline_score,
                              "optimized": out.optimized_score, "stopped": out.stopped}), file=sys.__stdout__,
                  flush=True)
    finally:
        w.close()
        if fake:
            fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
