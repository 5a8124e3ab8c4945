"""``tidyq batch FILE --estimate``: what a file would cost, before anything is enqueued.

Each distinct row (identical rows are sent once, shared/dedupe.py) is rendered through the
program's own adapter (shared/prompts.py), its prompt counted with LiteLLM's tokenizer for the
model, its completion assumed to be the adapter's reply frame with ``estimate_output_tokens``
tokens per output field, and both priced from the one price map (shared/cost.py). Stages of a
multi-stage program that take inputs computed between calls cannot be rendered from the file;
the estimate names them instead of guessing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from producers import jsonl
from shared.config import Settings
from shared.cost import estimated_tokens, prices_for
from shared.dedupe import fold_duplicates, folds
from shared.jobs import signature_fields
from shared.prompts import stage_prompts


def _module(signature: str | None, program: str | None) -> Any:
    from shared.wrapper import as_module

    if program:
        from shared.programs import load_program

        return as_module(load_program(program))
    return as_module(signature)


def estimate_file(path: str | Path, *, signature: str | None, program: str | None, backend: str,
                  model: str | None, settings: Settings) -> dict[str, Any]:
    """The expected tokens and cost of running ``path``; BadInput (file, line, field) on a bad file."""
    input_fields = signature_fields(signature)[0] if signature else None
    total = jsonl.FileCheck(path, input_fields=input_fields, signature=signature,
                            max_items=settings.max_items_per_job, max_item_bytes=settings.max_item_bytes).run()
    module = _module(signature, program)

    def items():
        return jsonl.iter_items(path)

    unique, folded = fold_duplicates(items) if folds(program) else (items, 0)
    answer = " ".join(["word"] * settings.estimate_output_tokens)
    input_tokens = output_tokens = 0
    not_rendered: set[str] = set()
    for item in unique():
        prompts, skipped = stage_prompts(module, item.inputs)
        not_rendered.update(skipped)
        for prompt in prompts:
            tokens_in, tokens_out = estimated_tokens(model, prompt.messages, prompt.completion_text(answer))
            input_tokens += tokens_in
            output_tokens += tokens_out
    prices = prices_for(backend, model)
    report: dict[str, Any] = {
        "file": str(path), "backend": backend, "model": model, "items": total, "sent_items": total - folded,
        "duplicates_folded": folded, "input_tokens": input_tokens, "output_tokens": output_tokens,
        "output_tokens_per_field": settings.estimate_output_tokens,
        "cost_usd": None, "economy_cost_usd": None, "price_source": "litellm model price map (local)", "notes": [],
    }
    if prices is None:
        report["notes"].append(f"no price for {backend}:{model or ''} in the price map; tokens only")
    else:
        report["cost_usd"] = round(prices.cost(input_tokens, output_tokens), 6)
        report["economy_cost_usd"] = round(prices.cost(input_tokens, output_tokens, batch=True), 6)
    if not_rendered:
        report["stages_not_estimated"] = sorted(not_rendered)
        report["notes"].append("these stages take inputs the program computes between calls, so their prompts "
                          "cannot be rendered from the file; the cost excludes them")
    return report
