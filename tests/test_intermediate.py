"""Intermediate reports end to end: storage, early stopping Auto, Hyperband, promotion, executors."""

from __future__ import annotations

import json
from pathlib import Path

import _objectives as obj
import pytest
from _tuners import tuner

from amtlib import (
    IntegerParameter,
    ObjectiveStatus,
    TrainingJobStatus,
    TuningJob,
    ValidationError,
)


def make(tmp_path, train=obj.curve, **kw):
    defaults = dict(static_hyperparameters={"epochs": 5}, max_jobs=6, job_name="m")
    return tuner(train, **{"store": tmp_path / "s.db", **defaults, **kw})


@pytest.mark.parametrize("executor", ["inline", "thread", "process"])
def test_reports_are_stored_with_their_decisions_under_each_executor(tmp_path, executor):
    job = make(tmp_path, executor=executor, max_parallel_jobs=2).fit()
    stored = TuningJob.load("m", str(tmp_path / "s.db"))
    for j in [*job.training_jobs, *stored.training_jobs]:
        assert [r.step for r in j.reports] == [1, 2, 3, 4, 5]
        assert all(r.decision == {"action": "continue", "reason": None} for r in j.reports)
        # No return value: the objective is the last reported value (AMT's "latest").
        assert j.objective_value == pytest.approx(j.hyperparameters["x"] + 0.2)
        assert j.metrics == {"loss": j.objective_value, "epoch_seen": 5.0}
        assert j.status is TrainingJobStatus.COMPLETED


def test_early_stopping_auto_stops_jobs_worse_than_the_median(tmp_path):
    job = make(
        tmp_path, early_stopping_type="Auto", max_jobs=16, static_hyperparameters={"epochs": 9}
    ).fit()
    assert len(job.training_jobs) == 16  # stopped jobs count toward max_jobs
    stopped = [j for j in job.training_jobs if j.status is TrainingJobStatus.STOPPED]
    assert stopped
    for j in stopped:
        reason = j.stop_reason
        assert reason["action"] == "stop" and reason["rule"] == "median"
        assert reason["references"] >= 3 and reason["value"] > reason["median"]
        assert len(j.reports) == reason["step"] < 9
        assert j.objective_status is ObjectiveStatus.SUCCEEDED
        assert j.objective_value == j.reports[-1].metrics["loss"]  # the last reported value
        assert j.reports[-1].decision["action"] == "stop"
    # A stopped job was doing worse than the ones that ran to the end.
    finished = [j for j in job.training_jobs if j.status is TrainingJobStatus.COMPLETED]
    assert min(j.hyperparameters["x"] for j in stopped) > min(
        j.hyperparameters["x"] for j in finished
    )
    assert job.describe()["TrainingJobStatusCounters"]["Stopped"] == len(stopped)
    assert job.describe()["HyperParameterTuningJobConfig"]["TrainingJobEarlyStoppingType"] == "Auto"


def test_a_caught_stop_is_still_recorded_as_stopped(tmp_path):
    job = make(
        tmp_path,
        train=obj.curve_catching,
        early_stopping_type="Auto",
        max_jobs=12,
        static_hyperparameters={"epochs": 9},
    ).fit()
    stopped = [j for j in job.training_jobs if j.status is TrainingJobStatus.STOPPED]
    assert stopped
    assert all(j.metrics["stopped_at"] == j.stop_reason["step"] for j in stopped)


def test_early_stopping_with_hyperband_is_refused(tmp_path):
    with pytest.raises(ValidationError, match=r"'early_stopping_type'.*Hyperband"):
        make(tmp_path, strategy="Hyperband", early_stopping_type="Auto")
    with pytest.raises(ValidationError, match=r"'early_stopping_type'.*'Sometimes'"):
        make(tmp_path, early_stopping_type="Sometimes")


def test_hyperband_never_runs_past_max_resource_nor_stops_before_min_resource(tmp_path):
    job = make(
        tmp_path,
        strategy="Hyperband",
        max_jobs=20,
        max_parallel_jobs=3,
        strategy_config={"min_resource": 2, "max_resource": 9},
        static_hyperparameters={"epochs": 30},
    ).fit()
    for j in job.training_jobs:
        steps = [r.step for r in j.reports]
        assert steps == list(range(1, len(steps) + 1))
        assert 2 <= len(steps) <= 10
        if len(steps) > 9:  # had its budget: stopped at its first report past max_resource
            assert j.status is TrainingJobStatus.COMPLETED
            assert j.stop_reason["rule"] == "max_resource"
            assert j.reports[8].decision["action"] == "continue"
        else:
            assert j.status is TrainingJobStatus.STOPPED
            assert j.stop_reason["rule"] == "successive_halving"
            assert j.stop_reason["rung"] in (2, 6)
    assert any(len(j.reports) == 10 for j in job.training_jobs)
    details = job.describe()["AmtlibDetails"]["Strategy"]
    assert details["RungLevels"] == [2, 6] and details["MaxResource"] == 9


def test_a_job_ending_at_max_resource_returns_normally(tmp_path):
    job = make(
        tmp_path,
        train=obj.curve_catching,
        strategy="Hyperband",
        max_jobs=10,
        strategy_config={"max_resource": 5},
    ).fit()
    finished = [j for j in job.training_jobs if len(j.reports) == 5]
    assert finished
    for j in finished:  # the loop ended at epoch 5 = max_resource; nothing was raised
        assert j.status is TrainingJobStatus.COMPLETED
        assert "stopped_at" not in j.metrics and j.stop_reason is None


@pytest.mark.parametrize(
    "kw",
    [
        dict(early_stopping_type="Auto", max_jobs=10),
        dict(strategy="Hyperband", strategy_config={"max_resource": 5, "mode": "promotion"}),
    ],
)
def test_an_error_after_the_tuner_ended_a_job_keeps_its_reported_value(tmp_path, kw):
    job = make(tmp_path, train=obj.curve_failing_to_save, **kw).fit()
    ended = [j for j in job.training_jobs if len(j.reports) < 5]
    assert ended
    for j in ended:  # stopped (or told to pause) and then its checkpoint could not be saved
        assert j.status is TrainingJobStatus.STOPPED
        assert j.objective_value == j.reports[-1].metrics["loss"]
        assert j.stop_reason["action"] == "stop"
        assert "raised OSError: disk full" in j.failure_reason and "OSError" in j.traceback
        assert not any(e["event"] in ("paused", "promoted") for e in j.history)
    assert all(j.status is not TrainingJobStatus.FAILED for j in job.training_jobs)


def test_hyperband_max_resource_comes_from_static_epochs(tmp_path):
    tuner = make(tmp_path, strategy="Hyperband", static_hyperparameters={"num_epochs": 27})
    assert tuner.strategy_config["max_resource"] == 27
    with pytest.raises(ValidationError, match="needs a max_resource"):
        make(tmp_path, strategy="Hyperband", static_hyperparameters={"lr": 0.1})


@pytest.mark.parametrize(
    ("executor", "model"), [("inline", "random"), ("process", "random"), ("inline", "bayesian")]
)
def test_promotion_resumes_from_the_checkpoint_without_recounting_epochs(tmp_path, executor, model):
    job = make(
        tmp_path,
        train=obj.checkpointed,
        strategy="Hyperband",
        max_jobs=18,
        max_parallel_jobs=2,
        executor=executor,
        static_hyperparameters={"epochs": 9},
        strategy_config={"max_resource": 9, "mode": "promotion", "model": model},
        checkpoint_root=str(tmp_path / "ckpt"),
    ).fit()
    assert job.describe()["AmtlibDetails"]["Strategy"]["Model"] == model
    promoted = [j for j in job.training_jobs if any(e["event"] == "promoted" for e in j.history)]
    assert promoted
    for j in job.training_jobs:
        state = json.loads((Path(tmp_path / "ckpt") / j.name / "state.json").read_text())
        steps = [r.step for r in j.reports]
        # Each epoch trained once, reported once, in order, across pauses and resumptions.
        assert state["trained"] == steps == list(range(1, len(steps) + 1))
    for j in promoted:
        pauses = [e for e in j.history if e["event"] == "paused"]
        resumes = [e for e in j.history if e["event"] == "promoted"]
        assert pauses and resumes and resumes[0]["step"] == pauses[0]["rung"]
    total = sum(len(j.reports) for j in job.training_jobs)
    assert job.describe()["AmtlibDetails"]["ConsumedSteps"] == total


def promoting(tmp_path, train, n, executor, **kw):
    """Promotion-mode ASHA over the n configurations x = 1..n, one job each, two at a time."""
    return make(
        tmp_path,
        train=train,
        hyperparameter_ranges={"x": IntegerParameter(1, n)},
        strategy="Hyperband",
        strategy_config={"max_resource": 9, "mode": "promotion", "brackets": 1},
        static_hyperparameters={"epochs": 9},
        max_jobs=n,
        max_parallel_jobs=2,
        executor=executor,
        **kw,
    )


def test_promoting_a_job_that_saved_no_checkpoint_warns_once(tmp_path):
    # A loop that ignores resume_step and saves nothing trains again from scratch when promoted,
    # and its epochs 1, 2, ... are recorded as steps after the pause: silently wrong records.
    with pytest.warns(UserWarning, match=r"saved nothing in its checkpoint folder") as record:
        job = promoting(tmp_path, obj.curve, 4, "inline").fit()
    assert len([w for w in record if "checkpoint folder" in str(w.message)]) == 1
    assert record[0].filename == __file__  # points at the fit() call
    assert any(e["event"] == "promoted" for j in job.training_jobs for e in j.history)


@pytest.mark.parametrize("executor", ["inline", "thread"])
def test_a_paused_job_is_not_resumed_before_its_paused_attempt_is_recorded(tmp_path, executor):
    # Two configurations, two slots: both pause at the first rung, and once no new configuration
    # is left the better one is promoted. Its paused attempt must be recorded first; the wrong
    # order (which wait() gave at random) recorded a finished job as Stopped at an old value.
    for run in range(5):
        job = promoting(tmp_path, obj.integer_curve, 2, executor, job_name=f"run{run}").fit()
        for j in job.training_jobs:
            assert [r.step for r in j.reports] == list(range(1, 10)), j.name
            assert j.status is TrainingJobStatus.COMPLETED, j.history
            assert j.objective_value == pytest.approx(j.hyperparameters["x"] + 1 / 9)
            events = [e["event"] for e in j.history if e["event"] in ("paused", "promoted")]
            assert events == ["paused", "promoted"] * (len(events) // 2), events


def test_model_based_hyperband_runs_and_proposes_valid_configurations(tmp_path):
    job = make(
        tmp_path,
        strategy="Hyperband",
        max_jobs=30,
        static_hyperparameters={"epochs": 9},
        strategy_config={"max_resource": 9, "model": "bayesian"},
    ).fit()
    assert len(job.training_jobs) == 30
    xs = [j.hyperparameters["x"] for j in job.training_jobs]
    assert all(0.0 <= x <= 1.0 for x in xs) and len(set(xs)) == 30
    # The model steers later configurations toward small x (the loss is x + 1/epoch).
    assert sum(xs[-10:]) / 10 < sum(xs[:10]) / 10


def test_a_time_limit_stops_jobs_it_cannot_kill_at_their_next_report(tmp_path):
    job = make(
        tmp_path,
        train=obj.slow_curve,
        executor="thread",
        max_parallel_jobs=2,
        max_jobs=4,
        max_runtime_in_seconds=1.0,
        static_hyperparameters={"epochs": 1000},
    ).fit()
    stopped = [j for j in job.training_jobs if j.status is TrainingJobStatus.STOPPED]
    assert len(stopped) == 2  # the two that were running
    for j in stopped:
        assert j.stop_reason["rule"] == "tuner"
        assert j.stop_reason["why"] == "MaxRuntimeInSeconds reached"
        assert len(j.reports) < 1000


def test_an_inline_job_is_stopped_at_its_next_report_after_the_time_limit(tmp_path):
    # The loop that enforces the limit is blocked inside the inline job, so the report must.
    job = make(
        tmp_path,
        train=obj.slow_curve,
        executor="inline",
        max_jobs=4,
        max_runtime_in_seconds=1.0,
        static_hyperparameters={"epochs": 1000},
    ).fit()
    (only,) = job.training_jobs  # nothing launched after the limit
    assert only.status is TrainingJobStatus.STOPPED
    assert only.stop_reason == {
        "action": "stop",
        "rule": "tuner",
        "why": "MaxRuntimeInSeconds reached",
    }
    assert len(only.reports) < 1000
    assert job.describe()["AmtlibDetails"]["CompletionReason"] == "MaxRuntimeInSeconds reached"


def test_reports_and_stops_on_a_dask_cluster(tmp_path):
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):

        def train(hp):
            import amtlib

            for epoch in range(1, 10):
                amtlib.report(loss=hp["x"] + 1.0 / epoch)

        job = make(
            tmp_path,
            train=train,
            executor=client.get_executor(),
            max_parallel_jobs=2,
            max_jobs=12,
            early_stopping_type="Auto",
        ).fit()
    assert all(len(j.reports) >= 1 for j in job.training_jobs)
    assert any(j.status is TrainingJobStatus.STOPPED for j in job.training_jobs)
    assert any(j.status is TrainingJobStatus.COMPLETED for j in job.training_jobs)


def test_promotion_with_an_in_memory_store_leaves_no_checkpoint_folder(tmp_path):
    import glob
    import tempfile

    pattern = f"{tempfile.gettempdir()}/amtlib-mem-promo-*"
    before = set(glob.glob(pattern))
    make(
        tmp_path,
        train=obj.checkpointed,
        strategy="Hyperband",
        store=":memory:",
        job_name="mem-promo",
        max_jobs=6,
        strategy_config={"max_resource": 3, "mode": "promotion"},
        static_hyperparameters={"epochs": 3},
    ).fit()
    assert set(glob.glob(pattern)) == before


def test_a_median_stop_among_values_near_the_float_limit_is_stored_with_its_report(tmp_path):
    job = make(tmp_path, train=obj.near_float_limit, early_stopping_type="Auto", max_jobs=5).fit()
    last = job.training_jobs[4]
    assert last.status is TrainingJobStatus.STOPPED
    assert last.stop_reason["median"] == -1.7e308
    assert [(r.step, r.decision["action"]) for r in last.reports] == [(1, "stop")]
    stored = TuningJob.load("m", str(tmp_path / "s.db")).training_jobs[4]
    assert stored.reports == last.reports


def test_a_report_arriving_after_its_job_was_settled_is_not_stored(tmp_path):
    # A report can wait for the run's lock while the time limit kills and settles its job; once it
    # gets the lock the job's record is final: storing it would leave a last report that is not
    # the objective, and show the strategy a job it was already told had ended.
    import time

    from amtlib._run import Run
    from amtlib.reporting import Action
    from amtlib.store import SQLiteStore

    tuner = make(tmp_path, train=obj.curve, max_jobs=1)
    tuner.fit()
    before = TuningJob.load("m", str(tmp_path / "s.db")).training_jobs[0]
    run = Run(tuner, SQLiteStore(str(tmp_path / "s.db")), progress=False)
    decision = run.on_report(0, 99, {"loss": -1.0}, time.time())
    assert decision.action is Action.STOP and decision.reason["rule"] == "tuner"
    after = TuningJob.load("m", str(tmp_path / "s.db")).training_jobs[0]
    assert after.reports == before.reports and after.objective_value == before.objective_value


@pytest.mark.parametrize("executor", ["inline", "process"])
def test_a_resumed_job_that_returns_nothing_keeps_its_last_reported_objective(tmp_path, executor):
    # The worker sees only this attempt's reports; the value reported before the pause is the
    # latest one, and so the objective (AMT's rule), not a failure to return one.
    job = promoting(tmp_path, obj.done_when_resumed, 6, executor).fit()
    resumed = [j for j in job.training_jobs if any(e["event"] == "promoted" for e in j.history)]
    assert resumed
    for j in job.training_jobs:
        assert j.objective_status is ObjectiveStatus.SUCCEEDED, j.failure_reason
        assert j.objective_value == j.reports[-1].metrics["loss"]


def test_the_leaderboard_says_how_and_at_which_step_each_job_ended(tmp_path):
    job = promoting(tmp_path, obj.integer_curve, 6, "inline").fit()
    lines = job.leaderboard(top=None).splitlines()
    assert lines[0].split()[:5] == ["rank", "training", "job", "loss", "status"]
    for line in lines[2:]:
        name, status, step = line.split()[1], line.split()[3], int(line.split()[4])
        record = next(j for j in job.training_jobs if j.name == name)
        assert status == record.status.value and step == max(record.steps("loss"))
    plain = make(tmp_path, train=obj.quadratic, strategy="Random", job_name="plain", max_jobs=3)
    assert "status" not in plain.fit().leaderboard().splitlines()[0]
