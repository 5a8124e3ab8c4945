"""The shipped ways of running tidyq (Procfile, docker-compose.yml) start Flower only with auth
and Redis only with a password. That Flower refuses an unauthenticated request is shown by a
real Flower process in tests/integration/test_flower_auth.py; here the shipped files are checked
and the shipped Redis launcher is run for real."""

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from shared.processes import stop_process
from shared.redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]
PROCFILE = ROOT / "Procfile"
COMPOSE = ROOT / "docker-compose.yml"
RUN_REDIS = ROOT / "scripts" / "run-redis.sh"
FLOWER_CONF = ROOT / "deploy" / "flower" / "flowerconfig.py"


def procfile() -> dict[str, str]:
    if not PROCFILE.exists():
        pytest.skip("no Procfile shipped yet")
    return dict(line.split(":", 1) for line in PROCFILE.read_text().splitlines() if line.strip() and ":" in line
                and not line.startswith("#"))


def compose() -> dict:
    if not COMPOSE.exists():
        pytest.skip("no docker-compose.yml shipped yet")
    import yaml

    return yaml.safe_load(COMPOSE.read_text())


def clean_env(**extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWER_", "TIDYQ_REDIS"))}
    return env | extra


def test_flower_is_started_with_a_config_that_refuses_to_run_without_auth():
    entries = procfile()
    assert "deploy/flower/flowerconfig.py" in entries["flower"]
    flower = compose()["services"]["flower"]
    assert "flowerconfig.py" in " ".join(flower["command"] if isinstance(flower["command"], list)
                                         else [flower["command"]])
    assert ":?" in flower["environment"]["FLOWER_BASIC_AUTH"]  # compose will not start it without one
    code = f"exec(open({str(FLOWER_CONF)!r}).read())"
    refused = subprocess.run(["python3", "-c", code], env=clean_env(), capture_output=True, text=True, timeout=30)
    assert refused.returncode != 0 and "authentication" in refused.stderr
    allowed = subprocess.run(["python3", "-c", code], env=clean_env(FLOWER_BASIC_AUTH="ops:pw"), capture_output=True,
                             text=True, timeout=30)
    assert allowed.returncode == 0, allowed.stderr


def test_compose_redis_and_clients_use_a_password():
    services = compose()["services"]
    redis_env = services["redis"]["environment"]
    assert ":?" in redis_env["TIDYQ_REDIS_PASSWORD"]
    assert "run-redis.sh" in " ".join(services["redis"]["command"])
    worker_envs = [s.get("environment", {}) for name, s in services.items() if name not in ("redis", "mlflow",
                                                                                             "prometheus")]
    urls = [e["TIDYQ_REDIS_URL"] for e in worker_envs if isinstance(e, dict) and "TIDYQ_REDIS_URL" in e]
    assert urls and all(":${TIDYQ_REDIS_PASSWORD" in u for u in urls), urls


def _redis_reply(port: int, *commands: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        for c in commands:
            s.sendall(c)
            time.sleep(0.05)
        return s.recv(4096)


def test_the_shipped_redis_launcher_requires_and_enforces_a_password(tmp_path):
    assert "run-redis.sh" in procfile()["redis"]
    missing = subprocess.run(["sh", str(RUN_REDIS)], env=clean_env(TIDYQ_REDIS_DIR=str(tmp_path)),
                             capture_output=True, text=True, timeout=30)
    assert missing.returncode == 2 and "TIDYQ_REDIS_PASSWORD" in missing.stderr
    port = free_port()
    env = clean_env(TIDYQ_REDIS_PASSWORD="launcher-pw-123", TIDYQ_REDIS_PORT=str(port), TIDYQ_REDIS_DIR=str(tmp_path),
                    TIDYQ_REDIS_BIND="127.0.0.1")
    proc = subprocess.Popen(["sh", str(RUN_REDIS)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        assert _redis_reply(port, b"PING\r\n").startswith(b"-NOAUTH")
        assert b"+PONG" in _redis_reply(port, b"AUTH launcher-pw-123\r\n", b"PING\r\n")
        assert _redis_reply(port, b"AUTH launcher-pw-123\r\n", b"CONFIG GET appendonly\r\n").count(b"yes") == 1
        assert "launcher-pw-123" not in subprocess.run(["ps", "-eo", "args"], capture_output=True,
                                                         text=True).stdout  # not on any command line
    finally:
        stop_process(proc)
