"""Multi-fidelity benchmark: best objective versus cumulative epochs trained, at equal epoch budgets.

Usage (each run is cached, so an interrupted command resumes where it stopped):

    python benchmarks/multifidelity.py --seeds 10 --jobs 2          # everything: see below
    python benchmarks/multifidelity.py --problems lcurve lcurve-crossing --configs 60 --seeds 10
    python benchmarks/multifidelity.py --problems lcurve --methods hyperband random --seeds 3
    python benchmarks/multifidelity.py --seeds 10 --report-only     # tables from stored runs
    python benchmarks/multifidelity.py --seeds 10 --report-only --write   # and rewrite the files

One file on purpose (about 800 lines): the runners, the epoch accounting and the report share one
record format. Runtime of the first command: 280 runs, about 30 min of wall time on 2 cores shared
with other work (about 25 CPU-minutes; the scikit-learn problems are nearly all of it, 10-25 s per
run at 15-40 ms per epoch; the synthetic ones take about a minute in all).

Problems are in ``benchmarks/mf_problems.py`` (``sgd-digits``, ``mlp-digits``: scikit-learn models
trained with ``partial_fit``, one epoch per report, R = 27; ``lcurve``, ``lcurve-crossing``:
synthetic curves, R = 81, where good configurations are sometimes / usually slow starters).

Methods (every amtlib one: ``executor="inline"``, ``store=":memory:"``, ``random_seed=seed``,
``objective_type="Minimize"``, the static hyperparameter ``epochs = R``; the training function
reports the validation loss after each epoch with ``amtlib.report`` and lets ``TrialStopped``
escape, pickling its model to ``current_job().checkpoint_dir`` first when there is one):

- ``random``: amtlib Random, every job trained for R epochs.
- ``random-es``: amtlib Random with ``early_stopping_type="Auto"`` (AMT's median rule).
- ``hyperband``: amtlib Hyperband, ``min_resource=1, max_resource=R`` (reduction factor 3),
  stopping mode (AMT's behaviour), adaptive bracket selection (the default).
- ``hyperband-fixed``: the same with Hyperband's fixed bracket weights (``bracket_selection=
  "fixed"``); ``hyperband-promotion-fixed`` and ``hyperband-bayesian-fixed`` likewise.
- ``hyperband-promotion``: the same in promotion mode: jobs pause at rungs and promoted ones resume
  from their checkpoint at ``resume_step + 1``.
- ``hyperband-bayesian``: Hyperband (stopping mode) with ``model="bayesian"``: new configurations
  from a GP fitted to rung results (BOHB-like).
- ``hyperband-bayesian-per-bracket`` (only with ``--methods``): the same with each bracket's rungs
  apart (``rungs="per_bracket"``, the model-based default before pooled rungs became it).
- ``hyperband-bayesian-promotion``: the same in promotion mode (model-based proposals, paused
  jobs resumed from their checkpoints).
- ``optuna-hyperband``: Optuna ``TPESampler(seed=seed)`` + ``HyperbandPruner(min_resource=1,
  max_resource=R, reduction_factor=3)``.
- ``optuna-median``: Optuna ``TPESampler(seed=seed)`` + ``MedianPruner()`` (defaults).
- ``optuna-random-hyperband`` (only with ``--methods``): Optuna ``RandomSampler(seed=seed)`` +
  the same ``HyperbandPruner``: a control for amtlib's Hyperband, which also samples at random.

Budget. Every method gets ``B = configs x R`` epochs (default ``configs = 20``: what Random at full
budget spends on 20 configurations). An epoch counts once, when it is trained; a promoted job's
earlier epochs are not recounted (amtlib runs count the reports in ``job.training_jobs[i].reports``
and check them against the epochs the training function actually trained). amtlib runs stop
launching jobs once ``B`` epochs are spent (the tuner's ``max_runtime_in_seconds`` with its clock
reading epochs, not seconds); Optuna runs stop through a callback. The job running when the budget
runs out may finish past ``B``; curves are cut at ``B``.

Best-so-far. A job's objective is its last reported value (AMT's rule; for a pruned Optuna trial,
its last intermediate value). It becomes known when the job ends (completes, is stopped or is
paused; a paused job that is promoted later gets a new value when it ends again). The best objective
after ``b`` epochs is the smallest value known by then; the events are ordered by report time.

Targets (each checked per problem on the median over seeds; ``Q`` is the median over seeds of
full-budget Random's best objective at ``B``):

1. Hyperband (stopping mode) reaches ``Q`` within ``B / 3`` epochs (median over seeds).
2. Model-based Hyperband's median best objective is at most Optuna TPE + HyperbandPruner's, at
   every budget reported (``B/9, B/3, 2B/3, B``); checked for each mode, stopping and promotion
   (Optuna's pruner can only stop trials; promotion needs the objective's checkpoints).
3. Random with early stopping ``Auto`` reaches ``Q`` within ``0.75 B`` epochs (it saves at least
   25% of the epochs full-budget Random spends to reach that quality). Also shown: the paired
   version (same seed, so the same configurations in the same order), the epochs it needs to reach
   the final best value of full-budget Random with that seed.

Outputs (``<settings>`` is ``c<configs>``, plus ``-r<R>`` when ``--max-resource`` is given; the
report covers the ``--problems`` and ``--methods`` asked for): the tables on stdout and in
``benchmarks/results/multifidelity/report-<settings>.md``; median and quartile curves of best
objective versus epochs in ``benchmarks/results/multifidelity/curves-<settings>.json``;
each run in ``benchmarks/results/multifidelity/runs/<problem>/<method>/seed<k>-c<configs>-r<R>.json``
(``--fresh`` redoes stored runs; they are not invalidated when amtlib changes, but each records a
hash of amtlib's source).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import pickle
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results" / "multifidelity"

if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))

from benchmarks.mf_problems import PROBLEMS, MFProblem  # noqa: E402
from benchmarks.quality import amtlib_fingerprint  # noqa: E402

METRIC = "validation:loss"
#: Budgets reported, as fractions of the full budget B.
FRACTIONS = (1 / 9, 1 / 3, 2 / 3, 1.0)
FRACTION_LABELS = ("B/9", "B/3", "2B/3", "B")
CHECKPOINT_FILE = "model.pkl"


@dataclass(frozen=True)
class Method:
    """How one method is run: amtlib ``Tuner`` keyword arguments, or an Optuna pruner."""

    name: str
    label: str
    library: str  # "amtlib" or "optuna"
    tuner: dict[str, Any] = field(default_factory=dict)
    pruner: str | None = None
    sampler: str = "tpe"

    @property
    def promotion(self) -> bool:
        return self.tuner.get("strategy_config", {}).get("mode") == "promotion"


def _hyperband(**extra: Any) -> dict[str, Any]:
    return {"strategy": "Hyperband", "strategy_config": {"min_resource": 1, **extra}}


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("random", "Random (full budget)", "amtlib", {"strategy": "Random"}),
        Method(
            "random-es",
            "Random + early stopping Auto",
            "amtlib",
            {"strategy": "Random", "early_stopping_type": "Auto"},
        ),
        Method("hyperband", "Hyperband (stopping)", "amtlib", _hyperband()),
        Method(
            "hyperband-promotion", "Hyperband (promotion)", "amtlib", _hyperband(mode="promotion")
        ),
        Method(
            "hyperband-bayesian", "Hyperband (model-based)", "amtlib", _hyperband(model="bayesian")
        ),
        Method(
            "hyperband-bayesian-promotion",
            "Hyperband (model-based, promotion)",
            "amtlib",
            _hyperband(model="bayesian", mode="promotion"),
        ),
        Method(
            "hyperband-bayesian-per-bracket",
            "Hyperband (model-based, per-bracket rungs)",
            "amtlib",
            _hyperband(model="bayesian", rungs="per_bracket"),
        ),
        Method(
            "hyperband-asha", "Hyperband (stopping, 1 bracket)", "amtlib", _hyperband(brackets=1)
        ),
        Method(
            "hyperband-bayesian-asha",
            "Hyperband (model-based, 1 bracket)",
            "amtlib",
            _hyperband(model="bayesian", brackets=1),
        ),
        Method(
            "hyperband-fixed",
            "Hyperband (stopping, fixed brackets)",
            "amtlib",
            _hyperband(bracket_selection="fixed"),
        ),
        Method(
            "hyperband-promotion-fixed",
            "Hyperband (promotion, fixed brackets)",
            "amtlib",
            _hyperband(mode="promotion", bracket_selection="fixed"),
        ),
        Method(
            "hyperband-bayesian-fixed",
            "Hyperband (model-based, fixed brackets)",
            "amtlib",
            _hyperband(model="bayesian", bracket_selection="fixed"),
        ),
        Method("optuna-hyperband", "Optuna TPE + HyperbandPruner", "optuna", pruner="hyperband"),
        Method("optuna-median", "Optuna TPE + MedianPruner", "optuna", pruner="median"),
        Method(
            "optuna-random-hyperband",
            "Optuna Random + HyperbandPruner",
            "optuna",
            pruner="hyperband",
            sampler="random",
        ),
    )
}
#: The comparison; ``optuna-random-hyperband`` (random configurations, Optuna's Hyperband pruning:
#: a control for amtlib's Hyperband, which also samples at random) only when asked for.
DEFAULT_METHODS = [
    m
    for m in METHODS
    if m
    not in (
        "optuna-random-hyperband",
        "hyperband-asha",
        "hyperband-bayesian-asha",
        "hyperband-bayesian-per-bracket",
    )
]


# ---- one run --------------------------------------------------------------------------------------


def amtlib_training_function(
    problem: MFProblem, trained: list[tuple[int, int]], hyperparameters: dict[str, Any]
) -> float:
    """The user's training function: resume from a checkpoint, report each epoch, checkpoint on stop.

    ``trained`` collects ``(job index, epoch)`` for every epoch actually trained (the benchmark's
    own count, checked against the reports).
    """
    from amtlib import TrialStopped, current_job, report

    job = current_job()
    hp = problem.tuned(hyperparameters)
    path = None if job.checkpoint_dir is None else Path(job.checkpoint_dir) / CHECKPOINT_FILE
    if job.resume_step > 0:
        if path is None or not path.exists():
            raise RuntimeError(
                f"job {job.name} resumes after step {job.resume_step} without a checkpoint"
            )
        with path.open("rb") as f:
            model = pickle.load(f)  # the user's own checkpoint, written below
    else:
        model = problem.start(hp)
    loss = math.nan
    for epoch in range(job.resume_step + 1, int(hyperparameters["epochs"]) + 1):
        loss = problem.train_epoch(model, hp, epoch)
        trained.append((job.index, epoch))
        try:
            report(step=epoch, **{METRIC: loss})
        except TrialStopped:
            if path is not None:
                with path.open("wb") as f:
                    pickle.dump(model, f)
            raise
    return loss


def tune_amtlib(
    method: Method, problem: MFProblem, seed: int, budget: int
) -> tuple[Any, list[tuple[int, int]]]:
    """One amtlib tuning job, stopped once ``budget`` epochs are trained.

    Returns the ``TuningJob`` and the ``(job index, epoch)`` pairs the training function trained.
    """
    from amtlib import Tuner

    trained: list[tuple[int, int]] = []
    train = functools.partial(amtlib_training_function, problem, trained)
    with tempfile.TemporaryDirectory(prefix="amtlib-mf-") as checkpoints:
        tuner = Tuner(
            train,
            METRIC,
            problem.hyperparameter_ranges,
            objective_type="Minimize",
            static_hyperparameters={"epochs": problem.max_resource},
            max_jobs=100_000,
            max_runtime_in_seconds=float(budget),
            random_seed=seed,
            job_name=f"{problem.name}-{method.name}-{seed}",
            store=":memory:",
            executor="inline",
            checkpoint_root=checkpoints if method.promotion else None,
            **_with_resource(method.tuner, problem.max_resource),
        )
        # The budget is in epochs: the tuner's clock reads epochs trained, so its
        # max_runtime_in_seconds stops launching jobs once `budget` epochs are spent.
        tuner._clock = lambda: float(len(trained))
        return tuner.fit(progress=False), trained


def run_amtlib(method: Method, problem: MFProblem, seed: int, budget: int) -> dict[str, Any]:
    """:func:`tune_amtlib`, summarised: events, counts and the epoch-accounting checks."""
    job, trained = tune_amtlib(method, problem, seed, budget)
    jobs = job.training_jobs
    return {
        "events": events_from_training_jobs(jobs),
        "jobs": len(jobs),
        "failed": sum(j.status.value == "Failed" for j in jobs),
        "promotions": sum(e.get("event") == "promoted" for j in jobs for e in j.history),
        "full_length": sum(
            max((r.step for r in j.reports), default=0) >= problem.max_resource for j in jobs
        ),
        "accounting": check_accounting(jobs, trained),
    }


def _with_resource(tuner_kwargs: dict[str, Any], max_resource: int) -> dict[str, Any]:
    out = dict(tuner_kwargs)
    if "strategy_config" in out:
        out["strategy_config"] = {**out["strategy_config"], "max_resource": max_resource}
    return out


def events_from_training_jobs(jobs: Sequence[Any]) -> list[list[Any]]:
    """``[job index, step, value, ends]`` for every report, in report-time order.

    ``ends`` marks the report after which the job's objective is known: one that got a stop or
    pause decision, or the job's last report.
    """
    rows = []
    for job in jobs:
        for k, r in enumerate(job.reports):
            action = (r.decision or {}).get("action", "continue")
            ends = action in ("stop", "pause") or k == len(job.reports) - 1
            rows.append((r.timestamp, job.index, r.step, float(r.metrics[METRIC]), ends))
    rows.sort(key=lambda row: row[:3])
    return [[index, step, value, ends] for _, index, step, value, ends in rows]


def check_accounting(jobs: Sequence[Any], trained: list[tuple[int, int]]) -> dict[str, Any]:
    """Epochs counted from the reports against the epochs the training function trained.

    ``consecutive``: every job's reported steps are exactly 1, 2, ..., last (a promoted job continued
    after its checkpoint: no epoch redone, none skipped). ``order_matches``: the reports, in time
    order, are the epochs trained, in order.
    """
    reported = sorted((r.timestamp, j.index, r.step) for j in jobs for r in j.reports)
    consecutive = all(
        [r.step for r in j.reports] == list(range(1, len(j.reports) + 1)) for j in jobs
    )
    return {
        "reports": len(reported),
        "trained": len(trained),
        "consecutive": consecutive,
        "order_matches": [(i, s) for _, i, s in reported] == trained,
    }


def run_optuna(method: Method, problem: MFProblem, seed: int, budget: int) -> dict[str, Any]:
    """One Optuna study (the method's sampler and pruner), stopped once ``budget`` epochs are trained."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    R = problem.max_resource
    if method.pruner == "hyperband":
        pruner: Any = optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=R, reduction_factor=3
        )
    else:
        pruner = optuna.pruners.MedianPruner()
    sampler: Any = (
        optuna.samplers.TPESampler(seed=seed)
        if method.sampler == "tpe"
        else optuna.samplers.RandomSampler(seed=seed)
    )
    study = optuna.create_study(direction="minimize", sampler=sampler, pruner=pruner)
    events: list[list[Any]] = []

    def objective(trial: Any) -> float:
        hp = problem.suggest(trial)
        model = problem.start(hp)
        loss = math.nan
        for epoch in range(1, R + 1):
            loss = problem.train_epoch(model, hp, epoch)
            trial.report(loss, epoch)
            pruned = trial.should_prune()
            events.append([trial.number, epoch, loss, pruned or epoch == R])
            if pruned:
                raise optuna.TrialPruned()
        return loss

    def stop_when_spent(study: Any, _trial: Any) -> None:
        if len(events) >= budget:
            study.stop()

    study.optimize(objective, n_trials=100_000, callbacks=[stop_when_spent])
    trials = study.trials
    return {
        "events": events,
        "jobs": len(trials),
        "failed": sum(t.state.name == "FAIL" for t in trials),
        "promotions": 0,
        "full_length": sum(t.state.name == "COMPLETE" for t in trials),
        "accounting": {
            "reports": len(events),
            "trained": len(events),
            "consecutive": True,
            "order_matches": True,
        },
    }


def best_curve(events: Iterable[Sequence[Any]]) -> tuple[list[list[float]], int]:
    """``([[epochs, best objective], ...] at each improvement, total epochs)`` from the events."""
    curve: list[list[float]] = []
    best, epochs = math.inf, 0
    for _, _, value, ends in events:
        epochs += 1
        if ends and value < best:
            best = value
            curve.append([epochs, value])
    return curve, epochs


def best_at(curve: Sequence[Sequence[float]], epochs: float) -> float:
    """The best objective known after ``epochs`` epochs (``inf`` before the first job ends)."""
    best = math.inf
    for e, value in curve:
        if e > epochs:
            break
        best = value
    return best


def epochs_to_reach(
    curve: Sequence[Sequence[float]], target: float, budget: float = math.inf
) -> float:
    """The first epoch count at which the best objective is ``<= target`` (``inf``: not within budget)."""
    for e, value in curve:
        if e > budget:
            break
        if value <= target:
            return float(e)
    return math.inf


def run_one(
    method_name: str, problem_name: str, seed: int, configs: int, max_resource: int | None = None
) -> dict[str, Any]:
    """Run one (method, problem, seed) with one BLAS thread; the record to store."""
    from threadpoolctl import threadpool_limits

    method, problem = METHODS[method_name], PROBLEMS[problem_name]
    if max_resource is not None:
        problem = replace(problem, max_resource=max_resource)
    budget = configs * problem.max_resource
    start = time.perf_counter()
    with threadpool_limits(1):
        runner = run_amtlib if method.library == "amtlib" else run_optuna
        result = runner(method, problem, seed, budget)
    events = result.pop("events")
    curve, total = best_curve(events)
    return {
        "method": method_name,
        "problem": problem_name,
        "seed": seed,
        "configs": configs,
        "max_resource": problem.max_resource,
        "budget": budget,
        "curve": curve,
        "epochs_total": total,
        **result,
        "seconds": time.perf_counter() - start,
        "amtlib_code": amtlib_fingerprint(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


# ---- the grid of runs -------------------------------------------------------------------------------


def run_path(results: Path, problem: str, method: str, seed: int, configs: int, R: int) -> Path:
    return results / "runs" / problem / method / f"seed{seed:03d}-c{configs}-r{R}.json"


def _store_one(
    args: tuple[str, str, int, int, int | None, str],
) -> tuple[str, float | None, str | None]:
    """Run and store one record (in a worker process); ``(path, seconds, error)``."""
    method, problem, seed, configs, max_resource, path = args
    try:
        record = run_one(method, problem, seed, configs, max_resource)
    except Exception as exc:
        return path, None, f"{type(exc).__name__}: {exc}"
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, target)
    return path, record["seconds"], None


def load_run(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _resource(args: argparse.Namespace, problem: str) -> int:
    return args.max_resource or PROBLEMS[problem].max_resource


def run_grid(args: argparse.Namespace) -> None:
    todo = []
    for seed in range(args.seeds):
        for problem in args.problems:
            for method in args.methods:
                path = run_path(
                    args.results, problem, method, seed, args.configs, _resource(args, problem)
                )
                if not args.fresh and load_run(path) is not None:
                    continue
                todo.append((method, problem, seed, args.configs, args.max_resource, str(path)))
    # seed by seed (an interrupted grid leaves whole seeds), slowest runs first within a seed
    cost = {"mlp-digits": 0, "sgd-digits": 1}
    todo.sort(key=lambda t: (t[2], cost.get(t[1], 2), t[0] != "hyperband-bayesian"))
    if not todo:
        print("All runs are stored.", file=sys.stderr)
        return
    print(f"{len(todo)} runs to do with {args.jobs} process(es).", file=sys.stderr)
    start = time.perf_counter()
    if args.jobs == 1:
        outcomes: Iterable[tuple[str, float | None, str | None]] = map(_store_one, todo)
    else:
        from joblib import Parallel, delayed

        # By reference, not by value as a function of __main__ would be: workers import the
        # problems themselves (amtlib's ranges do not survive unpickling).
        from benchmarks.multifidelity import _store_one as store_one

        os.environ["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        outcomes = Parallel(n_jobs=args.jobs, return_as="generator_unordered")(
            delayed(store_one)(t) for t in todo
        )
    for k, (path, seconds, error) in enumerate(outcomes, start=1):
        name = "/".join(Path(path).parts[-3:])
        status = f"{seconds:.1f}s" if error is None else f"FAILED {error}"
        print(
            f"[{k}/{len(todo)} {time.perf_counter() - start:.0f}s] {name}: {status}",
            file=sys.stderr,
        )


# ---- the report -----------------------------------------------------------------------------------


def collect(args: argparse.Namespace) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """problem -> method -> stored records (seeds 0..seeds-1 that exist)."""
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for problem in args.problems:
        for method in args.methods:
            records = []
            for seed in range(args.seeds):
                path = run_path(
                    args.results, problem, method, seed, args.configs, _resource(args, problem)
                )
                record = load_run(path)
                if record is not None:
                    records.append(record)
            out.setdefault(problem, {})[method] = records
    return out


def _percentile(values: Any, q: Any, axis: int | None = None) -> Any:
    """``np.percentile`` where ``inf`` (no value yet, or never reached) may be among the values."""
    with np.errstate(invalid="ignore"):  # inf - inf between two infinite neighbours
        out = np.percentile(np.asarray(values, dtype=float), q, axis=axis)
    return np.where(np.isnan(out), np.inf, out)


def _median(values: Any) -> float:
    return float(_percentile(values, 50))


def _fmt(x: float) -> str:
    if not math.isfinite(x):
        return "-"
    return f"{x:.4f}" if abs(x) < 10 else f"{x:.1f}"


def _fmt_epochs(x: float, budget: int) -> str:
    return f"> B ({budget})" if not math.isfinite(x) else f"{x:.0f} ({x / budget:.2f} B)"


@dataclass
class ProblemSummary:
    """Medians over seeds for one problem."""

    budget: int
    seeds: dict[str, int]
    best: dict[str, list[float]]  # method -> median best at each fraction of B
    per_seed: dict[str, list[list[float]]]  # method -> at each fraction of B, the best per seed
    quartiles: dict[str, tuple[float, float]]  # method -> IQR of the best at B
    to_target: dict[str, float]  # method -> median epochs to reach Q
    target: float  # Q
    paired_es: float  # median epochs random-es needs for the same seed's Random final best
    jobs: dict[str, float]
    seconds: dict[str, float]
    accounting_ok: bool


def summarise(records: dict[str, list[dict[str, Any]]]) -> ProblemSummary | None:
    any_record = next((r for rs in records.values() for r in rs), None)
    if any_record is None:
        return None
    budget = int(any_record["budget"])
    marks = [f * budget for f in FRACTIONS]
    per_seed = {
        m: [[best_at(r["curve"], b) for r in rs] for b in marks] for m, rs in records.items() if rs
    }
    best = {m: [_median(values) for values in rows] for m, rows in per_seed.items()}
    quartiles = {
        m: tuple(_percentile([best_at(r["curve"], budget) for r in rs], [25, 75]).tolist())
        for m, rs in records.items()
        if rs
    }
    random = records.get("random") or []
    target = _median([best_at(r["curve"], budget) for r in random]) if random else math.nan
    to_target = {
        m: _median([epochs_to_reach(r["curve"], target, budget) for r in rs])
        for m, rs in records.items()
        if rs and math.isfinite(target)
    }
    paired = []
    es_by_seed = {r["seed"]: r for r in records.get("random-es") or []}
    for r in random:
        es = es_by_seed.get(r["seed"])
        if es is not None:
            paired.append(epochs_to_reach(es["curve"], best_at(r["curve"], budget), budget))
    ok = all(
        r["accounting"]["reports"] == r["accounting"]["trained"]
        and r["accounting"]["consecutive"]
        and r["accounting"]["order_matches"]
        and r["failed"] == 0
        for rs in records.values()
        for r in rs
    )
    return ProblemSummary(
        budget=budget,
        seeds={m: len(rs) for m, rs in records.items()},
        best=best,
        per_seed=per_seed,
        quartiles=quartiles,  # type: ignore[arg-type]
        to_target=to_target,
        target=target,
        paired_es=_median(paired) if paired else math.nan,
        jobs={m: float(np.median([r["jobs"] for r in rs])) for m, rs in records.items() if rs},
        seconds={
            m: float(np.median([r["seconds"] for r in rs])) for m, rs in records.items() if rs
        },
        accounting_ok=ok,
    )


def problem_table(name: str, s: ProblemSummary) -> str:
    problem = PROBLEMS[name]
    lines = [
        f"### {name} ({problem.kind}; {problem.description})",
        "",
        f"B = {s.budget} epochs; median over seeds of the best validation loss after each budget; "
        f"Q = full-budget Random's median final best = {_fmt(s.target)}.",
        "",
        "| method | seeds | " + " | ".join(FRACTION_LABELS) + " | IQR at B | epochs to reach Q "
        "| jobs | s/run |",
        "|---|---:|" + "---:|" * len(FRACTION_LABELS) + "---|---|---:|---:|",
    ]
    for m, values in s.best.items():
        q1, q3 = s.quartiles[m]
        lines.append(
            f"| {METHODS[m].label} | {s.seeds[m]} | "
            + " | ".join(_fmt(v) for v in values)
            + f" | {_fmt(q1)}-{_fmt(q3)} | {_fmt_epochs(s.to_target.get(m, math.inf), s.budget)}"
            f" | {s.jobs[m]:.0f} | {s.seconds[m]:.1f} |"
        )
    lines += [
        "",
        "Epochs to reach Q: median over seeds of the first epoch count at which the "
        "method's best is <= Q (> B: more than half the seeds never reach it within B; for "
        "full-budget Random itself that is expected, Q being the median of its final values).",
    ]
    if math.isfinite(s.paired_es):
        lines += [
            "",
            "Random + early stopping Auto, paired by seed (same configurations): median "
            f"epochs to reach that seed's full-budget Random final best: "
            f"{_fmt_epochs(s.paired_es, s.budget)}.",
        ]
    if not s.accounting_ok:
        lines += ["", "**Epoch accounting check FAILED on some run (see the run records).**"]
    return "\n".join(lines)


def _mann_whitney(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided Mann-Whitney U p-value of two samples of best values (``inf`` ranks last)."""
    from scipy.stats import mannwhitneyu

    big = 1e300  # inf: no job had ended yet
    x = [v if math.isfinite(v) else big for v in a]
    y = [v if math.isfinite(v) else big for v in b]
    return float(mannwhitneyu(x, y, alternative="two-sided").pvalue)


def verdicts(summaries: dict[str, ProblemSummary]) -> list[str]:
    """One line per target: PASS/FAIL/n/a with the numbers per problem."""
    out = []

    def line(number: int, text: str, checks: dict[str, tuple[bool, str]]) -> None:
        if not checks:
            out.append(f"Target {number} ({text}): n/a (runs missing)")
            return
        verdict = "PASS" if all(ok for ok, _ in checks.values()) else "FAIL"
        detail = "; ".join(
            f"{p}: {'ok' if ok else 'no'} ({why})" for p, (ok, why) in checks.items()
        )
        out.append(f"Target {number} ({text}): {verdict} - {detail}")

    checks1: dict[str, tuple[bool, str]] = {}
    checks2: dict[str, dict[str, tuple[bool, str]]] = {}
    checks3: dict[str, tuple[bool, str]] = {}
    for name, s in summaries.items():
        if "hyperband" in s.to_target:
            e = s.to_target["hyperband"]
            checks1[name] = (
                e <= s.budget / 3,
                f"{_fmt_epochs(e, s.budget)} vs B/3 = {s.budget / 3:.0f}",
            )
        for mode, model_based in (
            ("stopping", "hyperband-bayesian"),
            ("promotion", "hyperband-bayesian-promotion"),
        ):
            if model_based in s.best and "optuna-hyperband" in s.best:
                mine, theirs = s.best[model_based], s.best["optuna-hyperband"]
                ok = all(a <= b for a, b in zip(mine, theirs, strict=True))
                p = [
                    _mann_whitney(a, b)
                    for a, b in zip(
                        s.per_seed[model_based], s.per_seed["optuna-hyperband"], strict=True
                    )
                ]
                pairs = ", ".join(
                    f"{lab} {_fmt(a)} vs {_fmt(b)} (p={q:.2f})"
                    for lab, a, b, q in zip(FRACTION_LABELS, mine, theirs, p, strict=True)
                )
                checks2.setdefault(mode, {})[name] = (ok, pairs)
        if "random-es" in s.to_target:
            e = s.to_target["random-es"]
            saved = 1 - e / s.budget if math.isfinite(e) else 0.0
            checks3[name] = (
                e <= 0.75 * s.budget,
                f"reaches Q at {_fmt_epochs(e, s.budget)}, saves "
                f"{saved:.0%}; paired {_fmt_epochs(s.paired_es, s.budget)}",
            )
    line(1, "Hyperband reaches full-budget Random's final quality within B/3 epochs", checks1)
    if not checks2:
        line(2, "model-based Hyperband <= Optuna TPE + HyperbandPruner at every budget", {})
    for mode, checks in checks2.items():
        line(
            2,
            f"model-based Hyperband, {mode} mode, <= Optuna TPE + HyperbandPruner at every budget",
            checks,
        )
    line(3, "early stopping Auto saves >= 25% of epochs at equal final quality", checks3)
    return out


def curves_json(records: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    """Median and quartiles of best-so-far versus epochs, on a grid of 100 budgets per problem."""
    out: dict[str, Any] = {}
    for problem, by_method in records.items():
        any_record = next((r for rs in by_method.values() for r in rs), None)
        if any_record is None:
            continue
        budget = int(any_record["budget"])
        grid = np.unique(np.linspace(budget / 100, budget, 100).round().astype(int))
        entry: dict[str, Any] = {"budget": budget, "epochs": grid.tolist(), "methods": {}}
        for method, rs in by_method.items():
            if not rs:
                continue
            values = np.array([[best_at(r["curve"], e) for e in grid] for r in rs])
            q = _percentile(values, [25, 50, 75], axis=0)
            entry["methods"][method] = {
                "seeds": len(rs),
                **{
                    k: [v if math.isfinite(v) else None for v in row]
                    for k, row in zip(("q25", "median", "q75"), q.tolist(), strict=True)
                },
            }
        out[problem] = entry
    return out


def _command(args: argparse.Namespace) -> str:
    words = [
        "python benchmarks/multifidelity.py",
        f"--seeds {args.seeds}",
        f"--configs {args.configs}",
    ]
    if args.max_resource:
        words.append(f"--max-resource {args.max_resource}")
    if list(args.problems) != list(PROBLEMS):
        words.append("--problems " + " ".join(args.problems))
    if list(args.methods) != DEFAULT_METHODS:
        words.append("--methods " + " ".join(args.methods))
    return " ".join(words)


def report(args: argparse.Namespace) -> str:
    records = collect(args)
    summaries = {p: s for p, rs in records.items() if (s := summarise(rs)) is not None}
    parts = [
        "## Multi-fidelity benchmark: best validation loss versus epochs trained",
        "",
        f"Budget B = {args.configs} x R epochs per run (what full-budget Random spends on "
        f"{args.configs} configurations). Command: `{_command(args)}`.",
    ]
    for name, s in summaries.items():
        parts += ["", problem_table(name, s)]
    parts += ["", "### Targets", "", *[f"- {v}" for v in verdicts(summaries)]]
    text = "\n".join(parts) + "\n"
    settings = f"c{args.configs}" + (f"-r{args.max_resource}" if args.max_resource else "")
    missing = [
        f"{m} on {p}" for p in args.problems for m in args.methods if not records.get(p, {}).get(m)
    ]
    if args.report_only and not args.write:
        return text
    if missing:  # the per-run cache is not in git: a fresh clone must not blank the report
        print(f"report-{settings}.md not written: no stored runs of {', '.join(missing[:4])}",
              file=sys.stderr)  # fmt: skip
        return text
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"report-{settings}.md").write_text(text)
    (args.results / f"curves-{settings}.json").write_text(json.dumps(curves_json(records)))
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=list(PROBLEMS))
    parser.add_argument("--methods", nargs="+", default=DEFAULT_METHODS, choices=list(METHODS))
    parser.add_argument("--seeds", type=int, default=10, help="seeds 0..N-1 (default 10)")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument(
        "--configs", type=int, default=20, help="budget B = configs x R epochs (default 20)"
    )
    parser.add_argument(
        "--max-resource",
        type=int,
        default=None,
        help="override every problem's R (for quick checks)",
    )
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--fresh", action="store_true", help="redo stored runs")
    parser.add_argument("--report-only", action="store_true", help="only print the tables")
    parser.add_argument(
        "--write", action="store_true", help="with --report-only: also write the report files"
    )
    args = parser.parse_args(argv)
    resource = 1 if args.max_resource is None else args.max_resource
    if min(args.seeds, args.jobs, args.configs, resource) < 1:
        parser.error("--seeds, --jobs, --configs and --max-resource must be >= 1")
    if not args.report_only:
        run_grid(args)
    print(report(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
