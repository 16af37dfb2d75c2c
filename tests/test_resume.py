"""Resuming a tuning job: what must match, what is kept, and what the records say afterwards."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import _objectives as obj
import pytest
from _tuners import tuner

from amtlib import (
    CategoricalParameter,
    IntegerParameter,
    StoreError,
    TrainingJobStatus,
    TuningJob,
)


def constant(hp):
    return 1.0


def make(tmp_path, train=obj.quadratic, **kw):
    defaults = dict(max_jobs=4, job_name="j")
    return tuner(train, **{"store": tmp_path / "s.db", **defaults, **kw})


def test_resuming_with_the_ranges_in_another_order_is_refused(tmp_path):
    grid = {"n": IntegerParameter(1, 3), "o": CategoricalParameter(["a", "b"])}
    make(tmp_path, train=constant, hyperparameter_ranges=grid, strategy="Grid", max_jobs=None).fit()
    reordered = dict(reversed(list(grid.items())))
    with pytest.raises(StoreError, match=r"another order \(stored \['n', 'o'\]"):
        make(
            tmp_path,
            train=constant,
            hyperparameter_ranges=reordered,
            strategy="Grid",
            max_jobs=None,
        ).fit()


@pytest.mark.parametrize("values", [[1.0, 2.0], [True, 2]])
def test_resuming_with_values_of_another_type_is_refused(tmp_path, values):
    make(tmp_path, train=constant, hyperparameter_ranges={"k": CategoricalParameter([1, 2])}).fit()
    with pytest.raises(StoreError, match=r"another 'ranges': 'k' is stored as"):
        make(
            tmp_path, train=constant, hyperparameter_ranges={"k": CategoricalParameter(values)}
        ).fit()


def test_a_spent_time_limit_launches_nothing_more(tmp_path):
    tuner = make(
        tmp_path,
        train=obj.sleepy_short,
        max_jobs=10_000,
        max_runtime_in_seconds=0.5,
        executor="thread",
        max_parallel_jobs=2,
    )
    first = len(tuner.fit().training_jobs)
    again = tuner.fit()
    assert len(again.training_jobs) == first
    assert again.describe()["AmtlibDetails"]["CompletionReason"] == "MaxRuntimeInSeconds reached"


@pytest.fixture
def ctrl_c_raises():
    """SIGINT raising KeyboardInterrupt, as in a terminal: a shell's background job (CI started
    with ``&``) inherits it ignored, and then ``_thread.interrupt_main`` does nothing."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_jobs_that_finish_while_an_interrupted_tuner_waits_are_kept(tmp_path, ctrl_c_raises):
    tuner = make(
        tmp_path, train=obj.interrupts_the_tuner, executor="thread", max_parallel_jobs=2, max_jobs=6
    )
    with pytest.raises(KeyboardInterrupt):
        tuner.fit()
    stored = TuningJob.load("j", str(tmp_path / "s.db"))
    assert (
        stored.describe()["AmtlibDetails"]["CompletionReason"] == "Interrupted (KeyboardInterrupt)"
    )
    # The two jobs running at the interrupt ran to their end while the tuner waited for them:
    # recorded, not left to re-run.
    assert [j.status for j in stored.training_jobs] == [TrainingJobStatus.COMPLETED] * 2
    resumed = tuner.fit()
    assert len(resumed.training_jobs) == 6
    assert all(j.attempt == 1 for j in resumed.training_jobs)


def test_the_runtime_spent_before_a_crash_counts(tmp_path):
    store = tmp_path / "s.db"
    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        import _objectives as obj
        from amtlib import ContinuousParameter, Tuner
        Tuner(obj.sleepy, "loss", {{"x": ContinuousParameter(0.0, 1.0)}}, strategy="Random",
              max_jobs=1000, job_name="j", store={str(store)!r}, executor="inline").fit()
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            time.sleep(0.5)
            try:
                if len(TuningJob.load("j", str(store)).training_jobs) >= 8:
                    break
            except StoreError:  # not created yet, or its schema is being written
                continue
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    runtime = TuningJob.load("j", str(store)).describe()["ConsumedResources"]["RuntimeInSeconds"]
    assert runtime >= 1.5  # 8+ jobs of 0.4 s ran; the state is saved at least every second


def slow_quadratic(hp):
    time.sleep(0.2)
    return {"loss": hp["x"]}


def test_the_same_tuning_job_cannot_run_twice_at_once(tmp_path):
    import threading

    first = make(tmp_path, train=slow_quadratic, max_jobs=4, executor="thread")
    runner = threading.Thread(target=first.fit)
    runner.start()
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "s.db").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.1)
        with pytest.raises(StoreError, match="already being run by process"):
            make(tmp_path, train=slow_quadratic, max_jobs=4).fit()
    finally:
        runner.join()
    assert len(TuningJob.load("j", str(tmp_path / "s.db")).training_jobs) == 4
    # A refused resume (another seed) leaves no lease behind: the job resumes afterwards.
    with pytest.raises(StoreError, match="random_seed"):
        make(tmp_path, train=slow_quadratic, random_seed=5).fit()
    assert len(make(tmp_path, train=slow_quadratic, max_jobs=5).fit().training_jobs) == 5


def test_resuming_a_finished_promotion_job_changes_nothing(tmp_path):
    # Rung 1 lets floor(6 / 2) = 3 jobs through: two at once, one promoted later from its pause.
    # A resume must count that later promotion too, not hand the rung's "spare" one out again.
    config = {"max_resource": 2, "reduction_factor": 2, "mode": "promotion", "brackets": 1}
    kw = dict(train=obj.rung_one_by_index, strategy="Hyperband", strategy_config=config, max_jobs=6)
    first = make(tmp_path, **kw).fit()
    past = [j.index for j in first.training_jobs if max(j.steps("loss")) == 2]
    assert past == [1, 2, 3]
    assert any(e["event"] == "promoted" for j in first.training_jobs for e in j.history)
    again = make(tmp_path, **kw).fit()
    assert again.training_jobs == first.training_jobs


def test_a_job_interrupted_once_the_time_limit_was_spent_ends_stopped_on_resume(tmp_path):
    # A tuner killed (kill -9) past its time limit while a job it could not kill still ran (thread
    # executor): the resume may launch nothing, so it used to leave that job InProgress for good
    # (found by a crash fuzz). It ends as the limit would have ended it, with what it reported.
    from amtlib import SQLiteStore

    tuner = make(tmp_path, train=obj.curve, static_hyperparameters={"epochs": 3}, max_jobs=2)
    finished = tuner.fit().training_jobs
    store = SQLiteStore(str(tmp_path / "s.db"))
    interrupted = finished[1].replace(
        status=TrainingJobStatus.IN_PROGRESS, objective_value=None, end_time=None
    )
    store.put_training_job("j", interrupted)
    _, state = store.get_tuning_job("j")
    store.set_tuning_job_state("j", {**state, "status": "InProgress", "runtime_seconds": 100.0})
    store.close()

    resumed = make(
        tmp_path,
        train=obj.curve,
        static_hyperparameters={"epochs": 3},
        max_jobs=2,
        max_runtime_in_seconds=10.0,
    ).fit()
    job = resumed.training_jobs[1]
    assert job.status is TrainingJobStatus.STOPPED and job.attempt == 1
    assert job.reports == finished[1].reports  # kept: the job will not run again
    assert job.objective_value == finished[1].reports[-1].metrics["loss"]
    assert job.stop_reason == {
        "action": "stop",
        "rule": "tuner",
        "why": "MaxRuntimeInSeconds reached",
    }
    assert resumed.training_jobs[0] == finished[0]
    assert resumed.describe()["AmtlibDetails"]["CompletionReason"] == "MaxRuntimeInSeconds reached"


def _reads_its_saved_runtime(hp):
    """Runs 2.5 s, then returns the runtime the store holds for its tuning job ``j``."""
    time.sleep(2.5)
    return {"loss": hp["x"], "saved": TuningJob.load("j", hp["store"]).state["runtime_seconds"]}


def test_the_runtime_is_saved_while_an_inline_job_runs(tmp_path):
    # The inline executor runs a job inside the loop's submit(), so the loop's once-a-second save
    # waited for the job: a kill -9 then lost the whole job's runtime (found by a crash fuzz).
    store = str(tmp_path / "s.db")
    job = make(
        tmp_path,
        train=_reads_its_saved_runtime,
        static_hyperparameters={"store": store},
        max_jobs=1,
        executor="inline",
    ).fit()
    assert job.training_jobs[0].metrics["saved"] >= 1.25  # saved at least every second


def test_a_crash_right_after_a_resume_dropped_reports_keeps_what_was_dropped(tmp_path, monkeypatch):
    # A resume drops an interrupted job's partial reports before re-running it. If it then crashed,
    # the next resume found no reports and the job's `rerun` event lost how many were dropped (found
    # by a crash fuzz): the drop is now noted in the job's record in the same transaction.
    from amtlib import SQLiteStore

    args = dict(train=obj.curve, static_hyperparameters={"epochs": 3}, max_jobs=2)
    finished = make(tmp_path, **args).fit().training_jobs
    store = SQLiteStore(str(tmp_path / "s.db"))
    interrupted = finished[1].replace(
        status=TrainingJobStatus.IN_PROGRESS, objective_value=None, end_time=None
    )
    store.put_training_job("j", interrupted)
    store.close()

    def drop_then_crash(self, *args):
        drop(self, *args)
        raise KeyboardInterrupt  # as if killed right after the drop

    drop = SQLiteStore.delete_reports
    monkeypatch.setattr(SQLiteStore, "delete_reports", drop_then_crash)
    with pytest.raises(KeyboardInterrupt):
        make(tmp_path, **args).fit()
    monkeypatch.setattr(SQLiteStore, "delete_reports", drop)
    job = make(tmp_path, **args).fit().training_jobs[1]
    assert job.status is TrainingJobStatus.COMPLETED and job.attempt == 2
    (rerun,) = [e for e in job.history if e["event"] == "rerun"]
    assert rerun["discarded_reports"] == 3 and rerun["discarded_up_to_step"] == 3


def test_resuming_with_a_static_value_added_or_removed_names_it(tmp_path):
    # An added static value used to be reported as "stored as null", though nothing was stored.
    make(tmp_path, train=constant, static_hyperparameters={"a": 1}).fit()
    with pytest.raises(StoreError, match=r"'static_hyperparameters': 'e' is given, not stored"):
        make(tmp_path, train=constant, static_hyperparameters={"a": 1, "e": 1}).fit()
    with pytest.raises(StoreError, match=r"'static_hyperparameters': 'a' is stored, not given"):
        make(tmp_path, train=constant).fit()
