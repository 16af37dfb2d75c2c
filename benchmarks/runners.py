"""One interface to every optimiser in the benchmark: ``run(method, problem, seed, n_evals, parallel)``.

Methods (peer libraries are imported only when used):

- ``amtlib-random``, ``amtlib-bayesian``: ``amtlib.Tuner`` with that strategy, ``store=":memory:"``
  and a :class:`SimulatedParallelExecutor` with ``max_parallel_jobs=parallel`` workers.
- ``optuna-tpe``: ``optuna.samplers.TPESampler(seed=seed)`` with Optuna's defaults.
- ``optuna-gp``: ``optuna.samplers.GPSampler(seed=seed, deterministic_objective=True)`` (every
  problem here is noise-free; telling the GP so is Optuna's documented setting for that). Needs
  torch.
- ``skopt-gp``: ``skopt.gp_minimize(..., random_state=seed)`` with its defaults. Sequential only:
  scikit-optimize has no way to tell its optimiser about pending evaluations.
- ``synetune-botorch``: Syne Tune's ``BoTorchSearcher(config_space, random_seed=seed)`` with its
  defaults, the searcher behind ``syne_tune.optimizer.baselines.BOTorch``. Its few random
  proposals use numpy's global generator, so the run seeds it. The searcher falls back to a random
  proposal whenever BoTorch raises; ``info["fallbacks"]`` counts those.

Ranges map faithfully: ``Logarithmic`` -> ``log=True`` / ``"log-uniform"`` / ``loguniform``;
``ReverseLogarithmic`` -> a log-uniform variable ``t`` in ``[1 - max, 1 - min]`` with value
``1 - t`` (Syne Tune: its own ``reverseloguniform``); integers stay integers; categorical values are
passed as they are. ``Auto`` is ``Linear`` for every peer (none learns the scale) and for
amtlib's Random (AMT's rule); only amtlib's Bayesian treats it differently.

Parallel runs (``parallel > 1``) go through the same simulated cluster for every method:
``parallel`` workers, durations log-normal (median 1) drawn per submission number from the seed,
so each method sees asynchronous completions with the same timing. The peers are driven by the
same ``wait(FIRST_COMPLETED)`` loop as amtlib's tuner, through their ask/tell interfaces.

``run`` returns the losses in completion order (for ``parallel=1``: evaluation order); an
evaluation that raised counts as ``inf``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import math
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, wait
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from amtlib import CategoricalParameter, ContinuousParameter, IntegerParameter
from amtlib.space import Parameter, ScalingType
from benchmarks.problems import Problem
from benchmarks.simulated_executor import SimulatedParallelExecutor, random_durations

METHODS = (
    "amtlib-random",
    "amtlib-bayesian",
    "optuna-tpe",
    "optuna-gp",
    "skopt-gp",
    "synetune-botorch",
)
GP_PEERS = ("optuna-gp", "skopt-gp", "synetune-botorch")
TORCH_METHODS = ("optuna-gp", "synetune-botorch")


class MethodUnavailable(RuntimeError):
    """The method cannot run here (a library is missing, or it does not support the setting)."""


@dataclass
class RunResult:
    """One run: losses and configurations in completion order, and how it went."""

    losses: list[float]
    configs: list[dict[str, Any]]
    seconds: float
    info: dict[str, Any] = field(default_factory=dict)


def unavailable_reason(method: str, parallel: int = 1) -> str | None:
    """Why ``method`` cannot run here with ``parallel`` workers, or ``None`` if it can."""
    if method not in METHODS:
        return f"unknown method {method!r}; known: {', '.join(METHODS)}"
    needs = {
        "optuna-tpe": ["optuna"],
        "optuna-gp": ["optuna", "torch"],
        "skopt-gp": ["skopt"],
        "synetune-botorch": ["syne_tune", "botorch", "torch"],
    }.get(method, [])
    missing = [m for m in needs if importlib.util.find_spec(m) is None]
    if missing:
        return f"{method} needs {', '.join(missing)} (see benchmarks/requirements.txt)"
    if method == "amtlib-bayesian":
        from amtlib.strategies import STRATEGIES

        if "Bayesian" not in STRATEGIES:
            return "amtlib has no 'Bayesian' strategy yet"
    if method == "skopt-gp" and parallel > 1:
        return "skopt-gp is sequential only: scikit-optimize cannot be told about pending points"
    return None


def run(method: str, problem: Problem, seed: int, n_evals: int, parallel: int = 1) -> list[float]:
    """Losses of ``n_evals`` evaluations of ``problem`` by ``method``, in completion order.

    Raises:
        MethodUnavailable: the method cannot run here (see :func:`unavailable_reason`).
    """
    return run_detailed(method, problem, seed, n_evals, parallel).losses


def run_detailed(
    method: str, problem: Problem, seed: int, n_evals: int, parallel: int = 1
) -> RunResult:
    """Like :func:`run`, with the configurations, the wall time and method-specific details."""
    reason = unavailable_reason(method, parallel)
    if reason is not None:
        raise MethodUnavailable(reason)
    start = time.perf_counter()
    with _quiet():
        result = _RUNNERS[method](problem, seed, n_evals, parallel)
    result.seconds = time.perf_counter() - start
    return result


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the peers' warnings (experimental features, repeated points, GP conditioning)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _safe_loss(problem: Problem, hp: dict[str, Any]) -> float:
    try:
        value = problem(hp)
    except Exception:
        return math.inf
    return value if math.isfinite(value) else math.inf


def _executor(seed: int, n_evals: int, parallel: int) -> SimulatedParallelExecutor:
    # Every caller here fills all `parallel` slots and submits exactly n_evals tasks, so the idle
    # fallback (the one timing-dependent rule) is only a guard against a hang: long enough that a
    # slow suggestion never triggers it. info["idle_completions"] shows if it ever fired.
    return SimulatedParallelExecutor(
        parallel, random_durations(seed), total_tasks=n_evals, idle_timeout=120.0
    )


def _executor_info(executor: SimulatedParallelExecutor) -> dict[str, Any]:
    return {
        "simulated_makespan": executor.now,
        "idle_completions": executor.idle_completions,
    }


# ---- amtlib ----------------------------------------------------------------------------------------


def _run_amtlib(strategy: str) -> Callable[[Problem, int, int, int], RunResult]:
    def runner(problem: Problem, seed: int, n_evals: int, parallel: int) -> RunResult:
        from amtlib import Tuner

        executor = _executor(seed, n_evals, parallel)
        tuner = Tuner(
            problem.function,
            objective_metric_name="loss",
            hyperparameter_ranges=dict(problem.hyperparameter_ranges),
            objective_type="Minimize",
            strategy=strategy,
            max_jobs=n_evals,
            max_parallel_jobs=parallel,
            random_seed=seed,
            job_name=f"{problem.name}-{seed}",
            store=":memory:",
            executor=executor,
            initial_failure_limit=None,
        )
        with executor:
            job = tuner.fit(progress=False)
        by_index = {j.index: j for j in job.training_jobs}
        losses, configs = [], []
        for seq in executor.completion_order:  # the tuner submits job k as task k
            j = by_index[seq]
            value = j.objective_value
            losses.append(math.inf if value is None else float(value))
            configs.append(dict(j.hyperparameters))
        return RunResult(losses, configs, 0.0, _executor_info(executor))

    return runner


# ---- the ask/tell driver for the peers --------------------------------------------------------------


def _drive(
    ask: Callable[[], tuple[Any, dict[str, Any]]],
    tell: Callable[[Any, dict[str, Any], float], None],
    problem: Problem,
    seed: int,
    n_evals: int,
    parallel: int,
) -> RunResult:
    """The tuner's loop for an ask/tell optimiser: fill free slots, wait for one, tell it."""
    executor = _executor(seed, n_evals, parallel)
    running: dict[Any, tuple[int, Any, dict[str, Any]]] = {}
    results: dict[int, tuple[float, dict[str, Any]]] = {}
    submitted = 0
    with executor:
        while True:
            while len(running) < parallel and submitted < n_evals:
                handle, hp = ask()
                running[executor.submit(_safe_loss, problem, hp)] = (submitted, handle, hp)
                submitted += 1
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            order = {seq: k for k, seq in enumerate(executor.completion_order)}
            for future in sorted(done, key=lambda f: order[running[f][0]]):
                seq, handle, hp = running.pop(future)
                loss = future.result()
                results[seq] = (loss, hp)
                tell(handle, hp, loss)
    losses = [results[seq][0] for seq in executor.completion_order]
    configs = [results[seq][1] for seq in executor.completion_order]
    return RunResult(losses, configs, 0.0, _executor_info(executor))


# ---- Optuna ----------------------------------------------------------------------------------------


def optuna_params(trial: Any, ranges: Mapping[str, Parameter]) -> dict[str, Any]:
    """Suggest (or, for a finished trial, read back) every range on an Optuna trial."""
    hp: dict[str, Any] = {}
    for name, p in ranges.items():
        if isinstance(p, CategoricalParameter):
            hp[name] = trial.suggest_categorical(name, p.values())
            continue
        scaling = p.effective_scaling
        if isinstance(p, IntegerParameter):
            log = scaling is ScalingType.LOGARITHMIC
            hp[name] = int(trial.suggest_int(name, p.min_value, p.max_value, log=log))
        elif scaling is ScalingType.REVERSE_LOGARITHMIC:
            t = trial.suggest_float(
                f"{name}__one_minus", 1 - p.max_value, 1 - p.min_value, log=True
            )
            hp[name] = float(np.clip(1 - t, p.min_value, p.max_value))
        else:
            log = scaling is ScalingType.LOGARITHMIC
            hp[name] = float(trial.suggest_float(name, p.min_value, p.max_value, log=log))
    return hp


def _run_optuna(kind: str) -> Callable[[Problem, int, int, int], RunResult]:
    def runner(problem: Problem, seed: int, n_evals: int, parallel: int) -> RunResult:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        if kind == "tpe":
            sampler = optuna.samplers.TPESampler(seed=seed)
        else:
            sampler = optuna.samplers.GPSampler(seed=seed, deterministic_objective=True)
        study = optuna.create_study(direction="minimize", sampler=sampler)

        def ask() -> tuple[Any, dict[str, Any]]:
            trial = study.ask()
            return trial, optuna_params(trial, problem.hyperparameter_ranges)

        def tell(trial: Any, hp: dict[str, Any], loss: float) -> None:
            if math.isfinite(loss):
                study.tell(trial, loss)
            else:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)

        result = _drive(ask, tell, problem, seed, n_evals, parallel)
        result.info["optuna"] = optuna.__version__
        return result

    return runner


# ---- scikit-optimize -------------------------------------------------------------------------------


def _skopt_space(ranges: Mapping[str, Parameter]) -> list[Any]:
    from skopt.space import Categorical, Integer, Real

    dims: list[Any] = []
    for name, p in ranges.items():
        if isinstance(p, CategoricalParameter):
            dims.append(Categorical(p.values(), name=name))
            continue
        scaling = p.effective_scaling
        prior = "log-uniform" if scaling is not ScalingType.LINEAR else "uniform"
        if isinstance(p, IntegerParameter):
            dims.append(Integer(p.min_value, p.max_value, prior=prior, name=name))
        elif scaling is ScalingType.REVERSE_LOGARITHMIC:
            dims.append(Real(1 - p.max_value, 1 - p.min_value, prior=prior, name=name))
        else:
            dims.append(Real(p.min_value, p.max_value, prior=prior, name=name))
    return dims


def _from_skopt(x: list[Any], ranges: Mapping[str, Parameter]) -> dict[str, Any]:
    hp: dict[str, Any] = {}
    for value, (name, p) in zip(x, ranges.items(), strict=True):
        if isinstance(p, CategoricalParameter):
            value = _plain(value)
            same = [v for v in p.values() if v == value]
            exact = [v for v in same if type(v) is type(value)]
            hp[name] = (exact or same)[0]
        elif isinstance(p, IntegerParameter):
            hp[name] = int(value)
        elif p.effective_scaling is ScalingType.REVERSE_LOGARITHMIC:
            hp[name] = float(np.clip(1 - float(value), p.min_value, p.max_value))
        else:
            hp[name] = float(value)
    return hp


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _run_skopt(problem: Problem, seed: int, n_evals: int, parallel: int) -> RunResult:
    import skopt

    ranges = problem.hyperparameter_ranges
    losses: list[float] = []
    configs: list[dict[str, Any]] = []

    def objective(x: list[Any]) -> float:
        hp = _from_skopt(x, ranges)
        loss = _safe_loss(problem, hp)
        losses.append(loss)
        configs.append(hp)
        return loss if math.isfinite(loss) else 1e300

    skopt.gp_minimize(objective, _skopt_space(ranges), n_calls=n_evals, random_state=seed)
    return RunResult(losses, configs, 0.0, {"skopt": skopt.__version__})


# ---- Syne Tune -------------------------------------------------------------------------------------


def _synetune_space(ranges: Mapping[str, Parameter]) -> dict[str, Any]:
    import syne_tune.config_space as cs

    space: dict[str, Any] = {}
    for name, p in ranges.items():
        if isinstance(p, CategoricalParameter):
            space[name] = cs.choice(p.values())
            continue
        scaling = p.effective_scaling
        lo, hi = p.min_value, p.max_value
        if isinstance(p, IntegerParameter):
            log = scaling is ScalingType.LOGARITHMIC
            space[name] = cs.lograndint(lo, hi) if log else cs.randint(lo, hi)
        elif scaling is ScalingType.LOGARITHMIC:
            space[name] = cs.loguniform(lo, hi)
        elif scaling is ScalingType.REVERSE_LOGARITHMIC:
            space[name] = cs.reverseloguniform(lo, hi)
        else:
            space[name] = cs.uniform(lo, hi)
    return space


class _CountFallbacks(logging.Handler):
    """Counts the searcher's "sampling randomly" warnings (it logs them on the root logger)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "randomly" in record.getMessage():
            self.count += 1


def _run_synetune(problem: Problem, seed: int, n_evals: int, parallel: int) -> RunResult:
    import syne_tune
    from syne_tune.optimizer.schedulers.searchers.botorch.botorch_searcher import (
        BoTorchSearcher,
    )

    ranges = problem.hyperparameter_ranges
    np.random.seed(seed)  # the searcher's random proposals use numpy's global generator
    searcher = BoTorchSearcher(_synetune_space(ranges), random_seed=seed)
    counter = _CountFallbacks()
    root = logging.getLogger()
    root.addHandler(counter)
    suggested = 0

    def ask() -> tuple[Any, dict[str, Any]]:
        nonlocal suggested
        config = searcher.suggest()
        trial_id, suggested = suggested, suggested + 1
        hp = {}
        for name, p in ranges.items():
            value = _plain(config[name])
            if isinstance(p, IntegerParameter):
                value = int(value)
            elif isinstance(p, ContinuousParameter):
                value = float(np.clip(value, p.min_value, p.max_value))
            hp[name] = value
        return (trial_id, config), hp

    def tell(handle: Any, hp: dict[str, Any], loss: float) -> None:
        trial_id, config = handle
        if math.isfinite(loss):
            searcher.on_trial_complete(trial_id, config, loss)
        else:
            searcher.evaluation_failed(trial_id)

    try:
        result = _drive(ask, tell, problem, seed, n_evals, parallel)
    finally:
        root.removeHandler(counter)
    result.info.update(fallbacks=counter.count, syne_tune=syne_tune.__version__)
    return result


_RUNNERS: dict[str, Callable[[Problem, int, int, int], RunResult]] = {
    "amtlib-random": _run_amtlib("Random"),
    "amtlib-bayesian": _run_amtlib("Bayesian"),
    "optuna-tpe": _run_optuna("tpe"),
    "optuna-gp": _run_optuna("gp"),
    "skopt-gp": _run_skopt,
    "synetune-botorch": _run_synetune,
}
