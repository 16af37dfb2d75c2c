"""amtlib: Amazon SageMaker Automatic Model Tuning, on any machine.

Example:
    >>> from amtlib import Tuner, ContinuousParameter, IntegerParameter, CategoricalParameter
"""

from amtlib.errors import AmtlibError
from amtlib.errors import StoreError
from amtlib.errors import TuningJobFailedError
from amtlib.errors import ValidationError
from amtlib.errors import WorkerDiedError
from amtlib.records import ObjectiveStatus
from amtlib.records import Report
from amtlib.records import TrainingJob
from amtlib.records import TrainingJobStatus
from amtlib.results import TuningJob
from amtlib.space import CategoricalParameter
from amtlib.space import ContinuousParameter
from amtlib.space import IntegerParameter
from amtlib.space import ScalingType
from amtlib.space import SearchSpace
from amtlib.store import SQLiteStore
from amtlib.tuner import ScalingWarning
from amtlib.tuner import Tuner

__version__ = "0.1.0"

__all__ = [
    "AmtlibError",
    "CategoricalParameter",
    "ContinuousParameter",
    "IntegerParameter",
    "ObjectiveStatus",
    "Report",
    "SQLiteStore",
    "ScalingType",
    "ScalingWarning",
    "SearchSpace",
    "StoreError",
    "TrainingJob",
    "TrainingJobStatus",
    "TuningJob",
    "TuningJobFailedError",
    "Tuner",
    "ValidationError",
    "WorkerDiedError",
    "__version__",
]
