"""A multi-fidelity Gaussian process for model-based Hyperband: one model over every rung.

Model-based Hyperband (``model="bayesian"``) proposes new configurations with this module, in the
spirit of BOHB (Falkner et al., 2018) and MOBSTER (Klein et al., 2020): rather than fitting a model to
the values at a single rung, one GP is fitted over ``(configuration, resource)`` to the values that
every job reported at every rung level it reached (and at ``max_resource``), so the many cheap
low-rung results and the few expensive top-level ones inform the same model. This is MOBSTER's
joint-Matérn variant (Syne Tune's ``gp_resource_kernel="matern52"``): the resource is one more input,
``log(r / min_resource) / log(max_resource / min_resource)`` in ``[0, 1]``, with its own length scale,
so how far low-resource results predict the top level is learned from the data (a short length scale
when curves cross, a long one when early ranks hold).

One suggestion:

1. **Data**: ``(encoded configuration, normalised log resource) -> value`` rows. Above
   :data:`MAX_POINTS` rows the fit keeps every top-level row, then each job's highest row, then the
   rest, filling the last tier it reaches with a seeded random subset (the rows nearest the top say
   most about the top).
2. **Model**: `amtlib.strategies._gp.fit_gp` (Matérn-5/2 ARD, learned noise, output transform),
   warm-started from the previous fit, with two random restarts every tenth fit.
3. **Running jobs** are fantasised at the top level with their posterior mean (kriging believer:
   the variance shrinks near them, so proposals spread out), and every launched configuration is
   excluded, so none is proposed twice.
4. **Acquisition**: log expected improvement *at the top level* (the resource input held at 1: it is
   not refinable and ``sample``/``project`` set it), below the incumbent: the smallest posterior mean
   at the top level over the configurations observed at any level. Maximised by
   `amtlib.strategies._acquisition.maximize_acquisition` around the best configurations.

Everything random comes from ``model_rng(seed, index + 1)``: the same data give the same proposal.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from amtlib.errors import ValidationError
from amtlib.space import SearchSpace
from amtlib.strategies._acquisition import (
    feasibility_weighted,
    fit_feasibility,
    log_ei_acquisition,
    maximize_acquisition,
)
from amtlib.strategies._gp import (
    GaussianProcess,
    GPHyperparameters,
    capped_targets,
    fit_gp,
    single_threaded_blas,
)
from amtlib.strategies.base import model_rng

#: Most rows one fit uses (a fit costs O(n**3); at 300 rows a suggestion takes well under a second).
MAX_POINTS = 300
#: Above this many rows the GP's hyperparameters are re-optimised only when the number of top-level
#: values has changed (Syne Tune's ``opt_skip_num_max_resource``); otherwise the model is conditioned
#: on the new rows with the previous hyperparameters, which low-rung rows rarely move.
_ALWAYS_OPTIMISE_BELOW = 150
# L-BFGS-B iterations when refining the best candidates (as the Bayesian strategy).
_REFINE_ITERATIONS = 30


@dataclass(frozen=True)
class Observation:
    """One value a job reported: its configuration, the resource (steps) reached, the value."""

    hyperparameters: Mapping[str, Any]
    resource: int
    loss: float


class MultiFidelityGP:
    """Proposes configurations from one GP over (configuration, log resource); see the module doc.

    Args:
        space: the ranges searched (encoded with ``space.encode``, as given).
        seed: the tuning job's ``random_seed``.
        min_resource: the smallest resource with a value (Hyperband's first rung level).
        max_resource: the top level, where expected improvement is evaluated.
        n_candidates: random candidates scored per proposal before refinement.
    """

    def __init__(
        self,
        space: SearchSpace,
        *,
        seed: int,
        min_resource: int,
        max_resource: int,
        n_candidates: int = 1024,
    ) -> None:
        if not 1 <= min_resource < max_resource:
            raise ValidationError(
                "MultiFidelityGP needs 1 <= min_resource < max_resource. Got min_resource="
                f"{min_resource}, max_resource={max_resource}. Fix: pass Hyperband's levels."
            )
        self.space = space
        self.seed = seed
        self.min_resource = min_resource
        self.max_resource = max_resource
        self.n_candidates = n_candidates
        self._warm: GPHyperparameters | None = None
        self._feasibility_warm: GPHyperparameters | None = None
        self._n_fits = 0
        self._top_at_last_optimisation = -1
        self._rows: dict[Any, np.ndarray] = {}
        #: The GP of the last proposal (for inspection and tests).
        self.last_model: GaussianProcess | None = None

    def resource_coordinate(self, resource: float) -> float:
        """``log(r / min_resource) / log(max_resource / min_resource)``, clipped to ``[0, 1]``."""
        span = math.log(self.max_resource / self.min_resource)
        return min(1.0, max(0.0, math.log(max(resource, 1e-12) / self.min_resource) / span))

    def _encode(self, configs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Rows ``[encoded configuration, 1]`` (the top level), shape ``(len(configs), d + 1)``."""
        rows = []
        for params in configs:
            key = self.space.key(params)
            row = self._rows.get(key)
            if row is None:
                row = self._rows[key] = self.space.encode(params)
            rows.append(row)
        X = np.empty((len(rows), self.space.n_dims + 1))
        if rows:
            X[:, :-1] = np.array(rows)
        X[:, -1] = 1.0
        return X

    def _select(
        self, observations: Sequence[Observation], rng: np.random.Generator
    ) -> list[Observation]:
        """At most :data:`MAX_POINTS` rows: top level first, then each job's highest, then the rest."""
        if len(observations) <= MAX_POINTS:
            return list(observations)
        highest: dict[Any, int] = {}
        for obs in observations:
            key = self.space.key(obs.hyperparameters)
            highest[key] = max(highest.get(key, 0), obs.resource)
        tiers: list[list[int]] = [[], [], []]
        for i, obs in enumerate(observations):
            if obs.resource >= self.max_resource:
                tiers[0].append(i)
            elif obs.resource == highest[self.space.key(obs.hyperparameters)]:
                tiers[1].append(i)
            else:
                tiers[2].append(i)
        chosen: list[int] = []
        for tier in tiers:
            room = MAX_POINTS - len(chosen)
            if room <= 0:
                break
            if len(tier) > room:
                tier = sorted(rng.choice(tier, size=room, replace=False).tolist())
            chosen.extend(tier)
        return [observations[i] for i in sorted(chosen)]

    def suggest(
        self,
        index: int,
        observations: Sequence[Observation],
        running: Sequence[Mapping[str, Any]],
        launched: Sequence[Mapping[str, Any]],
        failed: Sequence[Mapping[str, Any]] = (),
    ) -> dict[str, Any] | None:
        """The configuration for job ``index``, or ``None`` when nothing can be proposed.

        Args:
            index: the job's index (seeds the proposal's random stream).
            observations: every value reported at a rung level or at ``max_resource``.
            running: configurations of jobs still running (fantasised at the top level).
            launched: every configuration launched so far (never proposed again).
            failed: configurations of jobs that ended without a value (an exception, a NaN): a
                separate model of where jobs fail steers proposals away, as in the Bayesian
                strategy (`feasibility_weighted`); they are never told as values.

        Returns:
            ``None`` when there are fewer than two observations or two distinct values, or when
            every candidate is excluded (a finite space used up); the caller falls back to random.
        """
        losses = [o.loss for o in observations]
        if len(observations) < 2 or len(set(losses)) < 2:
            return None
        with single_threaded_blas():
            return self._suggest(index, observations, running, launched, failed)

    def _suggest(
        self,
        index: int,
        observations: Sequence[Observation],
        running: Sequence[Mapping[str, Any]],
        launched: Sequence[Mapping[str, Any]],
        failed: Sequence[Mapping[str, Any]],
    ) -> dict[str, Any] | None:
        rng = model_rng(self.seed, index + 1)
        data = self._select(observations, rng)
        X = self._encode([o.hyperparameters for o in data])
        X[:, -1] = [self.resource_coordinate(o.resource) for o in data]
        y = capped_targets([o.loss for o in data])
        n_top = sum(o.resource >= self.max_resource for o in observations)
        if (
            self._warm is not None
            and len(y) > _ALWAYS_OPTIMISE_BELOW
            and n_top == self._top_at_last_optimisation
        ):
            fitted = fit_gp(X, y, rng, warm_start=self._warm, maxiter=0)
        else:
            self._n_fits += 1
            restarts = 2 if self._n_fits % 10 == 1 else None
            fitted = fit_gp(X, y, rng, warm_start=self._warm, n_restarts=restarts)
            self._warm = fitted.hyperparameters
            self._top_at_last_optimisation = n_top
        self.last_model = fitted

        seen = {self.space.key(o.hyperparameters): o.hyperparameters for o in observations}
        top_observed = self._encode(list(seen.values()))
        top_means = fitted.predict(top_observed)[0]
        best = float(np.min(top_means))
        model = fitted
        if running:
            model = fitted.condition_on(self._encode(running))
        acquisition = log_ei_acquisition(model, best)
        if failed:
            failed_keys = {self.space.key(p) for p in failed}
            ok = [p for key, p in seen.items() if key not in failed_keys]
            if ok:
                feasibility = fit_feasibility(
                    self._encode(ok), self._encode(failed), rng, self._feasibility_warm
                )
                self._feasibility_warm = feasibility.hyperparameters
                acquisition = feasibility_weighted(acquisition, feasibility)

        d = self.space.n_dims
        refinable = np.append(self.space.refinable_mask(), False)

        def project(points: np.ndarray) -> np.ndarray:
            points = np.array(points, dtype=float, ndmin=2)
            out = np.empty_like(points)
            out[:, :d] = self.space.project(points[:, :d])
            out[:, d] = 1.0
            return out

        def sample(r: np.random.Generator, m: int) -> np.ndarray:
            return project(r.random((m, d + 1)))

        exclude = self._encode([*launched, *seen.values()])
        anchors = top_observed[np.argsort(top_means, kind="stable")[:3]]
        found = maximize_acquisition(
            acquisition,
            sample,
            refinable,
            project,
            rng,
            exclude=exclude,
            anchors=anchors,
            x_scale=fitted.hyperparameters.lengthscales,
            canonical=lambda x: np.append(self.space.encode(self.space.decode(x[:d])), x[d]),
            n_candidates=self.n_candidates,
            maxiter=_REFINE_ITERATIONS,
        )
        if found is None:
            return None
        return self.space.decode(found[0][:d])
