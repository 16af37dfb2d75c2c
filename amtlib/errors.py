"""The exceptions amtlib raises: one family, so ``except AmtlibError`` catches all of ours."""

from __future__ import annotations

import math
from typing import Any


class AmtlibError(Exception):
    """Base class of every exception amtlib raises on purpose."""


class ValidationError(AmtlibError, ValueError):
    """Bad input: the message names the parameter, the rule, the value received and the fix."""


class TuningJobFailedError(AmtlibError, RuntimeError):
    """The tuning job stopped itself, for example because every one of its first jobs failed.

    Every training job that finished before the error is already in the store. ``tuning_job``
    holds the tuning job's records (an :class:`amtlib.TuningJob`) when ``Tuner.fit`` raised it.
    """

    tuning_job: Any = None


class WorkerDiedError(AmtlibError, RuntimeError):
    """The worker process running a task ended before returning (``os._exit``, a signal, a segfault)."""


class ExecutorLostError(AmtlibError, RuntimeError):
    """The executor can no longer run jobs (a Dask client closed after losing its scheduler).

    Finished training jobs are stored; the running ones re-run when ``fit()`` resumes the job.
    """


class StoreError(AmtlibError, RuntimeError):
    """The store cannot serve a request (corrupt record, conflicting configuration, ...)."""


def describe_value(value: object) -> str:
    """``repr`` of a value with its type, for error messages: ``-1 (int)``. A long repr (a
    10**400, a whole array) is cut to its first 200 characters. Never raises: an int too long to
    print (over 4300 digits) or an object whose ``repr`` fails is described instead."""
    return f"{short_repr(value)} ({type(value).__name__})"


def short_repr(value: object, limit: int | None = 200) -> str:
    """``repr`` cut to its first ``limit`` characters (``None``: whole); never raises: an int too
    long to print (over 4300 digits) or an object whose ``repr`` fails is described instead."""
    try:
        text = repr(value)
    except Exception as exc:
        if isinstance(value, int):
            text = int_size(value)
        else:
            text = f"<{type(value).__name__} object: repr() raised {type(exc).__name__}>"
    if limit is not None and len(text) > limit:
        text = f"{text[:limit]}... ({len(text)} characters)"
    return text


def int_size(value: int) -> str:
    """``"an int of about N digits"``, for ints too long to print or to store as numbers."""
    return f"an int of about {int(value.bit_length() * math.log10(2)) + 1} digits"


class TaskKilledError(WorkerDiedError):
    """The worker process running a task was killed on request (``ProcessExecutor.kill``)."""


class RemoteTaskError(AmtlibError, RuntimeError):
    """A task failed in a worker process, and its own exception could not be sent back as itself.

    Raised in place of an exception that cannot be pickled or unpickled, and for a result that
    cannot travel between processes.

    Attributes:
        type_name: qualified name of the original exception type, such as ``"mylib.FitError"``.
        message: ``str()`` of the original exception.
        remote_traceback: the traceback formatted in the process where the error happened.
    """

    def __init__(self, type_name: str, message: str, remote_traceback: str) -> None:
        super().__init__(type_name, message, remote_traceback)
        self.type_name = type_name
        self.message = message
        self.remote_traceback = remote_traceback

    def __str__(self) -> str:
        return f"{self.type_name}: {self.message}"


class ReportChannelError(AmtlibError, RuntimeError):
    """A training job could not exchange a report with its tuner over the report channel.

    The message names the tuner's address and why: unreachable, timed out, the connection closed
    without an answer (the job is no longer registered, or its secret is wrong), or a reply that
    failed authentication.
    """
