"""DSPy 2.x's per-vendor LM clients (dspy.OpenAI, dspy.OllamaLocal, dspy.HFClientVLLM, ...) ->
``dspy.LM("<litellm provider>/<model>", ...)``, with the old defaults kept: the client's default
model when none was given, and temperature 0.0 (every 2.x client's default; dspy.LM's is the
provider's) unless one was given. Parameter orders and defaults are dspy 2.5.43's (dsp/modules/)."""

from __future__ import annotations

import ast
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Client:
    provider: str  # litellm's prefix
    params: tuple[str, ...]  # the 2.x constructor's positional order
    default_model: str | None = None
    default_api_base: str | None = None
    url_port: bool = False  # HF servers: api_base = f"{url}:{port}/v1"
    default_url: str = "http://localhost"
    dropped: dict[str, str] = field(default_factory=dict)  # keyword -> the only value that may be dropped
    guesses_model_type: bool = False  # 2.x's GPT3: "text" unless the name looks like a chat model


_OPENAI = Client("openai", ("model", "api_key", "api_provider", "api_base", "base_url", "model_type"),
                 default_model="gpt-3.5-turbo-instruct", dropped={"api_provider": "openai"}, guesses_model_type=True)
CLIENTS: dict[str, Client] = {
    "OpenAI": _OPENAI,
    "GPT3": _OPENAI,
    "AzureOpenAI": Client("azure", ("api_base", "api_version", "model", "api_key", "model_type"),
                          default_model="gpt-3.5-turbo-instruct"),
    "Claude": Client("anthropic", ("model", "api_key", "api_base"), default_model="claude-3-opus-20240229"),
    "Cohere": Client("cohere", ("model", "api_key"), default_model="command-r"),
    "GROQ": Client("groq", ("api_key", "model"), default_model="mixtral-8x7b-32768"),
    "Mistral": Client("mistral", ("model", "api_key"), default_model="mistral-medium-latest"),
    "Google": Client("gemini", ("model", "api_key"), default_model="models/gemini-1.0-pro"),
    "Databricks": Client("databricks", ("model", "api_key", "api_base", "model_type")),
    "Together": Client("together_ai", ("model", "api_base", "api_key")),
    "Anyscale": Client("anyscale", ("model",)),
    "GoogleVertexAI": Client("vertex_ai", ("model",)),
    "OllamaLocal": Client("ollama_chat", ("model", "model_type", "base_url"), default_model="llama2",
                          default_api_base="http://localhost:11434"),
    "HFClientVLLM": Client("hosted_vllm", ("model", "port", "model_type", "url"), url_port=True),
    "HFClientTGI": Client("openai", ("model", "port", "url"), url_port=True, default_url="http://future-hgx-1"),
}
RENAMED = {"base_url": "api_base", "timeout_s": "timeout", "default_headers": "extra_headers"}
UNSUPPORTED = {"system_prompt": "dspy.LM has no system prompt: put it in the signature's instructions",
               "http_client": "dspy.LM (litellm) takes no httpx client",
               "http_request_kwargs": "dspy.LM (litellm) takes no request kwargs",
               "api_provider": "only api_provider='openai' carries over (use dspy.AzureOpenAI -> azure/)"}


class Unsupported(Exception):
    """A call this table cannot turn into dspy.LM faithfully; the message says why."""


def lm_arguments(name: str, positional: list[str], keywords: dict[str, str], notes: list[str] | None = None,
                 constants: dict[str, str] | None = None) -> str:
    """The argument list (source text) of the dspy.LM call for ``name(*positional, **keywords)``,
    arguments given as source text; what the rewrite changes besides is appended to ``notes``;
    ``constants`` are the file's module-level names bound once to a literal (name -> source text).
    Raises Unsupported."""
    client = CLIENTS[name]
    if len(positional) > len(client.params):
        raise Unsupported(f"{len(positional)} positional arguments, the 2.x client took {len(client.params)}")
    given = dict(zip(client.params, positional, strict=False)) | keywords
    for key, only in client.dropped.items():
        if key in given and given[key].strip("'\"") == only:
            del given[key]
    for key in given:
        if key in UNSUPPORTED:
            raise Unsupported(f"{key}=: {UNSUPPORTED[key]}")
    model = given.pop("model", None)
    if model is None:
        if client.default_model is None:
            raise Unsupported("the model is not given and this 2.x client had no default")
        model = repr(client.default_model)
    model_text = _prefixed(client.provider, model)
    if client.guesses_model_type and "model_type" not in given and _text_model(_literal(model)):
        given["model_type"] = '"text"'
    if client.url_port:
        if "port" not in given:
            raise Unsupported("port is not given")
        url, port = given.pop("url", repr(client.default_url)), given.pop("port")
        url, port = _first_server(name, url, port, notes if notes is not None else [], constants or {})
        given["api_base"] = _api_base(url, port)
        # 2.x's HF clients sent no credential to the self-hosted server; dspy.LM would need one (or send
        # OPENAI_API_KEY, meant for OpenAI, to that server)
        given.setdefault("api_key", '"no-key"')
    for old, new in RENAMED.items():
        if old in given:
            given[new] = given.pop(old)
    if client.default_api_base and "api_base" not in given:
        given["api_base"] = repr(client.default_api_base)
    given.setdefault("temperature", "0.0")
    return ", ".join([model_text] + [f"{key}={value}" for key, value in given.items()])


def _text_model(name: str | None) -> bool:
    """dspy 2.5's GPT3 default model_type, for a literal model name."""
    if name is None:
        return False
    chat = any(key in name for key in ("gpt-3.5", "turbo", "gpt-4", "o1")) and "instruct" not in name
    return not chat


def _quoted(value: str) -> str:
    return f'"{value}"' if '"' not in value else repr(value)


def _prefixed(provider: str, model: str) -> str:
    literal = _literal(model)
    return _quoted(f"{provider}/{literal}") if literal is not None else f'"{provider}/" + {model}'


def _value(text: str, constants: dict[str, str]) -> object:
    """The literal value of source ``text`` (or of the module constant it names), else None."""
    try:
        return ast.literal_eval(constants.get(text, text))
    except (ValueError, SyntaxError):
        return None


def _first_server(name: str, url: str, port: str, notes: list[str], constants: dict[str, str]) -> tuple[str, str]:
    """2.x's HF clients took several servers: HFClientTGI a list of ports (each request went to one of
    them at random), HFClientVLLM a list of full URLs (port unused). dspy.LM has one api_base: the
    first, with a note. The list may be written in the call or be a module constant
    (``ports = [...]``). Returns (url, port) source text, port "" when the URL already has one."""
    ports, urls = _value(port, constants), _value(url, constants)
    if isinstance(urls, (list, tuple)) and urls and all(isinstance(u, str) for u in urls):
        notes.append(f"{name}'s url list {list(urls)}: dspy.LM sends every request to the first, "
                     f"{urls[0]} (2.x spread them over the list)")
        return repr(urls[0]), ""
    if isinstance(ports, (list, tuple)) and ports and all(isinstance(p, int) for p in ports):
        notes.append(f"{name}'s port list {list(ports)}: dspy.LM sends every request to the first, "
                     f"port {ports[0]} (2.x picked one of them at random for each request)")
        return url, str(ports[0])
    return url, port


def _api_base(url: str, port: str) -> str:
    """2.x's HF clients called f"{url}:{port}"; their OpenAI-compatible API is under /v1."""
    url_literal = _literal(url)
    if url_literal is not None and not port:
        return _quoted(f"{url_literal.rstrip('/')}/v1")
    if url_literal is not None and port.isdigit():
        return _quoted(f"{url_literal}:{port}/v1")
    return f'f"{{{url}}}:{{{port}}}/v1"' if '"' not in url + port else f'{url} + ":" + str({port}) + "/v1"'


def _literal(text: str) -> str | None:
    """The value of a plain one-line string literal written as source text, else None."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"" and text[0] not in text[1:-1] and "\\" not in text:
        return text[1:-1]
    return None
