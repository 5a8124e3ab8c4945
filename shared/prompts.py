"""The exact messages a live call would send, rendered through the program's own DSPy adapter.

An estimate (and a provider batch) is only honest if it prices the prompt the program really sends:
instructions, demos and the adapter's field markers included. DSPy renders a predictor's prompt
with ``adapter.format(signature, demos, inputs)``; a multi-stage program's later stages take inputs
that Python computes between calls, so only the stages whose inputs an item supplies are renderable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class StagePrompt:
    """One predictor's messages for one item, with what renders and parses its answer."""

    stage: str
    messages: list[dict[str, Any]]
    signature: Any  # the predictor's dspy.Signature
    adapter: Any

    def completion_text(self, answer: str) -> str:
        """The reply the adapter expects with ``answer`` in every output field (an estimate prices
        this text as the completion)."""
        return self.adapter.format_assistant_message_content(
            self.signature, {k: answer for k in self.signature.output_fields})


def default_adapter() -> Any:
    """The adapter a live call uses: DSPy's configured one, else ChatAdapter (DSPy's default)."""
    from dspy.adapters.chat_adapter import ChatAdapter
    from dspy.dsp.utils.settings import settings

    return settings.adapter or ChatAdapter()


def stage_prompts(module: Any, inputs: dict[str, Any]) -> tuple[list[StagePrompt], list[str]]:
    """(prompts of the stages ``inputs`` can feed, names of the stages that depend on earlier ones)."""
    adapter = default_adapter()
    rendered: list[StagePrompt] = []
    skipped: list[str] = []
    for name, predictor in module.named_predictors():
        signature = predictor.signature
        if not set(signature.input_fields).issubset(inputs):
            skipped.append(name)
            continue
        wanted = {k: v for k, v in inputs.items() if k in signature.input_fields}
        messages = adapter.format(signature, list(predictor.demos or []), wanted)
        rendered.append(StagePrompt(name, messages, signature, adapter))
    return rendered, skipped
