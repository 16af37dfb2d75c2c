"""What runs in the worker: call the training function, turn whatever happens into a JobOutcome.

``run_training_job`` is the one callable the tuner submits to an executor. It never raises for the
training function's sake: an exception, a bad return value or a missing objective all become an
outcome the tuner records. Only a failure of the machinery itself (a dead worker, an unpicklable
function) reaches the tuner as an exception on the future.
"""

from __future__ import annotations

import math
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from amtlib.records import ObjectiveStatus, TrainingJobStatus, json_safe


@dataclass(frozen=True)
class JobSpec:
    """Everything a worker needs to run one training job (picklable)."""

    function: Callable[[dict[str, Any]], Any]
    hyperparameters: dict[str, Any]
    objective_metric_name: str
    job_name: str
    index: int


@dataclass(frozen=True)
class JobOutcome:
    """How a training job ended, as seen from inside the worker."""

    status: TrainingJobStatus
    objective_status: ObjectiveStatus
    objective_value: float | None
    metrics: dict[str, Any] = field(default_factory=dict)
    failure_reason: str | None = None
    traceback: str | None = None
    start_time: float = 0.0
    end_time: float = 0.0


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parse_result(result: Any, objective_metric_name: str) -> tuple[dict[str, Any], str | None]:
    """``(metrics, objective_problem)`` from what the training function returned.

    A number is the objective metric itself; a mapping holds named metrics. ``objective_problem``
    says why no usable objective value came back, or is ``None`` when one did.
    """
    result = json_safe(result) if hasattr(result, "item") else result
    if _is_number(result):
        metrics: dict[str, Any] = {objective_metric_name: float(result)}
    elif isinstance(result, Mapping):
        metrics = {str(k): json_safe(v) for k, v in result.items()}
        # json_safe turned NaN into None; keep the original to say what was wrong.
        raw: Any = result.get(objective_metric_name)
        if objective_metric_name not in result:
            return metrics, (
                f"the training function returned metrics {sorted(metrics)} without the objective "
                f"metric {objective_metric_name!r}. Fix: include it, or set objective_metric_name "
                "to one of those."
            )
        if hasattr(raw, "item"):
            raw = raw.item()
        if not _is_number(raw):
            return metrics, (
                f"the objective metric {objective_metric_name!r} must be a number. Got {raw!r}."
            )
        metrics[objective_metric_name] = float(raw)
    else:
        return {}, (
            f"the training function must return the objective value (a number) or a dict of "
            f"metrics including {objective_metric_name!r}. Got {type(result).__name__}: "
            f"{result!r:.200}."
        )
    value = metrics[objective_metric_name]
    if not math.isfinite(value):
        metrics[objective_metric_name] = None
        return metrics, f"the objective metric {objective_metric_name!r} is not finite ({value})."
    return metrics, None


def run_training_job(spec: JobSpec) -> JobOutcome:
    """Run one training job and describe how it ended (runs inside the worker)."""
    start = time.time()
    try:
        result = spec.function(dict(spec.hyperparameters))
    except (Exception, SystemExit) as exc:
        return JobOutcome(
            status=TrainingJobStatus.FAILED,
            objective_status=ObjectiveStatus.FAILED,
            objective_value=None,
            failure_reason=f"{type(exc).__name__}: {exc}",
            traceback=traceback.format_exc(),
            start_time=start,
            end_time=time.time(),
        )
    metrics, problem = parse_result(result, spec.objective_metric_name)
    return JobOutcome(
        status=TrainingJobStatus.COMPLETED,
        objective_status=ObjectiveStatus.FAILED if problem else ObjectiveStatus.SUCCEEDED,
        objective_value=None if problem else metrics[spec.objective_metric_name],
        metrics=metrics,
        failure_reason=f"Objective: {problem}" if problem else None,
        start_time=start,
        end_time=time.time(),
    )
