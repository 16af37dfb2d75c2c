"""One call of ``Tuner.fit``: the launch/wait/finish loop, and the decisions on intermediate reports.

Two threads touch the state of a run: the loop (this module's ``execute``) and the report server's
thread (``on_report``), which answers each report of a running job. One lock guards the state; the
loop never holds it while submitting or waiting, because an inline executor runs the job inside
``submit`` and the job's reports need the lock to be answered.

Durability: a job is committed to the store when it is launched and when it finishes, before the
strategy hears of it; each report is committed as it arrives, with the decision taken on it.

The module is over 400 lines because ``Run`` is one state machine: launching, recording outcomes,
deciding on reports, time limits, interrupts and crash re-runs all read and write the same state
under the same lock, and splitting them would pass that state around instead.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import secrets
import shutil
import socket
import sys
import tempfile
import threading
import time
import types
import warnings
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any

from amtlib._execution import JobOutcome, JobSpec, last_reported, run_training_job
from amtlib._progress import ProgressBar
from amtlib.errors import (
    AmtlibError,
    ExecutorLostError,
    StoreError,
    TuningJobFailedError,
    ValidationError,
    WorkerDiedError,
)
from amtlib.records import (
    ObjectiveStatus,
    ObjectiveType,
    Report,
    TrainingJob,
    TrainingJobStatus,
    Trial,
    json_safe,
)
from amtlib.reporting import Action, Decision, ReportServer, is_wildcard_host
from amtlib.store import SQLiteStore
from amtlib.strategies import make_strategy

if TYPE_CHECKING:
    from amtlib.tuner import Tuner


# The entries of a decision's reason that hold objective values (as losses, inside the rules).
_LOSS_KEYS = frozenset({"value", "median", "cutoff"})
_SHUTTING_DOWN = "the tuner is shutting down"
_OUT_OF_TIME = "MaxRuntimeInSeconds reached"
_CANCELLED_BEFORE_START = "Cancelled before it started"
# A job whose function started over in the same attempt: the executor ran it again (Dask does when
# the worker running it dies). Its first run's reports are kept and the second run's refused.
_RESTARTED = (
    "WorkerDiedError: the job's worker died while it ran, and the executor started it again (Dask "
    "re-runs a task whose worker was lost); amtlib keeps what the first run reported and does not "
    "mix the second run's reports into the same record"
)
_CANCELLED_WHILE_RUNNING = (
    "CancelledError: the executor cancelled the job while it ran (Dask does when its workers "
    "restart or its scheduler is lost); what it reported is kept"
)
# How often a job the executor cancels before any report is launched again (it may never have
# started) before it is recorded as cancelled.
_MAX_EXECUTOR_CANCELS = 2
# While it runs, the tuning job's state (runtime so far, the strategy's description) is saved at
# most this often, so a crash loses little runtime and other processes see progress.
_STATE_EVERY_SECONDS = 1.0


class Run:
    """The state of one ``fit()``; ``execute()`` runs it to the end."""

    def __init__(self, tuner: Tuner, store: SQLiteStore, progress: bool | None) -> None:
        self.tuner, self.store, self.name = tuner, store, tuner.job_name
        self.limits = tuner.limits
        self.clock = tuner._clock
        self.metric = tuner.objective_metric_name
        self.sign = -1.0 if tuner.objective_type is ObjectiveType.MAXIMIZE else 1.0
        # Before the tuning job is recorded: a refused function must leave no InProgress record.
        _check_shippable(tuner.train, tuner.executor)
        config = tuner.config()
        new_config = dict(config)
        if new_config["random_seed"] is None:
            new_config["random_seed"] = secrets.randbelow(2**31)
        state = {"status": "InProgress", "creation_time": time.time(), "runtime_seconds": 0.0}
        # Not part of the configuration a resume must match: a fixed bug is a reason to resume.
        function = {"training_function": function_fingerprint(tuner.train)}
        if store.create_tuning_job(
            self.name, {**new_config, "limits": self.limits.to_dict(), **function}, state
        ):
            config = new_config
            self.jobs: list[TrainingJob] = []
        else:
            stored, state = store.get_tuning_job(self.name)
            config = _check_resumable(self.name, store, stored, config)
            store.set_tuning_job_config(
                self.name, {**config, "limits": self.limits.to_dict(), **function}
            )
            self.jobs = store.get_training_jobs(self.name)
            before = stored.get("training_function")
            now = function["training_function"]
            if isinstance(before, dict) and not same_function(before, now) and self.jobs:
                _warn_other_function(self.name, before, now, self.jobs)
            if state.get("status") == "Failed":
                _warn_resuming_failed(self.name, self.jobs, self.limits.max_jobs)
        # Jobs a crash interrupted run again from the start: what they reported is discarded now,
        # before the strategy replays the records, so that no rung or median keeps their values.
        # Unless the time limit is spent: then they cannot run again, and end as the limit would
        # have ended them, with what they reported.
        limit = self.limits.max_runtime_in_seconds
        saved: Any = state.get("runtime_seconds", 0.0)
        time_spent = limit is not None and float(saved) >= limit
        self.discarded: dict[int, dict[str, Any]] = {}
        for job in self.jobs:
            if job.status is not TrainingJobStatus.IN_PROGRESS:
                continue
            if time_spent:
                self.jobs[job.index] = self.killed(job, _OUT_OF_TIME)
                store.put_training_job(self.name, self.jobs[job.index])
            elif job.reports:
                dropped = {
                    "discarded_reports": len(job.reports),
                    "discarded_up_to_step": max(r.step for r in job.reports),
                }
                # Noted in the record in the same transaction: a crash before the re-run starts
                # would otherwise lose what was dropped.
                event = {"event": "interrupted", "time": time.time(), **dropped}
                self.jobs[job.index] = job.replace(reports=(), history=(*job.history, event))
                store.delete_reports(self.name, job.index, self.jobs[job.index])
                self.discarded[job.index] = dropped
            elif job.history and job.history[-1].get("event") == "interrupted":
                # dropped by an earlier resume that stopped before re-running the job
                last = job.history[-1]
                self.discarded[job.index] = {k: last[k] for k in last if k.startswith("discarded_")}
        self.state: dict[str, Any] = state
        self.seed = int(config["random_seed"])
        self.strategy = make_strategy(
            tuner.strategy, tuner.space, seed=self.seed, config=tuner.strategy_config
        )
        self.strategy.restore([self.trial(job) for job in self.jobs])
        self.reruns = deque(j.index for j in self.jobs if j.status is TrainingJobStatus.IN_PROGRESS)
        self.lock = threading.Lock()
        self.running: dict[Future[JobOutcome], int] = {}
        self.curves = {j.index: self.losses(j) for j in self.jobs}  # loss by step, for the rules
        self.stop_decisions: dict[int, Decision] = {}  # the decision that ended a running job
        self.to_stop: dict[int, str] = {}  # running jobs to stop at their next report
        self.restarted: set[int] = set()  # running jobs whose function started over (_RESTARTED)
        self.new_client: set[int] = set()  # running jobs whose next report is a new client's first
        self.executor_cancels: dict[int, int] = {}  # index -> cancellations by a working executor
        self.relaunches: deque[int] = deque()  # cancelled by the executor, to launch again
        self.exhausted = self.out_of_time = False
        self.interruption: str | None = None  # why fit() ended early, if it did
        self.warned_no_reports = self.warned_no_checkpoint = False
        self.state_saved = 0.0
        self.finished_here = self.failed_here = 0
        self.ever_succeeded = any(
            j.objective_status is ObjectiveStatus.SUCCEEDED for j in self.jobs
        )
        self.checkpoints, self.temporary_checkpoints = _checkpoint_root(tuner, store)
        self.progress = ProgressBar(self.limits.max_jobs, tuner.objective_type, enabled=progress)
        self.progress.add(self.jobs)

    def losses(self, job: TrainingJob) -> dict[int, float]:
        return {
            step: self.sign * value
            for step, value in job.steps(self.metric).items()
            if value is not None and math.isfinite(value)
        }

    def trial(self, job: TrainingJob) -> Trial:
        """The strategy's view of a job: its objective as a loss to minimise."""
        loss = None
        if job.objective_status is ObjectiveStatus.SUCCEEDED and job.objective_value is not None:
            loss = self.sign * job.objective_value
        intermediate = tuple(sorted(self.losses(job).items()))
        # Stopped without a value by the tuner itself (killed or told to stop at the time limit,
        # or cancelled before it started), not by the training code (a NaN, its own TrialStopped).
        unfinished = (
            loss is None
            and job.status is TrainingJobStatus.STOPPED
            and (
                (job.stop_reason or {}).get("rule") == "tuner"
                or job.failure_reason == _CANCELLED_BEFORE_START
            )
        )
        return Trial(
            job.index,
            job.hyperparameters,
            job.status,
            loss,
            intermediate,
            job.paused,
            job.history,
            unfinished,
        )

    # -- the loop -------------------------------------------------------------------------------

    def execute(self) -> None:
        self.started = self.clock()
        self.runtime_before = float(self.state.get("runtime_seconds", 0.0))
        self.executor, owned = _resolve_executor(self.tuner.executor, self.limits.max_parallel_jobs)
        self.server = ReportServer(
            self.on_report,
            host=self.tuner.report_host,
            advertise_host=_advertised_host(self.tuner.report_host, self.executor),
            on_new_client=self.on_new_client,
        ).start()
        self.save_state(status="InProgress", end_time=None, completion_reason=None)
        ticker_stop = threading.Event()
        ticker = threading.Thread(
            target=self.keep_runtime_saved, args=(ticker_stop,), name="amtlib-runtime", daemon=True
        )
        ticker.start()
        status = "Stopped"
        # A tuning job whose time was spent by earlier fit() calls launches nothing more.
        self.out_of_time = self.time_left() == 0.0
        try:
            while True:
                if time.monotonic() - self.state_saved >= _STATE_EVERY_SECONDS:
                    with self.lock:
                        self.save_state()  # the runtime so far, should the tuner crash
                if not self.out_of_time and self.time_left() == 0.0:
                    self.out_of_time = True
                    self.stop_all(_OUT_OF_TIME)
                lost, reconnecting = _executor_health(self.executor)
                if lost is not None:
                    raise ExecutorLostError(
                        f"Tuning job {self.name!r}: the executor can no longer run jobs ({lost}). "
                        "Finished training jobs are stored, and the ones still to run or "
                        "relaunch run when fit() resumes the tuning job. Fix: restart the "
                        "cluster (or pass a working executor) and call fit() again with the "
                        "same job_name."
                    )
                if not reconnecting:  # a reconnecting Dask client cancels what it is given
                    self.launch()
                if not self.running:
                    if reconnecting and not self.out_of_time:
                        time.sleep(_STATE_EVERY_SECONDS / 2)
                        continue
                    break
                done, _ = wait(self.running, timeout=self.wait_for(), return_when=FIRST_COMPLETED)
                # In launch order: a set's order follows memory addresses, and the strategy must be
                # told the same jobs in the same order on every run (reproducibility). Popped, so
                # that no reference outlives its record: Dask keeps a task's result, and
                # recomputes it when its worker dies, while its future is referenced.
                ordered = sorted(done, key=self.running.__getitem__, reverse=True)
                done.clear()
                while ordered:
                    self.finish(ordered.pop())
            status = "Completed"
        except TuningJobFailedError as exc:
            status = "Failed"
            self.state["failure_reason"] = str(exc)
            self.interruption = "initial_failure_limit reached"
            raise
        except BaseException as exc:  # Ctrl-C, or a bug: what finished is kept, the rest re-runs
            self.interruption = f"Interrupted ({type(exc).__name__})"
            raise
        finally:
            ticker_stop.set()
            ticker.join()
            self.abandon_running()
            if owned:
                self.executor.shutdown(wait=True, cancel_futures=True)
            self.record_finished_meanwhile()  # those done by now (all of them, if ours)
            self.running.clear()
            self.server.close()
            if self.temporary_checkpoints and self.checkpoints is not None:
                shutil.rmtree(self.checkpoints, ignore_errors=True)  # nothing kept the store either
            self.progress.close()
            self.save_state(status=status, end_time=time.time())

    def launch(self) -> None:
        while len(self.running) < self.limits.max_parallel_jobs and not self.out_of_time:
            with self.lock:
                found = self.next_job()
                if found is None:
                    return
                job, resume_step = found
                self.jobs[job.index] = job
                self.store.put_training_job(self.name, job)
                channel = self.server.register(job.index)
            spec = JobSpec(
                self.tuner.train,
                {**self.tuner.static_hyperparameters, **job.hyperparameters},
                self.metric,
                job.name,
                job.index,
                channel,
                self.checkpoint_dir(job),
                resume_step,
                reported=last_reported(job.reports) if resume_step else {},
            )
            self.running[self.executor.submit(run_training_job, spec)] = job.index

    def next_job(self) -> tuple[TrainingJob, int] | None:
        """The next job to launch and the step it resumes from; ``None`` when nothing is due."""
        now = time.time()
        if self.relaunches:  # cancelled by the executor: again, from where this attempt began
            old = self.jobs[self.relaunches.popleft()]
            step = _attempt_start(old)
            event = {
                "event": "relaunched",
                "time": now,
                "step": step,
                "attempt": old.attempt + 1,
                "why": "cancelled by the executor",
            }
            return old.replace(attempt=old.attempt + 1, history=(*old.history, event)), step
        if self.reruns:  # interrupted by a crash of the tuner: run again from the start
            old = self.jobs[self.reruns.popleft()]
            event = {
                "event": "rerun",
                "time": now,
                "attempt": old.attempt + 1,
                **self.discarded.get(old.index, {}),
            }
            job = TrainingJob(
                old.index,
                old.name,
                old.hyperparameters,
                attempt=old.attempt + 1,
                creation_time=old.creation_time,
                history=(*old.history, event),
            )
            return job, 0
        promoted = self.strategy.promote()
        if promoted is not None:  # a paused job resumes from its checkpoint
            old = self.jobs[promoted]
            step = max(old.steps(self.metric), default=0)
            self.warn_if_no_checkpoint(old, step)
            event = {"event": "promoted", "time": now, "step": step}
            job = old.replace(
                status=TrainingJobStatus.IN_PROGRESS,
                end_time=None,
                objective_status=ObjectiveStatus.PENDING,
                stop_reason=None,
                history=(*old.history, event),
            )
            return job, step
        if len(self.jobs) >= self.limits.max_jobs or self.exhausted:
            return None
        asked = self.strategy.ask(1)
        if not asked:
            self.exhausted = not self.running
            return None
        index = len(self.jobs)
        noted = self.strategy.launch_record(index)
        launched = ({"event": "launched", "time": now, **noted},) if noted else ()
        job = TrainingJob(
            index, f"{self.name}-{index + 1:03d}", asked[0], creation_time=now, history=launched
        )
        self.jobs.append(job)
        return job, 0

    def finish(self, future: Future[JobOutcome]) -> None:
        job = self.record(future)
        if job is None:  # the executor cancelled it before it reported: it is launched again
            return
        self.progress.add([job])
        self.warn_if_never_reported(job)
        self.check_failures(job)

    def warn_if_no_checkpoint(self, job: TrainingJob, step: int) -> None:
        """Once per fit(): a promoted job left nothing in its checkpoint folder, so it will most
        likely train again from scratch while its reports continue from ``step``."""
        folder = self.checkpoint_dir(job)
        if self.warned_no_checkpoint or folder is None or any(Path(folder).iterdir()):
            return
        self.warned_no_checkpoint = True
        warnings.warn(
            f"Training job {job.name} is promoted to resume after step {step}, but it saved "
            f"nothing in its checkpoint folder ({folder}): unless it keeps its state elsewhere, "
            f"it trains again from scratch, and its reports are recorded from step {step + 1} "
            "on. Fix: when amtlib.report raises TrialStopped, save the model to "
            "amtlib.current_job().checkpoint_dir, and load it when current_job().resume_step "
            "> 0 (see docs/concepts.md).",
            UserWarning,
            stacklevel=6,  # the user's fit() call
        )

    def warn_if_never_reported(self, job: TrainingJob) -> None:
        """Once per fit(): a job finished without one report of the objective, so neither
        Hyperband nor early stopping could judge it (every such job runs in full)."""
        judged = self.strategy.stops_trials or self.tuner.early_stopper is not None
        if (
            not judged
            or self.warned_no_reports
            or job.objective_status is not ObjectiveStatus.SUCCEEDED
        ):
            return
        if not job.steps(self.metric):
            self.warned_no_reports = True
            rule = self.tuner.strategy if self.strategy.stops_trials else "early stopping"
            warnings.warn(
                f"Training job {job.name} finished without reporting {self.metric!r} as it went, "
                f"so {rule} could not judge it and it ran in full. Fix: call "
                f"amtlib.report(**{{{self.metric!r}: value}}) once per epoch inside the training "
                "function.",
                UserWarning,
                stacklevel=5,  # the user's fit() call
            )

    def record(self, future: Future[JobOutcome]) -> TrainingJob | None:
        """Store a finished job's record, then tell the strategy; ``None`` when the executor
        cancelled the job before it reported anything, and it is queued to run again."""
        with self.lock:
            index = self.running.pop(future)
            job = self.jobs[index]
            # The tuner's own cancellations never get here (stop_all and abandon_running take
            # those futures out of `running`): this one is the executor's. Launched again when it
            # had not reported in this attempt (it may never have started), and whatever the job
            # had done when the executor is losing its cluster (a Dask client reconnecting).
            if future.cancelled():
                healthy = _executor_health(self.executor) == (None, False)
                if healthy:
                    self.executor_cancels[index] = self.executor_cancels.get(index, 0) + 1
                if not healthy or (
                    not _reported_in_attempt(job)
                    and self.executor_cancels[index] <= _MAX_EXECUTOR_CANCELS
                ):
                    self.relaunch(job)
                    return None
            return self.settle(self.apply_outcome(job, future))

    def relaunch(self, job: TrainingJob) -> None:
        """Queue a job the executor cancelled, without what this attempt reported (the caller
        holds the lock); it stays InProgress in the store until then, so a crash re-runs it."""
        self.server.unregister(job.index)
        start = _attempt_start(job)
        kept = tuple(r for r in job.reports if r.step <= start)
        if len(kept) < len(job.reports):
            self.store.delete_reports(self.name, job.index)
            for position, report in enumerate(kept):
                self.store.add_report(self.name, job.index, position, report)
            self.jobs[job.index] = job = job.replace(reports=kept)
            self.curves[job.index] = self.losses(job)
        self.relaunches.append(job.index)

    def settle(self, job: TrainingJob) -> TrainingJob:
        """A job that ended: stored, then told to the strategy (the caller holds the lock)."""
        self.server.unregister(job.index)
        self.store.put_training_job(self.name, job)  # durable before anything depends on it
        self.jobs[job.index] = job
        self.strategy.tell(self.trial(job))
        return job

    def apply_outcome(self, job: TrainingJob, future: Future[JobOutcome]) -> TrainingJob:
        """The job's record once its future is done."""
        now = time.time()
        decided = self.stop_decisions.get(job.index)
        if future.cancelled() and decided is not None and job.index not in self.restarted:
            # Told to stop or pause at a report, then cancelled before it returned: recorded as
            # if it had returned then, with the value it last reported.
            value = last_reported(job.reports).get(self.metric)
            return self.recorded(job, _as_stopped(value, self.metric, decided, job, now), now)
        if job.index in self.restarted or future.cancelled():  # (record() relaunches the others)
            self.restarted.discard(job.index)
            self.stop_decisions.pop(job.index, None)
            if future.cancelled() and not _reported_in_attempt(job):
                return job.replace(
                    status=TrainingJobStatus.STOPPED,
                    end_time=now,
                    objective_status=ObjectiveStatus.FAILED,
                    objective_value=None,
                    failure_reason=_CANCELLED_BEFORE_START,
                )
            return job.replace(
                status=TrainingJobStatus.FAILED,
                objective_status=ObjectiveStatus.FAILED,
                objective_value=None,
                metrics=last_reported(job.reports),
                failure_reason=_CANCELLED_WHILE_RUNNING if future.cancelled() else _RESTARTED,
                end_time=now,
                retryable=True,
            )
        try:
            out = future.result()
        except Exception as exc:  # the machinery failed, not the training function
            return job.replace(
                status=TrainingJobStatus.FAILED,
                objective_status=ObjectiveStatus.FAILED,
                objective_value=None,  # a promoted job's value from before its pause is not it
                metrics=last_reported(job.reports),  # what it reported before its worker died
                failure_reason=f"{type(exc).__name__}: {exc}",
                end_time=now,
                retryable=isinstance(exc, WorkerDiedError) or not isinstance(exc, AmtlibError),
            )
        return self.recorded(job, out, now)

    def recorded(self, job: TrainingJob, out: JobOutcome, now: float) -> TrainingJob:
        """The job's record from what its worker says of its end."""
        status, history = out.status, job.history
        decision = self.stop_decisions.pop(job.index, None)
        stop_reason = None
        if out.stop_action is not None:
            # The worker's "stop" wins over the tuner's pause: its clean-up failed, it can't resume.
            stopped = out.stop_action == Action.STOP.value
            action = decision.action.value if decision and not stopped else out.stop_action
            reason = decision.reason if decision else out.stop_reason
            stop_reason = {"action": action, **(reason or {})}
            if stop_reason.get("completed"):  # reached max_resource: the job is done, not stopped
                status = TrainingJobStatus.COMPLETED
            if action == Action.PAUSE.value:
                history = (*history, {"event": "paused", "time": now, **(reason or {})})
        return job.replace(
            status=status,
            objective_status=out.objective_status,
            objective_value=out.objective_value,
            # The worker saw only this attempt's reports (a promoted job resumes): the tuner's
            # record of every report fills in metrics the job's last part did not report.
            metrics={**last_reported(job.reports), **out.metrics},
            failure_reason=out.failure_reason,
            traceback=out.traceback,
            start_time=job.start_time if job.start_time else out.start_time,
            end_time=out.end_time,
            stop_reason=stop_reason,
            history=history,
        )

    def check_failures(self, job: TrainingJob) -> None:
        self.finished_here += 1
        if job.objective_status is ObjectiveStatus.SUCCEEDED:
            self.ever_succeeded = True
        else:
            self.failed_here += 1
        limit = self.limits.initial_failure_limit
        if limit is not None and not self.ever_succeeded and self.failed_here >= limit:
            reason = (job.failure_reason or "no reason recorded").rstrip(". ")
            raise TuningJobFailedError(
                f"Tuning job {self.name!r}: each of the first {self.failed_here} training jobs "
                f"failed, so it stopped rather than spend the rest of max_jobs. The last failure "
                f"({job.name}): {reason}. Fix: correct the training function (run with "
                "executor='inline' to debug; the tracebacks are in this error's "
                ".tuning_job.training_jobs), then start afresh under a new job_name (fit() with "
                "this one resumes it, and its failed jobs count toward max_jobs); or raise "
                "initial_failure_limit (None never stops early)."
            )

    # -- intermediate reports (the report server's thread) ----------------------------------------

    def on_report(
        self, index: int, step: int, metrics: dict[str, float], timestamp: float
    ) -> Decision:
        """Record one report of a running job and decide whether it goes on."""
        with self.lock:
            job = self.jobs[index]
            if job.status is not TrainingJobStatus.IN_PROGRESS:
                # Settled while this report waited for the lock (killed at the time limit): its
                # record is final, so the report is neither stored nor shown to the strategy.
                return Decision(Action.STOP, {"rule": "tuner", "why": "the job has ended"})
            decision = Decision()
            value = metrics.get(self.metric)
            curve = self.curves.get(index)  # steps in the order reported: the last is the largest
            first = index in self.new_client
            self.new_client.discard(index)
            if (
                first
                and value is not None
                and curve
                and step <= next(reversed(curve))
                and step == _attempt_start(job) + 1
            ):
                # A new client whose first report is this attempt's first step, already reported:
                # the function started over (a forked child continues its parent's steps). The
                # run is refused, and the job fails as if its worker had died, which it did
                # (_RESTARTED); nothing of the new run is recorded.
                self.restarted.add(index)
                decision = Decision(Action.STOP, {"rule": "tuner", "why": "the job was restarted"})
                self.stop_decisions[index] = decision
                return decision
            if index not in self.to_stop and self.time_left() == 0.0:
                # The loop may be blocked in this very job (the inline executor runs it in
                # submit), so the time limit is also enforced here, at the job's next report.
                self.to_stop[index] = _OUT_OF_TIME
            if index in self.to_stop:
                decision = Decision(Action.STOP, {"rule": "tuner", "why": self.to_stop[index]})
            elif value is not None and math.isfinite(value):
                loss = self.sign * value
                self.curves.setdefault(index, {})[step] = loss
                if self.strategy.stops_trials:
                    decision = self.strategy.on_report(index, step, loss)
                elif self.tuner.early_stopper is not None:
                    others = {j: c for j, c in self.curves.items() if j != index}
                    decision = self.tuner.early_stopper.decide(step, loss, others)
                decision = self.in_metric_units(decision)
            report = Report(
                step,
                metrics,
                timestamp,
                {"action": decision.action.value, "reason": json_safe(decision.reason)},
            )
            self.jobs[index] = job.replace(reports=(*job.reports, report))
            self.store.add_report(self.name, index, len(job.reports), report)
            if decision.stops():
                self.stop_decisions[index] = decision
            return decision

    def on_new_client(self, index: int) -> None:
        """The report server's note that the next report of ``index`` is a new client's first."""
        with self.lock:
            self.new_client.add(index)

    def in_metric_units(self, decision: Decision) -> Decision:
        """The decision with the values in its reason as the metric reports them: the rules compare
        losses, which are the metric negated when it is maximised."""
        if self.sign > 0 or not decision.reason:
            return decision
        reason = {
            key: -value if key in _LOSS_KEYS and isinstance(value, float) else value
            for key, value in decision.reason.items()
        }
        return Decision(decision.action, reason)

    # -- limits -------------------------------------------------------------------------------------

    def wait_for(self) -> float:
        """How long the loop waits for a job to finish before it looks again: until the time
        limit, and at most _STATE_EVERY_SECONDS (the state is saved that often)."""
        left = self.time_left()
        if self.out_of_time or left is None:  # (0.0 once out of time would spin)
            return _STATE_EVERY_SECONDS
        return min(left, _STATE_EVERY_SECONDS)

    def time_left(self) -> float | None:
        limit = self.limits.max_runtime_in_seconds
        if limit is None:
            return None
        return max(0.0, limit - self.runtime())

    def runtime(self) -> float:
        """Seconds the tuning job has run, earlier fit() calls included."""
        return self.runtime_before + self.clock() - self.started

    def stop_all(self, reason: str) -> None:
        """Launch nothing more; kill running jobs where the executor can, else stop them at their
        next report."""
        kill = getattr(self.executor, "kill", None)
        for future in list(self.running):
            if future.cancel() or (kill is not None and kill(future)):
                with self.lock:
                    index = self.running.pop(future)
                    self.settle(self.killed(self.jobs[index], reason))
            else:
                with self.lock:
                    self.to_stop[self.running[future]] = reason
        with self.lock:  # cancelled by the executor and waiting to be launched again: they won't be
            while self.relaunches:
                index = self.relaunches.popleft()
                self.settle(self.killed(self.jobs[index], reason))

    def killed(self, job: TrainingJob, reason: str) -> TrainingJob:
        """The record of a running job the tuner killed: as if stopped at its last report (the
        same record a job stopped at its next report gets), or failed if it reported no objective."""
        metrics = last_reported(job.reports)
        value = metrics.get(self.metric)
        return job.replace(
            status=TrainingJobStatus.STOPPED,
            objective_status=ObjectiveStatus.FAILED if value is None else ObjectiveStatus.SUCCEEDED,
            objective_value=value,
            metrics=metrics,
            end_time=time.time(),
            stop_reason={"action": "stop", "rule": "tuner", "why": reason},
            failure_reason=(
                f"Stopped by the tuner ({reason}) before it reported {self.metric!r}"
                if value is None
                else None
            ),
        )

    def abandon_running(self) -> None:
        """On an error or interrupt: cancel or kill what still runs (it stays InProgress and is
        re-run on resume); what cannot be killed is told to stop at its next report."""
        kill = getattr(self.executor, "kill", None)
        for future, index in list(self.running.items()):
            if future.cancel() or (kill is not None and kill(future)):
                del self.running[future]
            else:
                with self.lock:
                    self.to_stop[index] = _SHUTTING_DOWN

    def record_finished_meanwhile(self) -> None:
        """After waiting for the jobs that could not be killed: keep those that ended by themselves
        (those stopped because the tuner was shutting down stay InProgress, and re-run on resume)."""
        for future, index in list(self.running.items()):
            decision = self.stop_decisions.get(index)
            interrupted = (
                decision is not None and (decision.reason or {}).get("why") == _SHUTTING_DOWN
            )
            if future.done() and not future.cancelled() and not interrupted:
                try:
                    self.record(future)
                except Exception:  # recording is best effort here: the job simply re-runs
                    continue

    def completion_reason(self) -> str:
        if self.interruption is not None:
            return self.interruption
        if self.out_of_time:
            return _OUT_OF_TIME
        if self.exhausted:
            return f"{self.tuner.strategy} strategy has nothing left to try"
        return "MaxNumberOfTrainingJobs reached"

    def save_state(self, **changes: Any) -> None:
        changes["runtime_seconds"] = self.runtime()
        if changes.get("end_time") is not None:
            changes["completion_reason"] = self.completion_reason()
        self.state.update(
            changes, last_modified_time=time.time(), strategy=json_safe(self.strategy.describe())
        )
        self.store.set_tuning_job_state(self.name, self.state)
        self.state_saved = time.monotonic()

    def keep_runtime_saved(self, stop: threading.Event) -> None:
        """Save the runtime so far whenever the loop has not for a second (a thread of its own).

        The loop saves the whole state every second, but it can be held up: the inline executor
        runs each job inside ``submit``, so without this a ``kill -9`` lost a whole job's runtime.
        Only the runtime: the strategy may be busy in the loop's thread.
        """
        while not stop.wait(_STATE_EVERY_SECONDS / 4):
            with self.lock:
                if time.monotonic() - self.state_saved < _STATE_EVERY_SECONDS:
                    continue
                self.state.update(runtime_seconds=self.runtime(), last_modified_time=time.time())
                try:
                    self.store.set_tuning_job_state(self.name, self.state)
                except Exception:  # the loop's own save reports store errors; never die here
                    return
                self.state_saved = time.monotonic()

    def checkpoint_dir(self, job: TrainingJob) -> str | None:
        if self.checkpoints is None:
            return None
        folder = self.checkpoints / job.name
        folder.mkdir(parents=True, exist_ok=True)
        return str(folder)


def _checkpoint_root(tuner: Tuner, store: SQLiteStore) -> tuple[Path | None, bool]:
    """Where jobs keep checkpoints (given, or next to the store when the strategy resumes jobs),
    and whether it is a temporary folder to delete at the end (an in-memory store keeps nothing).

    Made absolute once, here: a worker (a Dask one, say) may run in another working directory, and
    training code run in-process may change the tuner's own.
    """
    if tuner.checkpoint_root is not None:
        return Path(tuner.checkpoint_root).absolute(), False
    if tuner.strategy_config.get("mode") != "promotion":
        return None, False
    if store.path == ":memory:":
        return Path(tempfile.mkdtemp(prefix=f"amtlib-{tuner.job_name}-")), True
    return Path(f"{store.path}.checkpoints").absolute() / tuner.job_name, False


def _check_shippable(train: Any, executor: Executor | str | None) -> None:
    """Refuse, before any job is launched, a training function worker processes cannot receive.

    ``executor`` is the tuner's argument. Our worker processes (``None``, ``"process"``) and Dask's
    workers (a ``ClientExecutor`` keeps its client in ``_client``) receive the function pickled by
    cloudpickle; other executors may run it in-process, so they are trusted.
    """
    from amtlib.executors import ProcessExecutor

    ours = executor is None or executor == "process" or isinstance(executor, ProcessExecutor)
    if not ours and getattr(executor, "_client", None) is None:
        return
    import cloudpickle

    try:
        cloudpickle.dumps(train)
    except Exception as exc:
        raise ValidationError(
            f"The training function {getattr(train, '__qualname__', train)!r} must be picklable "
            f"(by cloudpickle) to run on worker processes; pickling failed with "
            f"{type(exc).__name__}: {exc}. Fix: keep what it captures picklable (open files, "
            "locks and connections are not: create them inside the function), or pass "
            "executor='thread' or executor='inline'."
        ) from None


def _advertised_host(host: str, executor: object = None) -> str | None:
    """The address workers should dial when the server listens on every interface.

    The host name's address, unless it is a loopback one (``/etc/hosts`` often maps the host name
    to 127.0.1.1): then the address of the interface that routes towards the Dask scheduler, or
    towards other networks. Connecting a UDP socket sends nothing; it only picks the route.
    """
    if not is_wildcard_host(host):
        return None
    try:
        address = socket.gethostbyname(socket.gethostname())
    except OSError:
        address = "127.0.0.1"
    if not address.startswith("127."):
        return address
    scheduler = _scheduler_host(executor)
    targets = [scheduler] if scheduler else []
    for target in [*targets, "10.255.255.255", "192.0.2.1"]:
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.connect((target, 9))
                routed = str(probe.getsockname()[0])
        except OSError:
            continue
        if not routed.startswith("127.") and routed != "0.0.0.0":
            return routed
    warnings.warn(
        f"report_host={host!r}: this machine's only address found is {address}, a loopback "
        "address, so jobs on other hosts cannot reach the tuner's reports. Fix: pass this "
        "machine's address as report_host, e.g. report_host='10.0.0.5'.",
        stacklevel=4,
    )
    return address


def _scheduler_host(executor: object) -> str | None:
    """The Dask scheduler's host, for a ``Client`` or its ``get_executor()``; else None."""
    client = getattr(executor, "_client", executor)  # a ClientExecutor keeps its Client there
    address = str(getattr(getattr(client, "scheduler", None), "address", "") or "")
    if "://" not in address or address.startswith("inproc://"):
        return None
    host = address.split("://", 1)[1].rsplit(":", 1)[0].strip("[]")
    return host or None


def function_fingerprint(function: Callable[..., Any]) -> dict[str, str | None]:
    """The training function's name and a hash of its code (not of where it sits in its file)."""
    target = function.func if isinstance(function, functools.partial) else function
    module = getattr(target, "__module__", None) or "?"
    name = getattr(target, "__qualname__", None) or type(target).__name__
    code = getattr(target, "__code__", None)
    digest = None
    if isinstance(code, types.CodeType):
        h = hashlib.sha256()
        _hash_code(code, h)
        digest = h.hexdigest()[:16]
    version = f"{sys.version_info.major}.{sys.version_info.minor}"  # bytecode differs across them
    return {"name": f"{module}.{name}", "code": digest, "python": version}


def same_function(before: dict[str, Any], now: dict[str, Any]) -> bool:
    """Whether two fingerprints are of one function: by code when both have it under the same
    Python (a script's ``__main__.train`` imported later as ``mod.train`` is the same), else by
    name."""
    comparable = before.get("python") == now.get("python") and before.get("code") is not None
    if comparable and now.get("code") is not None:
        return bool(before["code"] == now["code"])
    return bool(before.get("name") == now.get("name"))


def _hash_code(code: types.CodeType, h: Any) -> None:
    h.update(code.co_code)
    h.update(repr(code.co_names).encode())
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _hash_code(const, h)
        elif isinstance(const, frozenset):  # its repr's order depends on the hash seed
            h.update(repr(sorted(map(repr, const))).encode())
        else:
            h.update(repr(const).encode())


def _as_stopped(
    value: float | None, metric: str, decision: Decision, job: TrainingJob, now: float
) -> JobOutcome:
    """The outcome of a job that returned as soon as it was told to stop or pause."""
    return JobOutcome(
        status=TrainingJobStatus.STOPPED,
        objective_status=ObjectiveStatus.FAILED if value is None else ObjectiveStatus.SUCCEEDED,
        objective_value=value,
        failure_reason=None if value is not None else f"Objective: {metric!r} never reported",
        start_time=job.start_time or now,
        end_time=now,
        stop_action=decision.action.value,
        stop_reason=decision.reason,
    )


def _attempt_start(job: TrainingJob) -> int:
    """The step the job's current attempt resumed from: 0, or where it was promoted (or relaunched)
    from; a re-run after a crash starts again from 0."""
    for event in reversed(job.history):
        if event.get("event") in ("promoted", "relaunched"):
            return int(event.get("step", 0))
        if event.get("event") == "rerun":
            return 0
    return 0


def _reported_in_attempt(job: TrainingJob) -> bool:
    """Whether the job reported anything in its current attempt (see `_attempt_start`)."""
    start = _attempt_start(job)
    return any(r.step > start for r in job.reports)


def _executor_health(executor: Executor) -> tuple[str | None, bool]:
    """``(why the executor is lost, or None; whether it is reconnecting)``.

    Only Dask's executor says: its client, once closed (after failing to reconnect to a lost
    scheduler), returns futures that never complete, and while it reconnects it cancels them.
    """
    status = getattr(getattr(executor, "_client", None), "status", None)
    if not isinstance(status, str):
        return None, False
    if status in ("closing", "closed", "failed"):
        return (
            f"its Dask client is {status}: the scheduler is gone, or the client was closed",
            False,
        )
    return None, status == "connecting"


def _warn_other_function(
    name: str, before: dict[str, Any], now: dict[str, Any], jobs: list[TrainingJob]
) -> None:
    same_name = before.get("name") == now.get("name")
    what = (
        f"{now.get('name')}, with other code"
        if same_name
        else (f"{now.get('name')}, not {before.get('name')}")
    )
    warnings.warn(
        f"Tuning job {name!r} resumes with another training function ({what}) than the one its "
        f"{len(jobs)} training jobs so far ran, and the strategy learns from their results as if "
        "they came from this one. Fix: pass a new job_name to start afresh, unless the change "
        "does not alter results.",
        UserWarning,
        stacklevel=4,  # the user's fit() call (via Run.__init__)
    )


def _warn_resuming_failed(name: str, jobs: list[TrainingJob], max_jobs: int) -> None:
    running = sum(j.status is TrainingJobStatus.IN_PROGRESS for j in jobs)  # they re-run
    failed = sum(
        j.status is not TrainingJobStatus.IN_PROGRESS
        and j.objective_status is not ObjectiveStatus.SUCCEEDED
        for j in jobs
    )
    warnings.warn(
        f"Tuning job {name!r} ended Failed (its first training jobs all failed); fit() resumes it, "
        f"and its {failed} failed training jobs count toward max_jobs ({max_jobs}), so "
        f"{max(max_jobs - len(jobs), 0) + running} more will run. Fix: to start afresh after "
        "correcting the training function, pass a new job_name.",
        UserWarning,
        stacklevel=4,  # the user's fit() call (via Run.__init__)
    )


def _check_resumable(
    name: str, store: SQLiteStore, stored: dict[str, Any], config: dict[str, Any]
) -> dict[str, Any]:
    """The configuration to resume with; :class:`StoreError` naming what differs when it cannot."""
    if config["random_seed"] is None or config["random_seed"] == stored.get("random_seed"):
        config = {**config, "random_seed": stored.get("random_seed")}
    for key, value in config.items():
        # Compared as JSON text: types count (1, 1.0 and True differ), and so does the order of
        # the ranges (the grid's order and the encoding's), not the order of other keys.
        given = json.loads(json.dumps(value))
        any_order = key != "ranges"
        if json.dumps(given, sort_keys=any_order) != json.dumps(
            stored.get(key), sort_keys=any_order
        ):
            raise StoreError(
                f"Tuning job {name!r} already exists in store {store.path!r} with another {key!r}"
                f"{_difference(stored.get(key), given)}. A tuning job resumes only with the "
                "configuration it was created with (limits may change). Fix: pass a new job_name, "
                "or the stored configuration to resume it."
            )
    return config


def _difference(stored: Any, given: Any) -> str:
    """Where a stored and a given configuration entry differ, for the error message."""
    if isinstance(stored, dict) and isinstance(given, dict):
        if list(stored) != list(given) and sorted(stored) == sorted(given):
            return f": the same names in another order (stored {list(stored)}, given {list(given)})"
        for name in [*stored, *(k for k in given if k not in stored)]:
            if name not in given:
                return f": {name!r} is stored, not given"
            if name not in stored:
                return f": {name!r} is given, not stored"
            a, b = json.dumps(stored[name]), json.dumps(given[name])
            if a != b:
                return f": {name!r} is stored as {a:.300}, given as {b:.300}"
    return f": stored {json.dumps(stored):.300}, given {json.dumps(given):.300}"


def _resolve_executor(
    executor: Executor | str | None, max_parallel_jobs: int
) -> tuple[Executor, bool]:
    from amtlib.executors import resolve_executor

    return resolve_executor(executor, max_parallel_jobs)
