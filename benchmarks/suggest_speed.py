"""Time per suggestion of the Bayesian strategy, beside Optuna's GPSampler.

Times ``ask(1)`` (model fit + acquisition optimisation) with n = 100 and 500 finished observations
of Hartmann-6 and one running job, over ``--repeats`` independent data sets (random points of the
6-D box, one seed each). In each, ``n - 1`` observations are restored, one suggestion is made and
its result told (untimed), then ``CYCLE`` consecutive suggestions are timed, each followed by
telling its result (untimed): they see n to n + 4 observations, and their model fits are
warm-started from the previous one, as in a run. The cycle holds one full hyperparameter fit and
four that reuse the last one when n > 300 (the Bayesian strategy re-fits every 5th suggestion
there), so the mean is printed beside the median. (Until 2026-11-28 one suggestion per data set
was timed; before 2026-11-27 the repeats were consecutive suggestions of one run.) Optuna's
``GPSampler`` (needs torch; see ``benchmarks/requirements.txt``) is timed the same way with
``study.ask``.

    python benchmarks/suggest_speed.py [--sizes 100 500] [--repeats 21] [--skip-optuna]

Targets (issue 3): median at most 50 ms with 100 observations, at most 0.5 s with 500.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time
from pathlib import Path

import numpy as np
import problems
from overhead import machine

from amtlib import ContinuousParameter, SearchSpace
from amtlib.records import TrainingJobStatus, Trial
from amtlib.strategies import BayesianStrategy

RESULTS = Path(__file__).parent / "results"
NAMES = [f"x{i}" for i in range(1, 7)]
CYCLE = 5  # timed consecutive suggestions per data set


def hartmann6(x: np.ndarray) -> float:
    return problems.hartmann6(dict(zip(NAMES, map(float, x), strict=True)))


def amtlib_times(n: int, repeats: int, scaling: str) -> list[float]:
    """``CYCLE`` timed consecutive suggestions per repeat, after ``n`` finished observations."""
    space = SearchSpace({name: ContinuousParameter(0.0, 1.0, scaling) for name in NAMES})
    times = []
    for repeat in range(repeats):
        strategy = BayesianStrategy(space, seed=repeat)
        points = np.random.default_rng(repeat).random((n - 1, 6))
        strategy.restore(
            [
                Trial(
                    i,
                    dict(zip(NAMES, map(float, x), strict=True)),
                    TrainingJobStatus.COMPLETED,
                    hartmann6(x),
                )
                for i, x in enumerate(points)
            ]
        )
        strategy.ask(1)  # one running job throughout, as with 2 parallel jobs
        # The n-th observation arrives and the model is fitted once, untimed, so the first timed
        # suggestion is warm-started from a fit on n - 1 points, as in a run.
        for timed in (False,) + (True,) * CYCLE:
            start = time.perf_counter()
            (params,) = strategy.ask(1)
            if timed:
                times.append(time.perf_counter() - start)
            x = np.array([params[name] for name in NAMES])
            index = strategy.n_asked - 1
            strategy.tell(Trial(index, params, TrainingJobStatus.COMPLETED, hartmann6(x)))
    return times


def optuna_times(n: int, repeats: int) -> list[float]:
    """As :func:`amtlib_times`, for Optuna's ``GPSampler`` (``study.ask``)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists = {name: optuna.distributions.FloatDistribution(0.0, 1.0) for name in NAMES}
    times = []
    for repeat in range(repeats):
        study = optuna.create_study(sampler=optuna.samplers.GPSampler(seed=repeat))
        for x in np.random.default_rng(repeat).random((n - 1, 6)):
            study.add_trial(
                optuna.trial.create_trial(
                    params=dict(zip(NAMES, map(float, x), strict=True)),
                    distributions=dists,
                    value=hartmann6(x),
                )
            )
        study.ask(dists)  # one running trial throughout
        for timed in (False,) + (True,) * CYCLE:
            start = time.perf_counter()
            trial = study.ask(dists)
            if timed:
                times.append(time.perf_counter() - start)
            study.tell(trial, hartmann6(np.array([trial.params[name] for name in NAMES])))
    return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 500])
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--skip-optuna", action="store_true")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the json goes")
    args = parser.parse_args(argv)
    if min(*args.sizes, args.repeats) < 1:
        parser.error("--sizes and --repeats must be >= 1")
    medians: dict[str, float] = {}
    means: dict[str, float] = {}
    for n in args.sizes:
        runs = {
            f"amtlib Bayesian ({label}), n={n}": functools.partial(
                amtlib_times, n, args.repeats, scaling
            )
            for label, scaling in (("declared Linear", "Linear"), ("all Auto", "Auto"))
        }
        if not args.skip_optuna:
            runs[f"Optuna GPSampler, n={n}"] = functools.partial(optuna_times, n, args.repeats)
        for name, run in runs.items():
            times = run()
            medians[name], means[name] = statistics.median(times), statistics.fmean(times)
    width = max(map(len, medians))
    print(
        f"time per suggestion, 6-D Hartmann, {args.repeats} data sets x {CYCLE} consecutive "
        "suggestions, 1 running job"
    )
    print(f"  {''.ljust(width)}  {'median':>8s}  {'mean':>8s}")
    for name in medians:
        print(
            f"  {name.ljust(width)}  {medians[name] * 1000:6.1f} ms  {means[name] * 1000:6.1f} ms"
        )
    args.results.mkdir(parents=True, exist_ok=True)
    record = {
        "median_seconds": medians,
        "mean_seconds": means,
        "repeats": args.repeats,
        "suggestions_per_repeat": CYCLE,
        "machine": machine(),
    }
    (args.results / "suggest_speed.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
