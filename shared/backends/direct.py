"""DIRECT: any provider model string DSPy knows ("openai/...", "anthropic/...", "ollama/...").

Two engines do the wire work, both DSPy's own: lm15 (native HTTP, ~3 ms CPU per call here) and
LiteLLM (~8 ms). ``engine="auto"`` takes lm15 whenever it can route the model and LiteLLM
otherwise; ``get_info()`` reports which one serves. Neither retries: the retry step does.
"""

from __future__ import annotations

from dspy import lm15
from dspy.lm15 import Request, Response, RouterConfig

from shared.errors import ConfigurationError


def _lm15_engine(model: str, api_key: str | None, api_base: str | None, timeout: float | None):
    from dspy.clients.engines.lm15_engine import LM15Engine, timeouts_for

    probe = LM15Engine(RouterConfig(env={}), model_type="chat")
    try:
        provider = probe.resolve(model).provider
    finally:
        probe.close()
    config = RouterConfig(api_keys={provider: api_key} if api_key else None,
                          base_urls={provider: api_base} if api_base else None,
                          timeouts=timeouts_for(timeout))
    return LM15Engine(config, model_type="chat"), provider, config


def _litellm_engine(api_key: str | None, api_base: str | None, timeout: float | None):
    from dspy.clients.engines.litellm_engine import LiteLLMEngine

    options = {k: v for k, v in {"api_key": api_key, "api_base": api_base, "timeout": timeout}.items() if v}
    return LiteLLMEngine(model_type="chat", **options)


class DirectBackend:
    name = "direct"

    def __init__(self, config, *, model: str | None = None, api_base: str | None = None,
                 api_key: str | None = None):
        self.model = model or config.model
        if not self.model:
            raise ConfigurationError("backend 'direct' needs a model, e.g. model='openai/gpt-4o-mini' or TIDYQ_MODEL")
        api_base = api_base or config.api_base
        api_key = api_key or config.api_key
        self.provider: str | None = None
        self.engine_name = config.engine
        self.router_config: RouterConfig | None = None  # lm15's, reused by the async twin (backends/async_io.py)
        if config.engine in ("auto", "lm15"):
            try:
                self._engine, self.provider, self.router_config = _lm15_engine(self.model, api_key, api_base,
                                                                               config.timeout)
                self.engine_name = "lm15"
            except (lm15.LM15Error, ValueError) as exc:
                if config.engine == "lm15":
                    raise ConfigurationError(f"lm15 cannot route model {self.model!r}: {exc}") from exc
                self._engine = None
        else:
            self._engine = None
        if self._engine is None:
            self._engine = _litellm_engine(api_key, api_base, config.timeout)
            self.engine_name = "litellm"
            self.provider = self.model.split("/", 1)[0] if "/" in self.model else None

    @property
    def client(self) -> str:
        return f"dspy {self.engine_name} engine"

    def complete(self, request: Request) -> Response:
        return self._engine.complete(request)

    def close(self) -> None:
        self._engine.close()
