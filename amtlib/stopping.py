"""Early stopping: AMT's median rule, as a pure function of the reported learning curves.

``early_stopping_type="Auto"`` stops a training job at step ``t`` when its current value of the
objective metric is worse than the median of the running averages, up to step ``t``, of the other
training jobs that reached step ``t``. It needs at least ``min_references`` such jobs before it stops
anything. Values here are losses (the tuner flips the sign for ``Maximize``), so "worse" is "larger";
a tie with the median continues.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from amtlib.errors import ValidationError, describe_value
from amtlib.reporting import Action, Decision

CONTINUE = Decision()


class MedianStopper:
    """AMT's ``Auto`` early stopping (the median rule).

    Args:
        min_references: how many other jobs must have reached the step before a job can be stopped
            there (default 3).
        min_step: no job is stopped before this step (default 1: any step).

    Example:
        >>> rule = MedianStopper(min_references=2)
        >>> curves = {1: {1: 0.5, 2: 0.4, 3: 0.3}, 2: {1: 0.6, 2: 0.5, 3: 0.4}}
        >>> rule.decide(3, 0.9, curves).action.value
        'stop'
    """

    def __init__(self, min_references: int = 3, min_step: int = 1) -> None:
        for name, value in (("min_references", min_references), ("min_step", min_step)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValidationError(
                    f"The {name!r} parameter of MedianStopper must be an int >= 1. Got "
                    f"{describe_value(value)} instead. Fix: pass 1 or more."
                )
        self.min_references = min_references
        self.min_step = min_step

    def __repr__(self) -> str:
        return f"MedianStopper(min_references={self.min_references}, min_step={self.min_step})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MedianStopper) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash((self.min_references, self.min_step))

    def to_dict(self) -> dict[str, Any]:
        return {"type": "Auto", "min_references": self.min_references, "min_step": self.min_step}

    def decide(
        self, step: int, value: float, others: Mapping[int, Mapping[int, float]]
    ) -> Decision:
        """Decide on one report.

        Args:
            step: the step just reported.
            value: the job's loss at that step.
            others: for each other job, its losses by step. A job is a reference when it reached
                ``step`` (reported that step or a later one); its running average is the mean of
                its values at steps up to ``step``.

        Returns:
            ``stop`` when the value is worse than the median of the references' running averages,
            else ``continue``; the reason records the step, value, median and reference count.
        """
        if step < self.min_step:
            return CONTINUE
        averages = []
        for curve in others.values():
            upto = [v for s, v in curve.items() if s <= step]
            if upto and max(curve) >= step:
                averages.append(_mean(upto))
        if len(averages) < self.min_references:
            return CONTINUE
        median = _median(averages)
        reason = {
            "rule": "median",
            "step": step,
            "value": value,
            "median": median,
            "references": len(averages),
        }
        return Decision(Action.STOP if value > median else Action.CONTINUE, reason)


def _mean(values: list[float]) -> float:
    """The mean, finite whenever the values are (a plain sum of two values near 1e308 is not)."""
    mean = sum(values) / len(values)
    return mean if math.isfinite(mean) else sum(v / len(values) for v in values)


def _median(values: list[float]) -> float:
    """The median (the midpoint of the middle two for an even count), finite like ``_mean``."""
    ordered = sorted(values)
    half = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[half]
    return _mean(ordered[half - 1 : half + 1])


def parse_early_stopping(value: object) -> MedianStopper | None:
    """``"Off"`` -> None, ``"Auto"`` -> the default median rule, a ``MedianStopper`` as given."""
    if isinstance(value, MedianStopper):
        return value
    if isinstance(value, str) and value.strip().lower() in ("off", "auto"):
        return None if value.strip().lower() == "off" else MedianStopper()
    raise ValidationError(
        "The 'early_stopping_type' parameter of Tuner must be 'Off', 'Auto' (AMT's median rule) "
        f"or a MedianStopper(...). Got {describe_value(value)} instead. Fix: pass 'Auto' to stop "
        "jobs doing worse than the median, or 'Off'."
    )
