"""A real ``mlflow server`` whose AI Gateway has one chat endpoint backed by the OpenAI fake.

``mlflow gateway start`` is gone in MLflow 3; the tracking server serves the gateway under
/gateway/mlflow/v1/chat/completions (model = endpoint name). Endpoints are made through the
server's REST API: a secret (api key + auth_config.api_base) -> a model definition -> an endpoint.
A loopback http upstream needs MLFLOW_GATEWAY_API_BASE_ALLOW_PRIVATE_IPS=true and
MLFLOW_GATEWAY_API_BASE_ALLOWED_SCHEMES=http,https in the server's environment.

The session fixture ``mlflow_gateway`` pays the slow start (~10-25 s on 2 cores) once; the
fake is shared, so call ``mlflow_gateway.fake.reset()`` at the start of a test that counts.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

import pytest

from tests.fakes.openai_server import OpenAIFake

START_TIMEOUT = 60.0
ENDPOINT_NAME = "tidyq-fake-chat"
_API = "/api/3.0/mlflow/gateway"


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post_json(url: str, payload: dict, timeout: float = 30.0) -> dict:
    req = Request(url, data=json.dumps(payload).encode(), method="POST",
                  headers={"Content-Type": "application/json"})
    try:
        with urlopen(req, timeout=timeout) as resp:  # noqa: S310 - loopback only
            return json.loads(resp.read())
    except HTTPError as exc:
        raise RuntimeError(f"POST {url} -> {exc.code}: {exc.read()[:500]!r}") from exc


@dataclass
class MlflowGateway:
    """What the fixture yields. ``url`` is the server root; point OpenAI-style clients at
    ``base_url`` with model=``endpoint``."""

    url: str
    endpoint: str
    fake: OpenAIFake
    process: subprocess.Popen | None = None
    directory: Path | None = None
    log_name: str = "mlflow-server.log"  # two servers on one store directory keep two logs
    startup_seconds: float = 0.0
    endpoint_setup_seconds: float = 0.0
    ids: dict[str, str] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"{self.url}/gateway/mlflow/v1"

    @property
    def chat_url(self) -> str:
        return f"{self.base_url}/chat/completions"

    @property
    def tracking_uri(self) -> str:
        return self.url

    @property
    def log_path(self) -> Path | None:
        return self.directory / self.log_name if self.directory else None

    def log_tail(self, chars: int = 3000) -> str:
        path = self.log_path
        return path.read_text(errors="replace")[-chars:] if path and path.exists() else ""

    def create_chat_endpoint(self, name: str, *, api_base: str | None = None, api_key: str = "sk-fake",
                             model_name: str = "gpt-4o-mini") -> str:
        """Another chat endpoint (e.g. at a second fake) through the REST API; returns its name."""
        base = f"{self.url}{_API}"
        secret = _post_json(f"{base}/secrets/create", {
            "secret_name": f"{name}-key", "secret_value": {"api_key": api_key}, "provider": "openai",
            "auth_config": {"api_base": api_base or self.fake.base_url}})["secret"]
        model = _post_json(f"{base}/model-definitions/create", {
            "name": f"{name}-model", "secret_id": secret["secret_id"], "provider": "openai",
            "model_name": model_name})["model_definition"]
        endpoint = _post_json(f"{base}/endpoints/create", {
            "name": name, "usage_tracking": False,
            "model_configs": [{"model_definition_id": model["model_definition_id"],
                               "linkage_type": "PRIMARY", "weight": 1.0}]})["endpoint"]
        self.ids.update({f"{name}:secret": secret["secret_id"], f"{name}:model": model["model_definition_id"],
                         f"{name}:endpoint": endpoint["endpoint_id"]})
        return endpoint["name"]

    def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # the server, its uvicorn worker(s) and helpers
            proc.wait(timeout=15)
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        finally:
            try:  # children that outlived the leader
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def server_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "MLFLOW_GATEWAY_API_BASE_ALLOW_PRIVATE_IPS": "true",
        "MLFLOW_GATEWAY_API_BASE_ALLOWED_SCHEMES": "http,https",
        "MLFLOW_CRYPTO_KEK_PASSPHRASE": secrets.token_hex(16),
        # litellm (imported by the server) fetches a price map from the internet otherwise,
        # and without internet its import deadlocks the server's startup.
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        # The job runner (huey) is not needed for the gateway and slows the start.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra or {})
    return env


def start_mlflow_gateway(fake: OpenAIFake, directory: Path, *, timeout: float = START_TIMEOUT,
                         endpoint: str = ENDPOINT_NAME, log_name: str = "mlflow-server.log") -> MlflowGateway:
    """Start ``mlflow server`` (sqlite in ``directory``) and create ``endpoint`` -> ``fake``."""
    directory.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    gateway = MlflowGateway(url=f"http://127.0.0.1:{port}", endpoint=endpoint, fake=fake, directory=directory,
                            log_name=log_name)
    args = [sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", f"sqlite:///{directory / 'mlflow.db'}",
            "--default-artifact-root", str(directory / "artifacts"),
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    started = time.monotonic()
    log = open(gateway.log_path, "wb")  # noqa: SIM115 - the child keeps writing to it
    try:
        gateway.process = subprocess.Popen(args, cwd=directory, env=server_env(), stdin=subprocess.DEVNULL,
                                           stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        log.close()
    try:
        _wait_healthy(gateway, started + timeout)
        gateway.startup_seconds = time.monotonic() - started
        t0 = time.monotonic()
        gateway.create_chat_endpoint(endpoint)
        gateway.endpoint_setup_seconds = time.monotonic() - t0
    except BaseException:
        gateway.stop()
        raise
    return gateway


def _wait_healthy(gateway: MlflowGateway, deadline: float) -> None:
    while time.monotonic() < deadline:
        if gateway.process is None or gateway.process.poll() is not None:
            raise RuntimeError(f"mlflow server exited at start:\n{gateway.log_tail()}")
        try:
            with urlopen(f"{gateway.url}/health", timeout=2) as resp:  # noqa: S310
                if resp.status == 200:
                    return
        except (URLError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"mlflow server not healthy on {gateway.url} within the time limit:\n{gateway.log_tail()}")


@pytest.fixture(scope="session")
def mlflow_gateway(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A running ``mlflow server`` with chat endpoint ``.endpoint`` -> ``.fake`` (an OpenAIFake).

    Yields MlflowGateway: .url, .base_url, .chat_url, .endpoint, .fake, .startup_seconds,
    .create_chat_endpoint(name, api_base=...), .log_tail(). Shared by the session: reset
    ``.fake`` before counting.
    """
    try:
        import mlflow  # noqa: F401
    except ImportError:
        pytest.skip("mlflow is not installed in this environment")
    directory = tmp_path_factory.mktemp("mlflow-gateway")
    with OpenAIFake() as fake:
        gateway = start_mlflow_gateway(fake, directory)
        try:
            yield gateway
        finally:
            gateway.stop()
