"""Statistical evidence for headline metrics: binomial intervals, exact McNemar, paired bootstrap.

Pure numpy/scipy (no torch/openvino). Everything is vectorised over leading axes.

* **Binomial intervals** of an accuracy ``k / n``: :func:`clopper_pearson` (exact, conservative:
  ``lo = Beta⁻¹(α/2; k, n−k+1)``, ``hi = Beta⁻¹(1−α/2; k+1, n−k)``, ``lo = 0`` if ``k = 0``, ``hi = 1``
  if ``k = n``; the interval of ``scipy.stats.binomtest(k, n).proportion_ci(method="exact")``) and
  :func:`wilson` (score interval ``(p̂ + z²/2n ± z·sqrt(p̂(1−p̂)/n + z²/4n²)) / (1 + z²/n)``).
* **Exact McNemar** (:func:`mcnemar`, :func:`mcnemar_from_counts`): with ``b`` = samples model A gets
  right and B wrong and ``c`` the reverse, under H0 ``b ~ Binomial(b + c, 1/2)``. ``"greater"`` ("A beats
  B") is ``P(X >= b)``, ``"less"`` is ``P(X <= b)``, ``"two-sided"`` is ``min(1, 2·min(P(X <= b),
  P(X >= b)))`` (= ``scipy.stats.binomtest(b, b + c, 0.5)`` for each alternative). ``b + c = 0`` gives 1.
* **Paired bootstrap over images**: resample the N images with replacement (the *same* resample for
  every model in a statistic), recompute the statistic exactly as defined, B times (default 2 000,
  seeded). Resample ``b`` draws ``idx_b = rng.integers(0, N, N)`` from ``numpy.random.default_rng(seed)``,
  in order — the draws ``scipy.stats.bootstrap(..., paired=True, rng=default_rng(seed))`` makes, so
  :func:`paired_bootstrap` (scipy, any statistic) and :func:`bootstrap_sums` (the vectorised path) give
  the same resamples and intervals. Interval methods: ``percentile`` (quantiles ``α/2, 1 − α/2`` of the
  bootstrap distribution, linear interpolation) and ``bca`` (bias-corrected and accelerated, Efron &
  Tibshirani 1993 §14.3: ``z0 = Φ⁻¹(mean(1[θ*<θ̂] + 1[θ*<=θ̂]) / 2)`` (ties up to 1e-12 relative count as
  ties: accuracies tie with θ̂ exactly, and one value computed two ways may differ in the last bit),
  jackknife acceleration
  ``a = Σ d³ / (6 (Σ d²)^{3/2})`` with ``d = θ̄_(·) − θ_(i)``, quantiles ``Φ(z0 + (z0 + z)/(1 − a(z0 + z)))``
  for ``z = ±z_{1−α/2}`` — scipy's formulas, re-implemented here because scipy's BCa loops over the N
  jackknife samples one statistic call at a time).

The vectorised path (:func:`bootstrap_sums`) is for statistics that are functions of *weighted sums*
of per-sample values ``X (R, N)`` (correct-counts of members and of every subset's consensus, pairwise
both-correct / different-prediction counts): a resample is a multinomial count vector ``w_b (N,)`` and
its sums are ``X @ w_b``. All B count vectors are built as one ``W (B, N)`` matrix (float32; counts are
small integers and every partial sum of 0/1 values times counts is an integer below 2²⁴ for N < 16.7 M,
so float32 is exact) and applied as ONE matrix product ``X @ Wᵀ -> (R, B)`` — no Python loop over
resamples. The jackknife (for BCa) of such statistics is closed-form: leave-one-out sums are
``total − X[:, i]``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import special, stats

from ovdiv.metrics._checks import _fail

__all__ = [
    "BINOMIAL_METHODS",
    "BOOTSTRAP_METHODS",
    "CI_METHOD_NAMES",
    "Interval",
    "clopper_pearson",
    "wilson",
    "binomial_interval",
    "mcnemar_from_counts",
    "mcnemar",
    "bootstrap_indices",
    "bootstrap_weights",
    "bootstrap_sums",
    "percentile_interval",
    "bca_interval",
    "acceleration_from_moments",
    "bootstrap_interval",
    "paired_bootstrap",
    "paired_difference",
]

F64 = npt.NDArray[np.float64]

BINOMIAL_METHODS: tuple[str, ...] = ("clopper-pearson", "wilson")
"""Binomial interval methods."""
BOOTSTRAP_METHODS: tuple[str, ...] = ("percentile", "bca")
"""Bootstrap interval methods."""
CI_METHOD_NAMES: dict[str, str] = {"percentile": "bootstrap-percentile", "bca": "bootstrap-bca"}
"""Bootstrap method -> the ``ci_method`` recorded in results rows."""

_INDEX_BLOCK = 1 << 22  # resample indices drawn per block (bounds the int64 temporaries to ~32 MB)


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided confidence interval (arrays or floats, same shape).

    Attributes:
        estimate: The statistic on the data.
        low: Lower bound.
        high: Upper bound.
        level: Confidence level (e.g. 0.95).
        method: ``clopper-pearson``, ``wilson``, ``bootstrap-percentile`` or ``bootstrap-bca``.
    """

    estimate: Any
    low: Any
    high: Any
    level: float
    method: str


def _alpha(level: float) -> float:
    lv = float(level)
    if not 0.0 < lv < 1.0:
        raise _fail("level", "a confidence level in (0, 1), e.g. 0.95", repr(level))
    return 1.0 - lv


def _counts(successes: npt.ArrayLike, n: npt.ArrayLike) -> tuple[F64, F64]:
    k = np.asarray(successes, dtype=np.float64)
    nn = np.asarray(n, dtype=np.float64)
    k, nn = np.broadcast_arrays(k, nn)
    if np.any(nn < 0) or np.any(k < 0) or np.any(k > nn):
        raise _fail("successes", "counts with 0 <= successes <= n", "values outside [0, n]")
    return k, nn


# ---------------------------------------------------------------------------------------- binomial
def clopper_pearson(successes: npt.ArrayLike, n: npt.ArrayLike, level: float = 0.95) -> tuple[F64, F64]:
    """Exact (Clopper-Pearson) interval of a binomial proportion, vectorised.

    Args:
        successes: ``k`` (any shape).
        n: Trials (broadcast with ``k``); ``n = 0`` gives NaN bounds.
        level: Confidence level ``1 − α``.

    Returns:
        ``(low, high)`` arrays: ``Beta⁻¹(α/2; k, n−k+1)`` (0 when k = 0) and ``Beta⁻¹(1−α/2; k+1, n−k)``
        (1 when k = n).
    """
    a = _alpha(level)
    k, nn = _counts(successes, n)
    with np.errstate(invalid="ignore", divide="ignore"):
        lo = np.where(k > 0, stats.beta.ppf(a / 2, np.maximum(k, 1e-300), nn - k + 1), 0.0)
        hi = np.where(k < nn, stats.beta.ppf(1 - a / 2, k + 1, np.maximum(nn - k, 1e-300)), 1.0)
    lo = np.where(nn > 0, lo, np.nan)
    hi = np.where(nn > 0, hi, np.nan)
    return np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)


def wilson(successes: npt.ArrayLike, n: npt.ArrayLike, level: float = 0.95) -> tuple[F64, F64]:
    """Wilson score interval of a binomial proportion, vectorised (formula in the module docstring).

    Args:
        successes: ``k``.
        n: Trials (``n = 0`` gives NaN bounds).
        level: Confidence level.

    Returns:
        ``(low, high)`` arrays, clipped to [0, 1].
    """
    a = _alpha(level)
    k, nn = _counts(successes, n)
    z = float(special.ndtri(1 - a / 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / nn
        den = 1 + z * z / nn
        centre = (p + z * z / (2 * nn)) / den
        half = z * np.sqrt(p * (1 - p) / nn + z * z / (4 * nn * nn)) / den
    return np.clip(centre - half, 0.0, 1.0), np.clip(centre + half, 0.0, 1.0)


def binomial_interval(
    successes: npt.ArrayLike, n: npt.ArrayLike, level: float = 0.95, method: str = "clopper-pearson"
) -> tuple[F64, F64]:
    """:func:`clopper_pearson` or :func:`wilson` by name (``method`` in :data:`BINOMIAL_METHODS`)."""
    if method == "clopper-pearson":
        return clopper_pearson(successes, n, level)
    if method == "wilson":
        return wilson(successes, n, level)
    raise _fail("method", f"one of {list(BINOMIAL_METHODS)}", repr(method))


# ---------------------------------------------------------------------------------------- McNemar
def mcnemar_from_counts(b: npt.ArrayLike, c: npt.ArrayLike, alternative: str = "two-sided") -> F64:
    """Exact McNemar p-values from discordant counts, vectorised.

    Args:
        b: Samples model A gets right and model B wrong.
        c: Samples model B gets right and model A wrong.
        alternative: ``"greater"`` (H1: A beats B), ``"less"`` or ``"two-sided"``.

    Returns:
        p-values (module docstring); 1 where ``b + c = 0``.
    """
    bb, cc = np.broadcast_arrays(np.asarray(b, dtype=np.float64), np.asarray(c, dtype=np.float64))
    n = bb + cc
    upper = stats.binom.sf(bb - 1, n, 0.5)  # P(X >= b)
    lower = stats.binom.cdf(bb, n, 0.5)  # P(X <= b)
    if alternative == "greater":
        p = upper
    elif alternative == "less":
        p = lower
    elif alternative == "two-sided":
        p = np.minimum(1.0, 2.0 * np.minimum(upper, lower))
    else:
        raise _fail("alternative", "'greater', 'less' or 'two-sided'", repr(alternative))
    return np.where(n > 0, p, 1.0).astype(np.float64)


def mcnemar(a_correct: npt.ArrayLike, b_correct: npt.ArrayLike, alternative: str = "two-sided") -> tuple[F64, F64, F64]:
    """Exact McNemar test of paired correctness ``(..., N)`` of model A vs model B on the same samples.

    Returns:
        ``(b, c, p_value)``: discordant counts (A right & B wrong, A wrong & B right) and the p-value.
    """
    a = np.asarray(a_correct, dtype=bool)
    bm = np.asarray(b_correct, dtype=bool)
    if a.shape != bm.shape:
        raise _fail("b_correct", f"the shape of a_correct {a.shape}", str(bm.shape))
    b = (a & ~bm).sum(axis=-1).astype(np.float64)
    c = (~a & bm).sum(axis=-1).astype(np.float64)
    return b, c, mcnemar_from_counts(b, c, alternative)


# ---------------------------------------------------------------------------------------- resampling
def _check_boot(n: int, n_resamples: int) -> tuple[int, int]:
    n, b = int(n), int(n_resamples)
    if n < 1:
        raise _fail("n", "at least one sample", str(n))
    if b < 1:
        raise _fail("n_resamples", "at least 1 resample", str(b))
    return n, b


def bootstrap_indices(n: int, n_resamples: int, seed: int = 0) -> Iterator[npt.NDArray[np.int64]]:
    """Resample indices in blocks of rows ``(b, n)``: row ``j`` overall is ``idx_j`` of resample ``j``.

    The blocks concatenate to ``default_rng(seed).integers(0, n, (n_resamples, n))`` — the indices
    ``scipy.stats.bootstrap(paired=True, rng=default_rng(seed))`` draws.
    """
    n, b = _check_boot(n, n_resamples)
    rng = np.random.default_rng(seed)
    step = max(1, _INDEX_BLOCK // n)
    for lo in range(0, b, step):
        yield rng.integers(0, n, (min(step, b - lo), n))


def bootstrap_weights(n: int, n_resamples: int, seed: int = 0) -> npt.NDArray[np.float32]:
    """Multinomial count matrix ``W (B, n)`` float32: ``W[j, i]`` = times image i is in resample j."""
    n, b = _check_boot(n, n_resamples)
    w = np.empty((b, n), dtype=np.float32)
    row = 0
    for idx in bootstrap_indices(n, b, seed):
        r = idx.shape[0]
        flat = (idx + (np.arange(r, dtype=np.int64) * n)[:, None]).ravel()
        w[row : row + r] = np.bincount(flat, minlength=r * n).reshape(r, n)
        row += r
    return w


def bootstrap_sums(values: npt.ArrayLike, n_resamples: int, seed: int = 0) -> F64:
    """Resampled sums ``X @ Wᵀ`` ``(R, B)`` of per-sample values ``X (R, N)`` — one matrix product.

    Args:
        values: ``(R, N)`` per-sample values (0/1 indicators here; any float works, float32 precision).
        n_resamples: B.
        seed: Resampling seed.

    Returns:
        ``(R, B)`` float64: column j is ``Σ_i W[j, i] X[:, i]``.
    """
    x = np.asarray(values, dtype=np.float32)
    if x.ndim != 2:
        raise _fail("values", "an (R, N) array", f"shape {x.shape}")
    w = bootstrap_weights(x.shape[1], n_resamples, seed)
    out: F64 = np.matmul(x, w.T).astype(np.float64)
    return out


# ---------------------------------------------------------------------------------------- intervals
def percentile_interval(boot: npt.ArrayLike, level: float = 0.95) -> tuple[F64, F64]:
    """Percentile interval: quantiles ``α/2`` and ``1 − α/2`` of ``boot (..., B)`` (linear).

    NaN where any resample's statistic is NaN (an undefined statistic gives no interval).
    """
    a = _alpha(level)
    t = np.asarray(boot, dtype=np.float64)
    q = np.quantile(t, [a / 2, 1 - a / 2], axis=-1)
    return q[0], q[1]


def _quantile_last(t: F64, q: F64) -> F64:
    """Per-entry quantile ``q (...)`` of ``t (..., B)`` along the last axis (numpy's ``linear``; NaN if any NaN)."""
    s = np.sort(t, axis=-1)
    pos = np.clip(q, 0.0, 1.0) * (t.shape[-1] - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, t.shape[-1] - 1)
    a = np.take_along_axis(s, lo[..., None], axis=-1)[..., 0]
    b = np.take_along_axis(s, hi[..., None], axis=-1)[..., 0]
    out: F64 = a + (b - a) * (pos - lo)
    return np.where(np.isnan(t).any(axis=-1), np.nan, out)


def acceleration_from_moments(count: int, s1: F64, s2: F64, s3: F64) -> F64:
    """BCa acceleration ``Σ d³ / (6 (Σ d²)^{3/2})`` from streamed power sums of ``u_i = θ_(i) − c``.

    ``c`` is any centre close to the jackknife values (the estimate θ̂): with ``m = Σu / n``,
    ``Σ d² = Σu² − n m²`` and ``Σ d³ = −(Σu³ − 3 m Σu² + 2 n m³)`` (``d = θ̄ − θ_(i)``), so N jackknife
    values never need to be held at once.
    """
    m = s1 / count
    d2 = s2 - count * m * m
    d3 = -(s3 - 3 * m * s2 + 2 * count * m**3)
    with np.errstate(invalid="ignore", divide="ignore"):
        out: F64 = d3 / (6.0 * np.maximum(d2, 0.0) ** 1.5)
    return out


def bca_interval(
    boot: npt.ArrayLike,
    estimate: npt.ArrayLike,
    jackknife: npt.ArrayLike | None = None,
    level: float = 0.95,
    *,
    acceleration: npt.ArrayLike | None = None,
) -> tuple[F64, F64]:
    """BCa interval from bootstrap values ``(..., B)``, the estimate ``(...)`` and jackknife values ``(..., N)``.

    Formulas in the module docstring; ``jackknife`` holds the leave-one-out statistics (or pass the
    ``acceleration`` computed from them, e.g. by :func:`acceleration_from_moments`).

    NaN where the interval is undefined (NaN statistics, degenerate distribution).
    """
    a_ = _alpha(level)
    t = np.asarray(boot, dtype=np.float64)
    th = np.asarray(estimate, dtype=np.float64)[..., None]
    if acceleration is None:
        if jackknife is None:
            raise _fail("jackknife", "jackknife values or the acceleration", "neither")
        jk = np.asarray(jackknife, dtype=np.float64)
        d = jk.mean(axis=-1, keepdims=True) - jk
        with np.errstate(invalid="ignore", divide="ignore"):
            acc = (d**3).sum(axis=-1) / (6.0 * ((d**2).sum(axis=-1)) ** 1.5)
    else:
        acc = np.asarray(acceleration, dtype=np.float64)
    nb = t.shape[-1]
    tol = 1e-12 * np.maximum(1.0, np.abs(th))  # ties with θ̂ up to rounding (discrete statistics tie often)
    pct = ((t < th - tol).sum(axis=-1) + (t <= th + tol).sum(axis=-1)) / (2.0 * nb)
    with np.errstate(invalid="ignore", divide="ignore"):
        z0 = special.ndtri(pct)
        z = float(special.ndtri(a_ / 2))
        n1, n2 = z0 + z, z0 - z
        a1 = special.ndtr(z0 + n1 / (1 - acc * n1))
        a2 = special.ndtr(z0 + n2 / (1 - acc * n2))
    a1 = np.asarray(a1, dtype=np.float64)
    a2 = np.asarray(a2, dtype=np.float64)
    ok = np.isfinite(a1) & np.isfinite(a2)
    lo = _quantile_last(t, np.where(ok, a1, 0.5))
    hi = _quantile_last(t, np.where(ok, a2, 0.5))
    return np.where(ok, lo, np.nan), np.where(ok, hi, np.nan)


def bootstrap_interval(
    boot: npt.ArrayLike,
    level: float = 0.95,
    method: str = "percentile",
    *,
    estimate: npt.ArrayLike | None = None,
    jackknife: npt.ArrayLike | None = None,
    acceleration: npt.ArrayLike | None = None,
) -> tuple[F64, F64]:
    """:func:`percentile_interval` or :func:`bca_interval` (needs ``estimate`` and ``jackknife``/``acceleration``)."""
    if method == "percentile":
        return percentile_interval(boot, level)
    if method == "bca":
        if estimate is None or (jackknife is None and acceleration is None):
            raise _fail("jackknife", "the estimate and jackknife values for a BCa interval", "None")
        return bca_interval(boot, estimate, jackknife, level, acceleration=acceleration)
    raise _fail("method", f"one of {list(BOOTSTRAP_METHODS)}", repr(method))


def paired_bootstrap(
    data: Sequence[npt.ArrayLike],
    statistic: Callable[..., Any],
    *,
    n_resamples: int = 2000,
    level: float = 0.95,
    method: str = "percentile",
    seed: int = 0,
) -> Interval:
    """Paired bootstrap interval of any statistic of per-image arrays (``scipy.stats.bootstrap``).

    Every array in ``data`` has the images on its last axis and is resampled with the same indices
    (``paired=True``), e.g. ``data = (ens_correct, member_correct)`` and ``statistic = lambda e, m, axis:
    e.mean(axis) − m.mean(axis)`` for Acc_ens − Acc_member, or two ensembles' correctness for their
    difference.

    Args:
        data: Arrays ``(..., N)``.
        statistic: ``statistic(*arrays, axis=-1)`` vectorised over leading axes.
        n_resamples: B.
        level: Confidence level.
        method: ``percentile`` or ``bca``.
        seed: Resampling seed (same resamples as :func:`bootstrap_weights` with this seed).

    Returns:
        An :class:`Interval`.
    """
    if method not in BOOTSTRAP_METHODS:
        raise _fail("method", f"one of {list(BOOTSTRAP_METHODS)}", repr(method))
    arrays = [np.asarray(d) for d in data]
    # scipy >= 1.15 names the generator ``rng``; older versions ``random_state`` (same Generator draws)
    key = "rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state"
    res = stats.bootstrap(
        arrays,
        statistic,
        n_resamples=int(n_resamples),
        confidence_level=float(level),
        method="BCa" if method == "bca" else "percentile",
        paired=True,
        vectorized=True,
        **{key: np.random.default_rng(seed)},
    )
    est = statistic(*arrays, axis=-1)
    ci = res.confidence_interval
    return Interval(est, ci.low, ci.high, float(level), CI_METHOD_NAMES[method])


def paired_difference(
    a_correct: npt.ArrayLike,
    b_correct: npt.ArrayLike,
    *,
    n_resamples: int = 2000,
    level: float = 0.95,
    method: str = "percentile",
    seed: int = 0,
) -> tuple[Interval, float]:
    """Accuracy difference ``Acc_A − Acc_B`` of two models on the same N images, with evidence.

    Use it for Acc_ens − Acc_member or the difference between two ensembles. The interval is the
    paired bootstrap (same resamples for both models; vectorised weights, closed-form jackknife for
    BCa); the p-value is the exact two-sided McNemar test.

    Args:
        a_correct: ``(N,)`` bool per-image correctness of model A.
        b_correct: ``(N,)`` bool of model B.
        n_resamples: B.
        level: Confidence level.
        method: ``percentile`` or ``bca``.
        seed: Resampling seed.

    Returns:
        ``(Interval, p_value)``.
    """
    a = np.asarray(a_correct, dtype=bool)
    b = np.asarray(b_correct, dtype=bool)
    if a.ndim != 1 or a.shape != b.shape or a.size == 0:
        raise _fail("b_correct", "two (N,) correctness arrays of the same N >= 1", f"{a.shape} and {b.shape}")
    n = a.size
    x = np.stack([a, b]).astype(np.float64)
    est = float(x[0].mean() - x[1].mean())
    sums = bootstrap_sums(x, n_resamples, seed)
    boot = (sums[0] - sums[1]) / n
    jack = None
    if method == "bca":
        loo = x.sum(axis=1)[:, None] - x
        jack = (loo[0] - loo[1]) / max(n - 1, 1)
    lo, hi = bootstrap_interval(boot, level, method, estimate=est, jackknife=jack)
    _, _, p = mcnemar(a, b, "two-sided")
    return Interval(est, float(lo), float(hi), float(level), CI_METHOD_NAMES[method]), float(p)
