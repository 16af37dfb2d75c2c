"""Hyperband on a model trained epoch by epoch: report each epoch, pause, resume from a checkpoint.

An SGD classifier on scikit-learn's digits, one ``partial_fit`` pass per epoch. Each epoch's
validation log loss goes to ``amtlib.report``; Hyperband (promotion mode) pauses jobs at its rungs
and resumes the promoted ones from the model they pickled to ``current_job().checkpoint_dir``.
At the end it prints how far each rung level predicted the last epoch, and the bracket weights that
learned from it (adaptive bracket selection, the default).
"""

import pickle
import tempfile
from pathlib import Path

import numpy as np

import amtlib
from amtlib import ContinuousParameter, Tuner

EPOCHS = 27


def data():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    return train_test_split(x / 16.0, y, test_size=0.3, random_state=0)


def train(hp):
    from sklearn.linear_model import SGDClassifier
    from sklearn.metrics import log_loss

    x_train, x_valid, y_train, y_valid = data()
    job = amtlib.current_job()
    checkpoint = Path(job.checkpoint_dir) / "model.pkl"
    if job.resume_step:  # promoted: continue from the model saved when the job paused
        model = pickle.loads(checkpoint.read_bytes())
    else:
        model = SGDClassifier(  # random_state: the same seed gives the same run
            loss="log_loss",
            alpha=hp["alpha"],
            eta0=hp["eta0"],
            learning_rate="constant",
            random_state=0,
        )
    for epoch in range(job.resume_step + 1, hp["epochs"] + 1):
        model.partial_fit(x_train, y_train, classes=np.arange(10))
        loss = log_loss(y_valid, model.predict_proba(x_valid), labels=np.arange(10))
        try:
            amtlib.report(step=epoch, **{"validation:loss": min(loss, 5.0)})
        except amtlib.TrialStopped:
            checkpoint.write_bytes(pickle.dumps(model))  # paused: promotion resumes from here
            raise


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as checkpoints:
        tuner = Tuner(
            train,
            objective_metric_name="validation:loss",
            objective_type="Minimize",
            hyperparameter_ranges={
                "alpha": ContinuousParameter(1e-6, 1e-1, scaling_type="Logarithmic"),
                "eta0": ContinuousParameter(1e-4, 1.0, scaling_type="Logarithmic"),
            },
            static_hyperparameters={"epochs": EPOCHS},  # Hyperband's max_resource comes from it
            strategy="Hyperband",
            strategy_config={"min_resource": 1, "mode": "promotion"},
            max_jobs=60,
            random_seed=0,
            job_name="hyperband-example",
            store=":memory:",
            executor="inline",
            checkpoint_root=checkpoints,
        )
        job = tuner.fit(progress=False)
    learned = job.describe()["AmtlibDetails"]
    epochs = learned["ConsumedSteps"]
    print(f"{len(job.training_jobs)} jobs, {epochs} epochs trained (all at full length: "
          f"{len(job.training_jobs) * EPOCHS})")  # fmt: skip
    print("rung levels:", learned["Strategy"]["RungLevels"])
    print("keep rate per level (1/3 = chance, 1 = ranks as the last epoch; shrunk towards 1/3",
          "with 6 pseudo-jobs, so with few jobs at the top it sits between 1/3 and its raw value):",
          learned["Strategy"]["RungKeepRates"])  # fmt: skip
    print("bracket weights (most aggressive first):", learned["Strategy"]["BracketWeights"])
    print(job.leaderboard(top=5))
