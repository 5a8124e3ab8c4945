"""What a program takes and gives back: inputs from its forward(), outputs as JSON.

Why forward(): a user's module declares its inputs as forward's parameters (``def forward(self,
question, k=3)``), not as one signature, so that is what items are checked against (missing or
unknown fields are bad input naming the field). Predict/ChainOfThought/ReAct take ``**kwargs`` and
carry a ``signature``: their signature's input fields are the inputs.
Outputs: every field of the returned dspy.Prediction, made JSON by pydantic (models dumped,
datetimes, enums, sets...). A value that cannot be made JSON fails the item naming the field; it is
never stringified behind the user's back.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

from shared.errors import BadInput, TidyqError


class OutputNotJSON(TidyqError):
    """A field of the program's prediction has no JSON form."""


@dataclass(frozen=True)
class ProgramInputs:
    """The input fields one program accepts. ``open``: forward() also takes **kwargs."""

    label: str
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()
    open: bool = False

    @property
    def names(self) -> tuple[str, ...]:
        return self.required + self.optional

    def check(self, inputs: dict[str, Any], where: str) -> None:
        if not self.open:
            for name in inputs:
                if name not in self.names:
                    raise BadInput(f"unknown input field {name!r} for program {self.label} (its forward() takes: "
                                   f"{', '.join(self.names) or 'nothing'})", where=f"{where}: field 'inputs.{name}'")
        for name in self.required:
            if name not in inputs:
                raise BadInput(f"missing input field {name!r} for program {self.label}",
                               where=f"{where}: field 'inputs.{name}'")


def program_inputs(module: Any, label: str | None = None) -> ProgramInputs:
    """The inputs of a dspy.Module, read from its forward() (or its signature for **kwargs modules)."""
    label = label or type(module).__name__
    # through the class: reading module.forward on an instance makes DSPy warn
    try:
        params = list(inspect.signature(type(module).forward).parameters.values())[1:]
    except (AttributeError, TypeError, ValueError):  # no inspectable forward(): the program checks itself
        return ProgramInputs(label, (), open=True)
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params)
    named = [p for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    if var_kw and not named:
        signature = getattr(module, "signature", None)
        predictors = module.predictors()
        if signature is None and len(predictors) == 1:
            signature = predictors[0].signature
        if signature is not None and hasattr(signature, "input_fields"):
            return ProgramInputs(label, tuple(signature.input_fields))
    required = tuple(p.name for p in named if p.default is p.empty)
    optional = tuple(p.name for p in named if p.default is not p.empty)
    return ProgramInputs(label, required, optional, open=var_kw)


def example_fields(student: Any, pspec: Any) -> tuple[Any, list[str] | None]:
    """What trainset rows must match: a signature program's input and output fields, or a user
    module's forward() parameters (its outputs are whatever gold fields the metric compares)."""
    from shared.program_files import SIGNATURE_KINDS

    if pspec.kind in SIGNATURE_KINDS:
        sig = student.predictors()[0].signature
        return list(sig.input_fields), [n for n in sig.output_fields if n != "reasoning"]
    return program_inputs(student, pspec.import_path or "registered program"), None


def _fallback(value: Any) -> Any:
    import dspy

    if isinstance(value, dspy.Example):  # a Prediction nested in another program's output
        return dict(value.items())
    raise TypeError(f"a {type(value).__module__}.{type(value).__qualname__}")


def prediction_outputs(prediction: Any) -> dict[str, Any]:
    """Every field of a dspy.Prediction (or a dict) as JSON values; OutputNotJSON names the field."""
    from pydantic_core import PydanticSerializationError, to_jsonable_python

    items = prediction.items() if hasattr(prediction, "items") else None
    if items is None:
        raise OutputNotJSON(f"the program returned a {type(prediction).__name__}, not a dspy.Prediction")
    out: dict[str, Any] = {}
    for name, value in items:
        try:
            out[str(name)] = to_jsonable_python(value, fallback=_fallback)
        except (PydanticSerializationError, TypeError, ValueError) as exc:
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise OutputNotJSON(f"output field {name!r} cannot be made JSON ({detail})") from None
    return out
