"""The tuner's own overhead: trials per second for no-op training jobs, beside Optuna.

Each run is a fresh tuning job of ``--trials`` no-op trials (default 2,000) with the Random strategy
over a small mixed space (continuous log, integer, categorical), recorded in a fresh SQLite file.

    python benchmarks/overhead.py [--trials 2000] [--skip-optuna]

Prints a table and writes ``benchmarks/results/overhead.json`` (or ``--results DIR``), with the
machine it ran on.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from amtlib import CategoricalParameter, ContinuousParameter, IntegerParameter, Tuner

RESULTS = Path(__file__).parent / "results"


def noop(hp):
    return hp["x"]


def amtlib_run(trials: int, executor: str, parallel: int, folder: Path) -> float:
    tuner = Tuner(
        noop,
        objective_metric_name="loss",
        objective_type="Minimize",
        hyperparameter_ranges={
            "x": ContinuousParameter(1e-4, 1.0, "Logarithmic"),
            "k": IntegerParameter(1, 100),
            "c": CategoricalParameter(["a", "b", "c"]),
        },
        strategy="Random",
        max_jobs=trials,
        max_parallel_jobs=parallel,
        random_seed=0,
        job_name="overhead",
        store=str(folder / f"amtlib-{executor}-{parallel}.db"),
        executor=executor,
    )
    start = time.perf_counter()
    job = tuner.fit(progress=False)
    elapsed = time.perf_counter() - start
    assert len(job.training_jobs) == trials
    return trials / elapsed


def optuna_run(trials: int, storage: str | None) -> float:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(trial):
        x = trial.suggest_float("x", 1e-4, 1.0, log=True)
        trial.suggest_int("k", 1, 100)
        trial.suggest_categorical("c", ["a", "b", "c"])
        return x

    study = optuna.create_study(storage=storage, sampler=optuna.samplers.RandomSampler(seed=0))
    start = time.perf_counter()
    study.optimize(objective, n_trials=trials)
    return trials / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=2000)
    parser.add_argument("--skip-optuna", action="store_true")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where overhead.json goes")
    args = parser.parse_args(argv)
    if args.trials < 1:
        parser.error("--trials must be >= 1")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rows.append(("amtlib Random, SQLite, inline", amtlib_run(args.trials, "inline", 1, folder)))
        rows.append(
            (
                "amtlib Random, SQLite, 2 worker processes",
                amtlib_run(args.trials, "process", 2, folder),
            )
        )
        if not args.skip_optuna:
            rows.append(
                (
                    "Optuna RandomSampler, SQLite storage",
                    optuna_run(args.trials, f"sqlite:///{folder / 'optuna.db'}"),
                )
            )
            rows.append(("Optuna RandomSampler, in memory", optuna_run(args.trials, None)))
    width = max(len(name) for name, _ in rows)
    print(
        f"{args.trials} no-op trials on {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}"
    )
    for name, rate in rows:
        print(f"  {name.ljust(width)}  {rate:8.0f} trials/s")
    args.results.mkdir(parents=True, exist_ok=True)
    record = {"trials": args.trials, "trials_per_second": dict(rows), "machine": machine()}
    (args.results / "overhead.json").write_text(json.dumps(record, indent=2) + "\n")


def machine() -> dict[str, object]:
    """Where a timing was measured (saved with it: timings only compare on one machine)."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:  # Linux: the model's name
        cpu = next((line.split(":", 1)[1].strip() for line in info if "model name" in line), cpu)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "system": platform.system(),
    }


if __name__ == "__main__":
    main()
