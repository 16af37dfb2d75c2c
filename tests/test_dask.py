"""The same tuning job on a real dask.distributed LocalCluster with worker processes."""

from __future__ import annotations

import concurrent.futures
import contextlib

import pytest
from _tuners import tuner

from amtlib import (
    CategoricalParameter,
    ContinuousParameter,
    ExecutorLostError,
    IntegerParameter,
    StoreError,
    TrainingJobStatus,
    Tuner,
    TuningJob,
    ValidationError,
)

distributed = pytest.importorskip("distributed")  # installed by the dev extras, so this runs in CI


@contextlib.contextmanager
def _local_client():
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


@pytest.fixture(scope="module")
def client():
    with _local_client() as c:
        yield c


def test_tuning_job_on_dask_matches_the_inline_sequence(client, tmp_path):
    def train(hp):  # a closure: dask ships it by value to the worker processes
        import os

        if hp["x"] > 0.8:
            raise ValueError("too large")
        return {"loss": (hp["x"] - 0.3) ** 2, "pid": os.getpid()}

    ranges = {"x": ContinuousParameter(0.0, 1.0), "opt": CategoricalParameter(["a", "b"])}
    common = dict(
        objective_type="Minimize",
        strategy="Random",
        max_jobs=16,
        random_seed=3,
        store=str(tmp_path / "s.db"),
    )
    job = Tuner(
        train,
        "loss",
        ranges,
        max_parallel_jobs=2,
        executor=client.get_executor(),
        job_name="dask",
        **common,
    ).fit()
    inline = Tuner(train, "loss", ranges, executor="inline", job_name="inline", **common).fit()
    assert [j.hyperparameters for j in job.training_jobs] == [
        j.hyperparameters for j in inline.training_jobs
    ]
    pids = {j.metrics["pid"] for j in job.training_jobs if j.status is TrainingJobStatus.COMPLETED}
    import os

    assert os.getpid() not in pids  # ran in the worker processes
    failed = [j for j in job.training_jobs if j.hyperparameters["x"] > 0.8]
    assert all(
        j.status is TrainingJobStatus.FAILED and "too large" in j.failure_reason for j in failed
    )
    assert job.best_training_job.objective_value == inline.best_training_job.objective_value


def test_the_scheduler_host_is_found_from_a_client_or_its_executor(client):
    # With report_host="0.0.0.0", the address advertised to workers is that of the interface that
    # routes to the scheduler: both a Client and client.get_executor() must lead to it.
    from amtlib._run import _scheduler_host

    host = client.scheduler.address.split("://", 1)[1].rsplit(":", 1)[0]
    assert _scheduler_host(client) == host
    assert _scheduler_host(client.get_executor()) == host


# -- crashes on the cluster (found by fuzzing; each test fails without its fix) -------------------


@pytest.fixture
def fresh_client():
    """A cluster of its own: these tests kill and restart workers."""
    with _local_client() as c:
        yield c


def _tuner(executor, train, tmp_path, **kw):
    """Random search over x in [0, 1], one job unless told; ``hp["dir"]`` is ``tmp_path``."""
    args = dict(
        hyperparameter_ranges={"x": ContinuousParameter(0.0, 1.0)},
        objective_type="Minimize",
        strategy="Random",
        max_jobs=1,
        random_seed=0,
        job_name="dask",
        store=str(tmp_path / "s.db"),
        executor=executor,
        static_hyperparameters={"dir": str(tmp_path)},
    )
    args.update(kw)
    return Tuner(train, "loss", **args)


def test_a_job_dask_reruns_after_its_worker_died_fails_with_its_first_runs_reports(
    fresh_client, tmp_path
):
    # Dask runs a task again elsewhere when its worker dies; the second run's reports (steps from
    # 1 again) used to be appended to the first's, in one record. It fails, as under the process
    # executor, keeping the first run's reports.
    def train(hp):
        import os
        import signal
        from pathlib import Path

        import amtlib

        runs = Path(hp["dir"]) / "runs"
        first = not runs.exists()
        runs.write_text(runs.read_text() + "run\n" if runs.exists() else "run\n")
        for epoch in range(1, 6):
            amtlib.report(loss=hp["x"] + 1.0 / epoch)
            if first and epoch == 3:
                os.kill(os.getpid(), signal.SIGKILL)  # the worker dies mid-job
        return hp["x"]

    [job] = _tuner(fresh_client.get_executor(), train, tmp_path).fit().training_jobs
    assert (tmp_path / "runs").read_text() == "run\nrun\n"  # Dask did run it twice
    assert [r.step for r in job.reports] == [1, 2, 3]
    assert job.status is TrainingJobStatus.FAILED and job.retryable
    assert job.failure_reason.startswith("WorkerDiedError: the job's worker died")
    assert job.metrics["loss"] == pytest.approx(job.hyperparameters["x"] + 1.0 / 3)


def test_a_finished_job_is_not_run_again_when_its_idle_worker_dies(fresh_client, tmp_path):
    # The loop kept the last finished future referenced, so Dask kept its result and computed it
    # again when the worker holding it died.
    def train(hp):
        import os
        import signal
        import time
        from pathlib import Path

        folder = Path(hp["dir"])
        if hp["role"] == "fast":
            with open(folder / "fast_runs", "a") as f:
                f.write(f"{os.getpid()}\n")
            return 0.0
        time.sleep(2.0)  # the fast job is recorded meanwhile
        os.kill(int((folder / "fast_runs").read_text().split()[0]), signal.SIGKILL)
        time.sleep(2.0)  # long enough for Dask to run the fast job again, if it would
        return 1.0

    job = Tuner(
        train,
        "loss",
        {"role": CategoricalParameter(["fast", "slow"])},
        objective_type="Minimize",
        strategy="Grid",
        max_parallel_jobs=2,
        random_seed=0,
        store=str(tmp_path / "s.db"),
        executor=fresh_client.get_executor(),
        static_hyperparameters={"dir": str(tmp_path)},
    ).fit()
    assert [j.status for j in job.training_jobs] == [TrainingJobStatus.COMPLETED] * 2
    assert len((tmp_path / "fast_runs").read_text().split()) == 1


def test_a_job_dask_cancels_while_it_runs_fails_keeping_its_reports(fresh_client, tmp_path):
    # client.restart() cancels running tasks; such a job was recorded as "Cancelled before it
    # started", its reports dropped, and never re-run.
    import threading
    import time

    def train(hp):
        import time
        from pathlib import Path

        import amtlib

        for epoch in range(1, 4):
            amtlib.report(loss=hp["x"] + 1.0 / epoch)
        (Path(hp["dir"]) / "reported").write_text("3")
        time.sleep(30)  # the restart lands here
        return hp["x"]

    def restart_when_reported():
        while not (tmp_path / "reported").exists():
            time.sleep(0.05)
        time.sleep(0.3)  # the third report is recorded
        # It may lose its own connection as the workers go; the job's record tells what happened.
        with contextlib.suppress(Exception):
            fresh_client.restart()

    restarter = threading.Thread(target=restart_when_reported, daemon=True)
    restarter.start()
    [job] = _tuner(fresh_client.get_executor(), train, tmp_path).fit().training_jobs
    restarter.join(timeout=30)
    assert job.status is TrainingJobStatus.FAILED and job.retryable
    assert job.failure_reason.startswith("CancelledError: the executor cancelled the job")
    assert [r.step for r in job.reports] == [1, 2, 3]


# -- a Dask-like executor whose client loses its scheduler (no cluster needed) --------------------


class _Client:
    status = "running"


class _FlakyExecutor(concurrent.futures.Executor):
    """Runs tasks inline, like Dask's ClientExecutor as far as the tuner can see: a ``_client``
    with a ``status``. Submissions numbered in ``cancel`` (from 1) come back cancelled, unstarted
    (then ``on_cancel()`` runs); after ``close_after`` submissions the client closes."""

    def __init__(self, cancel=(), close_after=None, on_cancel=lambda: None):
        self._client = _Client()
        self.cancel, self.close_after, self.on_cancel = set(cancel), close_after, on_cancel
        self.submitted = 0

    def submit(self, fn, /, *args, **kwargs):
        self.submitted += 1
        future = concurrent.futures.Future()
        if self.submitted in self.cancel:
            future.cancel()
            future.set_running_or_notify_cancel()
            self.on_cancel()
        elif self.close_after is not None and self.submitted > self.close_after:
            self._client.status = "closed"  # never completes, as Dask's closed client does
        else:
            future.set_result(fn(*args, **kwargs))
        return future


def _quadratic(hp):
    return (hp["x"] - 0.3) ** 2


def _flaky_tune(executor, tmp_path, **kw):
    return _tuner(executor, _quadratic, tmp_path, **kw)


def test_a_closed_dask_client_ends_fit_with_an_error_instead_of_hanging(tmp_path):
    with pytest.raises(ExecutorLostError, match=r"Dask client is closed.*Fix: restart the cluster"):
        _flaky_tune(_FlakyExecutor(close_after=3), tmp_path, max_jobs=6).fit()
    job = TuningJob.load("dask", str(tmp_path / "s.db"))
    assert [j.status for j in job.training_jobs] == [TrainingJobStatus.COMPLETED] * 3 + [
        TrainingJobStatus.IN_PROGRESS  # re-runs when fit() resumes
    ]
    resumed = _flaky_tune(_FlakyExecutor(), tmp_path, max_jobs=6).fit()
    assert [j.status for j in resumed.training_jobs] == [TrainingJobStatus.COMPLETED] * 6
    assert resumed.training_jobs[3].attempt == 2


def test_a_job_the_executor_cancels_before_it_reports_is_launched_again(tmp_path):
    job = _flaky_tune(_FlakyExecutor(cancel={1, 2}), tmp_path, max_jobs=2).fit()
    first = job.training_jobs[0]
    assert [j.status for j in job.training_jobs] == [TrainingJobStatus.COMPLETED] * 2
    assert first.attempt == 3
    assert [(e["why"], e["step"]) for e in first.history if e["event"] == "relaunched"] == [
        ("cancelled by the executor", 0)
    ] * 2
    # Cancelled a third time, it is recorded as such (Stopped, not a failure of its configuration).
    again = _flaky_tune(_FlakyExecutor(cancel={1, 2, 3}), tmp_path / "b", max_jobs=1)
    (tmp_path / "b").mkdir()
    [cancelled] = again.fit().training_jobs
    assert cancelled.status is TrainingJobStatus.STOPPED and cancelled.attempt == 3
    assert cancelled.failure_reason == "Cancelled before it started"


def test_nothing_is_launched_while_the_dask_client_reconnects(tmp_path):
    class Reconnecting(_Client):
        checks = 0

        @property
        def status(self):  # reconnecting for the tuner's first few looks, then back
            self.checks += 1
            return "connecting" if self.checks <= 3 else "running"

    class Executor(_FlakyExecutor):
        def submit(self, fn, /, *args, **kwargs):
            if self._client.status == "connecting":  # what Dask does meanwhile
                self.cancel.add(self.submitted + 1)
            return super().submit(fn, *args, **kwargs)

    executor = Executor()
    executor._client = Reconnecting()
    job = _flaky_tune(executor, tmp_path, max_jobs=3).fit()
    assert [j.attempt for j in job.training_jobs] == [1, 1, 1] and executor.submitted == 3


def test_a_relaunch_still_waiting_at_the_time_limit_is_recorded_not_left_in_progress(tmp_path):
    from amtlib._run import Run
    from amtlib.store import SQLiteStore

    times_up = []
    executor = _FlakyExecutor(cancel={2}, on_cancel=lambda: times_up.append(True))
    tuner = _flaky_tune(executor, tmp_path, max_jobs=3, max_runtime_in_seconds=100)
    run = Run(tuner, SQLiteStore(str(tmp_path / "s.db")), progress=False)
    run.clock = lambda: 1e9 if times_up else 0.0  # the time runs out as job 2 is cancelled
    run.execute()
    job = TuningJob.load("dask", str(tmp_path / "s.db"))
    assert [j.status for j in job.training_jobs] == [
        TrainingJobStatus.COMPLETED,
        TrainingJobStatus.STOPPED,
    ]
    assert job.training_jobs[1].stop_reason["why"] == "MaxRuntimeInSeconds reached"


# -- review of the above: what the restart and cancel rules must not catch ------------------------


def _fork_reports(hp):
    import os

    import amtlib

    amtlib.report(loss=1.0)  # step 1
    child = os.fork()
    if child == 0:  # e.g. an evaluation subprocess reporting the loss: step 2 on its copy
        try:
            amtlib.report(loss=0.9)
        finally:
            os._exit(0)
    os.waitpid(child, 0)
    amtlib.report(loss=0.5)  # step 2 on the parent's counter: not a restart
    return 0.5


def test_a_forked_child_reporting_the_objective_is_not_taken_for_a_restart(tmp_path):
    [job] = _tuner("inline", _fork_reports, tmp_path).fit().training_jobs
    assert job.status is TrainingJobStatus.COMPLETED and job.failure_reason is None
    assert [r.step for r in job.reports] == [1, 2, 2]


def _checkpointed_curve(hp):
    from pathlib import Path

    import amtlib

    job = amtlib.current_job()
    for epoch in range(job.resume_step + 1, 10):
        (Path(job.checkpoint_dir) / "epoch").write_text(str(epoch))
        amtlib.report(loss=hp["x"] + 1.0 / epoch)


def test_a_promoted_job_cancelled_before_it_reports_is_relaunched_from_its_checkpoint(tmp_path):
    # Its reports from before the pause are not this attempt's: it used to be failed, keeping the
    # value it paused at as a "failed" objective.
    executor = _FlakyExecutor()
    tuner = _tuner(
        executor,
        _checkpointed_curve,
        tmp_path,
        hyperparameter_ranges={"x": CategoricalParameter([0.1, 0.2])},
        strategy="Hyperband",
        strategy_config={"max_resource": 9, "mode": "promotion", "brackets": 1},
        max_jobs=2,
    )
    original = executor.submit

    def cancel_promotions(fn, /, spec, **kwargs):  # the first launch of every resumed attempt
        if spec.resume_step and not any(e["event"] == "relaunched" for e in tuner_job(spec)):
            executor.cancel.add(executor.submitted + 1)
        return original(fn, spec, **kwargs)

    def tuner_job(spec):
        return TuningJob.load("dask", str(tmp_path / "s.db")).training_jobs[spec.index].history

    executor.submit = cancel_promotions
    job = tuner.fit()
    relaunched = [
        j for j in job.training_jobs if any(e["event"] == "relaunched" for e in j.history)
    ]
    assert relaunched, [j.history for j in job.training_jobs]
    for j in relaunched:
        event = next(e for e in j.history if e["event"] == "relaunched")
        steps = [r.step for r in j.reports]
        assert event["step"] > 0 and steps == list(range(1, len(steps) + 1))  # no step repeated
        assert j.status is TrainingJobStatus.COMPLETED and j.failure_reason is None


def test_jobs_cancelled_while_the_client_reconnects_re_run_when_fit_resumes(tmp_path):
    # Dask's client cancels every future while it reconnects, then closes: those jobs used to be
    # failed although the error said they would re-run.
    class Losing(_FlakyExecutor):
        def submit(self, fn, /, *args, **kwargs):
            if self.submitted == 2:  # the third job reports, then its scheduler goes
                fn(*args, **kwargs)
                self._client.status = "connecting"
                self.cancel.add(3)
                self.on_cancel = lambda: setattr(self._client, "status", "closed")
            return super().submit(fn, *args, **kwargs)

    def reports(hp):
        import amtlib

        amtlib.report(loss=hp["x"])
        return hp["x"]

    with pytest.raises(ExecutorLostError):
        _tuner(Losing(), reports, tmp_path, max_jobs=4).fit()
    job = TuningJob.load("dask", str(tmp_path / "s.db"))
    assert [j.status for j in job.training_jobs] == [TrainingJobStatus.COMPLETED] * 2 + [
        TrainingJobStatus.IN_PROGRESS
    ]
    assert job.training_jobs[2].reports == ()  # dropped: the job runs again from the start
    resumed = _tuner(_FlakyExecutor(), reports, tmp_path, max_jobs=4).fit()
    assert [j.status for j in resumed.training_jobs] == [TrainingJobStatus.COMPLETED] * 4


def test_no_job_is_launched_after_the_time_limit_passed_while_reconnecting(tmp_path):
    from amtlib._run import Run
    from amtlib.store import SQLiteStore

    class Clock:
        now = 0.0

    class Reconnects(_FlakyExecutor):
        def submit(self, fn, /, *args, **kwargs):
            if self.submitted == 1:  # after the first job: the client reconnects for 200 s
                self._client.status = "connecting"
            return super().submit(fn, *args, **kwargs)

    executor = Reconnects()
    tuner = _flaky_tune(executor, tmp_path, max_jobs=5, max_runtime_in_seconds=100)
    run = Run(tuner, SQLiteStore(str(tmp_path / "s.db")), progress=False)

    def clock():
        if executor._client.status == "connecting":
            Clock.now += 50.0
            if Clock.now > 200:
                executor._client.status = "running"
        return Clock.now

    run.clock = clock
    run.execute()
    assert executor.submitted == 2  # the running one, and nothing once the time was up


def test_a_job_cancelled_after_it_was_told_to_stop_is_recorded_stopped_with_its_value(tmp_path):
    # The executor's cancel lands between the stop decision and the function's return.
    class CancelsStopped(_FlakyExecutor):
        def submit(self, fn, /, *args, **kwargs):
            self.submitted += 1
            future = concurrent.futures.Future()
            outcome = fn(*args, **kwargs)
            if outcome.stop_action is not None:  # it was told to stop: cancel it
                future.cancel()
                future.set_running_or_notify_cancel()
            else:
                future.set_result(outcome)
            return future

    def curve(hp):
        import amtlib

        for epoch in range(1, 10):
            amtlib.report(loss=hp["x"] + 1.0 / epoch)

    job = _tuner(
        CancelsStopped(),
        curve,
        tmp_path,
        hyperparameter_ranges={"x": IntegerParameter(1, 6)},
        strategy="Hyperband",
        strategy_config={"max_resource": 9, "brackets": 1},
        max_jobs=6,
    ).fit()
    stopped = [j for j in job.training_jobs if j.status is TrainingJobStatus.STOPPED]
    assert stopped and all(j.status is not TrainingJobStatus.FAILED for j in job.training_jobs)
    for j in stopped:
        assert j.objective_value == j.reports[-1].metrics["loss"]
        assert j.stop_reason["action"] == "stop" and j.failure_reason is None


def test_an_unpicklable_training_function_is_refused_before_any_job_on_dask(client, tmp_path):
    # It used to reach Dask, which raised a bare TypeError from deep inside distributed after the
    # first job's record was committed (left InProgress, the tuning job "Interrupted").
    import threading

    lock = threading.Lock()

    def train(hp):
        with lock:
            return hp["x"]

    store = str(tmp_path / "s.db")
    locked = tuner(train, store, max_jobs=2, job_name="locked", executor=client.get_executor())
    with pytest.raises(ValidationError, match=r"'.*train' must be picklable"):
        locked.fit()
    with pytest.raises(StoreError, match="no tuning job named 'locked'"):
        TuningJob.load("locked", store)
