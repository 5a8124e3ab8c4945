"""shared/steps/pricing.py prices every response as DSPy's own estimate_cost does."""

from __future__ import annotations

import pytest
from dspy.clients import costs
from dspy.lm15 import ImagePart, Message, Response, TextPart, Usage

from shared.cost import use_local_price_map
from shared.steps import pricing

use_local_price_map()


def response(model="gpt-4o-mini-2024-07-18", usage=None, parts=None, provider_data=None):
    return Response(id=None, model=model, message=Message.assistant(parts or [TextPart("ok")]), finish_reason="stop",
                    usage=usage or Usage(input_tokens=120, output_tokens=12), provider_data=provider_data)


CASES = [
    ("openai", "gpt-4o-mini", response()),
    ("openai", "gpt-4o-mini", response(model="gpt-4o-mini")),  # the response names the requested model
    ("openai", "gpt-4o-mini", response(model="not-in-the-map")),  # priced by the requested name
    ("openai", "no-such-model", response(model="no-such-model")),  # unknown: None
    ("openai", "gpt-4o", response(usage=Usage(input_tokens=5000, output_tokens=300, cache_read_tokens=1000))),
    ("openai", "o3-mini", response(model="o3-mini", usage=Usage(input_tokens=90, output_tokens=400,
                                                               reasoning_tokens=250))),
    ("openai", "gpt-4o-mini", response(usage=Usage(input_tokens=10))),  # output not reported: None
    ("openai", "gpt-4o", response(provider_data={"service_tier": "priority"})),
    ("openai", "gpt-4o", response(provider_data={"service_tier": "scale"})),  # a tier it cannot price
    ("gemini", "gemini-1.5-pro", response(model="gemini-1.5-pro",
                                          usage=Usage(input_tokens=200_000, output_tokens=10))),  # long context
    ("anthropic", "claude-3-5-sonnet-20241022",
     response(model="claude-3-5-sonnet-20241022", usage=Usage(input_tokens=50, output_tokens=5,
                                                              cache_write_tokens=2000, cache_read_tokens=300))),
    ("openai", "gpt-4o-mini", response(parts=[ImagePart(url="https://example.com/a.png")])),  # media out
]


@pytest.mark.parametrize("provider,model,resp", CASES)
def test_the_same_price_as_dspys_estimate(provider, model, resp):
    expected, _ = costs.estimate_cost(resp, provider=provider, requested_model=model)
    assert pricing.estimate_cost(resp, provider, model) == expected
    assert pricing.estimate_cost(resp, provider, model) == expected  # and again, from the kept entry


def test_the_cases_cover_priced_and_unpriced_calls():
    prices = [costs.estimate_cost(r, provider=p, requested_model=m)[0] for p, m, r in CASES]
    assert sum(p is not None and p > 0 for p in prices) >= 6
    assert sum(p is None for p in prices) >= 3


def test_the_kept_entry_is_read_only_and_dspys_own_function_runs():
    assert pricing._estimator() is not costs.estimate_cost  # the rebound _estimate_cost, not the fallback
    entry = pricing._kept_entry("openai", "gpt-4o-mini")
    assert entry["input_cost_per_token"] > 0
    with pytest.raises(TypeError):
        entry["input_cost_per_token"] = 0  # type: ignore[index]


def test_no_provider_prices_nothing():
    assert pricing.estimate_cost(response(), None, "gpt-4o-mini") is None
