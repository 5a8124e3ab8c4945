"""Running migrated DSPy programs as programs and saying how each one ended.

Each file runs as ``python FILE`` in its own temporary directory, offline: Hugging Face's offline
switches are on, every OpenAI client (``OPENAI_API_BASE`` / ``OPENAI_BASE_URL``, litellm's and the
openai package's) goes to the loopback OpenAI stand-in, and a ``sitecustomize`` configures DSPy with
``dspy.LM("openai/gpt-4o-mini")`` on it before the program starts. The ``sitecustomize`` also points
every OpenAI-compatible ``dspy.LM`` the program builds (``openai/``, ``hosted_vllm/``, no provider)
and every ``dspy.ColBERTv2`` at the stand-ins, after checking that the address the program (or the
migration) gave is a URL, and prints what it replaced. Notebook exports get IPython's ``display``
(printing). Two tiny stand-ins for things that are not here: a ``creds.json`` with a fake key (knn
reads its OpenAI key from it) and a ``datasets`` module whose ``load_dataset`` serves a few synthetic
rows of hotpot_qa and gsm8k (DSPy's HotPotQA and GSM8K loaders read them) and refuses any other data
set as the offline hub would. A few seconds before the
timeout the ``sitecustomize`` dumps every thread's stack, so a program that is still working is
shown where it was.

The outcome is read from stderr's last exception:

- ``ran``: exit 0;
- ``data``: stopped fetching a data set, model, file or remote service (the sandbox has no network;
  a local file the program reads is not in the corpus);
- ``dependency``: an optional package is not installed (named);
- ``migration``: an exception raised inside DSPy, tidyq or dsp code or naming a DSPy/tidyq name
  (ImportError, AttributeError, TypeError, ...): what a wrong rewrite or runtime causes;
- ``reported``: stopped on a statement `tidyq migrate` reported and marked (``# tidyq-migrate:``),
  left for a person;
- ``standin``: the stand-in cannot answer it (an API it does not serve, an answer that does not fit
  the program's own types);
- ``program``: anything else the program's own code raised;
- ``timeout``: still running when the time was up.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SITECUSTOMIZE = '''\
import builtins, faulthandler, os, sys
from urllib.parse import urlsplit
faulthandler.dump_traceback_later(float(os.environ["TIDYQ_RUN_DUMP_AFTER"]), exit=True)
builtins.display = print  # IPython's display(), which notebook exports call
import dspy
STANDIN = os.environ["OPENAI_API_BASE"]
_init = dspy.LM.__init__

def _to_standin(self, model, *args, **kwargs):
    # an OpenAI-compatible server the program names (self-hosted vLLM/TGI, or none: OpenAI itself) is
    # the stand-in; what the program asked for is checked to be a URL and printed
    given = kwargs.pop("api_base", None) or kwargs.pop("base_url", None)
    provider = model.split("/", 1)[0] if "/" in model else "openai"
    if provider in ("openai", "hosted_vllm", "text-completion-openai"):
        _check_url("api_base", given)
        print(f"tidyq-run: dspy.LM({model!r}) api_base {given!r} -> the stand-in", file=sys.stderr)
        kwargs["api_base"] = STANDIN
        kwargs["api_key"] = kwargs.get("api_key") or "sk-standin"
        model = model if "/" in model else f"openai/{model}"
    elif given is not None:
        kwargs["api_base"] = given
    _init(self, model, *args, **kwargs)

def _check_url(what, given):
    if given is None:
        return
    parts = urlsplit(str(given))
    try:
        parts.port
    except ValueError:
        raise ValueError(f"tidyq-run: {what} is not a URL: {given!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"tidyq-run: {what} is not a URL: {given!r}")

_colbert_init = dspy.ColBERTv2.__init__

def _colbert_to_standin(self, url="http://0.0.0.0", port=None, post_requests=False):
    asked = f"{url}:{port}" if port else url
    _check_url("ColBERTv2 url", asked)
    print(f"tidyq-run: dspy.ColBERTv2({asked!r}) -> the stand-in", file=sys.stderr)
    _colbert_init(self, url=os.environ["TIDYQ_RUN_COLBERT_URL"], post_requests=post_requests)

dspy.LM.__init__ = _to_standin
dspy.ColBERTv2.__init__ = _colbert_to_standin
dspy.configure(lm=dspy.LM("openai/gpt-4o-mini"))
'''

# `datasets` is not installed and nothing can be fetched here: this tiny stand-in for its load_dataset
# serves synthetic rows in the real rows' shape for the two data sets DSPy's own loaders read
# (dspy.datasets.HotPotQA: hotpot_qa/fullwiki; dspy.datasets.gsm8k.GSM8K: gsm8k/main), so that the
# programs built on them get past their data loading; any other data set stops as the hub would.
DATASETS_STANDIN = '''\
"""tidyq-run stand-in for the datasets package (synthetic rows; see tests/migrate_runs_support.py)."""
import sys


def _hotpot(split, count):
    rows = []
    for i in range(count):
        titles = [f"Title {split} {i} a", f"Title {split} {i} b"]
        rows.append({"id": f"{split}{i}", "question": f"Which river flows past town {i} of the {split} set?",
                     "answer": f"River {i}", "type": "bridge", "level": "hard",
                     "supporting_facts": {"title": titles, "sent_id": [0, 0]},
                     "context": {"title": titles, "sentences": [[f"Town {i} lies on River {i}."], ["It is long."]]}})
    return rows


def _gsm8k(count, offset=0):
    return [{"question": f"Ann has {i + offset} apples and buys 3 more. How many apples does she have?",
             "answer": f"Ann has {i + offset} + 3 = {i + offset + 3} apples.\\n#### {i + offset + 3}"}
            for i in range(count)]


def load_dataset(path, name=None, split=None, **kwargs):
    if path == "hotpot_qa" and name == "fullwiki":
        splits = {"train": _hotpot("train", 240), "validation": _hotpot("validation", 4)}
    elif path == "gsm8k" and name == "main":
        splits = {"train": _gsm8k(212), "test": _gsm8k(5, offset=1000)}
    else:
        raise ConnectionError(f"tidyq-run: data set {path!r} ({name}) cannot be fetched: no network here")
    print(f"tidyq-run: stand-in rows for data set {path!r} ({name})", file=sys.stderr)
    return splits[split] if split else splits
'''

_EXCEPTION = re.compile(r"^(?P<type>[A-Za-z_][\w.]*(?:Error|Exception|Exit|Warning|Interrupt|NotFound\w*))"
                        r": ?(?P<msg>.*)$")
_FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<func>.+)$')
_NETWORK = ("ConnectionError", "ConnectError", "Name or service not known", "Temporary failure in name resolution",
            "OfflineModeIsEnabled", "Max retries exceeded", "Failed to resolve", "urlopen error", "Connection refused",
            "LocalEntryNotFoundError", "offline mode", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "nodename nor servname",
            "Network is unreachable", "Couldn't reach", "APIConnectionError", "Connection error")
_RELATIVE_IMPORT = re.compile(r"^\s*from \.", re.MULTILINE)
# tiny stand-ins for local files a program reads that are no data set (then said in docs/migrate.md)
STANDIN_FILES = {"creds.json": '{"openai_key": "sk-standin"}'}  # examples/knn.ipynb reads its OpenAI key here
_OURS = ("dspy", "dsp", "tidyq", "shared")


@dataclass
class Outcome:
    name: str
    kind: str
    detail: str
    returncode: int | None
    stderr: str


def _package_code(path: str) -> bool:
    parts = Path(path).parts
    return any(p in ("dspy", "dsp", "tidyq") for p in parts) or \
        (str(Path(path)).startswith(str(ROOT / "shared")))


def _marked(source: list[str], line: int) -> bool:
    """Whether the statement at ``line`` (1-based) carries a ``# tidyq-migrate:`` mark above it."""
    above = min(line - 2, len(source) - 1)
    while above >= 0 and source[above].lstrip().startswith("#"):
        if "# tidyq-migrate:" in source[above] and "IPython magic" not in source[above]:
            return True
        above -= 1
    return False


def classify(name: str, program: Path, returncode: int | None, stderr: str) -> Outcome:
    lines = stderr.splitlines()
    if returncode == 0:
        return Outcome(name, "ran", "", returncode, stderr)
    frames = [m for m in map(_FRAME.match, lines) if m]
    mine = [f for f in frames if Path(f["file"]).name == program.name]
    where = f"line {mine[-1]['line']}" if mine else ""
    if "Timeout (0:" in stderr and returncode != 0 and not any(_EXCEPTION.match(x) for x in lines[-3:]):
        return Outcome(name, "timeout", f"still running at {where}" if where else "still running", returncode, stderr)
    exc = next((m for m in map(_EXCEPTION.match, reversed(lines)) if m), None)
    if exc is None:
        return Outcome(name, "program", f"exit {returncode}: {lines[-1][:160] if lines else ''}", returncode, stderr)
    kind_name, msg = exc["type"].rsplit(".", 1)[-1], exc["msg"]
    said = f"{kind_name}: {msg[:200]}" + (f" ({where})" if where else "")
    source = program.read_text(encoding="utf-8").splitlines() if program.exists() else []
    marks = " ".join(x for x in source if "# tidyq-migrate:" in x and "IPython magic" not in x)
    missing_name = re.search(r"No module named '([\w.]+)'|cannot import name '(\w+)'", msg)
    if mine and _marked(source, int(mine[-1]["line"])) or \
            missing_name and (missing_name.group(1) or missing_name.group(2)) in marks:
        return Outcome(name, "reported", f"{said}: where `tidyq migrate` reported it", returncode, stderr)
    if kind_name == "FileNotFoundError":
        return Outcome(name, "data", said, returncode, stderr)
    if msg.startswith("tidyq-run:") and "is not a URL" in msg:  # the harness's check of what the program asked for
        return Outcome(name, "migration", said, returncode, stderr)
    missing = re.search(r"No module named '([\w.]+)'", msg)
    if kind_name == "ModuleNotFoundError" and missing:
        top = missing.group(1).split(".")[0]
        if top in _OURS:
            return Outcome(name, "migration", said, returncode, stderr)
        return Outcome(name, "dependency", f"{top} ({where})" if where else top, returncode, stderr)
    if kind_name == "AdapterParseError" or "no route for " in msg or "no route for " in "\n".join(lines[-60:]):
        route = re.search(r"no route for (\w+ \S+?)'", stderr)
        return Outcome(name, "standin", f"the stand-in has no {route.group(1)}" if route else said, returncode, stderr)
    needs = re.search(r"pip install ([\w\-\[\]]+)", msg)
    if kind_name == "ImportError" and needs:
        return Outcome(name, "dependency", needs.group(1), returncode, stderr)
    tail = "\n".join(lines[-40:])
    if any(n in tail for n in _NETWORK):
        return Outcome(name, "data", said, returncode, stderr)
    cannot = re.search(r"cannot import name '(\w+)' from '([\w.]+)'", msg)
    if cannot and cannot.group(2).split(".")[0] not in _OURS:
        return Outcome(name, "dependency", cannot.group(2).split(".")[0], returncode, stderr)
    in_package = bool(frames) and _package_code(frames[-1]["file"])
    names_ours = re.search(r"\b(dspy|dsp|tidyq)\.\w+|module '(dspy|dsp|tidyq)[\w.]*'|unexpected keyword argument|"
                           r"missing \d+ required (positional|keyword-only) argument", msg)
    if kind_name in ("ImportError", "AttributeError", "TypeError", "NameError") and (in_package or names_ours) \
            or in_package and kind_name not in ("KeyboardInterrupt",):
        return Outcome(name, "migration", said, returncode, stderr)
    return Outcome(name, "program", said, returncode, stderr)


def command(program: Path, root: Path) -> tuple[list[str], list[str]]:
    """(command, extra sys.path) for ``program`` in the tree ``root``: ``python FILE``, or for a module of a
    package (one with a relative import) ``python -m dotted.name`` with ``root`` on the path."""
    if _RELATIVE_IMPORT.search(program.read_text(encoding="utf-8")):
        dotted = ".".join(program.relative_to(root).with_suffix("").parts)
        return [sys.executable, "-m", dotted], [str(root)]
    return [sys.executable, str(program)], []


def run_program(program: Path, base_url: str, colbert_url: str, *, root: Path | None = None,
                timeout: float = 90.0) -> Outcome:
    """Runs ``program`` (see ``command``) in a fresh temporary directory against the OpenAI stand-in at
    ``base_url`` (the API root, ending in /v1) and the ColBERTv2 one at ``colbert_url``; classifies how
    it ended."""
    argv, path = command(program, root or program.parent)
    name = str(program.relative_to(root)) if root else program.name
    with tempfile.TemporaryDirectory(prefix="tidyq-run-") as tmp:
        work = Path(tmp)
        site = work / "_site"
        site.mkdir()
        (site / "sitecustomize.py").write_text(SITECUSTOMIZE, encoding="utf-8")
        (site / "datasets").mkdir()
        (site / "datasets" / "__init__.py").write_text(DATASETS_STANDIN, encoding="utf-8")
        for file_name, text in STANDIN_FILES.items():
            (work / file_name).write_text(text, encoding="utf-8")
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("TIDYQ_", "OPENAI_", "AZURE_", "ANTHROPIC_", "HF_", "PYTHON"))}
        env.update(OPENAI_API_BASE=base_url, OPENAI_BASE_URL=base_url, OPENAI_API_KEY="sk-standin",
                   PYTHONPATH=os.pathsep.join([str(site), *path, str(ROOT)]), HF_DATASETS_OFFLINE="1",
                   HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", LITELLM_LOCAL_MODEL_COST_MAP="True",
                   MPLBACKEND="Agg", DSPY_CACHEDIR=str(work / "dspy-cache"), HOME=str(work),
                   TIDYQ_RUN_DUMP_AFTER=str(max(1.0, timeout - 5)), TIDYQ_RUN_COLBERT_URL=colbert_url,
                   PYTHONUNBUFFERED="1")
        try:
            proc = subprocess.run(argv, cwd=work, env=env, capture_output=True,
                                  text=True, timeout=timeout + 10, stdin=subprocess.DEVNULL)
            return classify(name, program, proc.returncode, proc.stderr)
        except subprocess.TimeoutExpired as exc:
            err = exc.stderr.decode("utf-8", "replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
            return Outcome(name, "timeout", "killed", None, err)
