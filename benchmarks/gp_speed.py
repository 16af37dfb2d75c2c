"""Median time of one Bayesian suggestion (GP fit + acquisition optimisation) in 6-D.

Simulates the strategy's steady state: the previous fit's hyperparameters warm-start the next fit
after one more observation arrives, one job is running (a fantasy), and log EI is maximised over a
random candidate set refined by L-BFGS-B. Run with::

    python benchmarks/gp_speed.py [--repeats 15] [--sizes 100 500]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from amtlib.strategies._acquisition import log_ei_acquisition, maximize_acquisition
from amtlib.strategies._gp import GPHyperparameters, fit_gp

D = 6


def objective(X: np.ndarray) -> np.ndarray:
    """A smooth function of 6 variables, two of them nearly irrelevant."""
    return (
        np.sin(5 * X[:, 0]) * np.cos(3 * X[:, 1])
        + (X[:, 2] - 0.4) ** 2
        + 0.5 * X[:, 3] * X[:, 2]
        + 0.05 * X[:, 4]
        + 0.01 * X[:, 5]
    )


def suggest_once(
    X: np.ndarray, y: np.ndarray, rng: np.random.Generator, warm: GPHyperparameters
) -> tuple[float, float, GPHyperparameters]:
    """Time one fit and one suggestion; returns (fit seconds, total seconds, hyperparameters)."""
    start = time.perf_counter()
    gp = fit_gp(X, y, rng, warm_start=warm)
    fitted = time.perf_counter()
    pending = rng.random((1, D))
    acq = log_ei_acquisition(gp.condition_on(pending), gp.incumbent)
    best = np.argsort(y)[:3]
    found = maximize_acquisition(
        acq,
        lambda r, n: r.random((n, D)),
        np.ones(D, dtype=bool),
        lambda Z: Z,
        rng,
        exclude=np.vstack([X, pending]),
        anchors=X[best],
        x_scale=gp.hyperparameters.lengthscales,
    )
    if found is None:
        raise RuntimeError("the optimiser found no point in a continuous space")
    done = time.perf_counter()
    return fitted - start, done - start, gp.hyperparameters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 500])
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    for n in args.sizes:
        X_all = rng.random((n + args.repeats, D))
        y_all = objective(X_all) + 0.01 * rng.standard_normal(len(X_all))
        warm = fit_gp(X_all[: n - 1], y_all[: n - 1], rng).hyperparameters
        fits, totals = [], []
        for i in range(args.repeats):
            m = n + i
            fit_s, total_s, warm = suggest_once(X_all[:m], y_all[:m], rng, warm)
            fits.append(fit_s)
            totals.append(total_s)
        print(
            f"n={n:4d} d={D}: median fit {1e3 * np.median(fits):7.1f} ms, "
            f"median fit+suggest {1e3 * np.median(totals):7.1f} ms "
            f"(min {1e3 * np.min(totals):.1f}, max {1e3 * np.max(totals):.1f}, "
            f"{args.repeats} suggestions)"
        )


if __name__ == "__main__":
    main()
