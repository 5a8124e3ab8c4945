"""Run the corpus programs and print {file name: stdout} as JSON, to compare legacy and migrated.

With --legacy, first installs test-only stand-ins for what the old programs imported, so that
they run as before migration:
Test-only stand-ins for what the old program imported: ``tidyllm.<module>`` aliases pointing at
the compatibility shims (shared.compat), and DSPy 2.6's assertion API re-created on DSPy 3 with
2.6's semantics (Assert/Suggest raise; backtrack_handler re-runs forward up to max_backtracks
times, raises a still-failing Assert, lets a still-failing Suggest pass). Nothing here ships.

    python run_legacy.py [--legacy] FOLDER
"""

import contextlib
import functools
import io
import json
import os
import runpy
import sys
import types
import warnings

import dspy

import shared.compat as compat


class DSPyAssertionError(AssertionError):
    pass


class DSPySuggestionError(AssertionError):
    pass


_bypass = {"assert": False, "suggest": False}


def Assert(result, msg="", target_module=None, is_metric=False):  # noqa: N802 - 2.6's name
    if not result and not _bypass["assert"]:
        raise DSPyAssertionError(msg)
    return True


def Suggest(result, msg="", target_module=None, is_metric=False):  # noqa: N802
    if not result and not _bypass["suggest"]:
        raise DSPySuggestionError(msg)
    return True


def backtrack_handler(func, bypass_suggest=True, max_backtracks=2):
    def wrapper(*args, **kwargs):
        error = None
        for attempt in range(max_backtracks + 1):
            if attempt == max_backtracks:
                if isinstance(error, DSPyAssertionError):
                    raise error
                _bypass["suggest"] = bypass_suggest
                try:
                    return func(*args, **kwargs)
                finally:
                    _bypass["suggest"] = False
            try:
                return func(*args, **kwargs)
            except (DSPyAssertionError, DSPySuggestionError) as exc:
                error = error or exc
    return wrapper


def bypass_suggest_handler(func):
    def wrapper(*args, **kwargs):
        _bypass["suggest"] = True
        try:
            return func(*args, **kwargs)
        finally:
            _bypass["suggest"] = False
    return wrapper


def noop_handler(func):
    def wrapper(*args, **kwargs):
        _bypass.update({"assert": True, "suggest": True})
        try:
            return func(*args, **kwargs)
        finally:
            _bypass.update({"assert": False, "suggest": False})
    return wrapper


def assert_transform_module(module, assertion_handler=backtrack_handler, **handler_args):
    module._forward = module.forward
    module.forward = functools.partial(assertion_handler(module._forward, **handler_args))
    return module


def activate_assertions(self, handler=backtrack_handler, **handler_args):
    return assert_transform_module(self, handler, **handler_args)


def install() -> None:
    assertions = types.ModuleType("dspy.primitives.assertions")
    for name, value in dict(Assert=Assert, Suggest=Suggest, DSPyAssertionError=DSPyAssertionError,
                            DSPySuggestionError=DSPySuggestionError, backtrack_handler=backtrack_handler,
                            bypass_suggest_handler=bypass_suggest_handler, noop_handler=noop_handler,
                            assert_transform_module=assert_transform_module).items():
        setattr(assertions, name, value)
    sys.modules["dspy.primitives.assertions"] = assertions
    dspy.primitives.assertions = assertions
    dspy.Assert, dspy.Suggest = Assert, Suggest
    dspy.Module.activate_assertions = activate_assertions
    dspy.TypedPredictor, dspy.TypedChainOfThought, dspy.Program = dspy.Predict, dspy.ChainOfThought, dspy.Module
    dspy.SignatureOptimizer = dspy.COPRO
    dspy.OpenAI = lambda model, **kw: dspy.LM(f"openai/{model}", **kw)
    sys.modules["tidyllm"] = types.ModuleType("tidyllm")
    for module, name in (("dspy_enhanced", "DSPyEnhancedWrapper"),
                         ("dspy_gateway_backend", "configure_dspy_with_gateway"),
                         ("dspy_bedrock_enhanced", "DSPyBedrockEnhancedWrapper"),
                         ("dspy_wrapper", "DSPyWrapper"), ("base_module", "DynamicModule")):
        alias = types.ModuleType(f"tidyllm.{module}")
        setattr(alias, name, getattr(compat, name))
        sys.modules[alias.__name__] = alias
        setattr(sys.modules["tidyllm"], module, alias)


def run_all(folder: str) -> dict[str, str]:
    outputs = {}
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".py"):
            continue
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            try:
                runpy.run_path(os.path.join(folder, name), run_name="__main__")
            except BaseException as exc:  # reported, compared like any output
                print(f"UNCAUGHT {type(exc).__name__}: {exc}")
        outputs[name] = buffer.getvalue()
    return outputs


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--legacy"]:
        warnings.simplefilter("ignore", DeprecationWarning)
        install()
        args = args[1:]
    else:
        warnings.simplefilter("error", DeprecationWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"(?!shared\.compat)")
    print(json.dumps(run_all(args[0]), indent=1))
