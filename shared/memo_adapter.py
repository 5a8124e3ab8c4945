"""DSPy's ChatAdapter with the per-signature parts of its prompt computed once.

Why: ChatAdapter rebuilds the system message (field descriptions, the field structure with a
pydantic TypeAdapter per field, the task description) and the output reminder on every call,
although both depend on the signature alone, and builds a TypeAdapter per input value to format
it; together about a fifth of a worker's CPU per item on DSPy's async path. Signature classes
are immutable in DSPy (every edit returns a new class), so the text is kept per class (weakly:
a class that goes away takes its entry with it).

Only public extension points: a subclass overriding three of ChatAdapter's documented format
hooks; every other step (demos, history, parsing, the JSONAdapter fallback, callbacks) is
ChatAdapter's own. The messages are equal to ChatAdapter's
(tests/unit/test_memo_adapter.py). The wrapper uses it only where the user set no adapter.
"""

from __future__ import annotations

import weakref
from typing import Any

from dspy.adapters.chat_adapter import ChatAdapter
from dspy.signatures.signature import Signature


class MemoChatAdapter(ChatAdapter):
    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self._system: weakref.WeakKeyDictionary[type, str] = weakref.WeakKeyDictionary()
        self._reminder: weakref.WeakKeyDictionary[type, str | None] = weakref.WeakKeyDictionary()
        self._inputs: weakref.WeakKeyDictionary[type, tuple[str, ...]] = weakref.WeakKeyDictionary()

    def format_system_message(self, signature: type[Signature]) -> str:
        text = self._system.get(signature)
        if text is None:
            text = self._system[signature] = super().format_system_message(signature)
        return text

    def format_user_message_content(self, signature: type[Signature], inputs: dict[str, Any], prefix: str = "",
                                    suffix: str = "", main_request: bool = False) -> str:
        """ChatAdapter's, except that a value of type ``str`` is its own formatted value: DSPy's
        format_field_value builds a pydantic TypeAdapter(str) per value to find that out (its
        JSON form of a str is the str itself). Any other value goes through DSPy's own code."""
        fields = self._inputs.get(signature)
        if fields is None:
            fields = self._inputs[signature] = tuple(signature.input_fields)
        if any(type(inputs[name]) is not str for name in fields if name in inputs):
            return super().format_user_message_content(signature, inputs, prefix, suffix, main_request)
        messages = [prefix]
        messages.extend(f"[[ ## {name} ## ]]\n{inputs[name]}" for name in fields if name in inputs)
        if main_request:
            output_requirements = self.user_message_output_requirements(signature)
            if output_requirements is not None:
                messages.append(output_requirements)
        messages.append(suffix)
        return "\n\n".join(messages).strip()

    def user_message_output_requirements(self, signature: type[Signature]) -> str | None:
        if signature in self._reminder:
            return self._reminder[signature]
        text = self._reminder[signature] = super().user_message_output_requirements(signature)
        return text


# Adapter.__init_subclass__ wraps format/parse for callbacks; ChatAdapter's are wrapped already,
# so keep those: a second wrapper would call the user's adapter callbacks twice per call.
MemoChatAdapter.format = ChatAdapter.format
MemoChatAdapter.parse = ChatAdapter.parse

default_adapter = MemoChatAdapter()
