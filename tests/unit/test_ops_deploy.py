"""The shipped deployment files: the Procfile and docker-compose.yml agree, hold no secret, and
turn on Redis persistence + password and Flower auth; Prometheus rules and config pass promtool;
the dashboard and the rules only use metrics the exporter really exposes; the Redis launcher
really starts an authenticated, AOF-persisted redis-server.

No Docker engine runs here, so compose is checked by parsing it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import redis
import yaml

from shared.queues import ALL_QUEUES
from shared.redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]
SECRET_NAMES = ("TIDYQ_REDIS_PASSWORD", "FLOWER_BASIC_AUTH", "MLFLOW_CRYPTO_KEK_PASSPHRASE", "TIDYQ_UI_AUTH")


def procfile() -> dict[str, str]:
    from honcho.environ import parse_procfile

    return dict(parse_procfile((ROOT / "Procfile").read_text()).processes)


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def command_text(service: dict) -> str:
    cmd = service.get("command", "")
    return " ".join(cmd) if isinstance(cmd, list) else cmd


def queues_of(cmd: str) -> list[str]:
    words = shlex.split(cmd)
    for flag in ("-Q", "--queues"):
        if flag in words:
            return words[words.index(flag) + 1].split(",")
    return []


def env_names(text: str) -> set[str]:
    return set(re.findall(r"\$\{?([A-Z][A-Z0-9_]*)", text))


def worker_services(c: dict) -> dict[str, dict]:
    return {n: s for n, s in c["services"].items() if "celery -A workers worker" in command_text(s)}


def test_honcho_accepts_the_procfile():
    out = subprocess.run([str(ROOT / ".venv/bin/honcho"), "check"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert set(procfile()) == {"redis", "worker", "optimizer", "flower", "mlflow", "metrics", "web"}


def test_procfile_and_compose_serve_the_same_queues():
    proc_queues = [q for cmd in procfile().values() if "celery -A workers worker" in cmd for q in queues_of(cmd)]
    workers = worker_services(compose())
    compose_queues = [q for s in workers.values() for q in queues_of(command_text(s))]
    assert sorted(proc_queues) == sorted(ALL_QUEUES)
    assert sorted(compose_queues) == sorted(ALL_QUEUES)
    # one compose service per queue, each scalable with --scale: no fixed name, no host port
    assert all(len(queues_of(command_text(s))) == 1 for s in workers.values())
    for name, s in workers.items():
        assert "container_name" not in s and "ports" not in s, name
        assert "-E" in shlex.split(command_text(s)), f"{name}: Flower needs task events (-E)"
    assert all("-E" in shlex.split(cmd) for cmd in procfile().values() if "celery -A workers worker" in cmd)


def test_both_stacks_run_the_same_processes_with_the_same_setting_names():
    p, c = procfile(), compose()
    services = {n: command_text(s) for n, s in c["services"].items()}
    assert "run-redis.sh" in p["redis"] and "run-redis.sh" in services["redis"]
    assert "flowerconfig.py" in p["flower"] and "flowerconfig.py" in services["flower"]
    assert "mlflow server" in p["mlflow"] and "mlflow server" in services["mlflow"]
    assert "tidyq metrics" in p["metrics"] and "tidyq metrics" in services["metrics"]
    assert "tidyq serve" in p["web"] and "tidyq serve" in services["web"]
    compose_text = (ROOT / "docker-compose.yml").read_text()
    example = (ROOT / ".env.example").read_text()
    example_names = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", example, re.M))
    # every variable either stack reads is documented in .env.example, under the same name
    used = env_names(" ".join(p.values())) | env_names(compose_text)
    assert used - example_names <= {"TIDYQ_WORKER_CONCURRENCY"}, used - example_names
    for name in SECRET_NAMES:
        assert name in example_names
        assert name in compose_text
    # the stack's settings are Settings fields or the tools' own variables
    from shared.config import Settings

    tidyq_names = {n for n in example_names if n.startswith("TIDYQ_")}
    fields = {f"TIDYQ_{f.upper()}" for f in Settings.model_fields}
    launcher = {"TIDYQ_REDIS_PASSWORD", "TIDYQ_REDIS_PORT"}  # read by scripts/run-redis.sh
    assert tidyq_names - fields <= launcher, tidyq_names - fields - launcher


def test_redis_persistence_and_password_are_on_in_both():
    conf = (ROOT / "deploy/redis.conf").read_text()
    assert re.search(r"^appendonly yes$", conf, re.M)
    assert re.search(r"^maxmemory-policy noeviction$", conf, re.M)
    assert not re.search(r"^\s*requirepass", conf, re.M)  # the launcher adds it from the environment
    launcher = (ROOT / "scripts/run-redis.sh").read_text()
    assert "TIDYQ_REDIS_PASSWORD" in launcher and "requirepass" in launcher
    c = compose()
    redis_svc = c["services"]["redis"]
    assert any(v.endswith("/data") for v in redis_svc["volumes"]), "AOF needs a volume"
    assert "redis-data" in c["volumes"]
    assert redis_svc["environment"]["TIDYQ_REDIS_PASSWORD"].startswith("${TIDYQ_REDIS_PASSWORD:?")
    for name, s in worker_services(c).items():
        url = s["environment"]["TIDYQ_REDIS_URL"]
        assert url.startswith("redis://:${TIDYQ_REDIS_PASSWORD"), name
    assert "mlflow-data" in c["volumes"]


def test_flower_auth_is_required_in_both():
    p, c = procfile(), compose()
    flower = c["services"]["flower"]
    assert flower["environment"]["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")
    assert all(port.startswith("127.0.0.1:") for port in flower["ports"])
    assert "--conf=deploy/flower/flowerconfig.py" in p["flower"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWER_")}
    out = subprocess.run([".venv/bin/python", "deploy/flower/flowerconfig.py"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode != 0 and "refusing to start without authentication" in out.stderr


def test_jobs_page_auth_is_required_and_private_in_both():
    p, c = procfile(), compose()
    web = c["services"]["web"]
    assert web["environment"]["TIDYQ_UI_AUTH"].startswith("${TIDYQ_UI_AUTH:?")
    assert all(port.startswith("127.0.0.1:") for port in web["ports"])
    assert "--host 127.0.0.1" in p["web"]
    env = {k: v for k, v in os.environ.items() if k != "TIDYQ_UI_AUTH"}
    out = subprocess.run(["sh", "-c", p["web"]], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "TIDYQ_UI_AUTH=user:password" in out.stderr, out.stderr


def test_no_secret_value_in_shipped_files(tmp_path):
    shipped = ["Procfile", "docker-compose.yml", "Dockerfile", ".env.example", "deploy/redis.conf",
               "deploy/flower/flowerconfig.py", "deploy/prometheus/prometheus.yml", "scripts/run-redis.sh"]
    # a freshly generated .env: none of its secret values may appear in any shipped file
    env_file = tmp_path / ".env"
    subprocess.run(["sh", str(ROOT / "scripts/dev-env.sh"), str(env_file)], check=True, timeout=30,
                   capture_output=True)
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"
    from honcho.environ import parse

    generated = parse(env_file.read_text())
    for name in SECRET_NAMES:
        assert len(generated[name]) >= 16
    assert generated["TIDYQ_REDIS_URL"] == f"redis://:{generated['TIDYQ_REDIS_PASSWORD']}@127.0.0.1:6390/0"
    secrets_ = [generated[n].split(":")[-1] for n in SECRET_NAMES]
    for rel in shipped:
        text = (ROOT / rel).read_text()
        assert not any(s in text for s in secrets_), rel
        # a secret-looking assignment must be empty, a placeholder or an interpolation
        secret_name = r"(?<![{$A-Z_])([A-Z0-9_]*(?:PASSWORD|PASSPHRASE|SECRET|API_KEY|BASIC_AUTH))"
        for m in re.finditer(secret_name + r"[\"']?[ \t]*[:=][ \t]*[\"']?([^\s\"'#]*)", text):
            value = m.group(2)
            placeholder = value == "" or value.startswith(("$", "(", "user:password")) or "CHANGE-ME" in value
            assert placeholder, (rel, m.group(0))
    assert ".env" in (ROOT / ".gitignore").read_text().split()
    # an existing .env is never overwritten
    before = env_file.read_text()
    subprocess.run(["sh", str(ROOT / "scripts/dev-env.sh"), str(env_file)], check=True, timeout=30)
    assert env_file.read_text() == before


def test_run_redis_starts_an_authenticated_aof_redis(tmp_path):
    port = free_port()
    password = "test-" + os.urandom(8).hex()
    env = dict(os.environ, TIDYQ_REDIS_PASSWORD=password, TIDYQ_REDIS_PORT=str(port), TIDYQ_REDIS_DIR=str(tmp_path))
    proc = subprocess.Popen(["sh", str(ROOT / "scripts/run-redis.sh")], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        authed = redis.Redis(port=port, password=password, socket_timeout=2)
        deadline = time.monotonic() + 10
        while True:
            try:
                authed.ping()
                break
            except redis.exceptions.ConnectionError:
                assert time.monotonic() < deadline, "run-redis.sh did not start redis-server"
                time.sleep(0.05)
        with pytest.raises(redis.exceptions.AuthenticationError):
            redis.Redis(port=port, socket_timeout=2).ping()
        assert authed.config_get("appendonly")["appendonly"] == "yes"
        assert authed.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        assert password not in " ".join(Path(f"/proc/{proc.pid}/cmdline").read_text().split("\0"))
        assert oct((tmp_path / "secret.conf").stat().st_mode & 0o777) == "0o600"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    missing = subprocess.run(["sh", str(ROOT / "scripts/run-redis.sh")], cwd=ROOT, capture_output=True, text=True,
                             env={k: v for k, v in os.environ.items() if k != "TIDYQ_REDIS_PASSWORD"}, timeout=10)
    assert missing.returncode == 2 and "TIDYQ_REDIS_PASSWORD" in missing.stderr


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: run scripts/ensure-tools.sh (apt-get install prometheus); `make test` does")
    return path


def test_promtool_accepts_rules_config_and_rule_tests():
    tool = promtool()
    for args in (["check", "rules", "deploy/prometheus/alerts.yml"],
                 ["check", "config", "deploy/prometheus/prometheus.yml"],
                 ["test", "rules", "deploy/prometheus/alerts_test.yml"]):
        out = subprocess.run([tool, *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, f"promtool {' '.join(args)}:\n{out.stdout}\n{out.stderr}"
    names = {r["alert"] for g in yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())["groups"]
             for r in g["rules"]}
    assert {"TidyqItemErrorRateHigh", "TidyqQueueHasNoWorker", "TidyqOldestItemTooOld", "TidyqCostRateHigh"} <= names


def _exporter_metric_names() -> set[str]:
    from producers.metrics_exporter import COUNTERS

    names = {"tidyq_up", "tidyq_queue_depth", "tidyq_queue_oldest_item_age_seconds", "tidyq_queue_workers",
             "tidyq_queue_worker_processes", "tidyq_jobs_running", "tidyq_lm_latency_seconds_bucket",
             "tidyq_lm_latency_seconds_sum", "tidyq_lm_latency_seconds_count", "tidyq_breaker_open",
             "tidyq_breaker_state", "tidyq_breaker_transitions_total"}
    return names | {f"{name}_total" for name, _, _ in COUNTERS.values()}


def test_dashboard_and_rules_use_only_exported_metrics():
    known = _exporter_metric_names()
    dash = json.loads((ROOT / "deploy/grafana/tidyq.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    rules = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    exprs += [r["expr"] for g in rules["groups"] for r in g["rules"]]
    used = {m for e in exprs for m in re.findall(r"\btidyq_[a-z_]+", e)}
    assert used and used <= known, used - known
    # the dashboard covers every family the issue asks for
    for needed in ("tidyq_queue_depth", "tidyq_queue_oldest_item_age_seconds", "tidyq_queue_workers",
                   "tidyq_items_total", "tidyq_lm_latency_seconds_bucket", "tidyq_lm_retries_total",
                   "tidyq_rate_limit_wait_seconds_total", "tidyq_cache_hits_total", "tidyq_cache_misses_total",
                   "tidyq_tokens_total", "tidyq_cost_usd_total"):
        assert needed in used, needed
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
