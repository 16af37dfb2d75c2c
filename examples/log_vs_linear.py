"""Why a learning rate from 0.0001 to 1.0 wants Logarithmic scaling.

Two Random tuning jobs of 100 training jobs each search the same range, one with ``Linear`` scaling and
one with ``Logarithmic``. The toy loss is lowest at lr = 0.001. With Linear, about 90% of the budget
lands between 0.1 and 1.0, where nothing good is; with Logarithmic, each decade gets a quarter.
"""

import math

from amtlib import ContinuousParameter, Tuner


def train(hp):
    # A U-shaped loss in log10(lr), minimum at lr = 1e-3.
    return (math.log10(hp["lr"]) + 3.0) ** 2


def run(scaling: str):
    tuner = Tuner(
        train,
        objective_metric_name="loss",
        objective_type="Minimize",
        hyperparameter_ranges={"lr": ContinuousParameter(1e-4, 1.0, scaling_type=scaling)},
        strategy="Random",
        max_jobs=100,
        random_seed=0,
        job_name=f"lr-{scaling}",
        store=":memory:",
        executor="inline",
    )
    return tuner.fit()


if __name__ == "__main__":
    print(
        f"{'scaling':<12} {'share in [0.1, 1]':>18} {'share below 0.01':>17} {'best lr':>10} {'loss':>8}"
    )
    for scaling in ("Linear", "Logarithmic"):
        job = run(scaling)
        lrs = [j.hyperparameters["lr"] for j in job.training_jobs]
        top = sum(lr >= 0.1 for lr in lrs) / len(lrs)
        low = sum(lr < 0.01 for lr in lrs) / len(lrs)
        best = job.best_training_job
        print(
            f"{scaling:<12} {top:>18.0%} {low:>17.0%} {best.hyperparameters['lr']:>10.2e} "
            f"{best.objective_value:>8.4f}"
        )
