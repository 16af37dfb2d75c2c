"""The strategy seam: ``ask`` for configurations, ``tell`` results, ``restore`` after a restart.

A strategy sees the search space, a seed and frozen :class:`~amtlib.records.Trial` records, never the
tuner, the store or the executor. It minimises: the tuner flips the sign once for ``Maximize``.

Random streams come from :func:`trial_rng` and :func:`model_rng`, children of
``numpy.random.SeedSequence(random_seed)``, so a draw never depends on timing or on other draws.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from amtlib.errors import ValidationError
from amtlib.records import Trial
from amtlib.reporting import Decision
from amtlib.space import SearchSpace


def trial_rng(seed: int, index: int) -> np.random.Generator:
    """The random stream of the training job with this index (``SeedSequence`` child ``(0, index)``)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0, index)))


def model_rng(seed: int, purpose: int = 0) -> np.random.Generator:
    """A random stream for a strategy's own model (child ``(1, purpose)``), apart from trial streams."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, purpose)))


class Strategy(abc.ABC):
    """How the next configurations are chosen.

    Contract:
        - ``ask(n)`` returns up to ``n`` new configurations (dicts of tuned hyperparameter values,
          each inside the space). Fewer than ``n`` means nothing more can be proposed now; an empty
          list while no job runs means the strategy is exhausted and the tuning job ends.
        - ``tell(trial)`` is called once for every launched job when it finishes (completed, stopped
          or failed), in the order they finish. Failed trials have ``loss=None``.
        - ``restore(trials)`` is called once, before any ``ask``, on a resumed tuning job: ``trials``
          are every job launched before, in launch order, finished ones with their results. Afterwards
          the strategy must be in the state it would have reached by asking and being told them.
        - The same seed, space and sequence of calls give the same configurations.

    Args:
        space: the ranges to search.
        seed: the tuning job's ``random_seed``.
        config: strategy-specific settings (``strategy_config``), already validated by the subclass.
    """

    name: ClassVar[str]
    #: True when the strategy stops trials itself (Hyperband): the tuner then refuses early stopping.
    stops_trials: ClassVar[bool] = False
    #: The ``strategy_config`` keys this strategy understands.
    config_keys: ClassVar[frozenset[str]] = frozenset()
    #: True when ``restore`` reproduces the asking state exactly. A model that warm-starts its fits
    #: from the previous one (Bayesian, model-based Hyperband) reaches the same data but may differ
    #: in numerical detail. A class default that an instance may override.
    exact_replay: bool = True

    def __init__(
        self, space: SearchSpace, *, seed: int, config: Mapping[str, Any] | None = None
    ) -> None:
        self.space = space
        self.seed = seed
        self.config = dict(config or {})
        unknown = sorted(set(self.config) - set(self.config_keys))
        if unknown:
            known = sorted(self.config_keys) or "none"
            raise ValidationError(
                f"strategy_config has keys {unknown} that the {self.name} strategy does not use "
                f"(its settings: {known}). Got {self.config!r}. Fix: remove them."
            )
        self.n_asked = 0

    def ask(self, n: int) -> list[dict[str, Any]]:
        """Up to ``n`` new configurations: ``propose`` for each next index until it gives None."""
        out = []
        for _ in range(n):
            params = self.propose(self.n_asked)
            if params is None:
                break
            self._launched(params)
            out.append(params)
        return out

    @abc.abstractmethod
    def propose(self, index: int) -> dict[str, Any] | None:
        """The configuration of the job with this index, or ``None`` when there is none to give.

        Called by ``ask`` with ``index == n_asked``; ``ask`` then records it as launched.
        """

    def tell(self, trial: Trial) -> None:  # noqa: B027 - a no-op is the right default
        """Learn from a finished trial."""

    def restore(self, trials: Sequence[Trial]) -> None:
        """Rebuild the state of a resumed tuning job (see the class contract)."""
        for trial in trials:
            self._launched(trial.hyperparameters)
        for trial in trials:
            if trial.status.is_finished():
                self.tell(trial)

    def _launched(self, hyperparameters: Mapping[str, Any]) -> None:
        """Note a configuration as launched; ``ask`` implementations call it for each they return."""
        self.n_asked += 1

    def launch_record(self, index: int) -> dict[str, Any]:
        """Facts about the job just launched as ``index`` to store with it (as a ``launched`` event
        in its history, which ``restore`` sees in ``Trial.history``); none by default."""
        return {}

    def on_report(self, index: int, step: int, loss: float) -> Decision:
        """Decide on an intermediate report of running job ``index`` (only if ``stops_trials``).

        Called from the tuner's report thread, one report at a time, under the tuner's lock.
        """
        return Decision()

    def promote(self) -> int | None:
        """A paused job to resume now instead of starting a new one (multi-fidelity), or None."""
        return None

    def describe(self) -> dict[str, Any]:
        """Strategy-specific facts for ``TuningJob.describe()`` (e.g. learned scales)."""
        return {}
