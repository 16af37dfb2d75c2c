"""amtlib: Amazon SageMaker Automatic Model Tuning, on any machine.

Example:
    >>> from amtlib import Tuner, ContinuousParameter, IntegerParameter, CategoricalParameter
"""

from amtlib.errors import (
    AmtlibError,
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
from amtlib.tuner import ScalingWarning, Tuner

__version__ = "0.1.0"

__all__ = [
    "AmtlibError",
    "CategoricalParameter",
    "ContinuousParameter",
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
