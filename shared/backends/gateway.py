"""GATEWAY: the MLflow AI Gateway served by `mlflow server`.

Its route ``{TIDYQ_GATEWAY_URL}/gateway/mlflow/v1/chat/completions`` speaks OpenAI chat
completions with ``model`` = the gateway endpoint's name, so the DIRECT machinery (DSPy's lm15
engine) serves it with that base URL. Provider credentials live in the gateway, not here.
"""

from __future__ import annotations

from shared.backends.direct import DirectBackend
from shared.errors import ConfigurationError

GATEWAY_ROUTE = "/gateway/mlflow/v1"


def gateway_base_url(gateway_url: str) -> str:
    base = gateway_url.rstrip("/")
    return base if base.endswith(GATEWAY_ROUTE) else base + GATEWAY_ROUTE


class GatewayBackend(DirectBackend):
    name = "gateway"

    def __init__(self, config):
        if not config.gateway_url:
            raise ConfigurationError("backend 'gateway' needs TIDYQ_GATEWAY_URL (the `mlflow server` base URL)")
        if not config.model:
            raise ConfigurationError("backend 'gateway' needs a model: the gateway endpoint name")
        self.endpoint = config.model.split("/", 1)[1] if config.model.startswith("openai/") else config.model
        super().__init__(config, model=f"openai/{self.endpoint}", api_base=gateway_base_url(config.gateway_url),
                         api_key=config.api_key or "mlflow-gateway")

    @property
    def client(self) -> str:
        return f"mlflow gateway via dspy {self.engine_name} engine"
