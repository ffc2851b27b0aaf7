"""Calibration: negative log-likelihood and expected calibration error (numpy only).

Shapes: ``probs (N, C)`` rows summing to 1, ``logits (N, C)``, ``labels (N,)`` int.

ECE (top-label, ``n_bins`` equal-width bins, torchmetrics' ``multiclass_calibration_error(norm="l1")``
convention): with confidence ``conf_n = max_c p_nc`` and correctness ``acc_n = 1[argmax_c p_nc = y_n]``,
bin ``b = floor(conf * n_bins)`` (left-closed bins ``[b/n_bins, (b+1)/n_bins)``; a confidence of
exactly 1 falls in an extra degenerate bin ``{1}``, as in torchmetrics), and
``ECE = Σ_b (n_b / N) |mean_b acc − mean_b conf|``. The sufficient statistics per bin (count, sum of
confidences, sum of correct) add over batches, so the streaming value equals the one-shot value.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ovdiv.metrics._checks import _check_float, _check_int, _check_nonempty, _check_positive_int, _check_probs
from ovdiv.metrics.consensus import logsumexp

__all__ = ["NLL_EPS", "nll", "nll_from_logits", "expected_calibration_error", "ece_bin_stats", "ece_from_bin_stats"]

NLL_EPS = 1e-15
"""Probabilities at the label are clipped to ``[NLL_EPS, 1]`` in :func:`nll` (so ``p_y = 0`` gives 34.54)."""

F64 = npt.NDArray[np.float64]


def nll(probs: npt.ArrayLike, labels: npt.ArrayLike, *, eps: float = NLL_EPS) -> float:
    """Mean negative log-likelihood ``−(1/N) Σ_n log max(p_{n, y_n}, eps)``.

    Args:
        probs: ``(N, C)`` probabilities in [0, 1] (not renormalised).
        labels: ``(N,)`` int labels.
        eps: Lower clip of the label probability; ``p_y = 0`` is a stated convention, not an infinity.

    Returns:
        The mean NLL in nats.
    """
    p = _check_probs(probs, "probs", 2, what="(N, C)")
    y = _check_int(labels, "labels", 1, shape={0: p.shape[0]}, num_classes=p.shape[1], what="(N,)")
    _check_nonempty(y.size, "labels")
    py = np.clip(p[np.arange(y.size), y].astype(np.float64), eps, 1.0)
    return float(-np.log(py).mean())


def nll_from_logits(logits: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Mean NLL of ``softmax(logits)`` computed stably: ``(1/N) Σ_n (logsumexp(z_n) − z_{n, y_n})``.

    Args:
        logits: ``(N, C)`` logits.
        labels: ``(N,)`` int labels.
    """
    z = _check_float(logits, "logits", 2, what="(N, C)")
    y = _check_int(labels, "labels", 1, shape={0: z.shape[0]}, num_classes=z.shape[1], what="(N,)")
    _check_nonempty(y.size, "labels")
    return float((logsumexp(z, axis=1) - z[np.arange(y.size), y].astype(np.float64)).mean())


def _ece_update(confidence: F64, correct: npt.NDArray[np.bool_], n_bins: int) -> F64:
    """Per-bin ``[count, Σ conf, Σ correct]`` as a ``(n_bins + 1, 3)`` float64 array (last bin = {1})."""
    # Same boundaries and side as torchmetrics (linspace(0, 1, n + 1), bucketize right=True).
    bounds = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.searchsorted(bounds, confidence, side="right") - 1
    idx = np.clip(idx, 0, n_bins)
    stats = np.zeros((n_bins + 1, 3), dtype=np.float64)
    stats[:, 0] = np.bincount(idx, minlength=n_bins + 1)
    stats[:, 1] = np.bincount(idx, weights=confidence, minlength=n_bins + 1)
    stats[:, 2] = np.bincount(idx, weights=correct.astype(np.float64), minlength=n_bins + 1)
    return stats


def _near_bin_edges(conf: F64, n_bins: int, tol: float = 1e-12) -> npt.NDArray[np.bool_]:
    """True where ``conf`` lies within ``tol`` of a bin edge (or above 1).

    Callers that compute a confidence by a different (equally accurate) formula than the reference
    ``softmax(s)[argmax] = 1 / Σ_c exp(s_c − max s)`` recompute these few values with the reference
    formula, so that every sample lands in exactly the same bin.
    """
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    pos = np.clip(np.searchsorted(edges, conf), 1, n_bins)
    out: npt.NDArray[np.bool_] = (
        (np.abs(conf - edges[pos]) < tol) | (np.abs(conf - edges[pos - 1]) < tol) | (conf > 1.0)
    )
    return out


def _ece_compute(stats: F64) -> float:
    n = stats[:, 0].sum()
    if n == 0:
        return float("nan")
    nz = stats[:, 0] > 0
    gap = np.abs(stats[nz, 2] - stats[nz, 1])  # n_b * |acc_b - conf_b|
    return float(gap.sum() / n)


def ece_bin_stats(
    probs: npt.ArrayLike, labels: npt.ArrayLike, *, n_bins: int = 15, preds: npt.ArrayLike | None = None
) -> F64:
    """Sufficient statistics of ECE: ``(n_bins + 1, 3)`` rows ``[count, Σ conf, Σ correct]``.

    Statistics of disjoint batches add; :func:`ece_from_bin_stats` turns them into the ECE.

    Args:
        probs: ``(N, C)`` probabilities.
        labels: ``(N,)`` int labels.
        n_bins: Number of equal-width bins.
        preds: Optional ``(N,)`` predictions to use instead of ``argmax(probs)`` (e.g. a majority vote's
            tie-broken winner); confidence is then ``probs[n, preds[n]]``.
    """
    p = _check_probs(probs, "probs", 2, what="(N, C)")
    y = _check_int(labels, "labels", 1, shape={0: p.shape[0]}, num_classes=p.shape[1], what="(N,)")
    n_bins = _check_positive_int(n_bins, "n_bins")
    if preds is None:
        pred = p.argmax(axis=1)
    else:
        pred = _check_int(preds, "preds", 1, shape={0: p.shape[0]}, num_classes=p.shape[1], what="(N,)")
    conf = p[np.arange(y.size), pred].astype(np.float64)
    return _ece_update(conf, pred == y, n_bins)


def ece_from_bin_stats(stats: npt.ArrayLike) -> float:
    """ECE from summed :func:`ece_bin_stats` (NaN if no samples)."""
    s = _check_float(stats, "stats", 2)
    return _ece_compute(np.asarray(s, dtype=np.float64))


def expected_calibration_error(
    probs: npt.ArrayLike, labels: npt.ArrayLike, n_bins: int = 15, *, preds: npt.ArrayLike | None = None
) -> float:
    """Top-label expected calibration error with ``n_bins`` equal-width bins (module docstring).

    Args:
        probs: ``(N, C)`` probabilities.
        labels: ``(N,)`` int labels.
        n_bins: Number of bins (15 by default, as in the paper's tooling and torchmetrics).
        preds: Optional predictions replacing ``argmax(probs)`` (see :func:`ece_bin_stats`).

    Returns:
        ``Σ_b (n_b/N) |acc_b − conf_b|`` in [0, 1].
    """
    stats = ece_bin_stats(probs, labels, n_bins=n_bins, preds=preds)
    _check_nonempty(int(stats[:, 0].sum()), "labels")
    return _ece_compute(stats)
