"""Program strings a job may name, parsed: registered versions and import paths.

    models:/NAME/VERSION | models:/NAME@ALIAS | NAME (= models:/NAME@live) | pkg.module:Name

Why a module of its own: the producer, the registry and the worker all parse these strings, and
none of them should import the others to do it (this file depends on nothing but BadInput).
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass

from shared.errors import BadInput

LIVE_ALIAS = "live"
CANDIDATE_ALIAS = "candidate"
ACCEPTED_FORMS = "models:/NAME/VERSION, models:/NAME@alias, NAME (its live version) or pkg.module:Name"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


@dataclass(frozen=True)
class ProgramRef:
    """A registered program: exactly one of ``version`` or ``alias`` is set."""

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


@dataclass(frozen=True)
class ImportRef:
    """``pkg.module:Name``: a dspy.Module subclass, a zero-argument factory or a module instance,
    importable on the workers."""

    module: str
    attr: str

    @property
    def uri(self) -> str:
        return f"{self.module}:{self.attr}"

    @property
    def package(self) -> str:
        """The top-level package, which TIDYQ_PROGRAM_PACKAGES must list."""
        return self.module.split(".", 1)[0]


def check_name(name: str, where: str = "program") -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise BadInput(f"bad model name {name!r}: letters, digits, '_', '.', '-' (max 128), starting with a "
                       "letter or digit", where=where)
    return name


def is_import_path(text: object) -> bool:
    """True for strings of the ``pkg.module:Name`` shape (not necessarily valid ones)."""
    return isinstance(text, str) and ":" in text and not text.strip().startswith("models:/")


def parse_import_path(text: str, where: str = "program") -> ImportRef:
    module, sep, attr = text.strip().partition(":")
    valid = sep and _DOTTED.match(module) and _DOTTED.match(attr) and "." not in attr
    if not valid or any(keyword.iskeyword(part) for part in (*module.split("."), attr)):
        raise BadInput(f"bad import path {text!r}: expected pkg.module:Name (a dspy.Module subclass or a "
                       f"zero-argument function returning one); accepted forms: {ACCEPTED_FORMS}", where=where)
    return ImportRef(module, attr)


def parse_program_uri(text: str, where: str = "program") -> ProgramRef:
    """``models:/NAME/VERSION`` | ``models:/NAME@ALIAS`` | ``NAME`` -> ProgramRef; BadInput otherwise."""
    if not isinstance(text, str) or not text.strip():
        raise BadInput(f"empty program; expected {ACCEPTED_FORMS}", where=where)
    text = text.strip()
    if not text.startswith("models:/"):
        if "/" in text or ":" in text or "@" in text or not _NAME.match(text):
            raise BadInput(f"bad program {text!r}: expected {ACCEPTED_FORMS}", where=where)
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


def parse_program(text: str, where: str = "program") -> ProgramRef | ImportRef:
    """Any program string a job may carry; BadInput naming the accepted forms otherwise."""
    if is_import_path(text):
        return parse_import_path(text, where)
    return parse_program_uri(text, where)
