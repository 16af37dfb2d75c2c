"""What runs in the worker: call the training function, turn whatever happens into a JobOutcome.

``run_training_job`` is the one callable the tuner submits to an executor. It never raises for the
training function's sake: an exception, a bad return value or a missing objective all become an
outcome the tuner records. Only a failure of the machinery itself (a dead worker, an unpicklable
function) reaches the tuner as an exception on the future.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import os
import sys
import threading
import time
import traceback
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from amtlib.errors import describe_value
from amtlib.records import ObjectiveStatus, Report, TrainingJobStatus, json_safe
from amtlib.reporting import (
    Action,
    ChannelSpec,
    Decision,
    JobContextSpec,
    TrialStopped,
    job_context,
    real_number,
)


@dataclass(frozen=True)
class JobSpec:
    """Everything a worker needs to run one training job (picklable).

    ``channel`` is where ``amtlib.report`` sends intermediate metrics (``None``: kept locally);
    ``checkpoint_dir`` and ``resume_step`` reach the job through ``amtlib.current_job()``.
    """

    function: Callable[[dict[str, Any]], Any]
    hyperparameters: dict[str, Any]
    objective_metric_name: str
    job_name: str
    index: int
    channel: ChannelSpec | None = None
    checkpoint_dir: str | None = None
    resume_step: int = 0
    tuner_pid: int = field(default_factory=os.getpid)  # where a real Ctrl-C can land
    # A resumed job's last reported metrics before this attempt: its objective if it returns
    # nothing (or no objective) without reporting again.
    reported: dict[str, Any] = field(default_factory=dict)
    # The tuner's main script, for the tracebacks of functions shipped by value (_with_source_file).
    main_file: str | None = field(default_factory=lambda: _main_file())


def _main_file() -> str | None:
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    return os.path.abspath(path) if isinstance(path, str) else None


# What cloudpickle (>= 3.1) names the file of the code of a function it ships by value.
_SHIPPED_CODE = "<dynamic-code>"


def _with_source_file(function: Any, main_file: str | None) -> Any:
    """``function`` with the code of the tuner's ``__main__`` functions given back their file.

    cloudpickle ships functions defined in the main script by value, and names their code's file
    ``"<dynamic-code>"``: a traceback from a worker process then has neither the file nor the
    lines of the user's script. This renames the code of ``function`` and of the ``__main__``
    functions it reaches through its globals and closure, in this (worker's) copy only.
    """
    if main_file is None:
        return function
    seen: set[int] = set()
    pending = [function]
    while pending:
        f = pending.pop()
        if id(f) in seen:
            continue
        seen.add(id(f))
        if isinstance(f, functools.partial):
            pending += [f.func, *f.args, *f.keywords.values()]
        elif isinstance(f, (types.MethodType, staticmethod, classmethod)):
            pending.append(f.__func__)
        elif isinstance(f, type) and f.__module__ == "__main__":  # its methods
            pending += list(vars(f).values())
        elif (
            isinstance(f, types.FunctionType)
            and f.__module__ == "__main__"
            and f.__code__.co_filename == _SHIPPED_CODE
        ):
            f.__code__ = _renamed(f.__code__, main_file)
            pending += list(f.__globals__.values())
            for cell in f.__closure__ or ():
                with contextlib.suppress(ValueError):  # an empty cell
                    pending.append(cell.cell_contents)
    return function


def _renamed(code: types.CodeType, filename: str) -> types.CodeType:
    consts = tuple(
        _renamed(c, filename) if isinstance(c, types.CodeType) else c for c in code.co_consts
    )
    return code.replace(co_filename=filename, co_consts=consts)


def _may_be_ctrl_c(spec: JobSpec) -> bool:
    """Whether a ``KeyboardInterrupt`` in the training function may be the user's Ctrl-C.

    Only in the tuner's own main thread (the inline executor): signals never reach other threads,
    and amtlib's worker processes run in their own session, away from the terminal. Elsewhere it
    was raised by the training code itself, and fails only its job.
    """
    return os.getpid() == spec.tuner_pid and threading.current_thread() is threading.main_thread()


@dataclass(frozen=True)
class JobOutcome:
    """How a training job ended, as seen from inside the worker.

    ``reports`` are the worker's copy of what the job reported; ``stop_action``/``stop_reason`` say
    why the tuner ended it (``"stop"`` or ``"pause"``) when it did.
    """

    status: TrainingJobStatus
    objective_status: ObjectiveStatus
    objective_value: float | None
    metrics: dict[str, Any] = field(default_factory=dict)
    failure_reason: str | None = None
    traceback: str | None = None
    start_time: float = 0.0
    end_time: float = 0.0
    reports: tuple[Report, ...] = ()
    stop_action: str | None = None
    stop_reason: dict[str, Any] | None = None


_NUMBER_FIX = (
    "Fix: return a float, an int or a numpy/torch scalar (convert arrays and tensors with "
    ".item()), within float's range."
)


def parse_result(result: Any, objective_metric_name: str) -> tuple[dict[str, Any], str | None]:
    """``(metrics, objective_problem)`` from what the training function returned.

    A number is the objective metric itself; a mapping holds named metrics. ``objective_problem``
    says why no usable objective value came back, or is ``None`` when one did. What counts as a
    number is what ``report()`` accepts: a real number (numpy and torch scalars and 0-d arrays
    too, not bools, not ``Decimal``) that converts to a float.
    """
    number = real_number(result)
    if number is not None:
        metrics: dict[str, Any] = {objective_metric_name: number}
    elif isinstance(result, Mapping):
        metrics = {str(k): json_safe(v) for k, v in result.items()}
        if objective_metric_name not in result:
            return metrics, (
                f"the training function returned metrics {sorted(metrics)} without the objective "
                f"metric {objective_metric_name!r}. Fix: include it, or set objective_metric_name "
                "to one of those."
            )
        raw: Any = result[objective_metric_name]
        number = real_number(raw)
        if number is None:
            metrics[objective_metric_name] = None
            return metrics, (
                f"the objective metric {objective_metric_name!r} must be a real number. Got "
                f"{describe_value(raw)}. {_NUMBER_FIX}"
            )
        metrics[objective_metric_name] = number
    else:
        return {}, (
            f"the training function must return the objective value (a number) or a dict of "
            f"metrics including {objective_metric_name!r}. Got {describe_value(result)}. "
            f"{_NUMBER_FIX}"
        )
    value = metrics[objective_metric_name]
    if not math.isfinite(value):
        metrics[objective_metric_name] = None
        return metrics, f"the objective metric {objective_metric_name!r} is not finite ({value})."
    return metrics, None


def last_reported(reports: tuple[Report, ...]) -> dict[str, Any]:
    """The last reported value of each metric (AMT's objective of a job is the latest value)."""
    metrics: dict[str, Any] = {}
    for report in reports:
        metrics.update(report.metrics)
    return metrics


def _with_reported(
    result: Any, last: dict[str, Any], metric: str, decision: Decision | None
) -> Any:
    """What the job's metrics are made of: its return value, completed by its last reports.

    As in AMT, a job's objective is the latest value it reported. A job the tuner stopped or paused
    (``decision``) gets its last reported objective whatever it returned after catching
    ``TrialStopped``; a job that ended by itself keeps the objective it returned, or the last one
    it reported when it returned nothing (or metrics without the objective). Other returned metrics
    override the reported ones of the same name.
    """
    if metric not in last:
        return result
    returned = dict(result) if isinstance(result, Mapping) else {}
    if decision is not None:
        return {**last, **returned, metric: last[metric]}
    if result is None or (isinstance(result, Mapping) and metric not in result):
        return {**last, **returned}
    return result


def run_training_job(spec: JobSpec) -> JobOutcome:
    """Run one training job and describe how it ended (runs inside the worker)."""
    start = time.time()
    context = JobContextSpec(
        spec.job_name,
        spec.index,
        spec.hyperparameters,
        spec.channel,
        spec.checkpoint_dir,
        spec.resume_step,
        step_offset=spec.resume_step,
        objective_metric_name=spec.objective_metric_name,
    )
    result: Any = None
    stopped: TrialStopped | None = None
    crashed: tuple[str, str] | None = None  # an error raised after the tuner ended the job
    with job_context(context) as job:
        try:
            function = _with_source_file(spec.function, spec.main_file)
            # A copy per job: under the inline and thread executors a function that changes a
            # nested static value in place would otherwise change what later jobs receive.
            result = function(copy.deepcopy(dict(spec.hyperparameters)))
        except TrialStopped as exc:
            stopped = exc
        except BaseException as exc:  # asyncio.CancelledError, say: the job's failure, not ours
            if isinstance(exc, KeyboardInterrupt) and _may_be_ctrl_c(spec):
                raise
            if job.decision is None:
                return _failed(spec, job.reports, start, f"{type(exc).__name__}: {exc}")
            # The tuner had stopped or paused the job and its clean-up (saving a checkpoint,
            # say) failed: what it reported stands, as in AMT, but it cannot resume from a pause.
            crashed = (f"{type(exc).__name__}: {exc}", traceback.format_exc())
        reports, decision = job.reports, job.decision
    if crashed is not None and decision is not None:
        decision = Decision(Action.STOP, decision.reason)
    if stopped is not None and decision is None:  # raised by the function itself, not a report
        # The job stopped itself: only the tuner pauses a job (it alone can resume it), so a
        # TrialStopped("pause") of the function's own is a stop too. Its reason is kept apart,
        # so that none of its keys passes for the tuner's.
        own: dict[str, Any] = {"source": "training function"}
        if stopped.reason is not None:
            own["reason"] = json_safe(stopped.reason)
        decision = Decision(Action.STOP, own)
    try:
        return _outcome(spec, result, reports, decision, crashed, start)
    except Exception as exc:  # what the function returned defeated us: its failure, not a worker's
        return _failed(
            spec,
            reports,
            start,
            f"Objective: amtlib could not record what the training function returned "
            f"({type(exc).__name__}: {exc}).",
        )


def _failed(spec: JobSpec, reports: tuple[Report, ...], start: float, reason: str) -> JobOutcome:
    """A failed job's outcome, with what it reported and the traceback being handled."""
    return JobOutcome(
        status=TrainingJobStatus.FAILED,
        objective_status=ObjectiveStatus.FAILED,
        objective_value=None,
        metrics={**spec.reported, **last_reported(reports)},
        failure_reason=reason,
        traceback=traceback.format_exc(),
        start_time=start,
        end_time=time.time(),
        reports=reports,
    )


def _outcome(
    spec: JobSpec,
    result: Any,
    reports: tuple[Report, ...],
    decision: Decision | None,
    crashed: tuple[str, str] | None,
    start: float,
) -> JobOutcome:
    """The outcome of a job that ran to its end (by itself, or stopped or paused by the tuner)."""
    last = {**spec.reported, **last_reported(reports)}
    diverged = decision is not None and (decision.reason or {}).get("rule") == "not_finite"
    problem: str | None
    if diverged:  # report() met a NaN or infinite objective: no value, whatever is returned
        assert decision is not None and decision.reason is not None
        metrics = {**last, spec.objective_metric_name: None}
        problem = (
            f"the objective metric {spec.objective_metric_name!r} was {decision.reason['value']} at "
            f"step {decision.reason['step']} (the training diverged), so the job was stopped there."
        )
    else:
        result = _with_reported(result, last, spec.objective_metric_name, decision)
        metrics, problem = parse_result(result, spec.objective_metric_name)
        if result is None and last:  # it reported metrics, never the objective, returned nothing
            metrics = dict(last)
            problem = (
                f"the training function returned nothing and reported metrics {sorted(last)} but "
                f"never the objective metric {spec.objective_metric_name!r}. Fix: report it "
                f"(amtlib.report(**{{{spec.objective_metric_name!r}: value}})) or return it, or "
                "set objective_metric_name to one of those."
            )
    action = decision.action if decision else None
    reason = decision.reason if decision else None
    notes = [f"Objective: {problem}" if problem else None]
    if crashed is not None:
        notes.append(f"After the tuner stopped it, the training function raised {crashed[0]}")
    return JobOutcome(
        status=TrainingJobStatus.STOPPED if action else TrainingJobStatus.COMPLETED,
        objective_status=ObjectiveStatus.FAILED if problem else ObjectiveStatus.SUCCEEDED,
        objective_value=None if problem else metrics[spec.objective_metric_name],
        metrics=metrics,
        failure_reason=" ".join(note for note in notes if note) or None,
        traceback=crashed[1] if crashed else None,
        start_time=start,
        end_time=time.time(),
        reports=reports,
        stop_action=None if action is None else Action(action).value,
        stop_reason=reason,
    )
