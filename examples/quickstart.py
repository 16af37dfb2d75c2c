"""The README's example: tune a toy training function with the Random strategy."""

from amtlib import CategoricalParameter, ContinuousParameter, IntegerParameter, Tuner


def train(hp):  # the tuned and static hyperparameters, as plain Python values
    loss = (hp["lr"] - 0.01) ** 2 + 0.01 * hp["layers"] + (hp["optimizer"] == "sgd") * 0.05
    return {"validation:loss": loss, "accuracy": 1 - loss}  # or just the objective as a float


if __name__ == "__main__":
    tuner = Tuner(
        train,
        objective_metric_name="validation:loss",
        objective_type="Minimize",
        hyperparameter_ranges={
            "lr": ContinuousParameter(1e-4, 1.0, scaling_type="Logarithmic"),
            "momentum": ContinuousParameter(0.5, 0.999, scaling_type="ReverseLogarithmic"),
            "layers": IntegerParameter(1, 8),
            "optimizer": CategoricalParameter(["sgd", "adam"]),
        },
        static_hyperparameters={"epochs": 10},
        strategy="Random",
        max_jobs=50,
        max_parallel_jobs=2,
        random_seed=0,
        job_name="quickstart",
        store=":memory:",
    )
    job = tuner.fit()
    print(job.best_training_job.hyperparameters, job.best_training_job.objective_value)
    print(job.leaderboard(top=5))
