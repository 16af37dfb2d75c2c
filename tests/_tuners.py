"""A Tuner with the settings most tests share, so a test module states only what it changes."""

from __future__ import annotations

from amtlib import ContinuousParameter, Tuner


def tuner(train, store, **overrides):
    """Random search minimising ``loss`` over ``x`` in [0, 1], inline, seed 0, stored at ``store``.

    Any other keyword replaces the corresponding Tuner argument.
    """
    args = dict(
        objective_metric_name="loss",
        hyperparameter_ranges={"x": ContinuousParameter(0.0, 1.0)},
        objective_type="Minimize",
        strategy="Random",
        random_seed=0,
        store=store,
        executor="inline",
    )
    args.update(overrides)
    return Tuner(train, **args)
