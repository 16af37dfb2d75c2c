"""Multi-fidelity benchmark problems: a model trained epoch by epoch, with a validation loss per epoch.

Each :class:`MFProblem` gives AMT ranges (with the scaling types a careful user would give), the
largest number of epochs ``max_resource`` and two functions: ``start(hyperparameters)`` builds a fresh
model (a picklable object: the checkpoint) and ``train_epoch(model, hyperparameters, epoch)`` trains
it for one more epoch and returns the validation loss. Everything is deterministic given the
hyperparameters: random states are derived from them (:func:`config_seed`) and from the epoch, so a
model resumed from a checkpoint follows exactly the curve of one trained without interruption.

Problems:

- ``sgd-digits`` (real, R = 27): ``SGDClassifier(loss="log_loss", penalty="elasticnet")`` on
  ``load_digits`` (70/30 stratified split, standardised), one ``partial_fit`` pass per epoch.
  Ranges: ``alpha`` in [1e-7, 1e-1] and ``eta0`` in [1e-4, 1] (Logarithmic), ``learning_rate``
  in {constant, optimal, invscaling}, ``l1_ratio`` in [0, 1] (Linear). About 15-20 ms per epoch.
- ``mlp-digits`` (real, R = 27): ``MLPClassifier`` (one hidden layer, Adam) on the same split, one
  ``partial_fit`` pass per epoch. Ranges: ``learning_rate_init`` in [1e-4, 1e-1] and ``alpha`` in
  [1e-7, 1e-1] (Logarithmic), ``hidden_units`` in [16, 256] and ``batch_size`` in [32, 256]
  (integers, Logarithmic). About 15-40 ms per epoch.
- ``lcurve`` and ``lcurve-crossing`` (synthetic, R = 81): a parametric learning-curve family,
  ``loss(e) = final(x) + (2.3 - final(x)) * exp(-rate(x) * e) + noise``, with Gaussian noise
  (sd 0.02) seeded per (configuration, epoch). The effective learning rate ``lr / (1 - momentum)``
  (``adam``: ``3 * lr``) sets the floor ``final(x)`` (best near 0.01; ``reg`` and ``width`` add
  their own terms) and also the speed ``rate(x)``: the best floors need a small effective rate,
  which converges more slowly. ``lcurve`` couples them mildly (speed ~ rate**0.4) and gives each
  configuration its own log-normal speed factor (sd 0.5): about 30% of the top 5% of
  configurations are outside the best third of all configurations after 9 epochs (good
  configurations are *sometimes* slow starters). ``lcurve-crossing`` couples them strongly (speed
  ~ rate**0.8, no speed factor): about 70% are, and after 1-3 epochs nearly all, so early stopping
  and low Hyperband rungs are usually fooled. Ranges: ``lr`` in [1e-4, 1] (Logarithmic),
  ``momentum`` in [0, 0.95] (Linear), ``width`` in [8, 512] (integer, Logarithmic), ``reg`` in
  [1e-6, 1e-1] (Logarithmic), ``optimizer`` in {sgd, adam}. Microseconds per epoch.

The validation losses of the real problems are log losses capped at :data:`LOSS_CAP` (a diverged
model reports the cap for the rest of its epochs), so one diverged run does not dominate a median.

Run ``python benchmarks/mf_problems.py`` to print a few learning curves of each problem.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from amtlib import CategoricalParameter, ContinuousParameter, IntegerParameter
from amtlib.space import Parameter

#: Validation log losses are capped here (uniform guessing over 10 classes is 2.30).
LOSS_CAP = 5.0


@dataclass(frozen=True)
class MFProblem:
    """A model trained epoch by epoch; see the module docstring.

    Attributes:
        name: identifier used on the command line and in result paths.
        hyperparameter_ranges: name -> amtlib range.
        max_resource: the most epochs a configuration is trained for (Hyperband's ``R``).
        start: ``hyperparameters -> model``, a fresh picklable model.
        train_epoch: ``(model, hyperparameters, epoch) -> validation loss``; trains ``model`` (in
            place) for epoch ``epoch`` (from 1).
        kind: ``"real"`` or ``"synthetic"``.
    """

    name: str
    hyperparameter_ranges: Mapping[str, Parameter]
    max_resource: int
    start: Callable[[dict[str, Any]], Any]
    train_epoch: Callable[[Any, dict[str, Any], int], float]
    kind: str
    description: str = field(default="", compare=False)

    def tuned(self, hyperparameters: Mapping[str, Any]) -> dict[str, Any]:
        """Only the tuned hyperparameters (drops static ones such as ``epochs``)."""
        return {name: hyperparameters[name] for name in self.hyperparameter_ranges}

    def curve(self, hyperparameters: Mapping[str, Any], epochs: int | None = None) -> list[float]:
        """The validation loss after each of ``epochs`` epochs (default ``max_resource``)."""
        hp = self.tuned(hyperparameters)
        model = self.start(hp)
        return [self.train_epoch(model, hp, e) for e in range(1, (epochs or self.max_resource) + 1)]

    def valid_point(self) -> dict[str, Any]:
        """A sensible configuration inside every range (each range's geometric middle)."""
        point: dict[str, Any] = {}
        for name, p in self.hyperparameter_ranges.items():
            if isinstance(p, CategoricalParameter):
                point[name] = p.values()[0]
            elif p.scaling_type.value == "Logarithmic":
                mid = math.sqrt(p.min_value * p.max_value)
                point[name] = round(mid) if isinstance(p, IntegerParameter) else mid
            else:
                mid = (p.min_value + p.max_value) / 2
                point[name] = round(mid) if isinstance(p, IntegerParameter) else mid
        return point

    def suggest(self, trial: Any) -> dict[str, Any]:
        """Sample the same ranges with an Optuna trial (``suggest_*`` with the same scales)."""
        out: dict[str, Any] = {}
        for name, p in self.hyperparameter_ranges.items():
            if isinstance(p, CategoricalParameter):
                out[name] = trial.suggest_categorical(name, p.values())
            elif p.scaling_type.value not in ("Linear", "Logarithmic"):
                raise ValueError(f"{self.name}: range {name!r} must be Linear or Logarithmic here.")
            else:
                log = p.scaling_type.value == "Logarithmic"
                suggest = (
                    trial.suggest_int if isinstance(p, IntegerParameter) else trial.suggest_float
                )
                out[name] = suggest(name, p.min_value, p.max_value, log=log)
        return out


def config_seed(hyperparameters: Mapping[str, Any]) -> int:
    """A 32-bit seed derived from a configuration (stable across processes and runs)."""
    text = json.dumps(dict(hyperparameters), sort_keys=True, allow_nan=False)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


# ---- scikit-learn problems ------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    X, y = load_digits(return_X_y=True)
    X_train, X_val, y_train, y_val = train_test_split(
        X, y, test_size=0.3, random_state=0, stratify=y
    )
    scaler = StandardScaler().fit(X_train)
    return scaler.transform(X_train), scaler.transform(X_val), y_train, y_val


def _log_loss(proba: np.ndarray, y: np.ndarray) -> float:
    """Mean validation log loss (probabilities clipped at 1e-15), capped at LOSS_CAP."""
    picked = np.clip(proba[np.arange(len(y)), y], 1e-15, 1.0)
    value = float(-np.mean(np.log(picked)))
    return value if math.isfinite(value) and value < LOSS_CAP else LOSS_CAP


class _Model:
    """A scikit-learn estimator being trained, plus whether it diverged (the checkpoint)."""

    def __init__(self, estimator: Any) -> None:
        self.estimator = estimator
        self.diverged = False


def _fit_one_epoch(model: _Model, epoch_seed: int | None) -> float:
    import sklearn
    from sklearn.exceptions import ConvergenceWarning

    if model.diverged:
        return LOSS_CAP
    X_train, X_val, y_train, y_val = _digits()
    estimator = model.estimator
    if epoch_seed is not None:  # a new shuffle each epoch, the same whenever it is replayed
        estimator.random_state = epoch_seed
    with (
        sklearn.config_context(assume_finite=True, skip_parameter_validation=True),
        warnings.catch_warnings(),
        np.errstate(all="ignore"),
    ):
        # Expected while training epoch by epoch, not problems of the benchmark.
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            estimator.partial_fit(X_train, y_train, classes=np.arange(10))
            proba = estimator.predict_proba(X_val)
        except (ValueError, FloatingPointError):  # SGD's "Floating-point under-/overflow"
            model.diverged = True
            return LOSS_CAP
    loss = _log_loss(proba, y_val)
    if not np.all(np.isfinite(proba)):
        model.diverged = True
        return LOSS_CAP
    return loss


def _sgd_start(hp: dict[str, Any]) -> _Model:
    from sklearn.linear_model import SGDClassifier

    return _Model(
        SGDClassifier(
            loss="log_loss",
            penalty="elasticnet",
            alpha=hp["alpha"],
            l1_ratio=hp["l1_ratio"],
            learning_rate=hp["learning_rate"],
            eta0=hp["eta0"],
            random_state=config_seed(hp),
        )
    )


def _sgd_epoch(model: _Model, hp: dict[str, Any], epoch: int) -> float:
    # SGDClassifier re-seeds its shuffle from random_state on every partial_fit call.
    return _fit_one_epoch(model, (config_seed(hp) + epoch) % 2**32)


def _mlp_start(hp: dict[str, Any]) -> _Model:
    from sklearn.neural_network import MLPClassifier

    return _Model(
        MLPClassifier(
            hidden_layer_sizes=(int(hp["hidden_units"]),),
            learning_rate_init=hp["learning_rate_init"],
            alpha=hp["alpha"],
            batch_size=int(hp["batch_size"]),
            max_iter=10_000,  # partial_fit counts epochs against max_iter
            random_state=config_seed(hp),
        )
    )


def _mlp_epoch(model: _Model, hp: dict[str, Any], epoch: int) -> float:
    # MLPClassifier keeps its random generator (created on the first call) in the model.
    return _fit_one_epoch(model, None)


SGD_DIGITS = MFProblem(
    name="sgd-digits",
    hyperparameter_ranges={
        "alpha": ContinuousParameter(1e-7, 1e-1, "Logarithmic"),
        "eta0": ContinuousParameter(1e-4, 1.0, "Logarithmic"),
        "learning_rate": CategoricalParameter(["constant", "optimal", "invscaling"]),
        "l1_ratio": ContinuousParameter(0.0, 1.0, "Linear"),
    },
    max_resource=27,
    start=_sgd_start,
    train_epoch=_sgd_epoch,
    kind="real",
    description="SGDClassifier(log_loss, elasticnet) on digits; validation log loss per epoch",
)

MLP_DIGITS = MFProblem(
    name="mlp-digits",
    hyperparameter_ranges={
        "learning_rate_init": ContinuousParameter(1e-4, 1e-1, "Logarithmic"),
        "alpha": ContinuousParameter(1e-7, 1e-1, "Logarithmic"),
        "hidden_units": IntegerParameter(16, 256, "Logarithmic"),
        "batch_size": IntegerParameter(32, 256, "Logarithmic"),
    },
    max_resource=27,
    start=_mlp_start,
    train_epoch=_mlp_epoch,
    kind="real",
    description="MLPClassifier (1 hidden layer, Adam) on digits; validation log loss per epoch",
)


# ---- synthetic learning curves --------------------------------------------------------------------

_START_LOSS = 2.3
_NOISE = 0.02


class _Epochs:
    """The synthetic model: only how many epochs it has been trained (its checkpoint)."""

    def __init__(self) -> None:
        self.trained = 0


def _log_effective_rate(hp: Mapping[str, Any]) -> float:
    if hp["optimizer"] == "adam":
        return math.log10(3.0 * hp["lr"])
    return math.log10(hp["lr"] / (1.0 - hp["momentum"]))


def _lcurve_shape(hp: Mapping[str, Any], coupling: float, spread: float) -> tuple[float, float]:
    """``(final, rate)`` of a configuration's curve: its floor and its speed.

    ``coupling``: how strongly the effective learning rate speeds convergence up (the best floors
    need a small rate, so a strong coupling makes the best configurations slow starters).
    ``spread``: the standard deviation of a per-configuration log-normal factor on the speed.
    """
    u = _log_effective_rate(hp)
    # adam's best effective rate is lower and its floor a bit higher
    floor_at, extra = (-2.3, 0.02) if hp["optimizer"] == "adam" else (-2.0, 0.0)
    final = (
        0.05
        + extra
        + 0.25 * (u - floor_at) ** 2
        + 0.06 * ((math.log10(hp["reg"]) + 3.5) / 2.5) ** 2
        + 0.08 * ((math.log2(hp["width"]) - 7.0) / 4.0) ** 2
    )
    rate = 0.5 * 10 ** (coupling * (u + 1.0)) * (hp["width"] / 64.0) ** 0.3
    if hp["optimizer"] == "adam":
        rate *= 2.0
    if spread:
        rate *= math.exp(spread * np.random.default_rng([config_seed(hp)]).normal())
    return min(final, _START_LOSS), min(max(rate, 1e-3), 3.0)


def _lcurve_start(hp: dict[str, Any]) -> _Epochs:
    return _Epochs()


def _lcurve_epoch(
    coupling: float, spread: float, model: _Epochs, hp: dict[str, Any], epoch: int
) -> float:
    model.trained += 1
    final, rate = _lcurve_shape(hp, coupling, spread)
    loss = final + (_START_LOSS - final) * math.exp(-rate * epoch)
    if _log_effective_rate(hp) > 0:
        loss += 0.02 * epoch  # too high a rate: the loss drifts up again
    noise = np.random.default_rng([config_seed(hp), epoch]).normal(0.0, _NOISE)
    return float(max(loss + noise, 0.0))


_LCURVE_RANGES: dict[str, Parameter] = {
    "lr": ContinuousParameter(1e-4, 1.0, "Logarithmic"),
    "momentum": ContinuousParameter(0.0, 0.95, "Linear"),
    "width": IntegerParameter(8, 512, "Logarithmic"),
    "reg": ContinuousParameter(1e-6, 1e-1, "Logarithmic"),
    "optimizer": CategoricalParameter(["sgd", "adam"]),
}

LCURVE = MFProblem(
    name="lcurve",
    hyperparameter_ranges=_LCURVE_RANGES,
    max_resource=81,
    start=_lcurve_start,
    train_epoch=functools.partial(_lcurve_epoch, 0.4, 0.5),
    kind="synthetic",
    description="parametric learning curves; good configurations are sometimes slow starters",
)

LCURVE_CROSSING = MFProblem(
    name="lcurve-crossing",
    hyperparameter_ranges=_LCURVE_RANGES,
    max_resource=81,
    start=_lcurve_start,
    train_epoch=functools.partial(_lcurve_epoch, 0.8, 0.0),
    kind="synthetic",
    description="parametric learning curves; the best configurations are usually slow starters",
)

PROBLEMS: dict[str, MFProblem] = {
    p.name: p for p in (SGD_DIGITS, MLP_DIGITS, LCURVE, LCURVE_CROSSING)
}


def _show(names: list[str]) -> None:
    """Print the curves of a few random configurations of each problem (a sanity check)."""
    from amtlib import SearchSpace

    for name in names or list(PROBLEMS):
        problem = PROBLEMS[name]
        space = SearchSpace(problem.hyperparameter_ranges)
        rng = np.random.default_rng(0)
        print(f"{name} (R={problem.max_resource}): losses at epochs 1, 3, 9, 27, R")
        for _ in range(8):
            hp = space.sample(rng)
            curve = problem.curve(hp)
            marks = [curve[e - 1] for e in (1, 3, 9, 27, problem.max_resource)]
            print("  " + " ".join(f"{v:7.3f}" for v in marks), json.dumps(hp, default=str))


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=_show.__doc__)
    parser.add_argument("problems", nargs="*", metavar="PROBLEM",
                        help=f"one of {', '.join(PROBLEMS)} (default: all)")  # fmt: skip
    chosen = parser.parse_args().problems
    unknown = [p for p in chosen if p not in PROBLEMS]
    if unknown:
        parser.error(f"unknown problem {unknown[0]!r}; choose from {', '.join(PROBLEMS)}")
    _show(chosen)
