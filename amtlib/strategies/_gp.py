"""Gaussian-process surrogate of the Bayesian strategy, on points of the unit cube.

The model of a (transformed) objective value is ``y = m + f(x) + e`` with a constant mean ``m``,
``f ~ GP(0, s2 * matern52(r))``, ``r**2 = sum_j ((x_j - x'_j) / l_j) ** 2`` (one length scale per
dimension) and Gaussian noise ``e ~ N(0, noise)``. The constant mean is a hyperparameter rather than
the data mean, so that conditioning on fantasies is exactly a refit with the hyperparameters held
fixed. Hyperparameters are fitted by maximising the log marginal likelihood plus a weak log prior
(maximum a posteriori) with L-BFGS-B from several starts.

Typical use (the strategy minimises):

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> X = rng.random((20, 2))
>>> gp = fit_gp(X, np.sin(6 * X[:, 0]) + X[:, 1], rng)
>>> mean, var = gp.predict(X[:3])
>>> refit = fit_gp(X, np.sin(6 * X[:, 0]) + X[:, 1], rng, warm_start=gp.hyperparameters)

The module runs past 400 lines because three tightly coupled parts live together: the output
transform, the kernel algebra with its analytic gradients, and the fit. If the transform grows
(input warping, other robust transforms), it is the part to move to a module of its own.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import scipy.linalg
import scipy.optimize
from numpy.typing import ArrayLike, NDArray
from threadpoolctl import ThreadpoolController

from amtlib.errors import ValidationError, describe_value

FloatArray = NDArray[np.float64]

#: Smallest noise variance (in standardised units, where the data variance is 1). A floor keeps the
#: kernel matrix invertible for duplicated points and deterministic objectives.
MIN_NOISE_VARIANCE = 1e-6
#: Smallest posterior variance reported, so that the acquisition never divides by zero.
MIN_PREDICTIVE_VARIANCE = 1e-12

# Beyond this, differences of objective values could overflow; no real objective gets near it.
_MAX_ABS_Y = 1e300
_SQRT5 = math.sqrt(5.0)
# Box for L-BFGS-B on the log hyperparameters; the priors keep fits well inside it, the box only
# stops the line search from overflowing exp().
_LOG_LENGTHSCALE_BOUNDS = (math.log(5e-3), math.log(2e2))
_LOG_SIGNAL_BOUNDS = (math.log(1e-3), math.log(50.0))
_LOG_NOISE_BOUNDS = (math.log(MIN_NOISE_VARIANCE), math.log(2.0))
_MEAN_BOUNDS = (-10.0, 10.0)

# Weak priors, as (location, scale) of a normal on the log hyperparameter.
# - Length scales: log-normal with median 0.5 * sqrt(d). The mean squared distance between two
#   random points of the unit cube grows like d, so scaling by sqrt(d) keeps the prior correlation
#   of two random points about the same in any dimension (the argument of Hvarfner et al., 2024,
#   "Vanilla Bayesian optimization performs great in high dimensions"); the wide scale (1.5, a
#   factor ~20 either way at two sigma) lets the data decide.
# - Signal variance: log-normal around 1, the variance of standardised data.
# - Noise: log-normal with median 1e-3: most objectives tuned here are nearly deterministic, but the
#   prior still costs ~4 nats at the floor, which stops fits from interpolating noisy data exactly.
# - Mean: normal around 0 (the standardised data mean), one standard deviation of the data wide.
_LENGTHSCALE_PRIOR_SCALE = 1.5
_SIGNAL_PRIOR = (0.0, 1.5)
_NOISE_PRIOR = (math.log(1e-3), 2.5)
_MEAN_PRIOR = (0.0, 1.0)

#: Likelihood-ratio statistic above which the Yeo-Johnson transform is applied (chi-square with one
#: degree of freedom at the 5% level).
_POWER_LR_THRESHOLD = 3.84
_MIN_POINTS_FOR_POWER = 8
# Beyond this many robust units (IQR / 1.349) from the median, objective values are compressed
# logarithmically before the power transform: far enough that ordinary heavy tails (a diverged
# training at 50 among values of 0.1-0.3 sits at ~700) keep the power transform's treatment.
_COMPRESS_BEYOND = 1e3


@functools.cache
def _blas_controller() -> ThreadpoolController:
    # Built on first use (it inspects the loaded libraries, ~4 ms), never at import time.
    return ThreadpoolController()


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Run the block with one BLAS thread, restoring the previous setting afterwards.

    The matrices here are at most a few hundred rows: OpenBLAS threads gain nothing on them, and
    on a busy two-core machine their spin-waiting made fits 2-5 times slower. The limit is
    process-wide while the block runs (threadpoolctl), so other threads' BLAS calls also run
    single-threaded meanwhile.
    """
    with _blas_controller().limit(limits=1, user_api="blas"):
        yield


def _lengthscale_prior_location(d: int) -> float:
    return math.log(0.5 * math.sqrt(d))


@dataclass(frozen=True, eq=False)
class GPHyperparameters:
    """Kernel, noise and mean hyperparameters of a fitted GP (in transformed-``y`` units).

    Attributes:
        lengthscales: One length scale per input dimension, shape ``(d,)``.
        signal_variance: Prior variance of ``f``.
        noise_variance: Variance of the observation noise (at least ``MIN_NOISE_VARIANCE``).
        mean: Constant prior mean.
    """

    lengthscales: FloatArray
    signal_variance: float
    noise_variance: float
    mean: float

    def to_vector(self) -> FloatArray:
        """The optimiser's coordinates: ``[log l_1..l_d, log s2, log noise, mean]``."""
        logs = np.log([self.signal_variance, self.noise_variance])
        return np.concatenate([np.log(self.lengthscales), logs, [self.mean]])

    @classmethod
    def from_vector(cls, theta: FloatArray) -> GPHyperparameters:
        """Inverse of `to_vector`."""
        theta = np.asarray(theta, dtype=float)
        return cls(
            lengthscales=np.exp(theta[:-3]),
            signal_variance=float(np.exp(theta[-3])),
            noise_variance=float(np.exp(theta[-2])),
            mean=float(theta[-1]),
        )


class OutputTransform:
    """Monotone increasing map from objective values to the GP's standardised scale.

    Always standardises, after centring on the median and scaling by the IQR (values more than
    ``_COMPRESS_BEYOND`` such units out are compressed logarithmically). Additionally applies a
    Yeo-Johnson power transform when there are at least 8 distinct points and a likelihood-ratio test says
    the power transform makes the values significantly more Gaussian (statistic > 3.84, the 5%
    chi-square level): typically heavy tails or outliers, such as a few diverged trainings. Both
    steps are strictly increasing, so the order of ``y`` and which value is best are kept.

    Args:
        y: Observed objective values, finite, shape ``(n,)``.
        mode: ``"auto"`` (test as above), ``"standardize"`` (never the power step) or ``"power"``
            (always, when ``y`` is not constant).

    Example:
        >>> t = OutputTransform(np.array([0.1, 0.2, 0.15, 0.3, 50.0, 0.12, 0.22, 0.18, 0.25]))
        >>> t.power_lambda is not None  # one diverged training: the power step is applied
        True
        >>> bool(np.allclose(t.inverse(t.transform([0.1, 50.0])), [0.1, 50.0]))
        True
    """

    def __init__(
        self, y: FloatArray, mode: Literal["auto", "standardize", "power"] = "auto"
    ) -> None:
        y = np.asarray(y, dtype=float)
        self.center = float(np.median(y))
        q75, q25 = np.percentile(y, [75, 25])
        # The IQR keeps the bulk of the values at unit scale however far out a few are; when most
        # values tie (a plateau) it is zero, and the smallest deviation from the median takes its
        # place (any average would let one diverged value swamp the others). Values beyond
        # _COMPRESS_BEYOND such units are then compressed logarithmically (_compress), so a
        # diverged training reporting 1e10 neither dominates the scale nor reaches the GP as a
        # huge number.
        # Differences below rounding of the centre (or subnormal) are ties, not a scale.
        tie = tie_tolerance(self.center)
        scale = (q75 - q25) / 1.349
        if not scale > tie:
            deviations = np.abs(y - self.center)
            deviations = deviations[deviations > tie]
            scale = float(deviations.min()) if len(deviations) else 1.0
        self.scale = scale if scale > 0 else 1.0
        self.power_lambda: float | None = None
        u = self._robust(y)
        min_points = 2 if mode == "power" else _MIN_POINTS_FOR_POWER
        if mode != "standardize" and len(np.unique(y)) >= min_points:
            fit = scipy.optimize.minimize_scalar(
                lambda lam: -_yeo_johnson_llf(u, lam), bounds=(-3.0, 3.0), method="bounded"
            )
            gain = 2.0 * (-fit.fun - _yeo_johnson_llf(u, 1.0))
            if mode == "power" or gain > _POWER_LR_THRESHOLD:
                self.power_lambda = float(fit.x)
                u = _yeo_johnson(u, self.power_lambda)
        self.mean = float(np.mean(u))
        std = float(np.std(u))
        self.std = std if std > 1e-12 * max(1.0, abs(self.mean)) else 1.0

    def _robust(self, y: ArrayLike) -> FloatArray:
        """Centred and scaled by the median and IQR, far values compressed."""
        d = np.asarray(y, dtype=float) - self.center  # finite: |y| <= _MAX_ABS_Y
        with np.errstate(over="ignore"):
            u = d / self.scale
        huge = ~(np.abs(u) <= 1e300)
        if not huge.any():
            return _compress(u)
        # Past 1e300 scale units the division overflows; log1p(|u| - C) is log|u| there, taken
        # from the logarithms so that such values stay apart instead of all becoming inf.
        out = _compress(np.where(huge, 0.0, u))
        logs = np.log(np.abs(d[huge])) - math.log(self.scale)
        out[huge] = np.sign(d[huge]) * (_COMPRESS_BEYOND + logs)
        return out

    def transform(self, y: ArrayLike) -> FloatArray:
        """Map objective values to the model's scale."""
        u = self._robust(y)
        if self.power_lambda is not None:
            u = _yeo_johnson(u, self.power_lambda)
        return (u - self.mean) / self.std

    def inverse(self, z: ArrayLike) -> FloatArray:
        """Map model-scale values back to objective values (clipped to the power map's range)."""
        u = np.asarray(z, dtype=float) * self.std + self.mean
        if self.power_lambda is not None:
            u = _yeo_johnson_inverse(u, self.power_lambda)
        with np.errstate(over="ignore", invalid="ignore"):
            y = _decompress(u) * self.scale + self.center
        return np.clip(np.nan_to_num(y, nan=self.center), -_MAX_ABS_Y, _MAX_ABS_Y)


def _compress(u: FloatArray) -> FloatArray:
    """Identity within +-_COMPRESS_BEYOND, logarithmic beyond: strictly increasing, continuous."""
    return _map_tails(u, np.log1p)


def _decompress(v: FloatArray) -> FloatArray:
    """Inverse of `_compress`."""
    return _map_tails(v, np.expm1)


def _map_tails(u: FloatArray, excess: Any) -> FloatArray:
    """``u`` with each value beyond +-_COMPRESS_BEYOND moved to ``+-(C + excess(|u| - C))``."""
    u = np.asarray(u, dtype=float)
    far = np.abs(u) > _COMPRESS_BEYOND
    if not far.any():
        return u
    out = u.copy()
    with np.errstate(over="ignore"):
        out[far] = np.sign(u[far]) * (_COMPRESS_BEYOND + excess(np.abs(u[far]) - _COMPRESS_BEYOND))
    return out


def _yeo_johnson(u: FloatArray, lam: float) -> FloatArray:
    out = np.empty_like(u)
    pos = u >= 0
    lp = np.log1p(u[pos])
    out[pos] = lp if abs(lam) < 1e-12 else np.expm1(lam * lp) / lam
    ln = np.log1p(-u[~pos])
    out[~pos] = -ln if abs(2.0 - lam) < 1e-12 else -np.expm1((2.0 - lam) * ln) / (2.0 - lam)
    return out


def _yeo_johnson_llf(u: FloatArray, lam: float) -> float:
    """Profile Gaussian log-likelihood of ``u`` after the transform, Jacobian included."""
    v = _yeo_johnson(u, lam)
    var = max(float(np.var(v)), 1e-300)
    return float(
        -0.5 * len(u) * math.log(var) + (lam - 1.0) * np.sum(np.sign(u) * np.log1p(np.abs(u)))
    )


def _yeo_johnson_inverse(v: FloatArray, lam: float) -> FloatArray:
    out = np.empty_like(v)
    pos = v >= 0
    if abs(lam) < 1e-12:
        out[pos] = np.expm1(v[pos])
    else:
        # Values outside the map's range (possible for extrapolated means) are clipped to its edge.
        arg = np.maximum(lam * v[pos], -1.0 + 1e-12)
        out[pos] = np.expm1(np.log1p(arg) / lam)
    mu = 2.0 - lam
    if abs(mu) < 1e-12:
        out[~pos] = -np.expm1(-v[~pos])
    else:
        arg = np.maximum(-mu * v[~pos], -1.0 + 1e-12)
        out[~pos] = -np.expm1(np.log1p(arg) / mu)
    return out


def _check_points(X: ArrayLike, name: str, d: int | None = None) -> FloatArray:
    arr = np.asarray(X, dtype=float)
    if arr.ndim != 2 or (d is not None and arr.shape[1] != d):
        want = f"(n, {d})" if d is not None else "(n, d)"
        raise ValidationError(
            f"The '{name}' parameter must be a 2-D array of shape {want}. "
            f"Got shape {arr.shape} instead."
        )
    if not np.all(np.isfinite(arr)):
        raise ValidationError(
            f"The '{name}' parameter must contain only finite values. Got NaN or inf at rows "
            f"{np.flatnonzero(~np.isfinite(arr).all(axis=1))[:5].tolist()}; drop those points."
        )
    return arr


def _matern(r2: FloatArray, with_g: bool = True) -> tuple[FloatArray, FloatArray]:
    """Matern-5/2 correlation and ``g = (5/3)(1 + sqrt5 r) exp(-sqrt5 r)`` (= -2 dk/d(r**2)).

    Overwrites ``r2`` (squared scaled distances), and ``g`` is garbage unless ``with_g``: these
    arrays are ``n x n`` or larger and memory traffic dominates the cost.
    """
    s = np.sqrt(r2, out=r2)
    s *= _SQRT5
    e = np.negative(s)
    np.exp(e, out=e)
    corr = s * (1.0 / 3.0)
    corr += 1.0
    corr *= s
    corr += 1.0
    corr *= e
    if with_g:
        s += 1.0
        s *= e
        s *= 5.0 / 3.0
    return corr, s


def _mm(A: FloatArray, B: FloatArray) -> FloatArray:
    """``A @ B`` for 2-D arrays through SciPy's BLAS, without copying C-ordered operands.

    NumPy and SciPy ship separate OpenBLAS builds; alternating between their thread pools made
    each likelihood evaluation several times slower on two cores, so the hot paths use SciPy's only.
    """
    a, trans_a = (A.T, 1) if A.flags.c_contiguous else (A, 0)
    b, trans_b = (B.T, 1) if B.flags.c_contiguous else (B, 0)
    out: FloatArray = scipy.linalg.blas.dgemm(1.0, a, b, trans_a=trans_a, trans_b=trans_b)
    return out


def _solve_lower(L: FloatArray, B: FloatArray, transpose: bool = False) -> FloatArray:
    """``L^-1 B`` (or ``L^-T B``) for the lower Cholesky factor ``L``, through LAPACK's ``dtrtrs``.

    What ``scipy.linalg.solve_triangular`` computes, bit for bit, without its argument checks:
    these solves sit inside the acquisition optimiser's loop, where the checks cost a third of
    the solve.
    """
    out, _ = scipy.linalg.lapack.dtrtrs(L, B, lower=1, trans=1 if transpose else 0)
    result: FloatArray = out
    return result


def _sq_dist(A: FloatArray, B: FloatArray) -> FloatArray:
    # The expansion costs one matrix product; inputs are centred first so the cancellation error
    # stays far below what matters for a kernel whose derivative vanishes at r = 0.
    d2 = _mm(A, B.T)
    d2 *= -2.0
    d2 += (A * A).sum(1)[:, None]
    d2 += (B * B).sum(1)[None, :]
    return np.maximum(d2, 0.0, out=d2)


def _cholesky(K: FloatArray) -> tuple[FloatArray, float]:
    """Lower Cholesky factor of ``K``, adding escalating jitter to the diagonal when needed.

    Returns the factor and the jitter that was added (0.0 when none). Never raises: the last jitter
    (the mean diagonal) makes any symmetric positive semi-definite matrix safely definite.
    """
    L, info = scipy.linalg.lapack.dpotrf(K, lower=1, clean=1)
    # A NaN anywhere reaches the diagonal of its row, so checking the diagonal is enough.
    if info == 0 and np.all(np.isfinite(np.diag(L))):
        return L, 0.0
    level = float(np.mean(np.diag(K)))
    level = level if math.isfinite(level) and level > 0 else 1.0
    for exponent in range(-10, 1):
        jitter = level * 10.0**exponent
        L, info = scipy.linalg.lapack.dpotrf(K + jitter * np.eye(len(K)), lower=1, clean=1)
        if info == 0 and np.all(np.isfinite(np.diag(L))):
            return L, jitter
    return np.sqrt(level) * np.eye(len(K)), level


def log_prior(theta: FloatArray, d: int) -> tuple[float, FloatArray]:
    """Log prior density (up to a constant) of the hyperparameter vector, and its gradient."""
    loc = np.concatenate(
        [
            np.full(d, _lengthscale_prior_location(d)),
            [_SIGNAL_PRIOR[0], _NOISE_PRIOR[0], _MEAN_PRIOR[0]],
        ]
    )
    scale = np.concatenate(
        [np.full(d, _LENGTHSCALE_PRIOR_SCALE), [_SIGNAL_PRIOR[1], _NOISE_PRIOR[1], _MEAN_PRIOR[1]]]
    )
    z = (theta - loc) / scale
    return float(-0.5 * np.sum(z * z)), -z / scale


def log_marginal_likelihood(
    X: FloatArray, y: FloatArray, theta: FloatArray
) -> tuple[float, FloatArray]:
    """Exact log marginal likelihood of ``y`` (model scale) at ``X``, and its gradient in ``theta``.

    ``theta`` is `GPHyperparameters.to_vector`. Inputs are trusted (validated by the callers).
    """
    n, d = X.shape
    ls = np.exp(theta[:d])
    s2, noise, mean = math.exp(theta[d]), math.exp(theta[d + 1]), theta[d + 2]
    Xc = X - X.mean(axis=0)
    Xs = Xc / ls
    r2 = _sq_dist(Xs, Xs)
    np.fill_diagonal(r2, 0.0)
    corr, g = _matern(r2)
    K = s2 * corr
    K.flat[:: n + 1] += noise
    L, _ = _cholesky(K)  # with jitter, the jittered likelihood is the one optimised: harmless
    resid = y - mean
    alpha = scipy.linalg.cho_solve((L, True), resid, check_finite=False)
    lml = -0.5 * resid @ alpha - np.log(np.diag(L)).sum() - 0.5 * n * math.log(2.0 * math.pi)
    # dLML/dtheta = tr(W dK/dtheta) / 2 with W = alpha alpha^T - K^-1; dpotri fills one triangle.
    W, _ = scipy.linalg.lapack.dpotri(L, lower=1)
    W += W.T
    W.flat[:: n + 1] *= 0.5
    W -= np.outer(alpha, alpha)
    W *= -1.0
    grad_s2 = 0.5 * s2 * np.einsum("ij,ij->", W, corr)
    grad_noise = 0.5 * noise * np.trace(W)
    # dK/dlog l_j = s2 g (xa_j - xb_j)**2 / l_j**2: expand the square to avoid an (n, n, d) tensor.
    g *= s2
    g *= W
    grad_ls = ((g.sum(1) @ (Xc * Xc)) - np.einsum("aj,aj->j", Xc, _mm(g, Xc))) / (ls * ls)
    grad = np.concatenate([grad_ls, [grad_s2, grad_noise, alpha.sum()]])
    return float(lml), grad


class GaussianProcess:
    """A GP conditioned on data, with fixed hyperparameters. Build it with `fit_gp`.

    Args:
        X: Inputs, shape ``(n, d)``, finite.
        y: Targets on the model scale (already transformed), shape ``(n,)``, finite.
        hyperparameters: Kernel, noise and mean.
        transform: Map between objective values and the model scale.
        n_observed: How many leading rows are real observations (the rest are fantasies);
            defaults to all of them.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> X = rng.random((8, 2))
        >>> gp = fit_gp(X, X.sum(1), rng)
        >>> running = np.array([[0.5, 0.5]])
        >>> bool(gp.condition_on(running).predict(running)[1][0] < gp.predict(running)[1][0])
        True
    """

    def __init__(
        self,
        X: FloatArray,
        y: FloatArray,
        hyperparameters: GPHyperparameters,
        transform: OutputTransform,
        n_observed: int | None = None,
        _factor: tuple[FloatArray, float] | None = None,
    ) -> None:
        # _factor (Cholesky factor, jitter) is internal: condition_on passes its rank-p update.
        self.X = X
        self.y = y
        self.hyperparameters = hyperparameters
        self.transform = transform
        self.n_observed = len(X) if n_observed is None else n_observed
        self._ls = hyperparameters.lengthscales
        # Centring only reduces rounding in the distance expansion; the fantasies keep the parent's.
        self._center = X[: self.n_observed].mean(axis=0)
        self._Xs = (X - self._center) / self._ls
        hp = hyperparameters
        if _factor is None:
            K, _ = _matern(self._sq_train(), with_g=False)
            K *= hp.signal_variance
            K.flat[:: len(X) + 1] += hp.noise_variance
            _factor = _cholesky(K)
        self._L, self._jitter = _factor
        self._target_weights: tuple[bytes, FloatArray] | None = None  # predict_targets' cache
        self._alpha = scipy.linalg.cho_solve((self._L, True), y - hp.mean, check_finite=False)

    def _sq_train(self) -> FloatArray:
        r2 = _sq_dist(self._Xs, self._Xs)
        np.fill_diagonal(r2, 0.0)
        return r2

    @functools.cached_property
    def incumbent(self) -> float:
        """Best (smallest) posterior mean over the real observations, on the model scale.

        This is the ``best`` that expected improvement should beat; it equals the smallest
        transformed observation when noise is negligible and is robust to a lucky noisy value.
        """
        return float(np.min(self._posterior(self.X[: self.n_observed], "mean")[0]))

    def log_marginal_likelihood(self) -> float:
        """Log marginal likelihood of the data under the current hyperparameters (no prior).

        Read off the Cholesky factor already computed (``O(n)``), jitter included if any was needed.
        """
        resid = self.y - self.hyperparameters.mean
        n = len(self.y)
        return float(
            -0.5 * resid @ self._alpha
            - np.log(np.diag(self._L)).sum()
            - 0.5 * n * math.log(2.0 * math.pi)
        )

    def _cross(self, Xq: FloatArray, with_g: bool) -> tuple[FloatArray, FloatArray, FloatArray]:
        Xqs = (Xq - self._center) / self._ls
        corr, g = _matern(_sq_dist(Xqs, self._Xs), with_g)
        return Xqs, corr, g

    def predict(self, Xq: ArrayLike) -> tuple[FloatArray, FloatArray]:
        """Posterior mean and variance of the latent ``f + m`` (no noise) at ``Xq``, shape ``(q,)``.

        The variance is floored at `MIN_PREDICTIVE_VARIANCE`.
        """
        mean, var, _, _ = self._posterior(_check_points(Xq, "Xq", self.X.shape[1]), "var")
        return mean, var

    def predict_with_grad(
        self, Xq: ArrayLike
    ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
        """Like `predict`, plus the gradients of mean and variance in ``Xq``, shape ``(q, d)``.

        Where the variance is floored its gradient is zero.
        """
        return self._posterior(_check_points(Xq, "Xq", self.X.shape[1]), "grad")

    def _posterior(
        self, Xq: FloatArray, what: Literal["mean", "var", "grad"]
    ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
        s2 = self.hyperparameters.signal_variance
        Xqs, Kq, g = self._cross(Xq, with_g=what == "grad")
        Kq *= s2
        mean = self.hyperparameters.mean + _mm(Kq, self._alpha[:, None])[:, 0]
        empty = np.empty((0, 0))
        if what == "mean":
            return mean, empty, empty, empty
        V = _solve_lower(self._L, Kq.T)
        raw_var = s2 - np.einsum("ij,ij->j", V, V)
        var = np.maximum(raw_var, MIN_PREDICTIVE_VARIANCE)
        if what == "var":
            return mean, var, empty, empty
        B = _solve_lower(self._L, V, transpose=True)
        # d k(xq, xi) / d xq = -s2 g (xq - xi) / l**2; both gradients are weighted sums of that.
        G = -s2 * g
        Wm = G * self._alpha
        d_mean = (Wm.sum(1)[:, None] * Xqs - _mm(Wm, self._Xs)) / self._ls
        Wv = G * B.T
        d_var = -2.0 * (Wv.sum(1)[:, None] * Xqs - _mm(Wv, self._Xs)) / self._ls
        d_var[raw_var < MIN_PREDICTIVE_VARIANCE] = 0.0
        return mean, var, d_mean, d_var

    def predict_targets(
        self, Xq: ArrayLike, Y: ArrayLike, return_grad: bool = False
    ) -> tuple[FloatArray, FloatArray, FloatArray | None, FloatArray | None]:
        """Posterior means under several target vectors at once, sharing one kernel computation.

        The inputs, hyperparameters and Cholesky factor stay this GP's; only the targets change,
        so the posterior variance is the same for every column (this is how fantasies of running
        jobs are scored cheaply: one GP conditioned on the running inputs, several outcome vectors).

        Args:
            Xq: query points, shape ``(q, d)``.
            Y: targets on the model scale, shape ``(n, m)``: one column per alternative outcome of
                this GP's ``n`` rows.
            return_grad: also return the gradients in ``Xq``.

        Returns:
            ``(means (q, m), var (q,), d_means (m, q, d) or None, d_var (q, d) or None)``.
        """
        Xq = _check_points(Xq, "Xq", self.X.shape[1])
        hp = self.hyperparameters
        Y = np.asarray(Y, dtype=float).reshape(len(self.X), -1)
        # An acquisition optimiser asks with the same targets many times: solve for them once.
        key = Y.tobytes()
        if self._target_weights is None or self._target_weights[0] != key:
            weights = scipy.linalg.cho_solve((self._L, True), Y - hp.mean, check_finite=False)
            self._target_weights = (key, weights)
        alphas = self._target_weights[1]
        s2 = hp.signal_variance
        Xqs, Kq, g = self._cross(Xq, with_g=return_grad)
        Kq *= s2
        means = hp.mean + _mm(Kq, alphas)
        V = _solve_lower(self._L, Kq.T)
        raw_var = s2 - np.einsum("ij,ij->j", V, V)
        var = np.maximum(raw_var, MIN_PREDICTIVE_VARIANCE)
        if not return_grad:
            return means, var, None, None
        B = _solve_lower(self._L, V, transpose=True)
        G = -s2 * g
        d_means = np.empty((alphas.shape[1], len(Xq), Xq.shape[1]))
        for j in range(alphas.shape[1]):
            Wm = G * alphas[:, j]
            d_means[j] = (Wm.sum(1)[:, None] * Xqs - _mm(Wm, self._Xs)) / self._ls
        Wv = G * B.T
        d_var = -2.0 * (Wv.sum(1)[:, None] * Xqs - _mm(Wv, self._Xs)) / self._ls
        d_var[raw_var < MIN_PREDICTIVE_VARIANCE] = 0.0
        return means, var, d_means, d_var

    def condition_on(self, X_new: ArrayLike, y_new: ArrayLike | None = None) -> GaussianProcess:
        """A new GP that also observed ``X_new`` (e.g. running jobs), hyperparameters held fixed.

        Args:
            X_new: Extra inputs, shape ``(p, d)``.
            y_new: Their values on the model scale; by default the current posterior mean
                ("kriging believer": the mean is unchanged, the variance shrinks near ``X_new``).
                Pass posterior samples for sampled fantasies.

        Returns:
            The conditioned GP (a rank-``p`` update of the Cholesky factor, ``O(n**2 p)``). Its
            `incumbent` still ranges over the real observations only.
        """
        X_new = _check_points(X_new, "X_new", self.X.shape[1])
        if y_new is None:
            y_new = self.predict(X_new)[0]
        y_new = np.asarray(y_new, dtype=float).reshape(-1)
        if len(y_new) != len(X_new) or not np.all(np.isfinite(y_new)):
            raise ValidationError(
                f"The 'y_new' parameter must hold {len(X_new)} finite values, one per row of "
                f"'X_new'. Got {describe_value(y_new)} instead."
            )
        hp = self.hyperparameters
        _, corr, _ = self._cross(X_new, with_g=False)
        Knp = hp.signal_variance * corr.T
        Xns = (X_new - self._center) / self._ls
        r2 = _sq_dist(Xns, Xns)
        np.fill_diagonal(r2, 0.0)
        Kpp = hp.signal_variance * _matern(r2, with_g=False)[0]
        Kpp.flat[:: len(X_new) + 1] += hp.noise_variance + self._jitter
        B = scipy.linalg.solve_triangular(self._L, Knp, lower=True, check_finite=False)
        C, extra = _cholesky(Kpp - _mm(B.T, B))
        n, p = len(self.X), len(X_new)
        L = np.zeros((n + p, n + p))
        L[:n, :n] = self._L
        L[n:, :n] = B.T
        L[n:, n:] = C
        return GaussianProcess(
            np.vstack([self.X, X_new]),
            np.concatenate([self.y, y_new]),
            hp,
            self.transform,
            n_observed=self.n_observed,
            _factor=(L, self._jitter + extra),
        )

    def improvement_in_original_units(self, improvement: float) -> float:
        """Convert an improvement below `incumbent` on the model scale to objective units.

        Exact for the standardisation (a factor); through the power transform it is the drop in
        objective value from the incumbent to ``incumbent - improvement``.
        """
        best = self.incumbent
        values = self.transform.inverse(np.array([best, best - max(improvement, 0.0)]))
        return float(values[0] - values[1])


def tie_tolerance(value: float) -> float:
    """Differences from ``value`` this small are ties (below its rounding, or subnormal): relative,
    so an objective in tiny units is modelled like any other."""
    return max(1e-12 * abs(value), 1e-300)


def capped_targets(y: ArrayLike) -> FloatArray:
    """Objective values with finite ones beyond the model's range capped at +-1e300.

    A diverged training can report a huge but finite loss (1e305); `fit_gp` refuses values past
    1e300 (differences between them could overflow), so strategies cap them first: the order of the
    values is kept, except that those past the cap tie. Infinite and NaN values must not get this
    far.
    """
    return np.clip(np.asarray(y, dtype=float), -_MAX_ABS_Y, _MAX_ABS_Y)


def fit_gp(
    X: ArrayLike,
    y: ArrayLike,
    rng: np.random.Generator,
    *,
    warm_start: GPHyperparameters | None = None,
    n_restarts: int | None = None,
    maxiter: int | None = None,
    output_transform: Literal["auto", "standardize", "power"] = "auto",
) -> GaussianProcess:
    """Fit the hyperparameters (maximum a posteriori) and condition on the data.

    Args:
        X: Observed points of the unit cube, shape ``(n, d)`` with ``n >= 1``, finite.
        y: Objective values to minimise, shape ``(n,)``, finite.
        rng: Source of the random restarts (the global RNG is never used).
        warm_start: Hyperparameters of the previous fit (same ``d``), used as the first start;
            otherwise the first start is the prior's centre.
        n_restarts: Extra L-BFGS-B starts drawn from the prior. Default: 0 with a warm start
            (a refit after one more observation rarely moves far), otherwise 2 for ``n <= 200``
            and 1 above. A strategy that always warm-starts should pass 2 now and then (say every
            10th fit) to escape a poor local optimum.
        maxiter: L-BFGS-B iterations per start. Default: 200 for ``n <= 200``, else 30 (one
            evaluation costs ~20 ms at n = 500). ``0`` skips the optimisation and reuses
            ``warm_start`` as is: the cheapest refit when ``n`` is large.
        output_transform: See `OutputTransform`.

    Returns:
        The fitted GP. Deterministic for a given ``rng`` state and inputs.

    Raises:
        ValidationError: On shapes that do not match, an empty ``X``, NaN/inf values, negative
            budgets, or ``maxiter=0`` without a ``warm_start``.
    """
    X = _check_points(X, "X")
    y_arr = np.asarray(y, dtype=float)
    n, d = X.shape
    if n == 0 or y_arr.shape != (n,):
        raise ValidationError(
            f"The 'y' parameter must be a 1-D array with one value per row of 'X' (n >= 1). "
            f"Got shape {y_arr.shape} for X of shape {X.shape} instead."
        )
    bad = ~(np.abs(y_arr) <= _MAX_ABS_Y)
    if bad.any():
        raise ValidationError(
            f"The 'y' parameter must contain only finite values of magnitude at most "
            f"{_MAX_ABS_Y:g}. Got {y_arr[bad][:5].tolist()} at positions "
            f"{np.flatnonzero(bad)[:5].tolist()}; failed jobs must not be told to the model."
        )
    if warm_start is not None and warm_start.lengthscales.shape != (d,):
        raise ValidationError(
            f"The 'warm_start' parameter must have {d} length scales, one per column of 'X'. "
            f"Got {warm_start.lengthscales.shape[0]} instead; drop the warm start."
        )
    if n_restarts is None:
        n_restarts = 0 if warm_start is not None else (2 if n <= 200 else 1)
    if maxiter is None:
        maxiter = 200 if n <= 200 else 30
    if n_restarts < 0 or maxiter < 0 or (maxiter == 0 and warm_start is None):
        raise ValidationError(
            "The 'n_restarts' and 'maxiter' parameters of fit_gp must be >= 0, and maxiter=0 "
            f"needs a warm_start. Got n_restarts={n_restarts}, maxiter={maxiter}, warm_start="
            f"{'given' if warm_start is not None else 'None'} instead."
        )
    transform = OutputTransform(y_arr, output_transform)
    yt = transform.transform(y_arr)
    if maxiter == 0 and warm_start is not None:
        return GaussianProcess(X, yt, warm_start, transform)

    bounds = [_LOG_LENGTHSCALE_BOUNDS] * d + [_LOG_SIGNAL_BOUNDS, _LOG_NOISE_BOUNDS, _MEAN_BOUNDS]
    lo, hi = np.array(bounds).T
    centre = np.concatenate(
        [np.full(d, _lengthscale_prior_location(d)), [0.0, math.log(1e-2), 0.0]]
    )
    spread = np.concatenate(
        [np.full(d, _LENGTHSCALE_PRIOR_SCALE), [_SIGNAL_PRIOR[1], _NOISE_PRIOR[1], 0.5]]
    )
    starts = [warm_start.to_vector() if warm_start is not None else centre]
    starts += [centre + spread * rng.standard_normal(d + 3) for _ in range(n_restarts)]

    def objective(theta: FloatArray) -> tuple[float, FloatArray]:
        lml, g_lml = log_marginal_likelihood(X, yt, theta)
        lp, g_lp = log_prior(theta, d)
        value, grad = -(lml + lp), -(g_lml + g_lp)
        if not (math.isfinite(value) and np.all(np.isfinite(grad))):
            return 1e25, np.zeros_like(theta)
        return value, grad

    best_theta, best_value = np.clip(starts[0], lo, hi), math.inf
    with single_threaded_blas():
        for theta0 in starts:
            res = scipy.optimize.minimize(
                objective,
                np.clip(theta0, lo, hi),
                jac=True,
                method="L-BFGS-B",
                bounds=bounds,
                # Hyperparameters need not be precise: 1e-6 relative on a log posterior of size ~n
                # is far below what changes a suggestion, and halves a warm start's iterations.
                options={"maxiter": maxiter, "ftol": 1e-6, "gtol": 1e-3},
            )
            if res.fun < best_value:
                best_theta, best_value = res.x, float(res.fun)
        hyper = GPHyperparameters.from_vector(np.clip(best_theta, lo, hi))
        return GaussianProcess(X, yt, hyper, transform)
