"""Search strategies behind the ask/tell seam (see :mod:`amtlib.strategies.base`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from amtlib.errors import ValidationError, describe_value
from amtlib.space import SearchSpace
from amtlib.strategies.base import Strategy
from amtlib.strategies.bayesian import BayesianStrategy
from amtlib.strategies.grid import GridStrategy
from amtlib.strategies.hyperband import HyperbandStrategy
from amtlib.strategies.random import RandomStrategy

STRATEGIES: dict[str, type[Strategy]] = {
    "Bayesian": BayesianStrategy,
    "Grid": GridStrategy,
    "Hyperband": HyperbandStrategy,
    "Random": RandomStrategy,
}

__all__ = [
    "STRATEGIES",
    "BayesianStrategy",
    "GridStrategy",
    "HyperbandStrategy",
    "RandomStrategy",
    "Strategy",
    "make_strategy",
    "parse_strategy",
]


def parse_strategy(name: object) -> str:
    """AMT's strategy name for ``name`` (case-insensitive)."""
    if isinstance(name, str):
        for known in STRATEGIES:
            if known.lower() == name.strip().lower():
                return known
    raise ValidationError(
        f"The 'strategy' parameter of Tuner must be one of {sorted(STRATEGIES)} (case-insensitive). "
        f"Got {describe_value(name)} instead. Fix: pass one of those names."
    )


def make_strategy(
    name: str, space: SearchSpace, *, seed: int, config: Mapping[str, Any] | None = None
) -> Strategy:
    """A new strategy of that (canonical) name."""
    return STRATEGIES[name](space, seed=seed, config=config)
