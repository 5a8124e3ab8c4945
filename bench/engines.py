"""DSPy's lm15 engine against its LiteLLM engine for the DIRECT backend, on one loopback
OpenAI stand-in, same process, interleaved rounds. Reports CPU ms and wall ms per call
(the stand-in answers at once, so wall time is client + loopback cost)."""

from __future__ import annotations

import json
import os
import statistics
import time

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from shared import CacheConfig, UnifiedConfig, UnifiedDSPyWrapper  # noqa: E402
from tests.fakes.openai_server import OpenAIFake  # noqa: E402


def measure(module, n: int, tag: str) -> tuple[float, float]:
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for i in range(n):
        module.predict(question=f"{tag} {i}")
    return (time.process_time() - cpu0) / n * 1000, (time.perf_counter() - wall0) / n * 1000


def run(n: int = 200, rounds: int = 3) -> dict:
    out: dict = {}
    with OpenAIFake() as fake:
        modules = {}
        for engine in ("lm15", "litellm"):
            w = UnifiedDSPyWrapper(UnifiedConfig(backend="direct", model="openai/gpt-4o-mini", engine=engine,
                                                 api_base=f"{fake.url}/v1", api_key="sk-bench",
                                                 cache=CacheConfig(enabled=False)))
            modules[engine] = w.create_module("question -> answer")
            measure(modules[engine], 20, f"warm-{engine}")
        samples = {e: [] for e in modules}
        for r in range(rounds):
            for engine, module in modules.items():
                samples[engine].append(measure(module, n, f"{engine}-{r}"))
    for engine, values in samples.items():
        out[engine] = {"cpu_ms_per_call": round(statistics.median(v[0] for v in values), 2),
                       "wall_ms_per_call": round(statistics.median(v[1] for v in values), 2)}
    out["litellm_over_lm15_cpu"] = round(out["litellm"]["cpu_ms_per_call"] / out["lm15"]["cpu_ms_per_call"], 2)
    out["calls_per_round"], out["rounds"] = n, rounds
    return out


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
