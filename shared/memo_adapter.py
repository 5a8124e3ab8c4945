"""DSPy's ChatAdapter with the per-signature parts of its prompt computed once.

Why: ChatAdapter rebuilds the system message (field descriptions, the field structure with a
pydantic TypeAdapter per field, the task description) and the output reminder on every call,
although both depend on the signature alone; that was about a tenth of a worker's CPU per item on
DSPy's async path. Signature classes are immutable in DSPy (every edit returns a new class), so
the text is kept per class (weakly: a class that goes away takes its entry with it).

Only public extension points: a subclass overriding two of ChatAdapter's documented format
hooks; every other step (user message, demos, history, parsing, the JSONAdapter fallback,
callbacks) is ChatAdapter's own. The messages are equal to ChatAdapter's
(tests/unit/test_memo_adapter.py). The wrapper uses it only where the user set no adapter.
"""

from __future__ import annotations

import weakref
from typing import Any

from dspy.adapters.chat_adapter import ChatAdapter


class MemoChatAdapter(ChatAdapter):
    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self._system: weakref.WeakKeyDictionary[type, str] = weakref.WeakKeyDictionary()
        self._reminder: weakref.WeakKeyDictionary[type, str | None] = weakref.WeakKeyDictionary()

    def format_system_message(self, signature: type) -> str:
        text = self._system.get(signature)
        if text is None:
            text = self._system[signature] = super().format_system_message(signature)
        return text

    def user_message_output_requirements(self, signature: type) -> str | None:
        if signature in self._reminder:
            return self._reminder[signature]
        text = self._reminder[signature] = super().user_message_output_requirements(signature)
        return text


# Adapter.__init_subclass__ wraps format/parse for callbacks; ChatAdapter's are wrapped already,
# so keep those: a second wrapper would call the user's adapter callbacks twice per call.
MemoChatAdapter.format = ChatAdapter.format
MemoChatAdapter.parse = ChatAdapter.parse

default_adapter = MemoChatAdapter()
