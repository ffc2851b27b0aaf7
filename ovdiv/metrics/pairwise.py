"""Prediction diversity between ensemble members (Kuncheva & Whitaker 2003; the paper's Eq. 4-5).

Shapes: ``correct (M, N)`` bool (``c_i[n] = 1[ŷ_i[n] = y[n]]``), ``preds (M, N)`` int,
``probs (M, N, C)``, ``logits (M, N, C)``.

Pairwise metrics return ``(M, M)`` float64 matrices built from the 2x2 table of ``(c_i, c_k)``:
``N11`` both right, ``N10`` only i right, ``N01`` only k right, ``N00`` both wrong (``N`` samples):

* disagreement ``(N01 + N10) / N`` (diagonal 0);
* Q-statistic ``(N11 N00 − N01 N10) / (N11 N00 + N01 N10)`` (diagonal 1 by convention);
* correlation ``ρ = (N11 N00 − N01 N10) / sqrt((N11+N10)(N01+N00)(N11+N01)(N10+N00))`` (diagonal 1);
* double fault ``N00 / N`` (diagonal: the member's error rate, which is what the formula gives);
* PDR ``mean_n 1[ŷ_i ≠ ŷ_k]`` (label level, diagonal 0);
* KL ``K[i, k] = mean_n Σ_c p_i log(p_i / p_k)`` (asymmetric, diagonal 0).

Undefined values: a zero denominator of Q or ρ (e.g. a member that is always right) gives NaN and a
:class:`MetricWarning`. The ensemble value of a pairwise metric is :func:`pair_mean`, the mean over
unordered pairs ``i < k`` of ``(A[i, k] + A[k, i]) / 2`` (for the asymmetric KL this is the mean over
ordered pairs); undefined pairs are skipped, and it is NaN when no pair is defined (``M = 1``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from ovdiv.metrics._checks import (
    _check_bool,
    _check_float,
    _check_int,
    _check_nonempty,
    _check_positive_int,
    _check_probs,
    _fail,
    _warn,
)
from ovdiv.metrics.consensus import logsumexp

__all__ = [
    "correctness",
    "correctness_tables",
    "disagreement",
    "q_statistic",
    "correlation",
    "double_fault",
    "pdr",
    "kl_divergence",
    "kl_divergence_from_logits",
    "pair_mean",
    "shannon_equitability",
    "shannon_equitability_per_sample",
    "Equitability",
    "disagreement_from_tables",
    "q_statistic_from_tables",
    "correlation_from_tables",
    "double_fault_from_tables",
]

F64 = npt.NDArray[np.float64]


def correctness(preds: npt.ArrayLike, labels: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    """``c_i[n] = 1[preds[i, n] = labels[n]]`` as a bool ``(M, N)`` array."""
    p = _check_int(preds, "preds", 2, what="(M, N)")
    y = _check_int(labels, "labels", 1, shape={0: p.shape[1]}, what="(N,)")
    out: npt.NDArray[np.bool_] = p == y[None, :]
    return out


def _tables_update(correct: npt.NDArray[np.bool_]) -> F64:
    """``(M, M, 4)`` float64 counts ``[N11, N10, N01, N00]`` of the pair ``(c_i, c_k)``."""
    c = correct.astype(np.float64)
    w = 1.0 - c
    n11 = c @ c.T
    n10 = c @ w.T
    return np.stack([n11, n10, n10.T, w @ w.T], axis=-1)


def correctness_tables(correct: npt.ArrayLike) -> F64:
    """The 2x2 tables of every pair: ``(M, M, 4)`` counts ``[N11, N10, N01, N00]`` (they add over batches).

    Args:
        correct: ``(M, N)`` bool correctness.
    """
    return _tables_update(_check_bool(correct, "correct", 2, what="(M, N)"))


def _check_tables(tables: Any) -> F64:
    t: F64 = np.asarray(_check_float(tables, "tables", 3, what="(M, M, 4)"), dtype=np.float64)
    if t.shape[0] != t.shape[1] or t.shape[2] != 4:
        raise _fail("tables", "a (M, M, 4) array", f"shape {t.shape}")
    return t


def _safe_div(num: F64, den: F64, name: str) -> F64:
    bad = den == 0
    with np.errstate(invalid="ignore", divide="ignore"):
        out: F64 = np.where(bad, np.nan, num / np.where(bad, 1.0, den))
    offdiag = bad & ~np.eye(bad.shape[0], dtype=bool)
    if offdiag.any():
        _warn(f"{name} is undefined (zero denominator) for {int(offdiag.sum()) // 2} member pair(s); NaN returned")
    return out


def disagreement_from_tables(tables: npt.ArrayLike) -> F64:
    """Disagreement ``(N01 + N10) / N`` from :func:`correctness_tables`."""
    t = _check_tables(tables)
    n = t.sum(axis=-1)
    out: F64 = (t[..., 1] + t[..., 2]) / np.where(n == 0, np.nan, n)
    return out


def q_statistic_from_tables(tables: npt.ArrayLike) -> F64:
    """Yule's Q from :func:`correctness_tables` (NaN + warning where the denominator is 0; diagonal 1)."""
    t = _check_tables(tables)
    n11, n10, n01, n00 = (t[..., j] for j in range(4))
    out = _safe_div(n11 * n00 - n01 * n10, n11 * n00 + n01 * n10, "Q-statistic")
    np.fill_diagonal(out, 1.0)
    return out


def correlation_from_tables(tables: npt.ArrayLike) -> F64:
    """Correlation ρ from :func:`correctness_tables` (NaN + warning where the denominator is 0; diagonal 1)."""
    t = _check_tables(tables)
    n11, n10, n01, n00 = (t[..., j] for j in range(4))
    den = np.sqrt((n11 + n10) * (n01 + n00) * (n11 + n01) * (n10 + n00))
    out = _safe_div(n11 * n00 - n01 * n10, den, "Correlation")
    np.fill_diagonal(out, 1.0)
    return out


def double_fault_from_tables(tables: npt.ArrayLike) -> F64:
    """Double fault ``N00 / N`` from :func:`correctness_tables`."""
    t = _check_tables(tables)
    n = t.sum(axis=-1)
    out: F64 = t[..., 3] / np.where(n == 0, np.nan, n)
    return out


def _tables_from_correct(correct: npt.ArrayLike) -> F64:
    c = _check_bool(correct, "correct", 2, what="(M, N)")
    _check_nonempty(c.shape[1], "correct")
    return _tables_update(c)


def disagreement(correct: npt.ArrayLike) -> F64:
    """Pairwise disagreement ``(N01 + N10) / N`` (paper Eq. 4), ``(M, M)``.

    Args:
        correct: ``(M, N)`` bool, member i right on sample n.
    """
    return disagreement_from_tables(_tables_from_correct(correct))


def q_statistic(correct: npt.ArrayLike) -> F64:
    """Pairwise Q-statistic ``(N11 N00 − N01 N10) / (N11 N00 + N01 N10)``, ``(M, M)``.

    A zero denominator (e.g. one member always right, or never both right and never both wrong) gives
    NaN with a :class:`MetricWarning`; the diagonal is 1.

    Args:
        correct: ``(M, N)`` bool.
    """
    return q_statistic_from_tables(_tables_from_correct(correct))


def correlation(correct: npt.ArrayLike) -> F64:
    """Pairwise correlation coefficient ρ of the correctness vectors, ``(M, M)`` (NaN if undefined).

    Args:
        correct: ``(M, N)`` bool.
    """
    return correlation_from_tables(_tables_from_correct(correct))


def double_fault(correct: npt.ArrayLike) -> F64:
    """Pairwise double fault ``N00 / N``, ``(M, M)``.

    Args:
        correct: ``(M, N)`` bool.
    """
    return double_fault_from_tables(_tables_from_correct(correct))


def _pdr_update(preds: npt.NDArray[np.int64]) -> F64:
    """``(M, M)`` counts of samples where members i and k predict different labels."""
    m = preds.shape[0]
    out = np.zeros((m, m), dtype=np.float64)
    for i in range(m):
        out[i] = (preds != preds[i][None, :]).sum(axis=1)
    return out


def pdr(preds: npt.ArrayLike) -> F64:
    """Prediction disagreement ratio ``mean_n 1[ŷ_i ≠ ŷ_k]``, ``(M, M)`` (label level).

    Args:
        preds: ``(M, N)`` int predicted labels.
    """
    p = _check_int(preds, "preds", 2, what="(M, N)")
    _check_nonempty(p.shape[1], "preds")
    out: F64 = _pdr_update(p) / p.shape[1]
    return out


def kl_divergence(probs: npt.ArrayLike) -> F64:
    """Pairwise KL divergence ``K[i, k] = mean_n Σ_c p_i log(p_i / p_k)``, ``(M, M)``.

    Conventions (as ``scipy.stats.entropy``): ``0 log(0 / q) = 0``; ``p log(p / 0) = +inf`` for ``p > 0``.
    Use :func:`kl_divergence_from_logits` when logits are available (always finite).

    Args:
        probs: ``(M, N, C)`` member probabilities.
    """
    p = _check_probs(probs, "probs", 3, what="(M, N, C)").astype(np.float64)
    _check_nonempty(p.shape[1], "probs")
    m = p.shape[0]
    with np.errstate(divide="ignore"):
        logp = np.log(p)
    out = np.zeros((m, m), dtype=np.float64)
    for i in range(m):
        for k in range(m):
            if i == k:
                continue
            with np.errstate(invalid="ignore"):
                terms = np.where(p[i] > 0, p[i] * (logp[i] - logp[k]), 0.0)
            out[i, k] = terms.sum(axis=1).mean()
    return out


def _kl_update(logits: npt.NDArray[np.floating], lse: F64 | None = None) -> F64:
    """``(M, M)`` sums over the batch of ``KL(p_i || p_k)`` per sample, from logits ``(M, B, C)``.

    ``KL_n(i || k) = Σ_c p_ic z_ic − LSE_i − (Σ_c p_ic z_kc − LSE_k)``; the cross term over the whole
    batch is one matrix product ``P Zᵀ`` with ``P, Z`` reshaped to ``(M, B·C)``. ``lse (M, B)`` may be
    passed when already computed.
    """
    m, b, c = logits.shape
    z = np.asarray(logits, dtype=np.float64)
    if lse is None:
        lse = logsumexp(z, axis=2)  # (M, B)
    p = z - lse[..., None]
    np.exp(p, out=p)
    cross = p.reshape(m, b * c) @ z.reshape(m, b * c).T  # cross[i, k] = Σ_n Σ_c p_i z_k
    self_term = np.diag(cross) - lse.sum(axis=1)  # Σ_n (Σ_c p_i z_i − LSE_i)
    out: F64 = self_term[:, None] - (cross - lse.sum(axis=1)[None, :])
    np.fill_diagonal(out, 0.0)
    return out


def kl_divergence_from_logits(logits: npt.ArrayLike) -> F64:
    """Pairwise KL divergence of ``softmax(logits)`` computed exactly from logits, ``(M, M)``.

    Args:
        logits: ``(M, N, C)`` member logits.
    """
    z = _check_float(logits, "logits", 3, what="(M, N, C)")
    _check_nonempty(z.shape[1], "logits")
    out: F64 = _kl_update(z) / z.shape[1]
    return out


def pair_mean(matrix: npt.ArrayLike, members: npt.ArrayLike | None = None) -> float:
    """Ensemble value of a pairwise metric: mean over unordered pairs ``i < k`` of ``(A_ik + A_ki) / 2``.

    Args:
        matrix: ``(M, M)`` pairwise matrix.
        members: Optional indices of the sub-ensemble (default: all members).

    Returns:
        The mean over defined (non-NaN) pairs; NaN when there is no defined pair (e.g. one member).
    """
    a = _check_float(np.asarray(matrix, dtype=np.float64), "matrix", 2, finite=False, what="(M, M)")
    if a.shape[0] != a.shape[1]:
        raise _fail("matrix", "a square (M, M) array", f"shape {a.shape}")
    if members is not None:
        idx = _check_int(np.asarray(members), "members", 1, num_classes=a.shape[0])
        a = a[np.ix_(idx, idx)]
    iu, ku = np.triu_indices(a.shape[0], k=1)
    vals = (a[iu, ku] + a[ku, iu]) / 2.0
    vals = vals[~np.isnan(vals)]
    return float(vals.mean()) if vals.size else float("nan")


class Equitability(NamedTuple):
    """Shannon equitability averaged over ensemble-correct and ensemble-wrong samples."""

    correct: float
    wrong: float


def _equitability_per_sample(preds: npt.NDArray[np.int64], num_classes: int | None) -> F64:
    m = preds.shape[0]
    denom = np.log(min(m, num_classes) if num_classes is not None else m)
    if m == 1 or denom == 0:
        return np.zeros(preds.shape[1], dtype=np.float64)
    # With c_j = number of members voting like member j: H = −Σ_s q_s ln q_s = −(1/M) Σ_j ln(c_j / M).
    counts = np.zeros(preds.shape, dtype=np.float64)
    for j in range(m):
        counts[j] = (preds == preds[j][None, :]).sum(axis=0)
    h = -np.log(counts / m).sum(axis=0) / m
    out: F64 = h / denom
    return out


def shannon_equitability_per_sample(preds: npt.ArrayLike, *, num_classes: int | None = None) -> F64:
    """Per-sample Shannon equitability ``E = H / ln(min(M, C))`` of the M predicted labels (paper Eq. 5).

    ``H = −Σ_s q_s ln q_s`` with ``q_s`` the fraction of members predicting label ``s``. ``E = 0`` when all
    members agree and 1 when all predict different labels. Convention: ``E = 0`` for ``M = 1`` (or C = 1),
    where ``ln(min(M, C)) = 0``.

    Args:
        preds: ``(M, N)`` int predicted labels.
        num_classes: C; if None, C >= M is assumed.

    Returns:
        ``(N,)`` float64 in [0, 1].
    """
    p = _check_int(preds, "preds", 2, what="(M, N)")
    if num_classes is not None:
        _check_positive_int(num_classes, "num_classes")
    return _equitability_per_sample(p, num_classes)


def shannon_equitability(
    preds: npt.ArrayLike, labels: npt.ArrayLike, ens_pred: npt.ArrayLike, *, num_classes: int | None = None
) -> Equitability:
    """Mean Shannon equitability over ensemble-correct and ensemble-wrong samples.

    Args:
        preds: ``(M, N)`` member predictions.
        labels: ``(N,)`` labels.
        ens_pred: ``(N,)`` ensemble predictions.
        num_classes: C (see :func:`shannon_equitability_per_sample`).

    Returns:
        ``Equitability(correct, wrong)``; a group without samples is NaN with a :class:`MetricWarning`.
    """
    p = _check_int(preds, "preds", 2, what="(M, N)")
    y = _check_int(labels, "labels", 1, shape={0: p.shape[1]}, what="(N,)")
    e = _check_int(ens_pred, "ens_pred", 1, shape={0: p.shape[1]}, what="(N,)")
    if num_classes is not None:
        _check_positive_int(num_classes, "num_classes")
    eq = _equitability_per_sample(p, num_classes)
    ok = e == y
    return Equitability(_group_mean(eq, ok, "correct"), _group_mean(eq, ~ok, "wrong"))


def _group_mean(values: F64, mask: npt.NDArray[np.bool_], group: str) -> float:
    if not mask.any():
        _warn(f"Shannon equitability over ensemble-{group} samples is undefined (no such sample); NaN returned")
        return float("nan")
    return float(values[mask].mean())
