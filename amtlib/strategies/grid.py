"""Grid search: the Cartesian product of categorical and integer ranges, in declaration order."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from amtlib.errors import ValidationError
from amtlib.space import ContinuousParameter, SearchSpace
from amtlib.strategies.base import Strategy


def check_grid_space(space: SearchSpace) -> int:
    """The grid's size; :class:`ValidationError` when a range is continuous."""
    for name, param in space:
        if isinstance(param, ContinuousParameter):
            raise ValidationError(
                f"Hyperparameter {name!r}: the Grid strategy needs categorical or integer ranges. "
                f"Got {param!r}. Fix: list the values to try with CategoricalParameter([...]), use "
                "an IntegerParameter, or pick strategy='Random' or 'Bayesian'."
            )
    return math.prod(len(p.values()) for _, p in space)


class GridStrategy(Strategy):
    """Every configuration of the grid once, in ``itertools.product`` order of the declared ranges.

    The first declared range varies slowest. Integer ranges contribute every integer. The order does
    not depend on the seed; ``ask`` returns ``[]`` once the grid is done.
    """

    name = "Grid"

    def __init__(
        self, space: SearchSpace, *, seed: int, config: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(space, seed=seed, config=config)
        self.size = check_grid_space(space)
        self._values = [p.values() for _, p in space]

    def configuration(self, position: int) -> dict[str, Any]:
        """The grid point at ``position`` (mixed-radix digits, last range fastest)."""
        out: dict[str, Any] = {}
        for name, values in zip(reversed(self.space.names), reversed(self._values), strict=True):
            position, digit = divmod(position, len(values))
            out[name] = values[digit]
        return {name: out[name] for name in self.space.names}

    def propose(self, index: int) -> dict[str, Any] | None:
        return self.configuration(index) if index < self.size else None
