"""A program version as files: spec.json (what to rebuild), program.json (DSPy JSON state) and,
for programs registered from code, program.py (their source).

Why JSON and a spec: ``module.save("x.json")`` keeps demos, instructions and field prefixes but not
the program's class, and ``save_program=True`` / ``.pkl`` pickle code that runs on load. So the
spec says how to rebuild the program, then ``load_state`` applies the JSON state:
- ``predict`` / ``chain_of_thought``: a signature string;
- ``import``: ``pkg.module:Name`` installed on the workers (TIDYQ_PROGRAM_PACKAGES gates it);
- ``code``: program.py from the registry plus the name to build (TIDYQ_TRUST_REGISTRY_CODE gates it).
A directory MLflow's own DSPy flavor wrote is read without unpickling: its models-from-code file
is run as ``code`` (same trust setting); its pickle forms are refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.errors import BadInput
from shared.user_code import ProgramRefused, check_trusted, drop_own_lms, exec_source, load_import_path

SPEC_FILE = "spec.json"
STATE_FILE = "program.json"
CODE_FILE = "program.py"
SPEC_FORMAT = 1
CODE_SPEC_FORMAT = 2  # kinds 'import' and 'code'
KINDS = ("predict", "chain_of_thought", "import", "code")
SIGNATURE_KINDS = ("predict", "chain_of_thought")


@dataclass(frozen=True)
class ProgramSpec:
    """What to rebuild before applying a saved state (see the module docstring for the kinds)."""

    kind: str
    signature: str | None = None
    import_path: str | None = None  # kind 'import'
    attr: str | None = None  # kind 'code': the class or factory program.py defines
    source: str | None = field(default=None, compare=False, repr=False)  # kind 'code': program.py

    def to_json(self) -> dict[str, Any]:
        import dspy

        data: dict[str, Any] = {"format": SPEC_FORMAT if self.kind in SIGNATURE_KINDS else CODE_SPEC_FORMAT,
                                "kind": self.kind, "dspy_version": dspy.__version__}
        if self.kind in SIGNATURE_KINDS:
            data["signature"] = self.signature
        elif self.kind == "import":
            data["import_path"] = self.import_path
        else:
            data.update(code_file=CODE_FILE, object=self.attr)
        return data

    @classmethod
    def from_json(cls, data: Any, where: str = SPEC_FILE, directory: Path | None = None) -> ProgramSpec:
        if not isinstance(data, dict):
            raise BadInput("program spec must be a JSON object", where=where)
        kind = data.get("kind")
        if kind not in KINDS:
            raise BadInput(f"unknown program kind {kind!r}; expected one of {', '.join(KINDS)}", where=f"{where}: kind")
        if kind == "import":
            path = data.get("import_path")
            if not isinstance(path, str) or ":" not in path:
                raise BadInput(f"bad import path {path!r}", where=f"{where}: import_path")
            return cls(kind=kind, import_path=path)
        if kind == "code":
            attr, code_file = data.get("object"), data.get("code_file") or CODE_FILE
            if not isinstance(attr, str) or not attr.isidentifier():
                raise BadInput(f"bad object name {attr!r}", where=f"{where}: object")
            code = (directory or Path(".")) / Path(str(code_file)).name
            if not code.is_file():
                raise BadInput("missing program source of a registered program", where=str(code))
            return cls(kind=kind, attr=attr, source=code.read_text())
        signature = data.get("signature")
        if not isinstance(signature, str) or "->" not in signature:
            raise BadInput(f"bad signature {signature!r}", where=f"{where}: signature")
        return cls(kind=kind, signature=signature)

    def build(self, label: str = "program") -> Any:
        """A fresh, uncompiled program of this spec (code kinds pass their gates first)."""
        import dspy

        if self.kind == "import":
            assert self.import_path is not None
            return load_import_path(self.import_path)
        if self.kind == "code":
            assert self.source is not None and self.attr is not None
            return exec_source(self.source, self.attr, label)
        try:
            if self.kind == "chain_of_thought":
                return dspy.ChainOfThought(self.signature)
            return dspy.Predict(self.signature)
        except Exception as exc:
            raise BadInput(f"bad signature {self.signature!r}: {exc}", where="signature") from None


def signature_text(signature: Any) -> str:
    """The 'a, b -> c' string of a dspy.Signature (field names only; instructions live in the state)."""
    return f"{', '.join(signature.input_fields)} -> {', '.join(signature.output_fields)}"


def spec_for(program: Any, kind: str | None = None, *, import_path: str | None = None) -> ProgramSpec:
    """A spec for a signature string, a Predict/ChainOfThought module, or any module with its import path."""
    import dspy

    if isinstance(program, str):
        spec = ProgramSpec(kind=kind or "predict", signature=program)
        if spec.kind not in SIGNATURE_KINDS:
            raise BadInput(f"unknown program kind {spec.kind!r}; expected one of {', '.join(SIGNATURE_KINDS)}",
                           where="kind")
        spec.build()  # validates the signature
        return spec
    if import_path is not None:
        return ProgramSpec("import", import_path=import_path)
    if isinstance(program, dspy.ChainOfThought):
        return ProgramSpec("chain_of_thought", _cot_signature(program))
    if isinstance(program, dspy.Predict):
        return ProgramSpec("predict", signature_text(program.signature))
    raise BadInput(f"cannot store a {type(program).__name__} as JSON state without its code: name it by import path "
                   "(pkg.module:Name) or register its source (tidyq register FILE.py:Name --name NAME)",
                   where="program")


def _cot_signature(program: Any) -> str:
    sig = program.predict.signature
    outputs = [name for name in sig.output_fields if name != "reasoning"]
    return f"{', '.join(sig.input_fields)} -> {', '.join(outputs)}"


def program_state(module: Any) -> dict:
    """The module's JSON state without per-predictor LM settings (the serving worker's LM applies)."""
    state = module.dump_state(json_mode=True)
    for value in state.values() if isinstance(state, dict) else ():
        if isinstance(value, dict) and "lm" in value:
            value["lm"] = None
    if isinstance(state, dict) and "lm" in state:
        state["lm"] = None
    json.dumps(state)  # must be plain JSON; fails loudly otherwise
    return state


def save_program(module: Any, spec: ProgramSpec, directory: str | Path) -> Path:
    """Write spec.json, program.json (and program.py for code) into ``directory`` (created)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / SPEC_FILE).write_text(json.dumps(spec.to_json(), indent=1))
    (directory / STATE_FILE).write_text(json.dumps(program_state(module), ensure_ascii=False, indent=1))
    if spec.kind == "code":
        (directory / CODE_FILE).write_text(spec.source or "")
    return directory


def apply_state(module: Any, state: Any, where: str) -> Any:
    try:
        module.load_state(state)
    except KeyError as exc:  # DSPy reads state[name] for each of the program's predictors
        given = ", ".join(str(k) for k in state if k != "metadata") if isinstance(state, dict) else "nothing"
        wanted = ", ".join(name for name, _ in module.named_parameters())
        raise BadInput(f"program state does not fit the program {type(module).__name__}: it has no entry for its "
                       f"predictor {exc.args[0]!r} (the program's predictors: {wanted}; the state has: "
                       f"{given or 'none'})", where=where) from None
    except Exception as exc:
        raise BadInput(f"program state does not fit the program {type(module).__name__}: {type(exc).__name__}: {exc}",
                       where=where) from None
    return drop_own_lms(module)


def load_program_dir(directory: str | Path, label: str = "registry program") -> Any:
    """Rebuild the program from its files and apply program.json (plain JSON, never pickle)."""
    return load_program_dir_with_spec(directory, label)[0]


def load_program_dir_with_spec(directory: str | Path, label: str = "registry program") -> tuple[Any, ProgramSpec]:
    directory = Path(directory)
    if not (directory / SPEC_FILE).exists() and (directory / "MLmodel").exists():
        return load_mlflow_flavor_dir(directory, label)
    spec = ProgramSpec.from_json(_read_json(directory / SPEC_FILE), where=str(directory / SPEC_FILE),
                                 directory=directory)
    state = _read_json(directory / STATE_FILE)
    return apply_state(spec.build(label), state, str(directory / STATE_FILE)), spec


def load_mlflow_flavor_dir(directory: Path, label: str) -> tuple[Any, ProgramSpec]:
    """A model MLflow's DSPy flavor logged: its models-from-code file runs (trusted registry code
    only); its pickle forms (data/model.pkl, save_program directories) are refused."""
    import yaml

    try:
        mlmodel = yaml.safe_load((directory / "MLmodel").read_text()) or {}
    except yaml.YAMLError as exc:
        raise BadInput(f"not YAML: {exc}", where=str(directory / "MLmodel")) from None
    flavors = mlmodel.get("flavors") or {}
    code_path = next((conf.get("model_code_path") for conf in flavors.values()
                      if isinstance(conf, dict) and conf.get("model_code_path")), None)
    if code_path:
        code = directory / Path(str(code_path)).name
        check_trusted(label)
        return _models_from_code(code, label), ProgramSpec("code", attr=None, source=code.read_text())
    dspy_conf = flavors.get("dspy") or {}
    stored = dspy_conf.get("model_path") or "data/model.pkl"
    raise ProgramRefused(f"{label} was logged with mlflow.dspy.log_model, which stored the program as a pickle "
                         f"({stored}); unpickling runs code, so tidyq never loads it. Register the program's source "
                         "and JSON state instead: tidyq register FILE.py:Name --name NAME [--state state.json]")


def _models_from_code(code: Path, label: str) -> Any:
    """Run a models-from-code file; the program is what it passed to mlflow.models.set_model."""
    import dspy
    import mlflow.models.model as mlflow_model

    previous = getattr(mlflow_model, "__mlflow_model__", None)
    mlflow_model.__mlflow_model__ = None
    try:
        namespace: dict[str, Any] = {"__name__": f"tidyq_models_from_code_{abs(hash(str(code)))}"}
        try:
            exec(compile(code.read_text(), str(code), "exec"), namespace)  # noqa: S102 - trusted (checked by caller)
        except Exception as exc:
            raise BadInput(f"running it failed: {type(exc).__name__}: {exc}", where=f"{label} {code.name}") from None
        program = mlflow_model.__mlflow_model__
    finally:
        mlflow_model.__mlflow_model__ = previous
    if not isinstance(program, dspy.Module):
        raise BadInput(f"{code.name} set no dspy.Module with mlflow.models.set_model", where=label)
    return drop_own_lms(program)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise BadInput("missing file of a registered program", where=str(path)) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadInput(f"not JSON: {exc}", where=str(path)) from None


def demos_of(module: Any) -> list[dict]:
    """Every demo of every predictor (what a served prompt must contain)."""
    return [dict(d) for p in module.predictors() for d in p.demos]
