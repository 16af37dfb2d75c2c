"""The Tuner: validate a tuning job's configuration, then run the ask -> submit -> tell loop.

Data flow (one way): the strategy proposes configurations; the tuner records each launch in the store,
submits :func:`amtlib._execution.run_training_job` to the executor, and when a job finishes records
the result in the store *before* telling the strategy or launching anything else. Resuming a tuning
job is replaying its stored records into a freshly seeded strategy (:meth:`Strategy.restore`).

The module is over 400 lines because the ``Tuner`` constructor validates every argument with its own
message (the rule, the value received and the fix); the loop itself lives in ``_run.py``.
"""

from __future__ import annotations

import copy
import json
import math
import numbers
import os
import re
import secrets
import time
import warnings
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np

from amtlib._run import Run
from amtlib.errors import (
    TuningJobFailedError,
    ValidationError,
    describe_value,
)
from amtlib.records import ObjectiveType
from amtlib.results import TuningJob
from amtlib.space import MAX_GRID_SIZE, Parameter, SearchSpace, is_int
from amtlib.stopping import MedianStopper, parse_early_stopping
from amtlib.store import SQLiteStore, open_store
from amtlib.strategies import make_strategy, parse_strategy
from amtlib.strategies.grid import check_grid_space
from amtlib.strategies.hyperband import hyperband_config, resource_warnings


class ScalingWarning(UserWarning):
    """An ``Auto`` range that spans several decades is searched linearly by this strategy."""


@dataclass(frozen=True)
class Limits:
    """When the tuning job stops launching training jobs (AMT's ``ResourceLimits`` plus one)."""

    max_jobs: int
    max_parallel_jobs: int
    max_runtime_in_seconds: float | None
    initial_failure_limit: int | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_jobs": self.max_jobs,
            "max_parallel_jobs": self.max_parallel_jobs,
            "max_runtime_in_seconds": self.max_runtime_in_seconds,
            "initial_failure_limit": self.initial_failure_limit,
        }


_JOB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_EXECUTOR_NAMES = ("process", "thread", "inline")


def _positive_seconds(value: Any) -> bool:
    """A finite number > 0 of any kind (Python's, numpy's), not a bool."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        return False
    try:
        seconds = float(value)
    except OverflowError:  # an int too large for a float
        return False
    return math.isfinite(seconds) and seconds > 0


def _positive_int(name: str, value: Any, *, optional: bool, fix: str) -> int | None:
    if value is None and optional:
        return None
    if not is_int(value) or value < 1:
        none = " or None" if optional else ""
        raise ValidationError(
            f"The {name!r} parameter of Tuner must be an int >= 1{none}. "
            f"Got {describe_value(value)} instead. Fix: {fix}."
        )
    return int(value)


# Metric names that read like something to minimise (for the warning on a defaulted Maximize),
# unless negated as scikit-learn's scorers are ("neg_log_loss" is maximised).
_LOSS_LIKE = re.compile(
    r"^(?!.*(?<![a-z])neg(?![a-z])).*(loss|error|negative\W?_?log\W?_?likelihood|"
    r"(?<![a-z])(err|mse|rmse|mae|nll|regret)(?![a-z]))",
    re.I,
)


def _parse_objective_type(value: Any) -> ObjectiveType:
    if isinstance(value, str):
        for member in ObjectiveType:
            if value.strip().lower() in (member.value.lower(), member.value[:3].lower()):
                return member
    raise ValidationError(
        "The 'objective_type' parameter of Tuner must be 'Maximize' or 'Minimize' "
        f"(case-insensitive). Got {describe_value(value)} instead. Fix: pass objective_type="
        "'Minimize' for a loss or error, 'Maximize' for accuracy-like metrics."
    )


def _check_static(
    static: Mapping[str, Any] | None, ranges: Mapping[str, Parameter]
) -> dict[str, Any]:
    if static is None:
        return {}
    if not isinstance(static, Mapping):
        raise ValidationError(
            "The 'static_hyperparameters' parameter of Tuner must be a dict of name -> value. "
            f"Got {describe_value(static)} instead. Fix: pass a dict such as {{'epochs': 10}}."
        )
    out: dict[str, Any] = {}
    for name, value in static.items():
        if not isinstance(name, str) or not name:
            raise ValidationError(
                f"static_hyperparameters: each name must be a non-empty string. Got "
                f"{describe_value(name)}. Fix: name it with a string."
            )
        if name in ranges:
            raise ValidationError(
                f"Hyperparameter {name!r} is both tuned (hyperparameter_ranges) and static "
                f"(static_hyperparameters={{{name!r}: {value!r}}}). A hyperparameter is one or the "
                "other. Fix: remove it from one of them."
            )
        value = _plain(value)
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            fix = (
                "pass value.tolist() for a numpy array"
                if _holds_array(value)
                else "load that object inside the training function, or bind it with "
                "functools.partial(train, ...)"
            )
            raise ValidationError(
                f"static_hyperparameters[{name!r}] must be JSON-serialisable (str, number, bool, "
                f"None, list, dict) so the store can record it. Got {describe_value(value)}. "
                f"Fix: {fix}."
            ) from None
        out[name] = copy.deepcopy(value)  # the caller's later changes do not reach the jobs
    return out


def _plain(value: Any) -> Any:
    """numpy scalars, also inside lists, tuples and dicts, as Python scalars (``np.int64(10)`` -> 10)."""
    if isinstance(value, np.generic):
        return value.item()
    # Containers are rebuilt only when they held a numpy scalar, so the job gets its own object.
    if isinstance(value, (list, tuple)):
        items = [_plain(v) for v in value]
        if any(a is not b for a, b in zip(items, value, strict=True)):
            return items if isinstance(value, list) else tuple(items)
    elif isinstance(value, dict):
        pairs = {k: _plain(v) for k, v in value.items()}
        if any(pairs[k] is not v for k, v in value.items()):
            return pairs
    return value


def _holds_array(value: Any) -> bool:
    if isinstance(value, np.ndarray):
        return True
    if isinstance(value, (list, tuple)):
        return any(_holds_array(v) for v in value)
    if isinstance(value, dict):
        return any(_holds_array(v) for v in value.values())
    return False


def _check_grid_size(space: SearchSpace) -> None:
    """Refuse a grid too large to run, before anything lists its values."""
    size = space.size()
    if size is None or size <= MAX_GRID_SIZE:
        return  # a continuous range is refused by check_grid_space, with its own message
    sizes = {name: param.size() for name, param in space}
    raise ValidationError(
        f"The 'hyperparameter_ranges' parameter of Tuner makes a grid too large: {size} "
        f"configurations (values per range: {sizes}), more than the {MAX_GRID_SIZE} that "
        "strategy='Grid' runs. Fix: narrow the integer ranges, list the values to try with "
        "CategoricalParameter([...]), or use strategy='Random' or 'Bayesian'."
    )


def _check_executor(executor: Any) -> None:
    if executor is None or isinstance(executor, Executor) or executor in _EXECUTOR_NAMES:
        return
    raise ValidationError(
        "The 'executor' parameter of Tuner must be None (local worker processes), 'process', "
        "'thread', 'inline' or a concurrent.futures.Executor (e.g. dask's client.get_executor()). "
        f"Got {describe_value(executor)} instead. Fix: pass one of those."
    )


class Tuner:
    """A hyperparameter tuning job, AMT-style, for a Python training function.

    Args:
        train: called as ``train(hyperparameters)`` with a dict of the tuned and static
            hyperparameters (plain Python values). Returns the objective metric's value, or a dict of
            metrics that includes ``objective_metric_name``.
        objective_metric_name: the metric to optimise (default ``"objective"``: the name a plain
            number returned by ``train`` is recorded under).
        hyperparameter_ranges: name -> ``ContinuousParameter``, ``IntegerParameter`` or
            ``CategoricalParameter``, searched in declaration order.
        objective_type: ``"Maximize"`` (the SDK's default: a warning says so when the metric's
            name reads like a loss or an error) or ``"Minimize"``; case-insensitive, and
            ``"max"``/``"min"`` too.
        static_hyperparameters: fixed values passed to every job (JSON-serialisable).
        strategy: ``"Bayesian"`` (the default, as in the SDK), ``"Random"``, ``"Grid"`` or
            ``"Hyperband"`` (case-insensitive).
        strategy_config: strategy-specific settings. Hyperband: ``min_resource``,
            ``max_resource`` (else read from a static ``epochs``-like hyperparameter),
            ``reduction_factor``, ``mode`` (``"stopping"``/``"promotion"``), ``model``
            (``"random"``/``"bayesian"``), ``brackets`` (how many of the most aggressive brackets;
            1 is ASHA), ``rungs`` (``"pooled"``/``"per_bracket"``), ``bracket_selection``
            (``"adaptive"``/``"fixed"``), case-insensitive; AMT's ``MinResource``/``MaxResource``
            also work, at the top level or in ``{"HyperbandStrategyConfig": {...}}``.
            Bayesian: ``initial_design_size``, ``n_candidates``, ``categorical_local_every``.
        max_jobs: training jobs to launch in all, failed ones included. Grid: the grid's size (the
            default), and only that; a grid over ``MAX_GRID_SIZE`` (1,000,000) configurations is
            refused. Others: default 1, as in the SDK (with a warning). Integer arguments take numpy
            integers too.
        max_parallel_jobs: training jobs running at once (default 1, as in the SDK).
        max_runtime_in_seconds: stop launching when the tuning job has run this long; running jobs are
            stopped where the executor can (the default one can), else waited for.
        random_seed: seeds every random choice; the same seed gives the same Random and Grid
            sequence whatever the parallelism. ``None`` draws one and records it.
        job_name: the tuning job's name in the store; ``fit()`` with an existing name resumes it.
            Default: ``tuning-job-<UTC time>-<random>``.
        store: a SQLite file path (default ``"amtlib.db"``), ``":memory:"`` or a ``SQLiteStore``.
        executor: ``None`` (``max_parallel_jobs`` local worker processes), ``"process"``,
            ``"thread"``, ``"inline"`` or any ``concurrent.futures.Executor``.
        early_stopping_type: ``"Off"`` (the default) or ``"Auto"``: AMT's median rule stops a job
            whose reported objective is worse than the median of the other jobs' running averages
            at the same step. Pass ``MedianStopper(min_references=...)`` to tune the rule. Not with
            ``Hyperband``, which stops jobs itself.
        initial_failure_limit: if the first this-many training jobs to finish in a ``fit()`` all
            failed (an exception, or an objective that is missing or not finite: a misspelt
            ``objective_metric_name`` counts) and no job of the tuning job ever succeeded, stop with
            :class:`TuningJobFailedError` instead of spending the rest of the budget (default 5).
            ``None`` never stops early.
        report_host: where the tuner listens for ``amtlib.report`` calls from running jobs
            (default ``"127.0.0.1"``; ``"0.0.0.0"`` when workers run on other machines). Each job
            gets its own secret: nobody else can report for it or stop it.
        checkpoint_root: folder for the jobs' checkpoints (``amtlib.current_job().checkpoint_dir``
            is ``<checkpoint_root>/<training job name>``). Default: none, except for Hyperband's
            promotion mode, which uses ``<store>.checkpoints/<job name>``.

    Example:
        >>> from amtlib import Tuner, ContinuousParameter
        >>> tuner = Tuner(lambda hp: (hp["x"] - 0.3) ** 2, objective_metric_name="loss",
        ...               objective_type="Minimize", strategy="Random", max_jobs=20,
        ...               hyperparameter_ranges={"x": ContinuousParameter(0.0, 1.0)},
        ...               random_seed=0, store=":memory:", executor="inline")
        >>> job = tuner.fit()
        >>> abs(job.best_training_job.hyperparameters["x"] - 0.3) < 0.1
        True
    """

    def __init__(
        self,
        train: Callable[[dict[str, Any]], Any],
        objective_metric_name: str = "objective",
        hyperparameter_ranges: Mapping[str, Parameter] | None = None,
        *,
        objective_type: str | None = None,
        static_hyperparameters: Mapping[str, Any] | None = None,
        strategy: str = "Bayesian",
        strategy_config: Mapping[str, Any] | None = None,
        max_jobs: int | None = None,
        max_parallel_jobs: int = 1,
        max_runtime_in_seconds: float | None = None,
        random_seed: int | None = None,
        job_name: str | None = None,
        store: str | os.PathLike[str] | SQLiteStore = "amtlib.db",
        executor: Executor | str | None = None,
        early_stopping_type: str | MedianStopper = "Off",
        initial_failure_limit: int | None = 5,
        report_host: str = "127.0.0.1",
        checkpoint_root: str | os.PathLike[str] | None = None,
    ) -> None:
        if not callable(train):
            raise ValidationError(
                f"The 'train' parameter of Tuner must be a callable taking a dict of "
                f"hyperparameters. Got {describe_value(train)} instead. Fix: pass your training "
                "function."
            )
        if not isinstance(objective_metric_name, str) or not objective_metric_name:
            raise ValidationError(
                "The 'objective_metric_name' parameter of Tuner must be a non-empty string. Got "
                f"{describe_value(objective_metric_name)} instead. Fix: name the metric to optimise."
            )
        if hyperparameter_ranges is None:
            raise ValidationError(
                "The 'hyperparameter_ranges' parameter of Tuner is required. Got None. Fix: pass "
                "a dict such as {'lr': ContinuousParameter(1e-4, 1.0)}."
            )
        self.train = train
        self.objective_metric_name = objective_metric_name
        if objective_type is None:
            objective_type = "Maximize"  # the SDK's default
            if _LOSS_LIKE.search(objective_metric_name):
                warnings.warn(
                    "objective_type was not given, so it is 'Maximize' (the SDK's default), but "
                    f"objective_metric_name={objective_metric_name!r} reads like something to "
                    "minimise. Fix: pass objective_type='Minimize' (or 'Maximize' to keep "
                    "maximising it without this warning).",
                    UserWarning,
                    stacklevel=2,
                )
        self.objective_type = _parse_objective_type(objective_type)
        self.space = SearchSpace(hyperparameter_ranges)
        self.static_hyperparameters = _check_static(static_hyperparameters, self.space.ranges)
        self.strategy = parse_strategy(strategy)
        if strategy_config is not None and not isinstance(strategy_config, Mapping):
            raise ValidationError(
                "The 'strategy_config' parameter of Tuner must be a dict or None. Got "
                f"{describe_value(strategy_config)} instead. Fix: pass a dict."
            )
        self.strategy_config = dict(strategy_config or {})
        parallel = _positive_int(
            "max_parallel_jobs", max_parallel_jobs, optional=False, fix="pass 1 or more"
        )
        jobs = _positive_int("max_jobs", max_jobs, optional=True, fix="pass 1 or more, or None")
        if self.strategy == "Grid":
            _check_grid_size(self.space)
            size = check_grid_space(self.space)
            if jobs is not None and jobs != size:
                raise ValidationError(
                    f"The 'max_jobs' parameter of Tuner must equal the grid's size ({size}) with "
                    f"strategy='Grid'. Got {jobs}. Fix: omit max_jobs, or pass max_jobs={size}."
                )
            jobs = size
        elif jobs is None:
            warnings.warn(
                "max_jobs was not given, so this tuning job runs 1 training job (the SDK's "
                "default). Fix: pass max_jobs, e.g. max_jobs=20.",
                UserWarning,
                stacklevel=2,
            )
        runtime = max_runtime_in_seconds
        if runtime is not None and not _positive_seconds(runtime):
            raise ValidationError(
                "The 'max_runtime_in_seconds' parameter of Tuner must be a number > 0 or None. Got "
                f"{describe_value(runtime)} instead. Fix: pass a number of seconds, or None."
            )
        self.limits = Limits(
            max_jobs=jobs if jobs is not None else 1,
            max_parallel_jobs=parallel,  # type: ignore[arg-type]
            max_runtime_in_seconds=None if runtime is None else float(runtime),
            initial_failure_limit=_positive_int(
                "initial_failure_limit",
                initial_failure_limit,
                optional=True,
                fix="pass 1 or more, or None to never stop early",
            ),
        )
        if random_seed is not None and (not is_int(random_seed) or random_seed < 0):
            raise ValidationError(
                "The 'random_seed' parameter of Tuner must be an int >= 0 or None. Got "
                f"{describe_value(random_seed)} instead. Fix: pass e.g. random_seed=0."
            )
        self.random_seed = None if random_seed is None else int(random_seed)
        if job_name is None:
            job_name = (
                f"tuning-job-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(3)}"
            )
        if not isinstance(job_name, str) or not _JOB_NAME.fullmatch(job_name):
            raise ValidationError(
                "The 'job_name' parameter of Tuner must be 1-128 characters of letters, digits, "
                f"'.', '_' or '-', starting with a letter or digit. Got {describe_value(job_name)} "
                "instead. Fix: pick a name such as 'my-job'."
            )
        self.job_name = job_name
        if not isinstance(store, (str, os.PathLike, SQLiteStore)):
            raise ValidationError(
                "The 'store' parameter of Tuner must be a SQLite file path, ':memory:' or a "
                f"SQLiteStore. Got {describe_value(store)} instead. Fix: pass store='amtlib.db'."
            )
        self.store = store
        _check_executor(executor)
        self.executor = executor
        self.early_stopper = parse_early_stopping(early_stopping_type)
        self.early_stopping_type = "Off" if self.early_stopper is None else "Auto"
        if self.strategy == "Hyperband":
            if self.early_stopper is not None:
                raise ValidationError(
                    "The 'early_stopping_type' parameter of Tuner must be 'Off' with "
                    f"strategy='Hyperband' (Hyperband stops jobs itself, as in AMT). Got "
                    f"{early_stopping_type!r}. Fix: drop early_stopping_type."
                )
            self.strategy_config = hyperband_config(
                self.strategy_config, self.static_hyperparameters, self.space.names
            )
            for message in resource_warnings(
                self.strategy_config, self.static_hyperparameters, self.space.names
            ):
                warnings.warn(message, UserWarning, stacklevel=2)
        # Strategies validate their settings when built: build one now so a mistake surfaces here.
        make_strategy(self.strategy, self.space, seed=0, config=self.strategy_config)
        if not isinstance(report_host, str) or not report_host:
            raise ValidationError(
                "The 'report_host' parameter of Tuner must be a host name or address to listen on "
                f"for intermediate reports. Got {describe_value(report_host)} instead. Fix: keep "
                "'127.0.0.1', or '0.0.0.0' when workers run on other machines."
            )
        self.report_host = report_host
        if checkpoint_root is not None and not isinstance(checkpoint_root, (str, os.PathLike)):
            raise ValidationError(
                "The 'checkpoint_root' parameter of Tuner must be a folder path or None. Got "
                f"{describe_value(checkpoint_root)} instead. Fix: pass a path such as 'checkpoints'."
            )
        self.checkpoint_root = None if checkpoint_root is None else os.fspath(checkpoint_root)
        if self.strategy in ("Random", "Hyperband"):
            wide = self.space.auto_ranges_spanning_decades()
            if wide:
                warnings.warn(
                    f"Hyperparameter ranges {wide} span 3 or more decades with scaling_type 'Auto', "
                    f"which the {self.strategy} strategy searches as 'Linear' (as AMT does): most "
                    "jobs will land in the top decade. Pass scaling_type='Logarithmic' if the scale "
                    "is multiplicative (learning rates, regularisation strengths).",
                    ScalingWarning,
                    stacklevel=2,
                )
        self._clock: Callable[[], float] = time.monotonic

    def config(self) -> dict[str, Any]:
        """What defines the tuning job: resuming it with another configuration is refused."""
        return {
            "objective": {
                "MetricName": self.objective_metric_name,
                "Type": self.objective_type.value,
            },
            "strategy": self.strategy,
            "strategy_config": self.strategy_config,
            "ranges": self.space.to_dict(),
            "static_hyperparameters": self.static_hyperparameters,
            "random_seed": self.random_seed,
            "early_stopping_type": self.early_stopping_type,
            "early_stopping": None if self.early_stopper is None else self.early_stopper.to_dict(),
        }

    def fit(self, *, progress: bool | None = None) -> TuningJob:
        """Run the tuning job to completion (or resume it) and return its results.

        Args:
            progress: show a progress bar on stderr; default when stderr is a terminal.

        Raises:
            TuningJobFailedError: every one of the first ``initial_failure_limit`` jobs failed;
                its ``tuning_job`` attribute holds the tuning job's records (with the tracebacks).
        """
        store, owned = open_store(self.store)
        try:
            with store.lock_tuning_job(self.job_name):
                try:
                    Run(self, store, progress).execute()
                except TuningJobFailedError as exc:
                    exc.tuning_job = TuningJob.load(self.job_name, store)
                    raise
            return TuningJob.load(self.job_name, store)
        finally:
            if owned:
                store.close()
