"""How a job's record reads once it ends: its objective, its steps, and the reasons it carries."""

from __future__ import annotations

import os

import _objectives as obj
import pytest
from _tuners import tuner

from amtlib import (
    CategoricalParameter,
    ContinuousParameter,
    IntegerParameter,
    ObjectiveStatus,
    StoreError,
    TrainingJobStatus,
    TuningJob,
    ValidationError,
)
from amtlib.reporting import TrialStopped
from amtlib.strategies import RandomStrategy


def make(tmp_path, train=obj.curve, **kw):
    defaults = dict(
        strategy="Hyperband",
        strategy_config={"max_resource": 9, "brackets": 1},
        static_hyperparameters={"epochs": 9},
        max_jobs=8,
        job_name="r",
    )
    return tuner(train, **{"store": tmp_path / "s.db", **defaults, **kw})


def test_a_report_without_the_objective_shares_the_epoch(tmp_path):
    job = make(tmp_path, train=obj.curve_with_side_metric).fit()
    for j in job.training_jobs:
        loss_steps = sorted(j.steps("loss"))
        assert loss_steps == list(range(1, len(loss_steps) + 1))  # one step per epoch
        lr_steps = sorted(j.steps("lr"))  # at the epoch of its loss (a stopped job's last has none)
        assert lr_steps == loss_steps[: len(lr_steps)] and len(lr_steps) >= len(loss_steps) - 1
        assert all(r.decision["reason"] is None for r in j.reports if "loss" not in r.metrics)
        if j.stop_reason and j.stop_reason["rule"] == "successive_halving":
            assert j.stop_reason["step"] == j.stop_reason["rung"] == loss_steps[-1]
    assert any(max(j.steps("loss")) == 9 for j in job.training_jobs)
    consumed = sum(max(j.steps("loss")) for j in job.training_jobs)
    assert job.describe()["AmtlibDetails"]["ConsumedSteps"] == consumed


def test_a_stopped_job_keeps_its_last_reported_objective_whatever_it_returns(tmp_path):
    job = make(tmp_path, train=obj.curve_returning_zero).fit()
    stopped = [j for j in job.training_jobs if j.status is TrainingJobStatus.STOPPED]
    assert stopped
    for j in stopped:
        last = j.reports[-1].metrics["loss"]
        assert j.objective_value == pytest.approx(last) and j.objective_value > 0.0
    # Jobs that ran their course return 0.0 on their own: that is their objective.
    assert any(j.objective_value == 0.0 for j in job.training_jobs if j not in stopped)


@pytest.mark.parametrize("strategy", ["Random", "Hyperband"])
def test_decision_reasons_read_in_the_metric_units_when_maximising(tmp_path, strategy):
    early = "Auto" if strategy == "Random" else "Off"
    job = make(
        tmp_path,
        train=obj.accuracy_curve,
        objective_metric_name="acc",
        objective_type="Maximize",
        strategy=strategy,
        early_stopping_type=early,
        strategy_config={} if strategy == "Random" else {"max_resource": 9, "brackets": 1},
        max_jobs=10,
    ).fit()
    stopped = [j for j in job.training_jobs if j.status is TrainingJobStatus.STOPPED]
    assert stopped
    for j in stopped:
        reason = j.stop_reason
        assert (
            reason["value"] == pytest.approx(j.reports[-1].metrics["acc"]) and reason["value"] > 0
        )
        bar = reason["median"] if strategy == "Random" else reason["cutoff"]
        assert bar > reason["value"]  # stopped for being below the bar, in accuracy


def test_a_report_crossing_several_rungs_is_judged_at_each(tmp_path):
    job = make(
        tmp_path,
        train=obj.curve_every_fifth,
        strategy_config={"max_resource": 27, "brackets": 1},
        static_hyperparameters={"epochs": 27},
        max_jobs=6,
    ).fit()
    first = job.training_jobs[0].reports[0]  # step 5 crosses rungs 1 and 3: both recorded
    assert first.step == 5 and first.decision["reason"]["rung"] == 3
    for j in job.training_jobs[1:]:
        if j.stop_reason and j.stop_reason.get("rule") == "successive_halving":
            assert j.stop_reason["step"] in (5, 10)
            assert j.stop_reason["rung"] in (1, 3, 9)


def test_hyperband_never_repeats_a_configuration_of_a_finite_space(tmp_path):
    ranges = {"k": IntegerParameter(1, 3), "opt": CategoricalParameter(["a", "b"])}

    def train_k(hp):
        import amtlib

        for epoch in range(1, 4):
            amtlib.report(loss=hp["k"] + 1.0 / epoch)

    job = make(
        tmp_path,
        train=train_k,
        hyperparameter_ranges=ranges,
        strategy_config={"max_resource": 3},
        max_jobs=50,
    ).fit()
    seen = [(j.hyperparameters["k"], j.hyperparameters["opt"]) for j in job.training_jobs]
    assert len(seen) == len(set(seen)) == 6
    assert "nothing left" in job.describe()["AmtlibDetails"]["CompletionReason"]


def test_a_job_killed_at_the_time_limit_keeps_its_last_report(tmp_path):
    job = make(
        tmp_path,
        train=obj.reporting_sleeper,
        strategy="Random",
        strategy_config={},
        executor="process",
        max_parallel_jobs=2,
        max_runtime_in_seconds=3.0,
    ).fit()
    killed = [j for j in job.training_jobs if j.status is TrainingJobStatus.STOPPED]
    assert killed
    for j in killed:
        assert j.stop_reason == {
            "action": "stop",
            "rule": "tuner",
            "why": "MaxRuntimeInSeconds reached",
        }
        if j.reports:  # what it reported before the kill is its objective
            assert j.objective_status is ObjectiveStatus.SUCCEEDED
            assert j.objective_value == pytest.approx(j.reports[-1].metrics["loss"])
        else:
            assert j.objective_status is ObjectiveStatus.FAILED
    assert job.best_training_job is not None


def told_trials(monkeypatch):
    """Every Trial the tuner tells the Random strategy, in order."""
    told = []
    monkeypatch.setattr(RandomStrategy, "tell", lambda self, trial: told.append(trial))
    return told


def test_a_job_killed_before_any_value_is_unfinished_not_failed(tmp_path, monkeypatch):
    # Killed at the time limit before it reported: the configuration neither succeeded nor failed,
    # so a feasibility model must not learn that it fails.
    told = told_trials(monkeypatch)
    job = make(
        tmp_path,
        train=obj.silent_when_large,
        strategy="Random",
        strategy_config={},
        executor="process",
        max_parallel_jobs=2,
        max_jobs=6,
        max_runtime_in_seconds=2.0,
    ).fit()
    by_index = {t.index: t for t in told}
    killed = [j for j in job.training_jobs if j.status is TrainingJobStatus.STOPPED]
    assert killed and all(j.hyperparameters["x"] > 0.5 for j in killed)
    for j in job.training_jobs:
        trial = by_index[j.index]
        assert trial.unfinished is (j.status is TrainingJobStatus.STOPPED)
        assert (trial.loss is None) is trial.unfinished


def test_a_job_that_stops_itself_before_any_value_is_not_unfinished(tmp_path, monkeypatch):
    # TrialStopped raised by the training code itself, before any report: the configuration gave no
    # value of its own accord, so a feasibility model may learn from it (only the tuner's own stops,
    # a time limit or a cancellation, are "unfinished").
    told = told_trials(monkeypatch)

    def train(hp):
        if hp["x"] > 0.5:
            raise TrialStopped("stop", {"rule": "mine"})
        return hp["x"]

    job = make(tmp_path, train=train, strategy="Random", strategy_config={}, max_jobs=8).fit()
    stopped = [j for j in job.training_jobs if j.status is TrainingJobStatus.STOPPED]
    assert stopped
    for j in stopped:
        (trial,) = [t for t in told if t.index == j.index]
        assert trial.loss is None and not trial.unfinished


def _pausing_itself(hp):
    """Reports two epochs, then raises TrialStopped("pause") of its own (no tuner decided it)."""
    import amtlib

    amtlib.report(loss=hp["x"] + 1.0)
    amtlib.report(loss=hp["x"] + 0.5)
    raise amtlib.TrialStopped("pause")


@pytest.mark.parametrize("strategy", ["Random", "Hyperband"])
def test_a_pause_the_training_function_raises_itself_is_a_stop(tmp_path, strategy):
    # Only the tuner pauses a job (it alone can resume it); a pause of the function's own used to
    # be recorded "paused" (a "paused" event, stop_reason {"action": "pause"}) under any strategy.
    # Its first rung is at step 3: the function pauses itself before the tuner decides anything.
    config = {"min_resource": 3, "max_resource": 9, "brackets": 1, "mode": "promotion"}
    config = config if strategy == "Hyperband" else {}
    job = make(tmp_path, train=_pausing_itself, strategy=strategy, strategy_config=config).fit()
    assert len(job.training_jobs) == 8
    for j in job.training_jobs:
        assert j.status is TrainingJobStatus.STOPPED
        assert j.objective_value == j.hyperparameters["x"] + 0.5
        assert j.stop_reason == {"action": "stop", "source": "training function"}
        assert [e["event"] for e in j.history if e["event"] in ("paused", "promoted")] == []
        assert j.attempt == 1


def test_a_job_rerun_after_a_crash_is_judged_afresh(tmp_path):
    folder = str(tmp_path)
    tuner = make(
        tmp_path,
        train=obj.interrupted_then_worse,
        static_hyperparameters={"epochs": 9, "folder": folder},
        max_jobs=4,
    )
    with pytest.raises(KeyboardInterrupt):
        tuner.fit()
    job = tuner.fit()
    rerun = job.training_jobs[1]
    assert rerun.attempt == 2
    event = next(e for e in rerun.history if e["event"] == "rerun")
    assert event["discarded_reports"] == 4 and event["discarded_up_to_step"] == 4
    # Its re-run reports 5 worse than job 1: stopped at the first rung, where it is judged on its
    # new value (the lost attempt's values at rungs 1 and 3 were the best).
    assert rerun.status is TrainingJobStatus.STOPPED
    assert rerun.stop_reason["rung"] == 1 and rerun.stop_reason["value"] > 5.0
    later = job.training_jobs[2].reports[0].decision["reason"]
    assert later["recorded"] == 3 and later["cutoff"] < 1.0  # the re-run's value, not the old one
    assert [j.status for j in job.training_jobs[2:]] == [TrainingJobStatus.COMPLETED] * 2


def test_a_job_that_never_reports_is_flagged_once(tmp_path):
    with pytest.warns(UserWarning, match=r"without reporting 'loss'.*amtlib.report") as caught:
        make(tmp_path, train=obj.quadratic, max_jobs=3).fit()
    assert sum("without reporting" in str(w.message) for w in caught) == 1


def test_a_resumed_job_that_fails_keeps_the_metrics_it_reported_before(tmp_path):
    job = make(
        tmp_path,
        train=obj.fails_after_resuming,
        strategy_config={"max_resource": 9, "brackets": 1, "mode": "promotion"},
        max_jobs=12,
    ).fit()
    failed = [j for j in job.training_jobs if j.status is TrainingJobStatus.FAILED]
    assert failed
    for j in failed:
        assert j.metrics == {
            "loss": j.reports[-1].metrics["loss"],
            "other": j.reports[-1].metrics["other"],
        }


def test_an_unpicklable_training_function_is_refused_before_any_job(tmp_path):
    import threading

    lock = threading.Lock()

    def train(hp):
        with lock:
            return hp["x"]

    tuner = make(tmp_path, train=train, strategy="Random", strategy_config={}, executor="process")
    with pytest.raises(ValidationError, match=r"'.*train' must be picklable.*executor='thread'"):
        tuner.fit()
    # Refused before the tuning job was recorded (it used to stay InProgress, with no end).
    with pytest.raises(StoreError, match="no tuning job named 'r'"):
        TuningJob.load("r", str(tmp_path / "s.db"))


def _records_checkpoint_dir(hp):
    """Says whether its checkpoint folder is under ``root``, then moves to another working
    directory (as training code that writes per-run output may)."""
    import tempfile

    import amtlib

    folder = amtlib.current_job().checkpoint_dir
    os.chdir(tempfile.mkdtemp())
    return {"loss": hp["x"], "under_root": float(folder.startswith(hp["root"] + os.sep))}


def test_checkpoint_folders_are_absolute_when_given_relative(tmp_path, monkeypatch):
    # A worker may run in another working directory (a Dask cluster started elsewhere), and
    # in-process training code may change the tuner's: a relative folder (a relative store's, or
    # checkpoint_root's) sent jobs to save their checkpoints where a promoted job would not look.
    monkeypatch.chdir(tmp_path)
    job = make(
        tmp_path,
        train=_records_checkpoint_dir,
        store="s.db",
        checkpoint_root="checkpoints",
        strategy="Random",
        strategy_config={},
        static_hyperparameters={"root": str(tmp_path / "checkpoints")},
        max_jobs=3,
    ).fit()
    assert [j.metrics["under_root"] for j in job.training_jobs] == [1.0, 1.0, 1.0]


def test_describe_uses_amt_shapes_for_limits_and_the_hyperband_config(tmp_path):
    job = make(tmp_path, strategy_config={"MinResource": 1, "MaxResource": 9}).fit()
    config = job.describe()["HyperParameterTuningJobConfig"]
    assert config["StrategyConfig"] == {
        "HyperbandStrategyConfig": {"MinResource": 1, "MaxResource": 9}
    }
    assert "MaxRuntimeInSeconds" not in config["ResourceLimits"]  # not set: omitted, as AMT
    assert job.describe()["AmtlibDetails"]["StrategyConfig"]["mode"] == "stopping"
    assert "reports=" not in repr(job.training_jobs[0])  # repr stays short


@pytest.mark.parametrize("executor", ["inline", "process"])
def test_a_diverging_job_is_stopped_with_a_failed_objective(tmp_path, executor, monkeypatch):
    told = told_trials(monkeypatch)
    job = make(
        tmp_path,
        train=obj.diverges_above_half,
        strategy="Random",
        strategy_config={},
        static_hyperparameters={"epochs": 5},
        executor=executor,
        max_jobs=8,
    ).fit()
    for j in job.training_jobs:
        assert all("grad_norm" not in r.metrics for r in j.reports)
        if j.hyperparameters["x"] > 0.5:
            assert j.status is TrainingJobStatus.STOPPED
            assert j.objective_status is ObjectiveStatus.FAILED and j.objective_value is None
            assert j.stop_reason == {
                "action": "stop",
                "rule": "not_finite",
                "step": 3,
                "metric": "loss",
                "value": "nan",
            }
            assert [r.step for r in j.reports] == [1, 2] and "diverged" in j.failure_reason
            # The configuration failed: not "unfinished", so a feasibility model learns from it.
            (trial,) = [t for t in told if t.index == j.index]
            assert trial.loss is None and not trial.unfinished
        else:
            assert j.status is TrainingJobStatus.COMPLETED
    assert any(j.hyperparameters["x"] > 0.5 for j in job.training_jobs)


def test_a_huge_negative_loss_does_not_break_the_tuning_job_record(tmp_path):
    # The best value a compressed outlier (-1e300): the model's plausible improvement, mapped back
    # to objective units, overflowed to inf and the state could not be saved as JSON.
    def train(hp):
        return -1e300 if hp["x"] > 0.7 and hp["y"] > 0.5 else (hp["x"] - 0.3) ** 2 + hp["y"]

    tuner = make(
        tmp_path,
        train=train,
        hyperparameter_ranges={"x": ContinuousParameter(0, 1), "y": ContinuousParameter(0, 1)},
        strategy="Bayesian",
        strategy_config={"n_candidates": 64, "initial_design_size": 4},
        max_jobs=8,
        random_seed=5,
    )
    job = tuner.fit()
    assert job.status == "Completed" and job.best_training_job.objective_value == -1e300
    details = TuningJob.load("r", str(tmp_path / "s.db")).describe()["AmtlibDetails"]
    assert details["CompletionReason"] == "MaxNumberOfTrainingJobs reached"


def test_promotion_trains_the_best_of_a_used_up_finite_space_to_the_top(tmp_path):
    # Four configurations: once all are launched no rung gains values, so no promotion would be
    # earned; the best paused one is promoted anyway (it ended the run with all four paused).
    job = make(
        tmp_path,
        train=obj.integer_curve,
        hyperparameter_ranges={"x": IntegerParameter(0, 3)},
        strategy_config={"max_resource": 9, "brackets": 1, "mode": "promotion"},
        max_jobs=20,
    ).fit()
    best = job.best_training_job
    assert best.hyperparameters["x"] == 0 and max(best.steps("loss")) == 9
    assert all(not j.paused for j in job.training_jobs)
