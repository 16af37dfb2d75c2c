"""Frozen records and enums: what a training job is, what it reported, how it ended.

Records are plain data. They go to the store as JSON (``to_dict``/``from_dict`` round-trip exactly)
and to strategies as :class:`Trial`, the strategy's minimising view of a training job.
"""

from __future__ import annotations

import enum
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from amtlib.errors import int_size, short_repr


class TrainingJobStatus(str, enum.Enum):
    """AMT's training job statuses."""

    IN_PROGRESS = "InProgress"
    COMPLETED = "Completed"
    FAILED = "Failed"
    STOPPED = "Stopped"

    def is_finished(self) -> bool:
        return self is not TrainingJobStatus.IN_PROGRESS


class ObjectiveStatus(str, enum.Enum):
    """AMT's objective statuses: did the job produce a usable objective value?"""

    SUCCEEDED = "Succeeded"
    PENDING = "Pending"
    FAILED = "Failed"


class ObjectiveType(str, enum.Enum):
    """Direction of the objective metric."""

    MAXIMIZE = "Maximize"
    MINIMIZE = "Minimize"


@dataclass(frozen=True)
class Report:
    """One step of intermediate metrics reported by a running training job.

    ``decision`` is what the tuner answered (``{"action": ..., "reason": ...}``), once recorded.
    """

    step: int
    metrics: dict[str, float]
    timestamp: float
    decision: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"step": self.step, "metrics": self.metrics, "timestamp": self.timestamp}
        if self.decision is not None:
            out["decision"] = self.decision
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Report:
        return cls(
            int(data["step"]), dict(data["metrics"]), float(data["timestamp"]), data.get("decision")
        )


@dataclass(frozen=True)
class TrainingJob:
    """One training job of a tuning job, as recorded.

    Attributes:
        index: launch order, from 0.
        name: ``<tuning job name>-<index + 1, 3 digits>``, as AMT names them.
        hyperparameters: the tuned hyperparameters (static ones are on the tuning job).
        status: ``InProgress``, ``Completed``, ``Failed`` or ``Stopped``.
        objective_status: ``Pending``, ``Succeeded`` or ``Failed``.
        objective_value: the final value of the objective metric, or ``None``.
        metrics: final value of every metric the job returned or, if it returned none, its last
            reported value.
        failure_reason: why the job or its objective failed, or ``None``.
        traceback: the formatted traceback of an exception raised by the job.
        retryable: a failure of the machinery (a worker died), not of the job's own code.
        attempt: 1 for the first launch, more when re-run after an interruption.
        creation_time, start_time, end_time: seconds since the epoch.
        reports: intermediate metrics, in the order they arrived, each with the tuner's decision.
        stop_reason: why the tuner stopped (or paused) the job, when it did.
        history: job-level events in order (``launched`` with what the strategy noted, such as
            Hyperband's bracket; ``paused``, ``promoted``, ``relaunched``; ``interrupted`` when a
            resume drops the reports of a run a crash cut short, then ``rerun``), each a dict.
    """

    index: int
    name: str
    hyperparameters: dict[str, Any]
    status: TrainingJobStatus = TrainingJobStatus.IN_PROGRESS
    objective_status: ObjectiveStatus = ObjectiveStatus.PENDING
    objective_value: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    failure_reason: str | None = None
    traceback: str | None = field(default=None, repr=False)
    retryable: bool = False
    attempt: int = 1
    creation_time: float | None = None
    start_time: float | None = None
    end_time: float | None = None
    # Kept out of repr(): a long job has thousands of reports (see .reports, .history).
    reports: tuple[Report, ...] = field(default=(), repr=False)
    stop_reason: dict[str, Any] | None = None
    history: tuple[dict[str, Any], ...] = field(default=(), repr=False)

    def is_finished(self) -> bool:
        return self.status.is_finished()

    @property
    def paused(self) -> bool:
        """Paused by the strategy (Hyperband promotion): may be resumed from its checkpoint."""
        return (
            self.status is TrainingJobStatus.STOPPED
            and self.stop_reason is not None
            and self.stop_reason.get("action") == "pause"
        )

    def steps(self, metric: str) -> dict[int, float]:
        """The reported values of ``metric`` by step (the last report of a step wins)."""
        return {r.step: r.metrics[metric] for r in self.reports if metric in r.metrics}

    @property
    def training_time(self) -> float | None:
        """Seconds from start to end of the last attempt, when both are known."""
        if self.start_time is None or self.end_time is None:
            return None
        return self.end_time - self.start_time

    def replace(self, **changes: Any) -> TrainingJob:
        return replace(self, **changes)

    def to_dict(self, *, with_reports: bool = True) -> dict[str, Any]:
        out = {
            "index": self.index,
            "name": self.name,
            "hyperparameters": self.hyperparameters,
            "status": self.status.value,
            "objective_status": self.objective_status.value,
            "objective_value": self.objective_value,
            "metrics": {k: json_safe(v) for k, v in self.metrics.items()},
            "failure_reason": self.failure_reason,
            "traceback": self.traceback,
            "retryable": self.retryable,
            "attempt": self.attempt,
            "creation_time": self.creation_time,
            "start_time": self.start_time,
            "end_time": self.end_time,
            "stop_reason": self.stop_reason,
            "history": list(self.history),
        }
        if with_reports:
            out["reports"] = [r.to_dict() for r in self.reports]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainingJob:
        return cls(
            index=int(data["index"]),
            name=str(data["name"]),
            hyperparameters=dict(data["hyperparameters"]),
            status=TrainingJobStatus(data["status"]),
            objective_status=ObjectiveStatus(data["objective_status"]),
            objective_value=data.get("objective_value"),
            metrics=dict(data.get("metrics") or {}),
            failure_reason=data.get("failure_reason"),
            traceback=data.get("traceback"),
            retryable=bool(data.get("retryable", False)),
            attempt=int(data.get("attempt", 1)),
            creation_time=data.get("creation_time"),
            start_time=data.get("start_time"),
            end_time=data.get("end_time"),
            reports=tuple(Report.from_dict(r) for r in data.get("reports") or ()),
            stop_reason=data.get("stop_reason"),
            history=tuple(data.get("history") or ()),
        )


@dataclass(frozen=True)
class Trial:
    """A strategy's view of a finished training job: the objective as a loss to minimise.

    Attributes:
        index: the training job's index.
        hyperparameters: its tuned hyperparameters.
        status: how the job ended.
        loss: the objective value, sign-flipped for ``Maximize``; ``None`` when the objective failed.
        intermediate: ``(step, loss)`` pairs of the objective metric reported while it ran.
        paused: the job ended paused by the strategy (Hyperband promotion) and may be resumed.
        history: the job's events (see ``TrainingJob.history``), e.g. what the strategy noted at
            launch (``Strategy.launch_record``).
        unfinished: the tuner stopped the job before it reported an objective value (killed at the
            time limit, or cancelled before it started): its configuration neither succeeded nor
            failed, so a model must not learn from it that the configuration fails.
    """

    index: int
    hyperparameters: dict[str, Any]
    status: TrainingJobStatus
    loss: float | None
    intermediate: tuple[tuple[int, float], ...] = ()
    paused: bool = False
    history: tuple[dict[str, Any], ...] = ()
    unfinished: bool = False

    @property
    def succeeded(self) -> bool:
        return self.loss is not None


# Arrays (numpy, torch) up to this many elements are stored as nested lists; larger ones as repr.
_MAX_LISTED = 1000


# Nesting deeper than this (or a list that contains itself) is cut short with a marker.
_MAX_DEPTH = 50
# Ints beyond float range are stored as a description: Python refuses to print ones over 4300
# digits, and nothing reads such a metric as a number.
_MAX_INT_BITS = 1024


def json_safe(value: Any, _depth: int = 0) -> Any:
    """Python scalars for JSON: numpy scalars unwrapped, other real numbers (a ``Fraction``) as
    floats, non-finite floats as ``None``, small arrays (anything with ``item`` and ``tolist``,
    e.g. a confusion matrix) as nested lists, anything else as its ``repr``.

    Never raises, whatever the training code handed over: ints beyond float range, nesting
    deeper than 50 (or cyclic), and objects whose ``repr`` fails become descriptive strings.
    """
    if _depth > _MAX_DEPTH:
        return "<nested too deeply>"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"<{int_size(value)}>" if value.bit_length() > _MAX_INT_BITS else value
    if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
        try:
            value = value.item()
        except (TypeError, ValueError, RuntimeError):  # torch says RuntimeError
            shape: Any = getattr(value, "shape", None)
            if callable(getattr(value, "tolist", None)) and shape is not None:
                try:  # a sparse tensor's tolist() raises; a shape may hold None
                    if math.prod(int(n) for n in shape) <= _MAX_LISTED:
                        return json_safe(value.tolist(), _depth + 1)
                except Exception:
                    pass
            return short_repr(value, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return json_safe(value, _depth + 1)  # a numpy or torch int, unwrapped: check its size
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, int, float)):
        value = _as_float(value)  # a Fraction, a numpy long double: a float, as report() stores it
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [json_safe(v, _depth + 1) for v in value]
    if isinstance(value, Mapping):
        return {_safe_str(k): json_safe(v, _depth + 1) for k, v in value.items()}
    return short_repr(value, None)


def _as_float(value: numbers.Real) -> float | str:
    try:
        return float(value)
    except (OverflowError, ValueError, TypeError):
        return short_repr(value, None)


def _safe_str(key: Any) -> str:
    try:
        return str(key)
    except Exception:
        return short_repr(key, None)
