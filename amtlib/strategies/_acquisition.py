"""Log expected improvement and the optimiser that maximises an acquisition over the unit cube.

The strategy's loop for one suggestion, given a fitted `~amtlib.strategies._gp.GaussianProcess`:

>>> import numpy as np
>>> from amtlib.strategies._gp import fit_gp
>>> rng = np.random.default_rng(0)
>>> X = rng.random((10, 2))
>>> gp = fit_gp(X, ((X - 0.3) ** 2).sum(1), rng)
>>> acq = log_ei_acquisition(gp, gp.incumbent)
>>> found = maximize_acquisition(
...     acq, lambda r, n: r.random((n, 2)), np.array([True, True]), lambda Z: Z, rng, exclude=X
... )
>>> x, log_ei = found
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

import numpy as np
import scipy.optimize
import scipy.special
from numpy.typing import ArrayLike, NDArray

from amtlib.errors import ValidationError
from amtlib.strategies._gp import GaussianProcess, GPHyperparameters, fit_gp, single_threaded_blas

FloatArray = NDArray[np.float64]

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_SQRT_HALF_PI = math.sqrt(0.5 * math.pi)
# Beyond |z| = 200 the asymptotic series of log h(z) is more accurate than the erfcx form, whose
# relative error grows like eps * z**2; the z clip keeps z**2 finite (log EI stays finite, flat).
_ASYMPTOTIC_Z = 200.0
_MIN_Z = -1e100
_MIN_STD = 1e-12
_EXCLUDE_DECIMALS = 9


def _log_h_near(z: FloatArray) -> FloatArray:
    """``log h(z)`` by its definition, accurate for ``z > -1``."""
    out: FloatArray = np.log(z * scipy.special.ndtr(z) + np.exp(-0.5 * z * z - _LOG_SQRT_2PI))
    return out


def _log_h(z: FloatArray) -> FloatArray:
    """``log(z * Phi(z) + phi(z))``, accurate for every finite ``z``."""
    near = z > -1.0
    if near.all():  # the common case, without the masks
        return _log_h_near(z)
    out = np.empty_like(z)
    out[near] = _log_h_near(z[near])
    mid = (z <= -1.0) & (z >= -_ASYMPTOTIC_Z)
    zm = -z[mid]
    # h = phi(z) * (1 - |z| * Mills ratio); the Mills ratio through erfcx never underflows.
    t = zm * _SQRT_HALF_PI * scipy.special.erfcx(zm / math.sqrt(2.0))
    out[mid] = -0.5 * zm * zm - _LOG_SQRT_2PI + np.log1p(-t)
    far = z < -_ASYMPTOTIC_Z
    zf = z[far]
    inv2 = 1.0 / (zf * zf)
    series = inv2 * (1.0 - inv2 * (3.0 - inv2 * (15.0 - 105.0 * inv2)))
    out[far] = -0.5 * zf * zf - _LOG_SQRT_2PI + np.log(series)
    return out


def _z_and_std(
    mean: ArrayLike, std: ArrayLike, best: float | FloatArray
) -> tuple[FloatArray, FloatArray]:
    mean_arr = np.asarray(mean, dtype=float)
    std_arr = np.maximum(np.asarray(std, dtype=float), _MIN_STD)
    z = np.maximum((best - mean_arr) / std_arr, _MIN_Z)
    return z, std_arr


def log_expected_improvement(
    mean: ArrayLike, std: ArrayLike, best: float | FloatArray
) -> FloatArray:
    """Log of the expected improvement below ``best`` of ``N(mean, std**2)`` (minimisation).

    Finite and strictly monotone (decreasing in ``mean``, increasing in ``std``) far into the tail
    where the expected improvement itself underflows to 0; ``std`` is floored at 1e-12 and
    ``z = (best - mean) / std`` at -1e100.

    Args:
        mean: Posterior means, any shape.
        std: Posterior standard deviations, broadcastable with ``mean``.
        best: Value to improve upon (the incumbent), same units as ``mean``; or one per point.

    Returns:
        ``log(E[max(best - Y, 0)])`` elementwise.
    """
    z, s = _z_and_std(mean, std, best)
    return np.log(s) + _log_h(z)


def log_expected_improvement_grad(
    mean: ArrayLike, std: ArrayLike, best: float | FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """`log_expected_improvement` and its partial derivatives in ``mean`` and in ``std``.

    Uses ``dEI/dmean = -Phi(z)`` and ``dEI/dstd = phi(z)``, divided by EI in log space so that
    neither ratio underflows.
    """
    z, s = _z_and_std(mean, std, best)
    log_h = _log_h(z)
    d_mean = -np.exp(scipy.special.log_ndtr(z) - log_h) / s
    d_std = np.exp(-0.5 * z * z - _LOG_SQRT_2PI - log_h) / s
    return np.log(s) + log_h, d_mean, d_std


class Acquisition(Protocol):
    """Values (to maximise) at a batch of points ``X`` of shape ``(q, d)``.

    Returns the values, shape ``(q,)``, and, when ``return_grad`` is true, their gradients in
    ``X``, shape ``(q, d)`` (otherwise ``None``). Values may be ``-inf`` but never NaN.
    """

    def __call__(
        self, X: FloatArray, return_grad: bool = False
    ) -> tuple[FloatArray, FloatArray | None]: ...


def log_ei_acquisition(
    model: GaussianProcess, best: float | Callable[[FloatArray], FloatArray]
) -> Acquisition:
    """Log expected improvement of ``model`` below ``best`` (both on the model's scale).

    Pass ``best = fitted.incumbent`` of the model fitted to the finished jobs even when ``model``
    is that model conditioned on running jobs. ``model.improvement_in_original_units(exp(value))``
    turns a value into "how much better than the incumbent the point plausibly is", in objective
    units, for completion criteria. ``best`` may also map the points ``(q, d)`` to one incumbent
    each (the Bayesian strategy's category-local suggestions).
    """
    incumbent = best

    def acquisition(
        X: FloatArray, return_grad: bool = False
    ) -> tuple[FloatArray, FloatArray | None]:
        best = incumbent(X) if callable(incumbent) else incumbent
        if not return_grad:
            mean, var = model.predict(X)
            return log_expected_improvement(mean, np.sqrt(var), best), None
        mean, var, d_mean, d_var = model.predict_with_grad(X)
        std = np.sqrt(var)
        value, g_mean, g_std = log_expected_improvement_grad(mean, std, best)
        grad = g_mean[:, None] * d_mean + (g_std / (2.0 * std))[:, None] * d_var
        return value, grad

    return acquisition


# How steeply the acquisition falls where a job is more likely to fail than not (see
# feasibility_weighted): at t = -1 (84% likely to fail) it costs as much as 50 natural-log units
# of expected improvement.
FAILURE_BARRIER = 50.0


def fit_feasibility(
    X_ok: FloatArray,
    X_failed: FloatArray,
    rng: np.random.Generator,
    warm_start: GPHyperparameters | None = None,
) -> GaussianProcess:
    """A GP of where jobs fail, for `feasibility_weighted`: 0 at ``X_ok``, 1 at ``X_failed``.

    Failed jobs never reach the objective's model as values; this separate model only learns
    where they happen (least-squares classification, the labels standardised).
    """
    X = np.vstack([X_ok, X_failed])
    labels = np.concatenate([np.zeros(len(X_ok)), np.ones(len(X_failed))])
    return fit_gp(X, labels, rng, warm_start=warm_start, output_transform="standardize")


def feasibility_weighted(acquisition: Acquisition, feasibility: GaussianProcess) -> Acquisition:
    """``acquisition`` plus the log probability that a job at the point does not fail.

    ``feasibility`` is a GP fitted to 0 (the job succeeded) and 1 (it failed) at every finished
    job (least-squares classification): a point succeeds when its latent value is below 1/2, with
    probability ``Phi(t)``, ``t = (1/2 - mean) / std``. Near a failed job that is small, so the
    suggestions leave a region where jobs fail (diverging learning rates, out-of-memory batch
    sizes) instead of probing its edge again and again; far from every failure it is close to 1.

    Where failure is more likely than not (``t < 0``) a steep barrier, ``-FAILURE_BARRIER * t**2``, is
    added: expected improvement extrapolated into a failing region (the values improve towards its
    edge) can be large enough to outweigh ``log Phi(t)`` alone, and the model would then keep
    proposing jobs that fail. The barrier is smooth, so the edge itself stays reachable, and finite,
    so when every candidate is likely to fail the least likely one is proposed.
    """
    threshold = float(feasibility.transform.transform(np.array([0.5]))[0])

    def weighted(X: FloatArray, return_grad: bool = False) -> tuple[FloatArray, FloatArray | None]:
        value, grad = acquisition(X, return_grad)
        if not return_grad:
            mean, var = feasibility.predict(X)
            return value + _log_success((threshold - mean) / np.sqrt(var)), None
        assert grad is not None
        mean, var, d_mean, d_var = feasibility.predict_with_grad(X)
        std = np.sqrt(var)
        t = (threshold - mean) / std
        # d log_success / dt: phi(t) / Phi(t), minus the barrier's slope
        slope = np.exp(_log_phi(t) - scipy.special.log_ndtr(t))
        slope -= 2.0 * FAILURE_BARRIER * np.minimum(t, 0.0)
        d_t = -d_mean / std[:, None] - (t / (2.0 * var))[:, None] * d_var
        return value + _log_success(t), grad + slope[:, None] * d_t

    return weighted


def _log_success(t: FloatArray) -> FloatArray:
    """``log Phi(t)`` with the barrier where failure is more likely than not (``t < 0``)."""
    out: FloatArray = scipy.special.log_ndtr(t) - FAILURE_BARRIER * np.minimum(t, 0.0) ** 2
    return out


def _log_phi(t: FloatArray) -> FloatArray:
    """Log density of the standard normal."""
    return -0.5 * t * t - _LOG_SQRT_2PI


def _keys(X: FloatArray) -> list[bytes]:
    # Rounding (and + 0.0, which turns -0.0 into 0.0) makes projected points compare exactly.
    return [row.tobytes() for row in np.round(X, _EXCLUDE_DECIMALS) + 0.0]


def maximize_acquisition(
    acquisition: Acquisition,
    sample: Callable[[np.random.Generator, int], FloatArray],
    refinable: ArrayLike,
    project: Callable[[FloatArray], FloatArray],
    rng: np.random.Generator,
    *,
    exclude: ArrayLike | set[tuple[float, ...]] | None = None,
    anchors: ArrayLike | None = None,
    x_scale: ArrayLike | None = None,
    canonical: Callable[[FloatArray], FloatArray] | None = None,
    n_candidates: int = 1024,
    n_refine: int = 5,
    maxiter: int = 50,
) -> tuple[FloatArray, float] | None:
    """Best valid point of an acquisition function, searched then refined by L-BFGS-B.

    1. Evaluates ``sample(rng, n_candidates)`` plus, if ``anchors`` are given, Gaussian
       perturbations of them (scales 0.01 to 0.2 on the refinable dimensions, then ``project``ed);
    2. refines the ``n_refine`` best candidates jointly with L-BFGS-B over the refinable dimensions
       inside [0, 1] (optionally preconditioned by ``x_scale``, e.g. the GP length scales), the
       other dimensions held fixed; then ``project``s and re-evaluates them;
    3. returns the best point, candidates and refined ones together, that is not in ``exclude``.

    Args:
        acquisition: Function to maximise, see `Acquisition`.
        sample: ``sample(rng, n)`` draws ``n`` valid points, shape ``(n, d)``.
        refinable: Boolean mask, shape ``(d,)``, of the dimensions that may move continuously
            (false for one-hot categorical dimensions).
        project: Maps relaxed points ``(m, d)`` to valid ones (rounds integers, snaps one-hot).
        rng: The only source of randomness: the result is deterministic given its state.
        exclude: Points never to return (already evaluated or running, projected): an array
            ``(e, d)`` or a set of ``d``-tuples. Points are compared after rounding to 9 decimals.
        anchors: Points to search around, ``(a, d)``, e.g. the best observed ones.
        x_scale: Positive per-dimension scales, ``(d,)``: L-BFGS-B works on ``x / x_scale``.
        canonical: Maps a point ``(d,)`` to the one ``exclude`` would hold for the same
            configuration (e.g. encode after decode), for the comparison only: distinct points of
            a continuous range can decode to the same value when the range holds few floats.
        n_candidates: Size of the space-filling candidate set.
        n_refine: Number of candidates refined by L-BFGS-B.
        maxiter: L-BFGS-B iterations.

    Returns:
        ``(x, value)`` for the best non-excluded point found, or ``None`` when every candidate
        (including a second, four times larger draw) was excluded: in a finite space this almost
        surely means that every point has been evaluated.
    """
    mask = np.asarray(refinable, dtype=bool).reshape(-1)
    d = len(mask)
    scale = np.ones(d) if x_scale is None else np.asarray(x_scale, dtype=float).reshape(-1)
    if scale.shape != (d,) or not np.all(scale > 0) or n_candidates < 1 or n_refine < 0:
        raise ValidationError(
            "maximize_acquisition needs 'x_scale' of shape (d,) with positive entries (d = "
            f"len(refinable) = {d}), n_candidates >= 1 and n_refine >= 0. Got x_scale="
            f"{x_scale!r}, n_candidates={n_candidates}, n_refine={n_refine} instead."
        )
    if isinstance(exclude, (set, frozenset)):
        exclude = sorted(exclude)
    excluded = set() if exclude is None else set(_keys(np.asarray(exclude, float).reshape(-1, d)))
    anchor_points = np.empty((0, d)) if anchors is None else np.asarray(anchors, float)
    with single_threaded_blas():
        candidates = _checked_sample(sample, rng, n_candidates, d)
        if anchor_points.size > 0 and mask.any():
            anchor_points = anchor_points.reshape(-1, d)
            candidates = np.vstack([candidates, _perturb(anchor_points, mask, rng, project)])
        values = _safe_values(acquisition, candidates)

        start = np.argsort(-values, kind="stable")[:n_refine]
        start = start[np.isfinite(values[start])]
        if mask.any() and len(start) > 0:
            refined = project(_refine(acquisition, candidates[start], mask, scale[mask], maxiter))
            candidates = np.vstack([candidates, refined])
            values = np.concatenate([values, _safe_values(acquisition, refined)])

        found = _best_allowed(candidates, values, excluded, canonical)
        if found is None and excluded:
            more = _checked_sample(sample, rng, 4 * n_candidates, d)
            found = _best_allowed(more, _safe_values(acquisition, more), excluded, canonical)
        return found


def _checked_sample(
    sample: Callable[[np.random.Generator, int], FloatArray],
    rng: np.random.Generator,
    n: int,
    d: int,
) -> FloatArray:
    points = np.asarray(sample(rng, n), dtype=float)
    if points.shape != (n, d) or not np.all(np.isfinite(points)):
        raise ValidationError(
            f"The 'sample' callable of maximize_acquisition must return {n} finite points of "
            f"dimension {d} (the length of 'refinable'). Got an array of shape {points.shape}."
        )
    return points


def _safe_values(acquisition: Acquisition, X: FloatArray) -> FloatArray:
    values, _ = acquisition(X)
    return np.where(np.isnan(values), -np.inf, values)


def _perturb(
    anchors: FloatArray,
    mask: NDArray[np.bool_],
    rng: np.random.Generator,
    project: Callable[[FloatArray], FloatArray],
) -> FloatArray:
    # Several scales: the acquisition peak near a good point can be far narrower than the space.
    scales = np.array([0.01, 0.03, 0.1, 0.2])
    copies = np.repeat(anchors, 8 * len(scales), axis=0)
    step = rng.standard_normal(copies.shape) * np.tile(np.repeat(scales, 8), len(anchors))[:, None]
    copies[:, mask] = np.clip(copies[:, mask] + step[:, mask], 0.0, 1.0)
    return project(copies)


def _refine(
    acquisition: Acquisition,
    starts: FloatArray,
    mask: NDArray[np.bool_],
    scale: FloatArray,
    maxiter: int,
) -> FloatArray:
    template = starts.copy()
    k = len(starts)

    def negative_sum(flat: FloatArray) -> tuple[float, FloatArray]:
        # The starts are independent, so one L-BFGS-B run on the sum refines them all at once
        # for the cost of batched GP predictions.
        X = template.copy()
        X[:, mask] = flat.reshape(k, -1) * scale
        values, grad = acquisition(X, return_grad=True)
        if grad is None or not np.all(np.isfinite(values)) or not np.all(np.isfinite(grad)):
            return math.inf, np.zeros_like(flat)
        return -float(values.sum()), -(grad[:, mask] * scale).ravel()

    upper = np.tile(1.0 / scale, k)
    x0 = np.clip((starts[:, mask] / scale).ravel(), 0.0, upper)
    result = scipy.optimize.minimize(
        negative_sum,
        x0,
        jac=True,
        method="L-BFGS-B",
        bounds=list(zip(np.zeros_like(upper), upper, strict=True)),
        options={"maxiter": maxiter},
    )
    out = template.copy()
    out[:, mask] = np.clip(result.x.reshape(k, -1) * scale, 0.0, 1.0)
    return out


def _best_allowed(
    X: FloatArray,
    values: FloatArray,
    excluded: set[bytes],
    canonical: Callable[[FloatArray], FloatArray] | None = None,
) -> tuple[FloatArray, float] | None:
    for i in np.argsort(-values, kind="stable"):
        if not excluded:
            return X[i].copy(), float(values[i])
        point = X[i] if canonical is None else np.asarray(canonical(X[i]), dtype=float)
        if _keys(point.reshape(1, -1))[0] not in excluded:
            return X[i].copy(), float(values[i])
    return None
