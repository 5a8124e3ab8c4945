"""Users' own programs without the queue: program strings, the import gate, building, forward()
inputs, JSON outputs, per-thread copies, versions from code in a real sqlite MLflow store (trusted
and not), MLflow's own DSPy flavor (its pickle is refused), `tidyq register`, and every optimizer
on a three-predictor module."""

import json
import threading

import dspy
import pytest
from typer.testing import CliRunner

from producers.cli import app
from shared import program_files
from shared import user_code as uc
from shared.config import Settings
from shared.errors import BadInput
from shared.optimize import OPTIMIZERS, resolve_metric, run_optimization, to_examples
from shared.program_io import OutputNotJSON, ProgramInputs, prediction_outputs, program_inputs
from shared.program_uri import ImportRef, ProgramRef, parse_program
from shared.user_code import ProgramRefused
from tests.optimize_support import mlflow_template, mlflow_uri  # noqa: F401  (fixtures)


@pytest.mark.parametrize("text,expected", [
    ("models:/qa/3", ProgramRef("qa", version=3)),
    ("models:/qa@live", ProgramRef("qa", alias="live")),
    ("qa", ProgramRef("qa", alias="live")),
    ("pkg.module:Name", ImportRef("pkg.module", "Name")),
    ("pkg:make_program", ImportRef("pkg", "make_program")),
])
def test_every_accepted_program_form(text, expected):
    assert parse_program(text) == expected
    assert parse_program(expected.uri) == expected


@pytest.mark.parametrize("text", ["", "os.path:", ":Name", "pkg.module:a.b", "pkg..m:X", "pkg.class:X", "a b",
                                  "runs:/abc/model", "pkg/mod.py:X", "models:/qa"])
def test_other_program_strings_name_the_accepted_forms(text):
    with pytest.raises(BadInput) as info:
        parse_program(text)
    assert info.value.where == "program"
    assert "models:/" in str(info.value)


def test_the_import_gate_runs_before_any_import(monkeypatch):
    monkeypatch.setenv("TIDYQ_PROGRAM_PACKAGES", " userprogs , other ")
    assert uc.allowed_packages() == ("userprogs", "other")
    imported = []
    monkeypatch.setattr(uc.importlib, "import_module", lambda name: imported.append(name))
    refusal = "'os' is not in TIDYQ_PROGRAM_PACKAGES \\(which lists userprogs, other\\)"
    with pytest.raises(ProgramRefused, match=refusal):
        uc.load_import_path("os.path:join")
    monkeypatch.setenv("TIDYQ_PROGRAM_PACKAGES", "")
    with pytest.raises(ProgramRefused, match="which lists nothing"):
        uc.load_import_path("userprogs.multihop:MultiHop")
    assert imported == []


def test_building_refusals_name_the_problem(user_code):
    cases = {"userprogs.multihop:Nope": "has no attribute 'Nope'",
             "userprogs.odd:NOT_A_MODULE": "is of type int",
             "userprogs.odd:needs_args": "needs arguments",
             "userprogs.odd:returns_string": "returned a str",
             "userprogs.broken:Never": "broken.py:5: ValueError",
             "userprogs.nosuch:X": "package 'userprogs' has no module 'userprogs.nosuch'"}
    for program, message in cases.items():
        with pytest.raises(BadInput, match=message) as info:
            uc.load_import_path(program)
        assert info.value.where == f"program {program}"
    # a producer without the package: the workers check; with it, a missing module is a typo, refused
    settings = Settings(program_packages="userprogs,notinstalled")
    assert uc.load_import_path("notinstalled.rag:RAG", settings, missing_ok=True) is None
    with pytest.raises(BadInput, match="no such module on this worker"):
        uc.load_import_path("notinstalled.rag:RAG", settings)
    with pytest.raises(BadInput, match="package 'userprogs' has no module 'userprogs.nosuch'"):
        uc.load_import_path("userprogs.nosuch:X", missing_ok=True)
    instance = dspy.Predict("a -> b")  # `agent = dspy.ReAct(...)` at module level: a copy of it is built
    built = uc.build(instance, "x")
    assert isinstance(built, dspy.Predict) and built is not instance

    class NeedsK(dspy.Module):
        def __init__(self, k):
            super().__init__()
            self.k = k

    with pytest.raises(BadInput, match="needs arguments"):
        uc.build(NeedsK, "NeedsK")


def test_own_lms_are_dropped_so_the_job_engine_serves_every_call():
    class WithOwnLM(dspy.Module):
        def __init__(self):
            super().__init__()
            self.p = dspy.Predict("q -> a")
            self.p.lm = dspy.LM("openai/somewhere-else")

        def forward(self, q):
            return self.p(q=q)

    assert uc.build(WithOwnLM, "WithOwnLM").p.lm is None


def test_inputs_come_from_forward():
    class M(dspy.Module):
        def forward(self, question, context="", *, k=3):
            return dspy.Prediction(answer=question)

    class Open(dspy.Module):
        def forward(self, question, **extra):
            return dspy.Prediction(answer=question)

    inputs = program_inputs(M())
    assert inputs == ProgramInputs("M", ("question",), ("context", "k"))
    inputs.check({"question": "q", "k": 1}, "item")
    with pytest.raises(BadInput, match="unknown input field 'kk'") as info:
        inputs.check({"question": "q", "kk": 1}, "in.jsonl:3")
    assert info.value.where == "in.jsonl:3: field 'inputs.kk'"
    with pytest.raises(BadInput, match="missing input field 'question'"):
        inputs.check({"context": "c"}, "item")
    program_inputs(Open()).check({"question": "q", "anything": 1}, "item")
    assert program_inputs(dspy.ChainOfThought("a, b -> c")).required == ("a", "b")


def test_outputs_are_json_or_the_item_fails_naming_the_field():
    import datetime

    import pydantic

    class P(pydantic.BaseModel):
        name: str
        when: datetime.date

    pred = dspy.Prediction(items=[1, 2], pairs={"a": (1, 2)}, p=P(name="x", when=datetime.date(2024, 1, 2)),
                           inner=dspy.Prediction(z=1.5), n=None)
    assert prediction_outputs(pred) == {"items": [1, 2], "pairs": {"a": [1, 2]},
                                        "p": {"name": "x", "when": "2024-01-02"}, "inner": {"z": 1.5}, "n": None}
    with pytest.raises(OutputNotJSON, match="output field 'blob' cannot be made JSON"):
        prediction_outputs(dspy.Prediction(ok=1, blob=object()))
    with pytest.raises(OutputNotJSON, match="not a dspy.Prediction"):
        prediction_outputs("text")


def test_one_build_per_process_and_one_copy_per_thread(user_code, monkeypatch):
    from workers import runtime

    builds = []
    real = uc.build
    monkeypatch.setattr(uc, "build", lambda obj, label: builds.append(label) or real(obj, label))
    modules = []

    def take():
        modules.append(runtime.get_module("mock", None, None, "userprogs.multihop:MultiHop"))

    alive = threading.Barrier(4)  # all four threads alive at once: a finished thread's ident can be reused

    def take_in_thread():
        take()
        alive.wait(timeout=30)

    threads = [threading.Thread(target=take_in_thread) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    take()  # the main thread
    take()  # ... again: its cached copy
    assert builds == ["userprogs.multihop:MultiHop"]
    assert len({id(m.module) for m in modules}) == 5 and modules[-1] is modules[-2]
    pred, call = modules[0].predict_with_stats(question="Where is Lima?")
    assert call.calls == 3 and len(pred.passages) == 3
    # a program that cannot be built fails every item the same way, importing it only once
    for _ in range(3):
        with pytest.raises(BadInput, match="broken.py:5"):
            runtime.get_module("mock", None, None, "userprogs.broken:Never")


def test_registry_code_versions_need_trust(user_code, mlflow_uri, redis_url, tmp_path, monkeypatch):
    from shared import programs

    src = tmp_path / "hop.py"
    src.write_text((user_code / "userprogs" / "multihop.py").read_text())
    state = uc.load_file(src, "MultiHop")[0]
    state.answer.demos = [dspy.Example(question="q", notes=["n"], answer="a")]
    (tmp_path / "state.json").write_text(json.dumps(program_files.program_state(state)))
    runner = CliRunner()
    out = runner.invoke(app, ["register", f"{src}:MultiHop", "--name", "hop", "--state", str(tmp_path / "state.json")])
    assert out.exit_code == 0 and out.stdout.strip() == "models:/hop/1", out.output
    with pytest.raises(ProgramRefused, match="models:/hop/1 is Python code stored in the registry"):
        programs.load_version("hop", 1)
    monkeypatch.setenv("TIDYQ_TRUST_REGISTRY_CODE", "true")
    module, spec = programs.load_version_with_spec("hop", 1)
    assert spec.kind == "code" and spec.attr == "MultiHop" and "def search" in spec.source
    assert [p for p, _ in module.named_predictors()] == ["generate_query", "take_notes", "answer"]
    assert module.answer.demos[0]["answer"] == "a"

    # by import path: the path plus JSON state (the package must be installed where it is served)
    out = runner.invoke(app, ["register", "userprogs.multihop:MultiHop", "--name", "hop"])
    assert out.exit_code == 0 and out.stdout.strip() == "models:/hop/2", out.output
    module, spec = programs.load_version_with_spec("hop", 2)
    assert spec == program_files.ProgramSpec("import", import_path="userprogs.multihop:MultiHop")

    for args, message in [(["nofile.py:X"], "no such file"), ([f"{src}:Nope"], "defines no 'Nope'"),
                          ([f"{src}:MultiHop", "--state", str(src)], "not JSON"),
                          (["os.path:join"], "not in TIDYQ_PROGRAM_PACKAGES"), (["bare"], "FILE.py:Name")]:
        out = runner.invoke(app, ["register", *args, "--name", "hop"])
        assert out.exit_code == 2 and message in out.output, out.output
    (tmp_path / "wrong.json").write_text(json.dumps({"other": {}}))
    out = runner.invoke(app, ["register", f"{src}:MultiHop", "--name", "hop", "--state", str(tmp_path / "wrong.json")])
    assert out.exit_code == 2 and "does not fit" in out.output
    from mlflow import MlflowClient

    assert len(MlflowClient(mlflow_uri).search_model_versions("name='hop'")) == 2  # refusals wrote nothing


def test_mlflow_dspy_flavor_pickle_is_refused_and_models_from_code_runs_when_trusted(mlflow_uri, tmp_path,
                                                                                     monkeypatch):
    import mlflow

    from shared.registry import Registry

    mlflow.set_tracking_uri(mlflow_uri)
    with mlflow.start_run():  # MLflow 3.17 pickles even dspy_model="program.py" (the string) into data/model.pkl
        mlflow.dspy.log_model(dspy.Predict("question -> answer"), name="m", registered_model_name="flav")
    with pytest.raises(ProgramRefused, match=r"models:/flav/1 was logged with mlflow.dspy.log_model, which stored "
                                             r"the program as a pickle \(data/model.pkl\)"):
        Registry().load_version("flav", 1)

    code_dir = tmp_path / "from_code"
    code_dir.mkdir()
    code = "import dspy, mlflow\nmlflow.models.set_model(dspy.ChainOfThought('q -> a'))\n"
    (code_dir / "program.py").write_text(code)
    (code_dir / "MLmodel").write_text("flavors:\n  python_function:\n    model_code_path: /somewhere/program.py\n")
    with pytest.raises(ProgramRefused, match="TIDYQ_TRUST_REGISTRY_CODE"):
        program_files.load_program_dir(code_dir)
    monkeypatch.setenv("TIDYQ_TRUST_REGISTRY_CODE", "true")
    assert isinstance(program_files.load_program_dir(code_dir), dspy.ChainOfThought)


SMALL = {"labeled-fewshot": {"k": 2}, "bootstrap-fewshot": {"max_bootstrapped_demos": 1, "max_labeled_demos": 1},
         "bootstrap-random-search": {"num_candidate_programs": 1, "max_labeled_demos": 1},
         "mipro-v2": {"auto": None, "num_candidates": 2, "num_trials": 2, "minibatch": False},
         "copro": {"breadth": 2, "depth": 1}, "simba": {"num_candidates": 2, "max_steps": 1, "bsize": 2},
         "gepa": {"auto": None, "max_metric_calls": 12}}


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_every_optimizer_runs_on_a_three_predictor_module(optimizer, user_code, tmp_path):
    from shared import CacheConfig, UnifiedConfig, UnifiedDSPyWrapper

    w = UnifiedDSPyWrapper(UnifiedConfig(backend="mock", cache=CacheConfig(enabled=False)))
    student = uc.load_import_path("userprogs.multihop:MultiHop")
    rows = [{"inputs": {"question": f"q{i}?"}, "outputs": {"answer": f"a{i}"}} for i in range(4)]
    out = run_optimization(student, trainset=to_examples(rows), valset=to_examples(rows[:3]), optimizer=optimizer,
                           settings=SMALL[optimizer], metric=resolve_metric("exact_match"), lm=w.lm,
                           backend=w.backend_name, model=w.model, time_limit=60)
    assert out.stopped is None and out.program is not None and len(out.program.predictors()) == 3
    # baseline and final: 3 valset items x 3 predictors each; every search but labeled-fewshot's calls the LM
    assert out.lm_calls > 18 or (optimizer == "labeled-fewshot" and out.lm_calls == 18)
    spec = program_files.spec_for(out.program, import_path="userprogs.multihop:MultiHop")
    program_files.save_program(out.program, spec, tmp_path)
    reloaded = program_files.load_program_dir(tmp_path)
    assert program_files.program_state(reloaded) == program_files.program_state(out.program)
    if optimizer in ("labeled-fewshot", "bootstrap-fewshot"):
        assert all(p.demos for p in reloaded.predictors())


def test_more_refusals_name_the_cause(user_code, tmp_path):
    with pytest.raises(BadInput, match="ModuleNotFoundError: No module named 'not_installed_dependency_xyz'"):
        uc.load_import_path("userprogs.needs_dep:Program", missing_ok=True)  # the module exists: not "missing"
    with pytest.raises(BadInput, match="building it failed at .*odd.py:\\d+: RuntimeError: boom while building"):
        uc.load_import_path("userprogs.odd:explodes")
    bad = tmp_path / "bad.py"
    bad.write_text("import dspy\ndef broken(:\n")
    with pytest.raises(BadInput, match="bad.py:2: SyntaxError"):
        uc.load_file(bad, "broken")
    with pytest.raises(BadInput, match="no such file"):
        uc.load_file(tmp_path / "none.py", "X")


@pytest.mark.parametrize("data,where", [
    ([], "spec.json"), ({"kind": "pickle"}, "kind"), ({"kind": "import", "import_path": 3}, "import_path"),
    ({"kind": "code", "object": "not valid"}, "object"), ({"kind": "code", "object": "X"}, "program.py"),
    ({"kind": "predict", "signature": "no arrow"}, "signature")])
def test_bad_spec_files_are_refused_naming_the_field(data, where, tmp_path):
    with pytest.raises(BadInput) as info:
        program_files.ProgramSpec.from_json(data, directory=tmp_path)
    assert where in info.value.where


def test_bad_files_of_a_version_name_the_file(tmp_path, monkeypatch):
    (tmp_path / "MLmodel").write_text("flavors: [unclosed\n")
    with pytest.raises(BadInput, match="not YAML"):
        program_files.load_program_dir(tmp_path)
    (tmp_path / "MLmodel").write_text("flavors:\n  python_function:\n    model_code_path: program.py\n")
    (tmp_path / "program.py").write_text("x = 1\n")
    monkeypatch.setenv("TIDYQ_TRUST_REGISTRY_CODE", "true")
    with pytest.raises(BadInput, match="set no dspy.Module"):
        program_files.load_program_dir(tmp_path)
    (tmp_path / "program.py").write_text("raise ValueError('in the flavor code')\n")
    with pytest.raises(BadInput, match="ValueError: in the flavor code"):
        program_files.load_program_dir(tmp_path)
    spec_dir = tmp_path / "v"
    program_files.save_program(dspy.ChainOfThought("q -> a"), program_files.spec_for(dspy.ChainOfThought("q -> a")),
                               spec_dir)
    assert isinstance(program_files.load_program_dir(spec_dir), dspy.ChainOfThought)
    (spec_dir / "program.json").write_bytes(b"\xff\xfe")
    with pytest.raises(BadInput, match="not JSON"):
        program_files.load_program_dir(spec_dir)
    with pytest.raises(BadInput, match="unknown program kind"):
        program_files.spec_for("q -> a", kind="code")


def test_optimize_job_on_users_modules_keeps_the_code_reference(user_code, mlflow_uri, redis_url, tmp_path,
                                                                monkeypatch):
    """The optimize task in-process on the mock: from an import path, then from a registered code version."""
    from shared import programs
    from shared.jobs import JobKind, JobSpec
    from workers.optimize_task import run_optimize_job

    rows = [{"inputs": {"question": f"q{i}?"}, "outputs": {"answer": f"a{i}"}} for i in range(4)]

    def job(program, name):
        spec = JobSpec(id=f"job-{name}", kind=JobKind.OPTIMIZE, program=program, backend="mock", total=1,
                       chunk_size=1, ttl_seconds=60, created_at=0.0)
        request = {"name": name, "program": program, "trainset": rows, "optimizer": "labeled-fewshot",
                   "settings": {"k": 2}, "metric": "exact_match"}
        return run_optimize_job({"job": spec.model_dump(mode="json"), "request": request}, lambda p: None,
                                lambda: False)

    result = job("userprogs.multihop:MultiHop", "hop")
    assert result["model_uri"] == "models:/hop/1" and result["demos"] == 6  # 2 demos x 3 predictors
    module, spec = programs.load_version_with_spec("hop", 1)
    assert spec.kind == "import" and all(len(p.demos) == 2 for p in module.predictors())

    src = tmp_path / "hop.py"
    src.write_text((user_code / "userprogs" / "multihop.py").read_text())
    assert CliRunner().invoke(app, ["register", f"{src}:MultiHop", "--name", "hopsrc"]).exit_code == 0
    with pytest.raises(ProgramRefused):
        job("models:/hopsrc/1", "hopsrc")
    monkeypatch.setenv("TIDYQ_TRUST_REGISTRY_CODE", "true")
    assert job("models:/hopsrc/1", "hopsrc")["model_uri"] == "models:/hopsrc/2"
    module, spec = programs.load_version_with_spec("hopsrc", 2)
    assert spec.kind == "code" and spec.source == src.read_text()
    assert all(len(p.demos) == 2 for p in module.predictors())


def test_optimize_submit_checks_rows_against_forward(user_code, mlflow_uri, redis_url, tmp_path):
    import redis

    train = tmp_path / "train.jsonl"
    train.write_text(json.dumps({"inputs": {"question": "q"}, "outputs": {"answer": "a"}}) + "\n"
                     + json.dumps({"inputs": {"query": "q"}, "outputs": {"answer": "a"}}) + "\n")
    runner = CliRunner()
    base = ["optimize", "--trainset", str(train), "--name", "hop", "--backend", "mock"]
    out = runner.invoke(app, [*base, "--program", "userprogs.multihop:MultiHop"])
    assert out.exit_code == 2 and "train.jsonl:2" in out.output and "inputs.query" in out.output, out.output
    out = runner.invoke(app, [*base, "--program", "os.path:join"])
    assert out.exit_code == 2 and "TIDYQ_PROGRAM_PACKAGES" in out.output
    assert redis.Redis.from_url(redis_url).keys("tidyq:job:*") == []
    # a registered code version this producer does not trust: the rows go to the worker unchecked
    src = tmp_path / "hop.py"
    src.write_text((user_code / "userprogs" / "multihop.py").read_text())
    assert runner.invoke(app, ["register", f"{src}:MultiHop", "--name", "hop"]).exit_code == 0
    out = runner.invoke(app, [*base, "--program", "models:/hop/1"])
    assert out.exit_code == 0 and len(out.stdout.strip()) == 32, out.output


def test_validation_regenerates_a_whole_multi_predictor_module(user_code):
    from shared import CacheConfig, UnifiedConfig, UnifiedDSPyWrapper, ValidationConfig, ValidationFailed

    def wrapper(**validation):
        return UnifiedDSPyWrapper(UnifiedConfig(backend="mock", cache=CacheConfig(enabled=False),
                                                validation=ValidationConfig(fields=("answer",), **validation)))

    program = uc.load_import_path("userprogs.multihop:MultiHop")
    with pytest.raises(ValidationFailed, match="after 2 attempt\\(s\\): missing required keyword\\(s\\): zzz"):
        wrapper(required_keywords=("zzz",), max_attempts=2).create_module(program).predict(question="q")
    pred, call = wrapper(min_length=1).create_module(program).predict_with_stats(question="q")
    assert call.calls == 3 and call.validation_failures == 0 and pred.answer


def test_lm_calls_from_threads_the_program_starts_count_for_its_item(user_code):
    from workers import runtime

    module = runtime.get_module("mock", None, None, "userprogs.fanout:Fanout")
    pred, call = module.predict_with_stats(question="Which is best?")
    assert call.calls == 4 and call.input_tokens > 0  # three drafts on dspy.Parallel threads, then the pick
    assert pred.answer


def test_optimize_rows_follow_the_program_kind():
    from shared.program_io import example_fields

    cot = dspy.ChainOfThought("question, context -> answer")
    assert example_fields(cot, program_files.spec_for(cot)) == (["question", "context"], ["answer"])

    class Hop(dspy.Module):
        def forward(self, claim, k=2):
            return dspy.Prediction(notes=[claim] * k)

    inputs, outputs = example_fields(Hop(), program_files.ProgramSpec("import", import_path="p.m:Hop"))
    assert inputs == ProgramInputs("p.m:Hop", ("claim",), ("k",)) and outputs is None
    assert program_inputs(dspy.Module()).open  # nothing to inspect: the program checks its own inputs


def test_a_client_thread_may_submit_a_module_that_calls_dspy_configure_at_import(monkeypatch, tmp_path):
    """A module calling dspy.configure at import, checked from a thread other than the one that
    configured DSPy (a threaded client): the check leaves it to the workers instead of refusing a
    good program; the CLI (one thread) and the workers still import and check it."""
    pkg = tmp_path / "confpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "news.py").write_text("import dspy\ndspy.configure(adapter=dspy.JSONAdapter())\n"
                                 "predict = dspy.Predict('field -> news')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    settings = Settings(program_packages="confpkg")
    import sys

    dspy_settings = sys.modules["dspy.dsp.utils.settings"]  # the module (dspy.dsp.utils.settings is the object)
    monkeypatch.setattr(dspy_settings, "config_owner_thread_id", -1)  # another thread configured DSPy
    outcome: list = []
    worker = threading.Thread(target=lambda: outcome.append(uc.load_import_path("confpkg.news:predict", settings,
                                                                                 missing_ok=True)))
    worker.start()
    worker.join()
    assert outcome == [None]
    with pytest.raises(BadInput, match=r"news.py:2: RuntimeError: dspy.settings can only be changed"):
        uc.load_import_path("confpkg.news:predict", settings)  # a worker would say so, naming the line


def test_registering_a_file_that_imports_its_neighbours_says_only_the_file_is_stored(tmp_path):
    """`python prog.py` finds helpers.py next to it; `tidyq register prog.py:R` stores prog.py alone."""
    (tmp_path / "helpers.py").write_text("def search(q):\n    return [q]\n")
    (tmp_path / "prog.py").write_text("import dspy\nfrom helpers import search\nR = dspy.Predict('a -> b')\n")
    (tmp_path / "rel.py").write_text("import dspy\nfrom .helpers import search\nR = dspy.Predict('a -> b')\n")
    (tmp_path / "dep.py").write_text("import dspy\nimport faiss_not_here\nR = dspy.Predict('a -> b')\n")
    hint = "a program registered from a file is that one file: the modules next to it are not stored"
    for name, error in (("prog.py", "No module named 'helpers'"), ("rel.py", "attempted relative import")):
        with pytest.raises(BadInput, match=f"{name}:2: .*{error}") as info:
            uc.load_file(tmp_path / name, "R")
        assert hint in str(info.value)
    with pytest.raises(BadInput, match="No module named 'faiss_not_here'") as info:
        uc.load_file(tmp_path / "dep.py", "R")
    assert hint not in str(info.value)  # a missing library is not a neighbour


def test_a_registered_program_that_does_not_exist_is_refused_at_submit(user_code, mlflow_uri, redis_url, tmp_path,
                                                                       monkeypatch):
    import redis

    src = tmp_path / "hop.py"
    src.write_text((user_code / "userprogs" / "multihop.py").read_text())
    runner = CliRunner()
    assert runner.invoke(app, ["register", f"{src}:MultiHop", "--name", "hop"]).exit_code == 0
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"custom_id": "1", "inputs": {"question": "q"}}) + "\n")
    base = ["batch", str(rows), "--backend", "mock"]
    for program, why in (("models:/hop/7", "has no version 7"), ("models:/hop@champion", "has no alias 'champion'"),
                         ("models:/nosuch/1", "no version 1"), ("nosuch", "no registered model 'nosuch'")):
        out = runner.invoke(app, [*base, "--program", program])
        assert out.exit_code == 2 and why in out.output and "Traceback" not in out.output, (program, out.output)
    assert redis.Redis.from_url(redis_url).keys("tidyq:job:*") == []  # nothing half-enqueued
    out = runner.invoke(app, [*base, "--program", "models:/hop/1"])
    assert out.exit_code == 0 and len(out.stdout.strip()) == 32, out.output
    # this producer cannot ask MLflow: accepted, with the cause
    monkeypatch.setenv("TIDYQ_MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    from shared import registry

    registry.reset_registries()
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    out = runner.invoke(app, [*base, "--program", "models:/hop/1"])
    assert out.exit_code == 0 and "could not check program models:/hop/1 here" in out.output, out.output
