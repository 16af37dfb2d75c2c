"""amtlib: Amazon SageMaker Automatic Model Tuning, on any machine.

Example:
    >>> from amtlib import Tuner, ContinuousParameter, IntegerParameter, CategoricalParameter
"""

from typing import TYPE_CHECKING, Any

from amtlib.errors import (
    AmtlibError,
    ExecutorLostError,
    ReportChannelError,
    StoreError,
    TuningJobFailedError,
    ValidationError,
    WorkerDiedError,
)
from amtlib.records import ObjectiveStatus, Report, TrainingJob, TrainingJobStatus
from amtlib.reporting import TrialStopped, current_job, report
from amtlib.results import TuningJob
from amtlib.space import (
    CategoricalParameter,
    ContinuousParameter,
    IntegerParameter,
    ScalingType,
    SearchSpace,
)
from amtlib.stopping import MedianStopper
from amtlib.store import SQLiteStore

if TYPE_CHECKING:
    from amtlib.tuner import ScalingWarning, Tuner

__version__ = "0.1.0"

__all__ = [
    "AmtlibError",
    "CategoricalParameter",
    "ContinuousParameter",
    "ExecutorLostError",
    "IntegerParameter",
    "MedianStopper",
    "ObjectiveStatus",
    "Report",
    "ReportChannelError",
    "SQLiteStore",
    "ScalingType",
    "ScalingWarning",
    "SearchSpace",
    "StoreError",
    "TrainingJob",
    "TrainingJobStatus",
    "TrialStopped",
    "Tuner",
    "TuningJob",
    "TuningJobFailedError",
    "ValidationError",
    "WorkerDiedError",
    "__version__",
    "current_job",
    "report",
]


def __getattr__(name: str) -> Any:
    """``Tuner`` and ``ScalingWarning``, imported on first use (PEP 562).

    The tuner brings in the strategies and scipy.optimize (~0.4 s); a worker process imports
    ``amtlib`` at every start but only runs training jobs, so it never pays for them.
    """
    if name in ("Tuner", "ScalingWarning"):
        from amtlib import tuner

        return getattr(tuner, name)
    raise AttributeError(f"module 'amtlib' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), "Tuner", "ScalingWarning"})
