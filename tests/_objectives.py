"""Training functions shared by the tuner tests (importable by worker processes)."""

from __future__ import annotations

import math
import os


def quadratic(hp):
    """Minimum 0 at x = 0.3; a categorical penalty; returns named metrics."""
    loss = (hp["x"] - 0.3) ** 2 + (0.0 if hp.get("opt", "a") == "a" else 0.1)
    return {"loss": loss, "accuracy": 1.0 - loss}


def plain_float(hp):
    return (hp["x"] - 0.3) ** 2


def raise_when_large(hp):
    if hp["x"] > 0.5:
        raise ValueError(f"x too large: {hp['x']}")
    return {"loss": hp["x"]}


def always_raises(hp):
    raise RuntimeError("broken training script")


def missing_or_nan_objective(hp):
    if hp["x"] > 0.66:
        return {"accuracy": 1.0}
    if hp["x"] > 0.33:
        return {"loss": math.nan}
    return {"loss": hp["x"]}


def die_when_large(hp):
    if hp["x"] > 0.7:
        os._exit(3)
    return {"loss": hp["x"]}


def echo_static(hp):
    return {"loss": hp["x"] + hp["offset"], "epochs_seen": hp["epochs"]}


def plain_k(hp):
    return float(hp["k"]) + (0.0 if hp["opt"] == "a" else 0.5)


def sleepy(hp):
    import time

    time.sleep(0.4)
    return {"loss": hp["x"]}


def sleepy_short(hp):
    import time

    time.sleep(0.01)
    return {"loss": hp["x"]}
