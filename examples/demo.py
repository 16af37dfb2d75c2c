"""The main demo (`make demo`): tune a scikit-learn SVM on the bundled digits dataset.

Two training jobs run at once in worker processes, a progress bar shows the tuning job advancing, and
a leaderboard is printed at the end. Everything is recorded in ``demo.db``: run it again with the same
``--job-name`` to see a finished tuning job resume instantly (``make demo`` names each run by the
time, so run ``.venv/bin/python examples/demo.py --job-name mine`` twice).
"""

from __future__ import annotations

import argparse
import time

from sklearn.datasets import load_digits
from sklearn.model_selection import cross_val_score
from sklearn.svm import SVC

from amtlib import CategoricalParameter, ContinuousParameter, Tuner


def train(hp):
    """One training job: 3-fold cross-validated accuracy of an SVM with these hyperparameters."""
    X, y = load_digits(return_X_y=True)
    model = SVC(C=hp["C"], gamma=hp["gamma"], kernel=hp["kernel"], max_iter=hp["max_iter"])
    scores = cross_val_score(model, X / 16.0, y, cv=3)
    return {
        "validation:accuracy": float(scores.mean()),
        "validation:accuracy_std": float(scores.std()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job-name", default=f"demo-{time.strftime('%Y%m%d-%H%M%S')}")
    parser.add_argument("--store", default="demo.db")
    parser.add_argument("--max-jobs", type=int, default=30)
    parser.add_argument("--strategy", default="Bayesian")
    args = parser.parse_args()

    tuner = Tuner(
        train,
        objective_metric_name="validation:accuracy",
        objective_type="Maximize",
        hyperparameter_ranges={
            "C": ContinuousParameter(1e-3, 1e3, scaling_type="Logarithmic"),
            "gamma": ContinuousParameter(1e-5, 1e1, scaling_type="Logarithmic"),
            "kernel": CategoricalParameter(["rbf", "sigmoid"]),
        },
        static_hyperparameters={"max_iter": 20000},
        strategy=args.strategy,
        max_jobs=args.max_jobs,
        max_parallel_jobs=2,
        random_seed=0,
        job_name=args.job_name,
        store=args.store,
    )
    print(
        f"Tuning job {args.job_name!r}: {args.strategy} search, {args.max_jobs} training jobs, "
        f"2 in parallel, records in {args.store}"
    )
    job = tuner.fit()  # a progress bar when stderr is a terminal
    print()
    print(job.leaderboard(top=10))
    best = job.best_training_job
    summary = job.describe()
    print()
    print(f"Best training job: {best.name}  accuracy={best.objective_value:.4f}")
    print(f"  hyperparameters: {best.hyperparameters}")
    print(f"  status counters: {summary['TrainingJobStatusCounters']}")
    print(f"  runtime: {summary['ConsumedResources']['RuntimeInSeconds']} s")


if __name__ == "__main__":
    main()
