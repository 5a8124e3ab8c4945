"""Run the corpus programs and print {file name: stdout} as JSON, to compare legacy and migrated.

With --legacy, first installs test-only stand-ins for what the old programs imported, so that
they run as before migration:
Test-only stand-ins for what the old program imported: ``tidyllm.<module>`` aliases pointing at
the compatibility shims (shared.compat), and DSPy 2.x's assertion API installed under its old
names from tidyq.assertions (which keeps 2.x's semantics, tested in test_assertions_runtime.py),
so the comparison checks the codemod's rewrite, not two runtimes. Nothing here ships.

    python run_legacy.py [--legacy] FOLDER
"""

import contextlib
import io
import json
import os
import runpy
import sys
import types
import warnings

import dspy

import shared.assertions as runtime
import shared.compat as compat


def install() -> None:
    assertions = types.ModuleType("dspy.primitives.assertions")
    for name in runtime.__all__:
        setattr(assertions, name, getattr(runtime, name))
    sys.modules["dspy.primitives.assertions"] = assertions
    dspy.primitives.assertions = assertions
    dspy.Assert, dspy.Suggest = runtime.Assert, runtime.Suggest
    dspy.Module.activate_assertions = runtime.activate_assertions
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
