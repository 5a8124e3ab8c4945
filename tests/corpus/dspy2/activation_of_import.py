"""Activation of an imported class, with functools.partial(backtrack_handler, max_backtracks=...)."""
import functools
import json
import os
import sys

import dspy
from dspy.primitives.assertions import assert_transform_module, backtrack_handler

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from checked_module import Summarize  # noqa: E402

dspy.settings.configure(lm=dspy.OpenAI(model="gpt-4o-mini", api_base=os.environ["OPENAI_API_BASE"], api_key="sk-t"))
program = assert_transform_module(Summarize(), functools.partial(backtrack_handler, max_backtracks=3))
try:
    program(document="DSPy programs are modules made of predictors.")
    print(json.dumps({"program": "activation_of_import", "result": "returned"}))
except dspy.primitives.assertions.DSPyAssertionError as error:
    print(json.dumps({"program": "activation_of_import", "result": "assert raised", "msg": error.msg}))
