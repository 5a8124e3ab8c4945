"""Registered DSPy programs as data: a spec, a JSON state, a ``models:/`` URI, a bounded cache.

Why JSON and a spec: ``module.save("x.json")`` keeps demos, instructions and field prefixes but not
the program's class, and ``save_program=True`` / ``.pkl`` would pickle code that runs on load. So a
version is two small JSON files: ``spec.json`` (which program to rebuild: kind + signature string)
and ``program.json`` (the state ``load_state`` applies to the rebuilt program). Loading reads both
with ``json`` and never unpickles anything. Only program kinds we can rebuild from a spec are
accepted (Predict, ChainOfThought); a custom module class would need its code.

URIs: ``models:/NAME/VERSION`` (one version), ``models:/NAME@ALIAS`` and the bare ``NAME`` (= the
``live`` alias: what a rollout splits between live and candidate).
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.errors import BadInput

SPEC_FILE = "spec.json"
STATE_FILE = "program.json"
SPEC_FORMAT = 1
KINDS = ("predict", "chain_of_thought")
LIVE_ALIAS = "live"
CANDIDATE_ALIAS = "candidate"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")


# --- URIs ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ProgramRef:
    """A parsed program URI: exactly one of ``version`` or ``alias`` is set."""

    name: str
    version: int | None = None
    alias: str | None = None

    @property
    def uri(self) -> str:
        if self.version is not None:
            return f"models:/{self.name}/{self.version}"
        return f"models:/{self.name}@{self.alias}"

    @property
    def follows_rollout(self) -> bool:
        """True when items of this reference are split between live and candidate."""
        return self.alias == LIVE_ALIAS


def check_name(name: str, where: str = "program") -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise BadInput(f"bad model name {name!r}: letters, digits, '_', '.', '-' (max 128), starting with a "
                       "letter or digit", where=where)
    return name


def parse_program_uri(text: str, where: str = "program") -> ProgramRef:
    """``models:/NAME/VERSION`` | ``models:/NAME@ALIAS`` | ``NAME`` -> ProgramRef; BadInput otherwise."""
    if not isinstance(text, str) or not text.strip():
        raise BadInput("empty program URI; expected models:/NAME/VERSION, models:/NAME@ALIAS or NAME", where=where)
    text = text.strip()
    if not text.startswith("models:/"):
        if "/" in text or ":" in text or "@" in text:
            raise BadInput(f"bad program URI {text!r}: expected models:/NAME/VERSION, models:/NAME@ALIAS or NAME",
                           where=where)
        return ProgramRef(check_name(text, where), alias=LIVE_ALIAS)
    body = text[len("models:/"):]
    if "@" in body:
        name, _, alias = body.partition("@")
        if not _ALIAS.match(alias):
            raise BadInput(f"bad alias {alias!r} in {text!r}", where=where)
        return ProgramRef(check_name(name, where), alias=alias)
    name, sep, version = body.partition("/")
    if not sep:
        raise BadInput(f"bad program URI {text!r}: give a version (models:/{name}/1) or an alias "
                       f"(models:/{name}@live)", where=where)
    if not version.isdigit() or int(version) < 1:
        raise BadInput(f"bad version {version!r} in {text!r}: a positive integer", where=where)
    return ProgramRef(check_name(name, where), version=int(version))


# --- specs and JSON state ----------------------------------------------------------------------

@dataclass(frozen=True)
class ProgramSpec:
    """What to rebuild before applying a saved state: the program kind and its signature string."""

    kind: str
    signature: str

    def to_json(self) -> dict[str, Any]:
        import dspy

        return {"format": SPEC_FORMAT, "kind": self.kind, "signature": self.signature, "dspy_version": dspy.__version__}

    @classmethod
    def from_json(cls, data: Any, where: str = SPEC_FILE) -> ProgramSpec:
        if not isinstance(data, dict):
            raise BadInput("program spec must be a JSON object", where=where)
        kind, signature = data.get("kind"), data.get("signature")
        if kind not in KINDS:
            raise BadInput(f"unknown program kind {kind!r}; expected one of {', '.join(KINDS)}", where=f"{where}: kind")
        if not isinstance(signature, str) or "->" not in signature:
            raise BadInput(f"bad signature {signature!r}", where=f"{where}: signature")
        return cls(kind=kind, signature=signature)

    def build(self):
        """A fresh, uncompiled program of this spec."""
        import dspy

        try:
            if self.kind == "chain_of_thought":
                return dspy.ChainOfThought(self.signature)
            return dspy.Predict(self.signature)
        except Exception as exc:
            raise BadInput(f"bad signature {self.signature!r}: {exc}", where="signature") from None


def signature_text(signature) -> str:
    """The 'a, b -> c' string of a dspy.Signature (field names only; instructions live in the state)."""
    return f"{', '.join(signature.input_fields)} -> {', '.join(signature.output_fields)}"


def spec_for(program: Any, kind: str | None = None) -> ProgramSpec:
    """A spec for a signature string or a Predict/ChainOfThought module."""
    import dspy

    if isinstance(program, str):
        spec = ProgramSpec(kind=kind or "predict", signature=program)
        if spec.kind not in KINDS:
            raise BadInput(f"unknown program kind {spec.kind!r}; expected one of {', '.join(KINDS)}", where="kind")
        spec.build()  # validates the signature
        return spec
    if isinstance(program, dspy.ChainOfThought):
        return ProgramSpec("chain_of_thought", _cot_signature(program))
    if isinstance(program, dspy.Predict):
        return ProgramSpec("predict", signature_text(program.signature))
    raise BadInput(f"cannot store a {type(program).__name__} as JSON state: only Predict and ChainOfThought programs "
                   "can be rebuilt without their code", where="program")


def _cot_signature(program) -> str:
    sig = program.predict.signature
    outputs = [name for name in sig.output_fields if name != "reasoning"]
    return f"{', '.join(sig.input_fields)} -> {', '.join(outputs)}"


def program_state(module) -> dict:
    """The module's JSON state without per-predictor LM settings (the serving worker's LM applies)."""
    state = module.dump_state(json_mode=True)
    for value in state.values() if isinstance(state, dict) else ():
        if isinstance(value, dict) and "lm" in value:
            value["lm"] = None
    if isinstance(state, dict) and "lm" in state:
        state["lm"] = None
    json.dumps(state)  # must be plain JSON; fails loudly otherwise
    return state


def save_program(module, spec: ProgramSpec, directory: str | Path) -> Path:
    """Write spec.json and program.json into ``directory`` (created)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / SPEC_FILE).write_text(json.dumps(spec.to_json(), indent=1))
    (directory / STATE_FILE).write_text(json.dumps(program_state(module), ensure_ascii=False, indent=1))
    return directory


def load_program_dir(directory: str | Path):
    """Rebuild the program from spec.json and apply program.json (plain JSON, never pickle)."""
    directory = Path(directory)
    spec = ProgramSpec.from_json(_read_json(directory / SPEC_FILE), where=str(directory / SPEC_FILE))
    state = _read_json(directory / STATE_FILE)
    module = spec.build()
    try:
        module.load_state(state)
    except Exception as exc:
        raise BadInput(f"program state does not fit its spec ({spec.kind} {spec.signature!r}): {exc}",
                       where=str(directory / STATE_FILE)) from None
    return module


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise BadInput("missing file of a registered program", where=str(path)) from None
    except ValueError as exc:
        raise BadInput(f"not JSON: {exc}", where=str(path)) from None


def demos_of(module) -> list[dict]:
    """Every demo of every predictor (what a served prompt must contain)."""
    return [dict(d) for p in module.predictors() for d in p.demos]


# --- bounded per-process cache of loaded versions ----------------------------------------------

class VersionCache:
    """LRU of loaded program versions keyed (name, version); one load per key even when many
    threads ask at once. A version's content never changes, so entries never go stale."""

    def __init__(self, maxsize: int):
        self.maxsize = max(1, maxsize)
        self._items: OrderedDict[tuple[str, int], Any] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[tuple[str, int], threading.Lock] = {}
        self.loads = 0

    def get(self, key: tuple[str, int], loader: Callable[[], Any]):
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            gate = self._loading.setdefault(key, threading.Lock())
        with gate:
            with self._lock:
                if key in self._items:
                    return self._items[key]
            value = loader()
            with self._lock:
                self.loads += 1
                self._items[key] = value
                self._items.move_to_end(key)
                while len(self._items) > self.maxsize:
                    self._items.popitem(last=False)
                self._loading.pop(key, None)
            return value

    def __len__(self) -> int:
        return len(self._items)

    def keys(self) -> list[tuple[str, int]]:
        with self._lock:
            return list(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


_cache: VersionCache | None = None
_cache_lock = threading.Lock()


def version_cache() -> VersionCache:
    global _cache
    with _cache_lock:
        if _cache is None:
            from shared.config import get_settings

            _cache = VersionCache(get_settings().program_cache_size)
        return _cache


def reset_cache() -> None:
    """Forget loaded versions (a forked worker process starts empty)."""
    global _cache
    with _cache_lock:
        _cache = None


# --- what the queue calls -----------------------------------------------------------------------

@dataclass(frozen=True)
class ResolvedProgram:
    """The concrete version an item runs: ``uri`` is always models:/NAME/VERSION. ``role`` is
    'live' or 'candidate' for rollout-routed items, else None."""

    name: str
    version: int
    role: str | None = None

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def resolve_program(uri: str, item_id: str | None = None, *, registry=None) -> ResolvedProgram:
    """Which version serves this item. ``models:/NAME@live`` and ``NAME`` follow the rollout
    (split by a hash of ``item_id``); other aliases resolve through the registry; versions as is."""
    ref = parse_program_uri(uri)
    if ref.version is not None:
        return ResolvedProgram(ref.name, ref.version)
    from shared.registry import get_registry

    reg = registry or get_registry()
    if ref.follows_rollout:
        from shared.rollout import choose

        state = reg.rollout_state(ref.name)
        version, role = choose(state, ref.name, item_id or "")
        return ResolvedProgram(ref.name, version, role)
    assert ref.alias is not None  # a parsed URI has a version or an alias
    return ResolvedProgram(ref.name, reg.alias_version(ref.name, ref.alias))


def load_version(name: str, version: int, *, registry=None):
    """The dspy.Module of one registered version, loaded once per process (bounded LRU)."""
    def loader():
        from shared.registry import get_registry

        return (registry or get_registry()).load_version(name, version)

    return version_cache().get((name, version), loader)


def load_program(uri: str, item_id: str | None = None, *, registry=None):
    """A dspy.Module for a program URI (workers.runtime calls this). Without an item id, an
    alias URI resolves to the live version (use :func:`resolve_program` per item for rollout)."""
    resolved = resolve_program(uri, item_id, registry=registry)
    return load_version(resolved.name, resolved.version, registry=registry)
