"""Random search: independent draws from each range's own scale."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import numpy as np

from amtlib.space import CategoricalParameter, IntegerParameter, SearchSpace
from amtlib.strategies.base import Strategy, trial_rng

# Rejection draws before switching to picking among the configurations not yet launched.
_MAX_REJECTIONS = 32
# Finite spaces up to this size are enumerated once rejection stops finding new configurations.
_MAX_ENUMERATION = 1_000_000


class UnseenDraws:
    """Draws from each range's own scale; in a finite space, never a configuration already noted.

    A repeat is redrawn from the same stream up to ``_MAX_REJECTIONS`` times; after that the draw is
    picked among the configurations not yet noted, weighted by each range's scale (spaces up to
    ``_MAX_ENUMERATION`` configurations). ``exhausted`` says when every configuration has been noted.
    Shared by Random and Hyperband's random configurations.
    """

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self.size = space.size()
        self.seen: set[tuple[tuple[str, object], ...]] = set()

    @property
    def exhausted(self) -> bool:
        return self.size is not None and len(self.seen) >= self.size

    def note(self, hyperparameters: Mapping[str, Any]) -> None:
        """Record a launched configuration (only a finite space needs to remember it)."""
        if self.size is not None:
            self.seen.add(self.space.key(hyperparameters))

    def draw(self, rng: np.random.Generator) -> dict[str, Any]:
        params = self.space.sample(rng)
        if self.size is None:
            return params
        for _ in range(_MAX_REJECTIONS):
            if self.space.key(params) not in self.seen:
                return params
            params = self.space.sample(rng)
        if self.size > _MAX_ENUMERATION:
            return params  # a repeat is unlikely to matter in a space this large
        return self._pick_unseen(rng)

    def _pick_unseen(self, rng: np.random.Generator) -> dict[str, Any]:
        names = self.space.names
        per_range = []
        for param in self.space.ranges.values():
            values = param.values()
            if isinstance(param, IntegerParameter):
                probs = param.probabilities()
            else:
                assert isinstance(param, CategoricalParameter)
                probs = np.full(len(values), 1.0 / len(values))
            per_range.append(list(zip(values, probs, strict=True)))
        configs, weights = [], []
        for combo in itertools.product(*per_range):
            params = {name: value for name, (value, _) in zip(names, combo, strict=True)}
            if self.space.key(params) not in self.seen:
                configs.append(params)
                weights.append(float(np.prod([p for _, p in combo])))
        w = np.asarray(weights)
        return configs[int(rng.choice(len(configs), p=w / w.sum()))]


class RandomStrategy(Strategy):
    """Each training job's configuration is drawn from its own seeded stream.

    Job ``i`` draws from ``SeedSequence(random_seed)`` child ``(0, i)``, so the sequence does not
    depend on parallelism, timing or results. In a finite space (integer and categorical ranges only)
    a configuration is never launched twice: a repeat is redrawn from the same stream, and once the
    space is nearly used up the next configuration is picked among those left, weighted by each
    range's scale (:class:`UnseenDraws`). When every configuration has been launched, ``ask``
    returns ``[]`` and the tuning job ends early (documented in docs/concepts.md).
    """

    name = "Random"

    def __init__(
        self, space: SearchSpace, *, seed: int, config: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(space, seed=seed, config=config)
        self._draws = UnseenDraws(space)

    def propose(self, index: int) -> dict[str, Any] | None:
        if self._draws.exhausted:
            return None
        return self._draws.draw(trial_rng(self.seed, index))

    def _launched(self, hyperparameters: Mapping[str, Any]) -> None:
        super()._launched(hyperparameters)
        self._draws.note(hyperparameters)
