"""Every name `tidyq migrate` writes into migrated code exists in the installed DSPy 3.4 (and in
tidyq.assertions / tidyq.dspy2), checked by importing it; and the codemod's own check for names DSPy lacks."""

from __future__ import annotations

import importlib
import uuid

import dspy
import pytest

import tidyq.assertions
import tidyq.dspy2
from shared.migrate import moved
from shared.migrate.assertions import PROVIDED
from shared.migrate.dspy3 import RENAMES, dsp_replacement, missing_in_dspy
from shared.migrate.lm_clients import CLIENTS, Unsupported, lm_arguments


def _resolve(dotted: str):
    module, _, attr = dotted.rpartition(".")
    return getattr(importlib.import_module(module), attr)


@pytest.mark.parametrize("path", sorted(set(RENAMES.values())))
def test_renamed_targets_exist_in_dspy(path):
    assert callable(_resolve(f"dspy.{path}"))


@pytest.mark.parametrize("name", PROVIDED)
def test_every_assertion_name_the_codemod_writes_is_in_tidyq_assertions(name):
    assert getattr(tidyq.assertions, name) is not None


@pytest.mark.parametrize("qname, expected", [
    ("dsp.settings", "dspy.settings"), ("dsp.utils.deduplicate", "dspy.dsp.utils.deduplicate"),
    ("dsp.utils.normalize_text", "dspy.evaluate.metrics.normalize_text"), ("dsp.GPT3", None),
    ("dsp.answer_match", "dspy.evaluate.metrics._answer_match"),
])
def test_dsp_names_map_to_what_dspy_3_kept(qname, expected):
    assert dsp_replacement(qname) == expected
    if expected and expected != "dspy.settings":
        assert callable(_resolve(expected))


def test_missing_names_are_told_apart_from_present_ones():
    assert missing_in_dspy("dspy.Assert") and missing_in_dspy("dspy.retrieve") and missing_in_dspy("dspy.OpenAI")
    assert not missing_in_dspy("dspy.Predict") and not missing_in_dspy("dspy.evaluate.metrics.normalize_text")
    assert not missing_in_dspy("dspy.Predict.forward") and not missing_in_dspy("numpy.nothing")


@pytest.mark.parametrize("client", sorted(CLIENTS))
def test_each_legacy_client_becomes_a_dspy_lm_that_builds(client):
    params = CLIENTS[client].params
    given = {"model": '"m"'} | ({"port": "8000"} if "port" in params else {}) | (
        {"api_base": '"http://127.0.0.1:9"', "api_version": '"2024-02-01"'} if client == "AzureOpenAI" else {})
    arguments = lm_arguments(client, [], given)
    lm = eval(f"dspy.LM({arguments})", {"dspy": dspy})  # noqa: S307 - our generated source, checked to build
    assert lm.model.startswith(CLIENTS[client].provider + "/") and lm.kwargs["temperature"] == 0.0


def test_legacy_client_arguments_that_do_not_carry_over_are_refused():
    with pytest.raises(Unsupported, match="system_prompt"):
        lm_arguments("OpenAI", ['"gpt-4o"'], {"system_prompt": '"be brief"'})
    with pytest.raises(Unsupported, match="port is not given"):
        lm_arguments("HFClientVLLM", ['"m"'], {})
    with pytest.raises(Unsupported, match="no default"):
        lm_arguments("Databricks", [], {})
    with pytest.raises(Unsupported, match="positional"):
        lm_arguments("Anyscale", ['"a"', '"b"'], {})
    assert lm_arguments("OpenAI", ['"gpt-4o"'], {"api_provider": '"openai"', "temperature": "0.7"}) == \
        '"openai/gpt-4o", temperature=0.7'
    assert 'api_base=f"{url}:{port}/v1"' in lm_arguments("HFClientVLLM", ["name"], {"port": "port", "url": "url"})


@pytest.mark.parametrize("name", moved.PROVIDED)
def test_every_name_the_codemod_moves_is_in_tidyq_dspy2(name):
    assert getattr(tidyq.dspy2, name) is not None and name in tidyq.dspy2.__all__


def test_the_dspy_3_names_tidyq_dspy2_and_the_finetune_rewrite_use_exist():
    import inspect

    import litellm
    from dspy.clients.provider import Provider

    from shared.migrate import finetune

    data_format = getattr(importlib.import_module(finetune.NEW_MODULE), finetune.NEW_NAME)
    assert {getattr(data_format, m).value for m in finetune.MEMBERS.values()} == set(finetune.MEMBERS)
    for method in (dspy.LM.finetune, Provider.finetune):
        assert finetune.NEW_PARAM in inspect.signature(method).parameters
    assert "rationale_field" in inspect.signature(dspy.ChainOfThought.__init__).parameters
    assert "clarifai" in litellm.provider_list
    assert issubclass(tidyq.dspy2.Evaluate, dspy.Evaluate) and callable(dspy.configure_cache)
    assert callable(dspy.Embedder) and callable(dspy.Retrieve)


def test_hf_client_tgi_with_a_port_list_talks_to_its_first_server(openai_fake):
    # examples/skycamp2023.ipynb (2.5.43): HFClientTGI took a list of ports and sent each request to one
    # of them; the rewrite once wrote the list itself into the URL ("http://host:[7140, 7141]/v1").
    from shared.migrate.transform import migrate_source

    source = ("import dspy\n"
              f"llama = dspy.HFClientTGI(model='meta-llama/Llama-2-13b-chat-hf', port=[{openai_fake.port}, 9],"
              " url='http://127.0.0.1', max_tokens=150)\n")
    notes: list = []
    new, findings = migrate_source(source, "skycamp.py", notes=notes)
    assert findings == [] and f'api_base="http://127.0.0.1:{openai_fake.port}/v1"' in new, new
    assert any(f"port list [{openai_fake.port}, 9]" in n.message and n.line == 2 for n in notes), notes
    scope: dict = {}
    exec(compile(new, "skycamp.py", "exec"), scope)  # noqa: S102 - the migrated program, run as it is
    assert scope["llama"](f"hello {uuid.uuid4()}")[0] and openai_fake.request_count == 1
    assert openai_fake.requests[-1].body["temperature"] == 0.0


def test_a_port_list_held_by_a_module_constant_is_read_from_it():
    # examples/qa/hotpot/multihop_finetune.ipynb: ports = [7140, ...]; dspy.HFClientTGI(..., port=ports, ...)
    from shared.migrate.transform import migrate_source

    source = ("import dspy\nports = [7140, 7141]\n"
              "llama = dspy.HFClientTGI(model='meta-llama/Llama-2-13b-chat-hf', port=ports, url='http://future-hgx-1')\n")
    notes: list = []
    new, _ = migrate_source(source, "multihop.py", notes=notes)
    assert 'api_base="http://future-hgx-1:7140/v1"' in new and "port list [7140, 7141]" in str(notes), new
    assert "ports = [7140, 7141]" in new


def test_hf_client_vllm_with_a_url_list_uses_the_first_url():
    notes: list[str] = []
    arguments = lm_arguments("HFClientVLLM", ['"m"'], {"port": "8000", "url": '["http://a:1", "http://b:2"]'}, notes)
    assert 'api_base="http://a:1/v1"' in arguments and "http://a:1" in notes[0]
    variables = lm_arguments("HFClientVLLM", ["name"], {"port": "port", "url": "url"}, notes)
    assert 'api_base=f"{url}:{port}/v1"' in variables and 'api_key="no-key"' in variables
