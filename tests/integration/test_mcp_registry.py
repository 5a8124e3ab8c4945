"""list_programs against a real MLflow sqlite registry and the Redis rollout state: the agent sees
the registered names, versions, aliases and the live rollout split."""

import anyio
import pytest
from mcp import Client

from producers.mcp_server import build_server
from shared.config import Settings

pytestmark = pytest.mark.timeout(180)


def _register_versions(tmp_path, settings, name, n):
    import dspy
    import mlflow

    from shared.programs import save_program, spec_for
    from shared.registry import Registry

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    registry = Registry(settings)
    program = dspy.Predict("question -> answer")
    directory = save_program(program, spec_for(program), tmp_path / "program")
    experiment = mlflow.create_experiment("mcp-test", artifact_location=(tmp_path / "artifacts").as_uri())
    versions = []
    for _ in range(n):
        with mlflow.start_run(experiment_id=experiment) as run:
            mlflow.log_artifacts(str(directory), "program")
        versions.append(registry.register(name, run.info.run_id))
    return registry, versions


def test_list_programs_shows_versions_aliases_and_rollout(redis_url, tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("TIDYQ_MLFLOW_TRACKING_URI", uri)
    settings = Settings(mlflow_tracking_uri=uri, redis_url=redis_url)
    from shared.registry import reset_registries

    reset_registries()
    registry, versions = _register_versions(tmp_path, settings, "qa", 2)
    assert versions == [1, 2]
    registry.start_rollout("qa", 2, 25)

    async def main():
        async with Client(build_server(redis_url=redis_url, settings=settings)) as client:
            return await client.call_tool("list_programs", {})

    try:
        result = anyio.run(main)
    finally:
        reset_registries()
    assert not result.is_error, result.content
    (program,) = result.structured_content["programs"]
    assert program["name"] == "qa" and program["versions"] == [1, 2]
    assert program["aliases"]["live"] == 1 and program["aliases"]["candidate"] == 2
    assert program["rollout"] == {"live": 1, "candidate": 2, "candidate_percent": 25.0}
    assert program["uri"] == "models:/qa@live"
