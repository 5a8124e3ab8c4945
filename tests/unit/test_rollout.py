"""Deterministic rollout split, rollback/promote through Redis (real) and MLflow (real sqlite)."""

import dspy
import pytest
from typer.testing import CliRunner

from shared import programs
from shared.errors import BadInput
from shared.rollout import RolloutState, bucket, choose
from tests.optimize_support import mlflow_template, mlflow_uri  # noqa: F401  (fixtures)
from tests.unit.test_programs import _register

IDS = [f"item-{i}" for i in range(1000)]


@pytest.mark.parametrize("percent", [5, 10, 30, 50, 90])
def test_split_is_within_five_points_of_percent_over_1000_items(percent):
    state = RolloutState(live=1, candidate=2, percent=percent)
    share = sum(choose(state, "qa", i)[0] == 2 for i in IDS) / len(IDS) * 100
    assert abs(share - percent) <= 5


def test_split_is_deterministic_and_monotone():
    at10 = {i for i in IDS if choose(RolloutState(1, 2, 10), "qa", i)[0] == 2}
    at30 = {i for i in IDS if choose(RolloutState(1, 2, 30), "qa", i)[0] == 2}
    assert at10 == {i for i in IDS if choose(RolloutState(1, 2, 10), "qa", i)[0] == 2}
    assert at10 < at30  # raising the percentage only moves items to the candidate
    other = {i for i in IDS if bucket("other-model", i) < 10}
    assert other != at10  # the model name salts the hash


def test_no_candidate_or_zero_percent_means_live():
    assert {choose(RolloutState(3, None, 0), "qa", i) for i in IDS} == {(3, "live")}
    assert {choose(RolloutState(3, 4, 0), "qa", i)[0] for i in IDS} == {3}
    with pytest.raises(BadInput, match="no live version"):
        choose(RolloutState(None, None, 0), "qa", "x")
    with pytest.raises(BadInput):
        RolloutState(1, 2, 101)


@pytest.fixture
def two_versions(tmp_path, redis_url, mlflow_uri):
    first = dspy.Predict("question -> answer")
    first.demos = [dspy.Example(question="v1?", answer="one")]
    second = dspy.Predict("question -> answer")
    second.demos = [dspy.Example(question="v2?", answer="two")]
    assert _register(tmp_path, "qa", first, 1) == 1
    assert _register(tmp_path, "qa", second, 2) == 2
    from shared.registry import get_registry

    return get_registry()


def _share(uri="qa"):
    versions = [programs.resolve_program(uri, i).version for i in IDS]
    return versions.count(2) / len(versions) * 100


def test_rollout_rollback_promote_through_registry(two_versions, mlflow_uri):
    from mlflow import MlflowClient

    reg = two_versions
    assert _share() == 0
    state, warning = reg.start_rollout("qa", 2, 30)
    assert warning is None and state == RolloutState(1, 2, 30.0)
    assert abs(_share() - 30) <= 5 and abs(_share("models:/qa@live") - 30) <= 5
    assert programs.resolve_program("models:/qa/1", "x").version == 1  # a pinned version ignores the rollout
    model = MlflowClient(mlflow_uri).get_registered_model("qa")
    assert model.aliases == {"live": 1, "candidate": 2} and model.tags["tidyq.rollout_percent"] == "30.0"

    reg.rollback("qa")
    # effective for the very next item, on every worker (state is read from Redis per item)
    assert programs.resolve_program("qa", IDS[0]).version == 1
    assert _share() == 0
    assert MlflowClient(mlflow_uri).get_registered_model("qa").aliases == {"live": 1}

    reg.start_rollout("qa", 2, 50)
    reg.promote("qa")
    assert _share() == 100
    assert MlflowClient(mlflow_uri).get_registered_model("qa").aliases == {"live": 2}
    with pytest.raises(BadInput, match="no candidate"):
        reg.promote("qa")


def test_redis_state_is_rehydrated_from_mlflow(two_versions, redis_url):
    import redis

    two_versions.start_rollout("qa", 2, 20)
    redis.Redis.from_url(redis_url).flushall()
    assert two_versions.rollout_state("qa") == RolloutState(1, 2, 20.0)


def test_rollout_refuses_bad_requests(two_versions):
    with pytest.raises(BadInput, match="no version 7"):
        two_versions.start_rollout("qa", 7, 10)
    with pytest.raises(BadInput, match="already live"):
        two_versions.start_rollout("qa", 1, 10)
    with pytest.raises(BadInput):
        two_versions.start_rollout("qa", 2, 150)
    with pytest.raises(BadInput, match="no registered model"):
        two_versions.rollout_state("missing")


def test_cli_rollout_rollback_promote(two_versions):
    import json

    from producers.cli import app

    runner = CliRunner()
    out = runner.invoke(app, ["rollout", "qa", "--candidate", "2", "--percent", "25"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout) == {"live": 1, "candidate": 2, "percent": 25.0}
    shown = json.loads(runner.invoke(app, ["rollout", "qa"]).stdout)
    assert shown["candidate"] == 2 and shown["versions"] == {}
    assert json.loads(runner.invoke(app, ["rollback", "qa"]).stdout)["candidate"] is None
    assert runner.invoke(app, ["promote", "qa"]).exit_code == 2  # nothing to promote: bad input
    assert runner.invoke(app, ["rollout", "qa", "--candidate", "9", "--percent", "5"]).exit_code == 2
    assert runner.invoke(app, ["rollout", "bad name", "--candidate", "2", "--percent", "5"]).exit_code == 2


def test_per_version_stats_accumulate(two_versions):
    from shared import tracking
    from shared.programs import ResolvedProgram

    for i, version in enumerate([1, 1, 2]):
        tracking.record_item("job-stats", {"status": "succeeded" if i else "failed", "latency_ms": 10.0 * (i + 1)},
                             program=ResolvedProgram("qa", version))
    tracking.flush("job-stats")
    stats = two_versions.version_stats("qa")
    assert stats[1]["items"] == 2 and stats[1]["failed"] == 1 and stats[1]["error_rate"] == 0.5
    assert stats[2]["items"] == 1 and stats[2]["latency_mean_ms"] == 30.0
