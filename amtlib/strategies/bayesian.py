"""Bayesian optimisation: a Gaussian process over the unit cube, log expected improvement, fantasies.

One suggestion, for training job ``i``:

1. **Initial design** (``i < initial_design_size``): a Latin hypercube of the cube, seeded once, so
   the first jobs spread over every range. ``Auto`` ranges spanning two or more decades above 0 are
   laid out on a log scale here (a hedge: a quarter of the points still land in the top decade),
   and ranges inside [0, 1) whose distance to 1 spans two or more decades on a reverse-log scale.
2. **Model**: the finished jobs with a usable objective, encoded to the cube, and their losses go to
   a GP (`amtlib.strategies._gp`): Matérn-5/2 ARD kernel, constant mean, learned noise, weak priors,
   warm-started from the previous fit, output standardised (Yeo-Johnson when it helps).
3. **Auto scaling is learned**: each ``Auto`` numeric range may be encoded ``Linear``,
   ``Logarithmic`` (when ``min_value > 0``) or ``ReverseLogarithmic`` (continuous, inside [0, 1)).
   The strategy keeps the encoding whose fitted GP has the highest marginal likelihood (plus prior),
   changing one range at a time (a greedy pass, repeated as data arrives). ``describe()`` reports the
   scale chosen for each ``Auto`` range.
4. **Running jobs** are integrated over: expected improvement is averaged over two fantasies of
   their outcomes (posterior mean minus or plus one standard deviation), so parallel suggestions
   spread out without giving up exploitation (see ``_pending_aware``).
5. **Acquisition**: log expected improvement below the incumbent, maximised over a random candidate
   set plus perturbations of the best observed points, refined with L-BFGS-B (integer and
   continuous dimensions; one-hot dimensions held), then snapped to a valid configuration.
   With categorical ranges, every third suggestion (``categorical_local_every``) measures each
   configuration's improvement against the best job of its own categorical values instead (see
   ``_CombinationIncumbents``): a search within each combination from its own best job, so that a
   category whose best settings of the other ranges lie elsewhere is not written off for good.
   Configurations already launched (finished, failed or running) are excluded, so a finite space is
   never searched twice; when nothing is left, ``ask`` returns ``[]``.

Failed jobs are never told to the model as values; their configurations are excluded from future
suggestions, and a feasibility model learns where jobs fail. Jobs the tuner stopped before any value
(``Trial.unfinished``) are excluded too, but not taken for failures. Everything random comes from
``SeedSequence(random_seed)``: the same seed and the same order of ``ask``/``tell`` calls give the
same suggestions.

The module is over 400 lines because the strategy's parts (initial design, the choice of encodings
for ``Auto`` ranges, fantasies, the feasibility model, plateaus, exclusion) each read the strategy's
record of launched, running, finished and failed jobs; the GP and the acquisition live apart.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from amtlib.errors import ValidationError, describe_value
from amtlib.records import Trial
from amtlib.space import (
    CategoricalParameter,
    ContinuousParameter,
    ScalingType,
    SearchSpace,
    _NumericParameter,
)
from amtlib.strategies._acquisition import (
    feasibility_weighted,
    fit_feasibility,
    log_ei_acquisition,
    log_expected_improvement,
    log_expected_improvement_grad,
    maximize_acquisition,
)
from amtlib.strategies._gp import (
    GaussianProcess,
    capped_targets,
    fit_gp,
    log_prior,
    single_threaded_blas,
    tie_tolerance,
)
from amtlib.strategies.base import Strategy, model_rng, trial_rng

_CONFIG_KEYS = {
    "initial_design_size": "training jobs laid out by a Latin hypercube before the model takes over",
    "n_candidates": "random candidates scored per suggestion before L-BFGS-B refinement",
    "categorical_local_every": (
        "every how many suggestions improvement is measured within each combination of "
        "categorical values (0: never)"
    ),
}
# Settings that may be 0 (off); the others must be at least 1.
_MAY_BE_ZERO = frozenset({"categorical_local_every"})
# The largest setting accepted (initial_design_size and n_candidates are held as arrays of points).
_MAX_SETTING = 1_000_000
# One suggestion in this many is category-local when the space has categorical ranges (see
# _CombinationIncumbents). Measured on benchmarks/quality.py's lr_toy and mixed, 60 seeds each:
# runs left in a wrong category fell from 19 and 34 to 2 and 10; every second suggestion left about
# as many (0 and 11) but cost more precision in the runs that were not stuck.
_CATEGORICAL_LOCAL_EVERY = 3
# Anchors of a category-local suggestion: the best job of each of this many combinations.
_LOCAL_ANCHORS = 10
# Finite spaces up to this size are enumerated when random candidates find nothing new.
_MAX_ENUMERATION = 100_000
# L-BFGS-B iterations when refining the best candidates (jointly): 30 keeps a suggestion within the
# speed target; refinement converges in fewer on most steps, and the candidates around the best
# jobs already give precision.
_REFINE_ITERATIONS = 30
# Past this many observations, one more moves the kernel's hyperparameters little while fitting
# them costs ~1 s (n = 1000): they are re-fitted every _REFIT_EVERY-th suggestion and otherwise
# reused as they are (the GP is still conditioned on every observation).
_REUSE_HYPERPARAMETERS_ABOVE = 300
_REFIT_EVERY = 5


def _pending_aware(
    model: GaussianProcess,
    best: float,
    X_pending: np.ndarray,
    incumbents: _CombinationIncumbents | None = None,
    spread: np.ndarray | None = None,
) -> Any:
    """Log expected improvement averaged over what the running jobs may return.

    The proper acquisition with jobs still running is the expected improvement integrated over
    their outcomes (Snoek et al., 2012). A two-point quadrature makes it cheap: every running job
    returns its posterior mean minus, or plus, one standard deviation (weight 1/2 each); the model
    is conditioned on those values, and the incumbent includes them. The optimistic half makes the
    model expect little more from the neighbourhood of a running job (so parallel suggestions spread
    out); the pessimistic half keeps it exploiting. Against a kriging believer (the mean alone, with
    or without it in the incumbent), sampled fantasies, constant liars and 8-sample Monte Carlo, it
    gave the lowest regret with 4 asynchronous jobs over five problems of benchmarks/quality.py
    (geometric mean), with diverse suggestions, at twice the cost of scoring one model.

    With ``incumbents`` (a category-local suggestion), each point's incumbent is the best of its
    own categorical values, a running job's fantasy counting only for the points that share its.
    Running jobs where ``spread`` is false get their posterior mean in both fantasies (a kriging
    believer).
    """
    mean, var = model.predict(X_pending)
    sd = np.sqrt(var)
    # One GP over the observed and running inputs; the two fantasies differ only in the running
    # rows' targets, so they share the kernel computations (predict_targets).
    fantasy = model.condition_on(X_pending, mean)
    if spread is not None:
        sd = np.where(spread, sd, 0.0)
    Y = np.column_stack([np.concatenate([model.y, mean + z * sd]) for z in (-1.0, 1.0)])
    bests = [min(best, float(np.min(Y[len(model.y) :, j]))) for j in range(2)]
    if incumbents is not None:
        local = [incumbents.with_fantasies(X_pending, Y[len(model.y) :, j]) for j in range(2)]

    def acquisition(
        X: np.ndarray, return_grad: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None]:
        means, var_x, d_means, d_var = fantasy.predict_targets(X, Y, return_grad)
        std = np.sqrt(var_x)
        row_bests: list[Any] = bests
        if incumbents is not None:
            row_bests = [incumbents.rows(X, table) for table in local]
        values, grads = [], []
        for j in range(2):
            if not return_grad:
                values.append(log_expected_improvement(means[:, j], std, row_bests[j]))
                continue
            assert d_means is not None and d_var is not None
            v, g_mean, g_std = log_expected_improvement_grad(means[:, j], std, row_bests[j])
            values.append(v)
            grads.append(g_mean[:, None] * d_means[j] + (g_std / (2.0 * std))[:, None] * d_var)
        v1, v2 = values
        top = np.maximum(v1, v2)
        finite = np.isfinite(top)
        top = np.where(finite, top, 0.0)
        w1, w2 = np.exp(v1 - top), np.exp(v2 - top)  # log(mean(exp)) without overflow
        value = np.where(finite, top + np.log(0.5 * (w1 + w2)), -np.inf)
        if not return_grad:
            return value, None
        total = np.where(w1 + w2 > 0, w1 + w2, 1.0)
        return value, (w1 / total)[:, None] * grads[0] + (w2 / total)[:, None] * grads[1]

    return acquisition


class _CombinationIncumbents:
    """Per point, the incumbent among the finished jobs with the same categorical values.

    Why: one-hot categories share the kernel's other length scales, so the GP takes every category
    for a shifted copy of the others. When a category moves the best settings of the other ranges
    (an optimiser changes the best learning rate; a kernel, the best depth), the model extrapolates
    the leading category's optimum to the others, finds them worse there, and plain expected
    improvement never looks again: on ``benchmarks/quality.py``'s lr_toy and mixed a third and a
    half of the runs (60 seeds) ended in a wrong category, having refined it to many digits.
    Measured against each combination's own best job, expected improvement searches within each
    combination from where it is best, which finds its own optimum; once that beats the leader,
    plain expected improvement takes over. A combination no finished job has is measured against
    the overall incumbent (plain expected improvement).

    Args:
        model: The fitted GP; its posterior means at the finished jobs define the incumbents, as
            `GaussianProcess.incumbent` does for the whole space.
        X: The finished jobs' points, shape ``(n, d)``, as the model has them.
        blocks: The one-hot column slices of the categorical ranges.
    """

    def __init__(self, model: GaussianProcess, X: np.ndarray, blocks: list[slice]) -> None:
        self.blocks = blocks
        self.overall = model.incumbent
        means, _ = model.predict(X)
        self.table: dict[bytes, float] = {}
        self._row: dict[bytes, int] = {}
        for row, (key, mean) in enumerate(zip(self._keys(X), means.tolist(), strict=True)):
            if mean < self.table.get(key, math.inf):
                self.table[key], self._row[key] = mean, row

    def _keys(self, Z: np.ndarray) -> list[bytes]:
        picks = np.column_stack([np.argmax(Z[:, sl], axis=1) for sl in self.blocks])
        return [row.tobytes() for row in picks]

    def rows(self, Z: np.ndarray, table: dict[bytes, float] | None = None) -> np.ndarray:
        """The incumbent of each row of ``Z``: its combination's, else the overall one."""
        table = self.table if table is None else table
        return np.array([table.get(key, self.overall) for key in self._keys(Z)])

    def with_fantasies(self, X_running: np.ndarray, values: np.ndarray) -> dict[bytes, float]:
        """The table with running jobs' fantasised values counted in their combinations."""
        table = dict(self.table)
        for key, value in zip(self._keys(X_running), values.tolist(), strict=True):
            table[key] = min(table.get(key, self.overall), value)
        return table

    def anchors(self, X: np.ndarray) -> np.ndarray:
        """The best job of each of the `_LOCAL_ANCHORS` best combinations: where to search."""
        best = sorted(self.table, key=self.table.__getitem__)[:_LOCAL_ANCHORS]
        return X[[self._row[key] for key in best]]


def _scaling_options(param: _NumericParameter) -> list[ScalingType]:
    """Encodings the model may choose between for an ``Auto`` range."""
    options = [ScalingType.LINEAR]
    if param.min_value > 0:
        options.append(ScalingType.LOGARITHMIC)
    if isinstance(param, ContinuousParameter) and param.min_value >= 0 and param.max_value < 1:
        options.append(ScalingType.REVERSE_LOGARITHMIC)
    return options


class BayesianStrategy(Strategy):
    """Gaussian-process Bayesian optimisation (AMT's default strategy). See the module docstring.

    ``strategy_config`` keys (all optional):
        initial_design_size: jobs laid out by a Latin hypercube first. Default
            ``min(max(5, d + 1), 10)`` for ``d`` ranges.
        n_candidates: random candidates scored per suggestion (default 1024).
        categorical_local_every: with categorical ranges, one suggestion in this many measures
            improvement against the best job of its own categorical values (default 3; 0: never).
    """

    name = "Bayesian"
    exact_replay = False
    config_keys = frozenset(_CONFIG_KEYS)

    def __init__(
        self, space: SearchSpace, *, seed: int, config: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(space, seed=seed, config=config)
        for key, value in self.config.items():
            low = 0 if key in _MAY_BE_ZERO else 1
            if (
                isinstance(value, bool)
                or not isinstance(value, int)
                or not low <= value <= _MAX_SETTING
            ):
                raise ValidationError(
                    f"strategy_config[{key!r}] ({_CONFIG_KEYS[key]}) must be an int from {low} to "
                    f"{_MAX_SETTING:,}. Got {describe_value(value)} instead. Fix: pass a whole "
                    "number in that range."
                )
        d = len(space)
        self.initial_design_size = int(
            self.config.get("initial_design_size", min(max(5, d + 1), 10))
        )
        self.n_candidates = int(self.config.get("n_candidates", 1024))
        self.categorical_local_every = int(
            self.config.get("categorical_local_every", _CATEGORICAL_LOCAL_EVERY)
        )
        self._auto = {
            name: _scaling_options(p)
            for name, p in space
            if isinstance(p, _NumericParameter) and p.scaling_type is ScalingType.AUTO
        }
        self._auto_linear_only = [name for name, opts in self._auto.items() if len(opts) == 1]
        self._auto = {name: opts for name, opts in self._auto.items() if len(opts) > 1}
        self._scaling: dict[str, ScalingType] = {name: ScalingType.LINEAR for name in self._auto}
        self._spaces: dict[tuple[ScalingType, ...], SearchSpace] = {}
        self._warm: dict[tuple[Any, ...], Any] = {}  # encoding (or feasibility) -> last fit
        self._observed: list[tuple[dict[str, Any], float]] = []
        # id(space) -> configuration key -> its row in that space's cube
        self._encodings: dict[int, dict[Any, np.ndarray]] = {}
        self._failed: list[dict[str, Any]] = []
        self._unfinished: list[dict[str, Any]] = []  # stopped by the tuner before any value
        self._pending: dict[int, dict[str, Any]] = {}
        self._seen: set[tuple[tuple[str, object], ...]] = set()
        self._n_fits = 0
        self._design: np.ndarray | None = None
        self.last_log_ei: float | None = None
        self._last_model: GaussianProcess | None = None

    # -- the seam ---------------------------------------------------------------------------------

    def _launched(self, hyperparameters: Mapping[str, Any]) -> None:
        self._pending[self.n_asked] = dict(hyperparameters)
        self._seen.add(self.space.key(hyperparameters))
        super()._launched(hyperparameters)

    def tell(self, trial: Trial) -> None:
        params = self._pending.pop(trial.index, trial.hyperparameters)
        if trial.loss is not None and math.isfinite(trial.loss):
            self._observed.append((params, float(trial.loss)))
        elif trial.unfinished:
            self._unfinished.append(params)
        else:
            self._failed.append(params)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"InitialDesignSize": self.initial_design_size}
        if any(isinstance(p, CategoricalParameter) for _, p in self.space):
            out["CategoricalLocalEvery"] = self.categorical_local_every
        if self._auto or self._auto_linear_only:
            # Before the first fit the scale is the initial design's layout; after, the model's.
            scaling = {**self._scaling, **(self._hedge() if self._n_fits == 0 else {})}
            learned = {name: ScalingType.LINEAR for name in self._auto_linear_only}
            learned.update(scaling)
            out["LearnedScaling"] = {
                name: learned[name].value for name in self.space.names if name in learned
            }
        if self.last_log_ei is not None:
            out["PlausibleImprovement"] = self.plausible_improvement()
        return out

    def plausible_improvement(self) -> float | None:
        """Expected improvement over the best job at the last suggestion, in objective units.

        A completion criterion can stop the tuning job when this is negligible.
        """
        if self._last_model is None or self.last_log_ei is None:
            return None
        return self._last_model.improvement_in_original_units(math.exp(self.last_log_ei))

    # -- suggestions ------------------------------------------------------------------------------

    def _space_for(self, scaling: Mapping[str, ScalingType]) -> SearchSpace:
        key = tuple(scaling[name] for name in self._auto)
        if key not in self._spaces:
            self._spaces[key] = self.space.with_scaling(scaling)
        return self._spaces[key]

    def propose(self, index: int) -> dict[str, Any] | None:
        size = self.space.size()
        if size is not None and len(self._seen) >= size:
            return None
        if index < self.initial_design_size or len(self._observed) < 2:
            params = self._initial(index)
            if self.space.key(params) not in self._seen:
                return params
            if len(self._observed) < 2:
                return self._random_unseen(index)
        return self._model_based(index)

    def _random_unseen(self, index: int) -> dict[str, Any] | None:
        """A random configuration not yet launched (before the model has data to go on)."""
        rng = trial_rng(self.seed, index)
        for _ in range(100):
            params = self.space.sample(rng)
            if self.space.key(params) not in self._seen:
                return params
        unseen = self._unseen(self.space)
        return None if not unseen else unseen[int(rng.integers(len(unseen)))]

    def _unseen(self, space: SearchSpace) -> list[dict[str, Any]]:
        """Every configuration not yet launched, in a finite space small enough to list."""
        size = space.size()
        if size is None or size > _MAX_ENUMERATION:
            return []
        return [p for p in space.configurations() if space.key(p) not in self._seen]

    def _initial(self, index: int) -> dict[str, Any]:
        if index >= self.initial_design_size:
            return self.space.sample(trial_rng(self.seed, index))
        if self._design is None:
            # Imported here: scipy.stats takes ~1 s to import, and worker processes, which import
            # amtlib but never suggest, would pay it at every start.
            from scipy.stats import qmc

            sampler = qmc.LatinHypercube(d=self.space.n_dims, seed=model_rng(self.seed, 0))
            self._design = sampler.random(self.initial_design_size)
        return self._space_for({**self._scaling, **self._hedge()}).decode(self._design[index])

    def _hedge(self) -> dict[str, ScalingType]:
        """Encodings of the initial design for ``Auto`` ranges that span two or more decades.

        ``Logarithmic`` when ``max / min`` spans them (``min > 0``); otherwise
        ``ReverseLogarithmic`` when ``(1 - min) / (1 - max)`` does (a momentum-like range such as
        [0.5, 0.999]). Spreading the first points over the decades gives the marginal-likelihood
        choice the data to see a log-natured range early; the model's own choice takes over after.
        """
        hedge = {
            name: ScalingType.LOGARITHMIC
            for name in self.space.auto_ranges_spanning_decades(2.0)
            if name in self._auto
        }
        for name, options in self._auto.items():
            param = self.space.ranges[name]
            assert isinstance(param, _NumericParameter)  # Auto ranges are numeric
            reverse = ScalingType.REVERSE_LOGARITHMIC in options and name not in hedge
            if reverse and math.log10((1 - param.min_value) / (1 - param.max_value)) >= 2.0:
                hedge[name] = ScalingType.REVERSE_LOGARITHMIC
        return hedge

    def _model_based(self, index: int) -> dict[str, Any] | None:
        pending = [self._pending[i] for i in sorted(self._pending)]
        return self.suggest(index, self._observed, pending, self._failed, self._unfinished)

    def suggest(
        self,
        index: int,
        observed: Sequence[tuple[dict[str, Any], float]],
        pending: Sequence[dict[str, Any]],
        excluded: Sequence[dict[str, Any]] = (),
        untried: Sequence[dict[str, Any]] = (),
    ) -> dict[str, Any] | None:
        """The model's suggestion for job ``index`` given explicit data (at least 2 observations).

        The Bayesian strategy passes its own finished jobs (a seam for callers with other data).
        ``excluded`` configurations failed (the feasibility model learns from them); ``untried``
        ones ended without a verdict (stopped by the tuner before any value). Neither, nor any
        ``observed`` or ``pending`` configuration, is proposed again. Returns ``None`` when a
        finite space has nothing left.
        """
        # One BLAS thread: numpy's and scipy's OpenBLAS pools fight on small matrices (a likelihood
        # evaluation at n = 100 took 40 ms with both pools awake, under 1 ms with one thread).
        with single_threaded_blas():
            return self._suggest_from(index, observed, pending, excluded, untried)

    def _suggest_from(
        self,
        index: int,
        observed: Sequence[tuple[dict[str, Any], float]],
        pending: Sequence[dict[str, Any]],
        excluded: Sequence[dict[str, Any]],
        untried: Sequence[dict[str, Any]] = (),
    ) -> dict[str, Any] | None:
        rng = model_rng(self.seed, index + 1)
        losses = capped_targets([loss for _, loss in observed])
        if np.ptp(losses) <= tie_tolerance(float(np.max(np.abs(losses)))):
            # Every job so far gave the same value (a plateau): there is nothing to model, and
            # expected improvement would only chase the corners, where the GP's variance is
            # largest. Spread out instead, as the initial design does.
            space = self._space_for(self._scaling)
            launched = [[p for p, _ in observed], list(excluded), list(pending), list(untried)]
            taken = np.vstack([self._encode(space, rows) for rows in launched if rows])
            return self._farthest(index, space, rng, taken)
        space, fitted, X = self._fit(rng, [p for p, _ in observed], losses)
        best = fitted.incumbent
        blocks = [space.slice_of(n) for n, p in space if isinstance(p, CategoricalParameter)]
        every = self.categorical_local_every
        local = bool(blocks) and every > 0 and index % every == 0
        incumbents = _CombinationIncumbents(fitted, X, blocks) if local else None
        if pending:
            running = self._encode(space, pending)
            spread = None
            if blocks and not local:
                # A job running in another category than the leader's (from a category-local
                # suggestion, mostly) is believed at its mean: its optimistic fantasy would invent
                # an optimum there and pull plain suggestions after it (half of them went to other
                # categories with 4 jobs on lr_toy, a quarter without this).
                lead = X[int(np.argmin(fitted.predict(X)[0]))]
                spread = np.all(
                    [np.argmax(running[:, sl], 1) == np.argmax(lead[sl]) for sl in blocks], axis=0
                )
            acquisition = _pending_aware(fitted, best, running, incumbents, spread)
        elif incumbents is not None:
            acquisition = log_ei_acquisition(fitted, incumbents.rows)
        else:
            acquisition = log_ei_acquisition(fitted, best)
        if excluded:
            feasibility = self._fit_feasibility(rng, space, X, self._encode(space, excluded))
            acquisition = feasibility_weighted(acquisition, feasibility)
        others = [self._encode(space, rows) for rows in (excluded, pending, untried) if rows]
        exclude = np.vstack([X, *others])
        if incumbents is not None:
            anchors = incumbents.anchors(X)
        else:
            anchors = X[np.argsort(losses, kind="stable")[:3]]

        def sample(r: np.random.Generator, m: int) -> np.ndarray:
            return space.project(r.random((m, space.n_dims)))

        found = maximize_acquisition(
            acquisition,
            sample,
            space.refinable_mask(),
            space.project,
            rng,
            exclude=exclude,
            anchors=anchors,
            x_scale=fitted.hyperparameters.lengthscales,
            canonical=lambda x: space.encode(space.decode(x)),
            n_candidates=self.n_candidates,
            maxiter=_REFINE_ITERATIONS,
        )
        if found is None:
            found = self._enumerate_unseen(space, acquisition, exclude)
            if found is None:
                return None
        point, value = found
        if not local:
            # A category-local value is measured against other incumbents: PlausibleImprovement
            # stays that of the last plain suggestion.
            self._last_model, self.last_log_ei = fitted, float(value)
        return space.decode(point)

    def _farthest(
        self, index: int, space: SearchSpace, rng: np.random.Generator, taken: np.ndarray
    ) -> dict[str, Any] | None:
        """Among random candidates (or a finite space's configurations not yet launched), the one
        farthest from every row of ``taken``; ``None`` when a finite space has nothing left."""
        unseen = self._unseen(space)
        if unseen:
            if len(unseen) > self.n_candidates:
                picks = rng.choice(len(unseen), self.n_candidates, replace=False)
                unseen = [unseen[i] for i in np.sort(picks)]
            candidates = self._encode(space, unseen)
        else:
            candidates = space.project(rng.random((self.n_candidates, space.n_dims)))
        gaps = ((candidates[:, None, :] - taken[None, :, :]) ** 2).sum(-1).min(axis=1)
        for i in np.argsort(-gaps, kind="stable")[:16]:
            params = space.decode(candidates[i])
            if self.space.key(params) not in self._seen:
                return params
        return self._random_unseen(index)

    def _enumerate_unseen(
        self, space: SearchSpace, acquisition: Any, exclude: np.ndarray
    ) -> tuple[np.ndarray, float] | None:
        """Best configuration not in ``exclude``, by enumeration (small finite spaces only)."""
        size = space.size()
        if size is None or size > _MAX_ENUMERATION:
            return None
        X = self._encode(space, list(space.configurations()))
        taken = {row.tobytes() for row in np.round(exclude, 9) + 0.0}
        keep = np.array([row.tobytes() not in taken for row in np.round(X, 9) + 0.0])
        if not keep.any():
            return None
        X = X[keep]
        values, _ = acquisition(X)
        best = int(np.argmax(np.nan_to_num(values, nan=-np.inf)))
        return X[best], float(values[best])

    # -- the model --------------------------------------------------------------------------------

    def _fit(
        self, rng: np.random.Generator, configs: list[dict[str, Any]], y: np.ndarray
    ) -> tuple[SearchSpace, GaussianProcess, np.ndarray]:
        """The chosen encoding of the space, the GP fitted in it, and the encoded ``configs``."""
        self._n_fits += 1
        restarts = 2 if self._n_fits % 10 == 1 else None
        selecting = bool(self._auto) and self._selection_due(len(y))
        reuse = (
            len(y) > _REUSE_HYPERPARAMETERS_ABOVE
            and self._n_fits % _REFIT_EVERY != 1
            and not selecting
        )

        def fit(
            scaling: Mapping[str, ScalingType],
        ) -> tuple[float, SearchSpace, GaussianProcess, np.ndarray]:
            space = self._space_for(scaling)
            key = tuple(scaling[name] for name in self._auto)
            X = self._encode(space, configs)
            warm = self._warm.get(key)
            maxiter = 0 if reuse and warm is not None else None
            gp = fit_gp(X, y, rng, warm_start=warm, n_restarts=restarts, maxiter=maxiter)
            self._warm[key] = gp.hyperparameters
            theta = gp.hyperparameters.to_vector()
            score = gp.log_marginal_likelihood() + log_prior(theta, X.shape[1])[0]
            return score, space, gp, X

        best = fit(self._scaling)
        if selecting:
            for name, options in self._auto.items():
                for option in options:
                    if option is self._scaling[name]:
                        continue
                    trial = {**self._scaling, name: option}
                    candidate = fit(trial)
                    if candidate[0] > best[0]:
                        best, self._scaling = candidate, trial
        _, space, gp, X = best
        return space, gp, X

    def _fit_feasibility(
        self, rng: np.random.Generator, space: SearchSpace, X_ok: np.ndarray, X_failed: np.ndarray
    ) -> GaussianProcess:
        """`fit_feasibility`, warm-started like the objective's model, per encoding."""
        key = ("feasibility", id(space))
        gp = fit_feasibility(X_ok, X_failed, rng, self._warm.get(key))
        self._warm[key] = gp.hyperparameters
        return gp

    def _encode(self, space: SearchSpace, configs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Configurations as rows of ``space``'s cube; each encoded once (a hot path at large n)."""
        cache = self._encodings.setdefault(id(space), {})
        rows = []
        for params in configs:
            key = space.key(params)
            row = cache.get(key)
            if row is None:
                row = cache[key] = space.encode(params)
            rows.append(row)
        return np.array(rows).reshape(len(rows), space.n_dims)

    def _selection_due(self, n: int) -> bool:
        """Whether to reconsider the encodings of Auto ranges (cheap early, sparse later)."""
        if n < 40:
            return True
        return self._n_fits % (5 if n < 200 else 20) == 0
