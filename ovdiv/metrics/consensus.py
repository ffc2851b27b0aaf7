"""Ensemble consensus rules, class rankings and top-k accuracy (numpy only).

Shapes: member ``logits (M, N, C)`` (any float dtype, computed in float64), ``labels (N,)`` int.

Consensus rules (:class:`ovdiv.types.Consensus`), with ``z_i`` member logits and ``p_i = softmax(z_i)``:

* ``average``: score ``s = (1/M) Σ_i z_i`` (the paper's "averaging"), probabilities ``softmax(s)``.
* ``average_probs``: ``s = p = (1/M) Σ_i p_i``.
* ``geometric``: ``s = (1/M) Σ_i log p_i``, probabilities ``softmax(s)`` (mathematically equal to
  ``average``'s probabilities; computed from log-probabilities as its definition says).
* ``median``: ``s = median_i p_i`` element-wise; probabilities ``s / Σ_c s_c`` (renormalised).
* ``majority``: votes ``v_c = #{i: argmax z_i = c}``; probabilities are vote shares ``v / M``.
  Ties are broken uniformly at random by a *seeded* per-(sample, class) priority (a counter-based
  splitmix64 hash of ``(seed, global sample index, class)``), so the result does not depend on batch
  boundaries: classes rank by ``(votes, priority)``, and classes with no votes rank below every voted
  class in the same random order.

Ranking convention for score rules (members and ensembles): classes rank by score, descending, equal
scores by lower class index first (so top-1 is ``np.argmax``). ``rank(y) = #{c: s_c > s_y} +
#{c < y: s_c = s_y}``; top-k is correct iff ``rank(y) < k``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from ovdiv.metrics._checks import _check_float, _check_int, _check_nonempty, _check_positive_int, _fail
from ovdiv.types import Consensus

__all__ = [
    "softmax",
    "log_softmax",
    "logsumexp",
    "ensemble_scores",
    "ensemble_probs",
    "ensemble_predict",
    "ensemble_label_rank",
    "label_rank",
    "topk_accuracy",
    "member_topk_accuracy",
    "ensemble_topk_accuracy",
    "improvement",
    "improvement_vs_mean",
    "tie_priority",
]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _splitmix(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    with np.errstate(over="ignore"):
        z = x + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        return z ^ (z >> np.uint64(31))


def tie_priority(seed: int, sample_index: npt.ArrayLike, classes: npt.ArrayLike) -> npt.NDArray[np.uint64]:
    """Seeded random priority of (sample, class) pairs used to break voting ties.

    ``priority = splitmix64(splitmix64(seed) + index * 2**20 + class)`` (uint64, wrapping). Priorities
    of one sample's classes are i.i.d. uniform for practical purposes, so "highest priority among the
    tied classes" is a uniform random choice, reproducible from ``seed`` and the sample's global index.

    Args:
        seed: Tie-break seed.
        sample_index: Global sample indices, broadcastable against ``classes``.
        classes: Class indices.

    Returns:
        uint64 priorities, broadcast shape of ``sample_index`` and ``classes``.
    """
    base = _splitmix(np.asarray([seed], dtype=np.uint64))[0]
    idx = np.asarray(sample_index, dtype=np.uint64)
    cls = np.asarray(classes, dtype=np.uint64)
    with np.errstate(over="ignore"):
        return _splitmix(base + (idx << np.uint64(20)) + cls)


def logsumexp(x: npt.ArrayLike, axis: int = -1) -> F64:
    """Stable ``log Σ exp(x)`` along ``axis`` in float64."""
    a = np.asarray(x, dtype=np.float64)
    m = a.max(axis=axis, keepdims=True)
    out: F64 = np.log(np.exp(a - m).sum(axis=axis)) + np.squeeze(m, axis=axis)
    return out


def log_softmax(logits: npt.ArrayLike, axis: int = -1) -> F64:
    """``z - logsumexp(z)`` along ``axis`` (float64)."""
    a = np.asarray(logits, dtype=np.float64)
    out: F64 = a - np.expand_dims(logsumexp(a, axis=axis), axis)
    return out


def softmax(logits: npt.ArrayLike, axis: int = -1) -> F64:
    """Stable softmax along ``axis`` (float64)."""
    a = np.asarray(logits, dtype=np.float64)
    e = np.exp(a - a.max(axis=axis, keepdims=True))
    out: F64 = e / e.sum(axis=axis, keepdims=True)
    return out


def _rule(rule: Any) -> Consensus:
    try:
        return Consensus(rule)
    except ValueError:
        raise _fail("rule", f"one of {[r.value for r in Consensus]}", repr(rule)) from None


def _check_logits(logits: Any, name: str = "logits") -> npt.NDArray[np.floating]:
    z = _check_float(logits, name, 3, what="(M, N, C)")
    if z.shape[0] == 0 or z.shape[2] == 0:
        raise _fail(name, "(M, N, C) with M >= 1 and C >= 1", f"shape {z.shape}")
    return z


def _votes(logits: npt.NDArray[np.floating]) -> F64:
    m, n, c = logits.shape
    pred = logits.argmax(axis=2)  # (M, N)
    votes = np.zeros((n, c), dtype=np.float64)
    rows = np.broadcast_to(np.arange(n), (m, n))
    np.add.at(votes, (rows.ravel(), pred.ravel()), 1.0)
    return votes


def ensemble_scores(logits: npt.ArrayLike, rule: Consensus | str = "average") -> F64:
    """Per-class ensemble scores whose ranking defines the ensemble's prediction and top-k.

    Args:
        logits: Member logits ``(M, N, C)``.
        rule: Consensus rule (module docstring).

    Returns:
        ``(N, C)`` float64: mean logits (``average``), mean probabilities (``average_probs``), mean
        log-probabilities (``geometric``), median probabilities (``median``) or vote counts (``majority``;
        ties are then broken by :func:`tie_priority`, see :func:`ensemble_label_rank`).
    """
    z = _check_logits(logits)
    r = _rule(rule)
    return _scores(z, r)


def _scores(z: npt.NDArray[np.floating], r: Consensus) -> F64:
    if r is Consensus.AVERAGE:
        out: F64 = z.astype(np.float64).sum(axis=0) / z.shape[0]
        return out
    if r is Consensus.AVERAGE_PROBS:
        out = softmax(z).sum(axis=0) / z.shape[0]
        return out
    if r is Consensus.GEOMETRIC:
        out = log_softmax(z).sum(axis=0) / z.shape[0]
        return out
    if r is Consensus.MEDIAN:
        out = np.median(softmax(z), axis=0)
        return out
    return _votes(z)


def ensemble_probs(logits: npt.ArrayLike, rule: Consensus | str = "average") -> F64:
    """Ensemble class probabilities ``(N, C)`` (float64, rows sum to 1).

    ``softmax`` of the scores for ``average`` / ``geometric``; mean probabilities for ``average_probs``;
    median probabilities renormalised to sum 1 for ``median``; vote shares ``v / M`` for ``majority``.

    Args:
        logits: Member logits ``(M, N, C)``.
        rule: Consensus rule.
    """
    z = _check_logits(logits)
    r = _rule(rule)
    s = _scores(z, r)
    if r in (Consensus.AVERAGE, Consensus.GEOMETRIC):
        return softmax(s)
    if r is Consensus.MAJORITY:
        out: F64 = s / z.shape[0]
        return out
    out = s / s.sum(axis=1, keepdims=True)
    return out


def _majority_rank(votes: F64, labels: I64, prio: npt.NDArray[np.uint64]) -> I64:
    n = votes.shape[0]
    rows = np.arange(n)
    vy = votes[rows, labels][:, None]
    py = prio[rows, labels][:, None]
    cls = np.arange(votes.shape[1])[None, :]
    above = (votes > vy) | ((votes == vy) & ((prio > py) | ((prio == py) & (cls < labels[:, None]))))
    out: I64 = above.sum(axis=1).astype(np.int64)
    return out


def label_rank(scores: npt.ArrayLike, labels: npt.ArrayLike) -> I64:
    """Rank of the label among classes by descending score (0 = top-1; ties: lower index first).

    Args:
        scores: ``(N, C)`` scores (logits or probabilities).
        labels: ``(N,)`` int labels.

    Returns:
        ``(N,)`` int64, ``rank = #{c: s_c > s_y} + #{c < y: s_c = s_y}``.
    """
    s = _check_float(scores, "scores", 2, what="(N, C)")
    y = _check_int(labels, "labels", 1, shape={0: s.shape[0]}, num_classes=s.shape[1], what="(N,)")
    return _label_rank(s, y)


def _label_rank(s: npt.NDArray[np.floating], y: I64) -> I64:
    sy = s[np.arange(s.shape[0]), y][:, None]
    cls = np.arange(s.shape[1])[None, :]
    out: I64 = ((s > sy) | ((s == sy) & (cls < y[:, None]))).sum(axis=1).astype(np.int64)
    return out


def ensemble_label_rank(
    logits: npt.ArrayLike,
    labels: npt.ArrayLike,
    rule: Consensus | str = "average",
    *,
    seed: int = 0,
    index_offset: int = 0,
) -> I64:
    """Rank of each label in the ensemble's class ordering (0 = the ensemble predicts the label).

    Args:
        logits: Member logits ``(M, N, C)``.
        labels: ``(N,)`` int labels.
        rule: Consensus rule.
        seed: Tie-break seed for ``majority``.
        index_offset: Global index of sample 0 (streaming batches use their start index so that the
            majority tie-break is independent of batching).

    Returns:
        ``(N,)`` int64 ranks.
    """
    z = _check_logits(logits)
    y = _check_int(labels, "labels", 1, shape={0: z.shape[1]}, num_classes=z.shape[2], what="(N,)")
    r = _rule(rule)
    s = _scores(z, r)
    if r is Consensus.MAJORITY:
        n, c = s.shape
        prio = tie_priority(seed, np.arange(index_offset, index_offset + n)[:, None], np.arange(c)[None, :])
        return _majority_rank(s, y, prio)
    return _label_rank(s, y)


def ensemble_predict(
    logits: npt.ArrayLike, rule: Consensus | str = "average", *, seed: int = 0, index_offset: int = 0
) -> I64:
    """Ensemble prediction ``(N,)`` int64 under a consensus rule.

    Score rules take ``argmax`` of :func:`ensemble_scores` (ties: lowest class index). ``majority`` takes
    the most-voted class, ties broken uniformly at random by the seeded :func:`tie_priority`.

    Args:
        logits: Member logits ``(M, N, C)``.
        rule: Consensus rule.
        seed: Tie-break seed (``majority`` only).
        index_offset: Global index of sample 0 (see :func:`ensemble_label_rank`).
    """
    z = _check_logits(logits)
    r = _rule(rule)
    s = _scores(z, r)
    if r is not Consensus.MAJORITY:
        out: I64 = s.argmax(axis=1).astype(np.int64)
        return out
    n, c = s.shape
    prio = tie_priority(seed, np.arange(index_offset, index_offset + n)[:, None], np.arange(c)[None, :])
    top = s == s.max(axis=1, keepdims=True)
    masked = np.where(top, prio, np.uint64(0))
    # argmax over uint64 priorities among the tied top-voted classes (0 only wins if all are 0).
    out = masked.argmax(axis=1).astype(np.int64)
    return out


def topk_accuracy(scores: npt.ArrayLike, labels: npt.ArrayLike, k: int = 1) -> float:
    """Top-k accuracy of one classifier: ``mean_n 1[rank(y_n) < k]`` (see :func:`label_rank`).

    Args:
        scores: ``(N, C)`` logits or probabilities.
        labels: ``(N,)`` int labels.
        k: ``k >= 1``.
    """
    k = _check_positive_int(k, "k")
    r = label_rank(scores, labels)
    _check_nonempty(r.size, "labels")
    return float((r < k).mean())


def member_topk_accuracy(logits: npt.ArrayLike, labels: npt.ArrayLike, k: int = 1) -> F64:
    """Top-k accuracy of every member: ``(M,)`` float64 from logits ``(M, N, C)`` and labels ``(N,)``."""
    z = _check_logits(logits)
    k = _check_positive_int(k, "k")
    y = _check_int(labels, "labels", 1, shape={0: z.shape[1]}, num_classes=z.shape[2], what="(N,)")
    _check_nonempty(y.size, "labels")
    return np.array([float((_label_rank(zi, y) < k).mean()) for zi in z])


def ensemble_topk_accuracy(
    logits: npt.ArrayLike,
    labels: npt.ArrayLike,
    k: int = 1,
    rule: Consensus | str = "average",
    *,
    seed: int = 0,
    index_offset: int = 0,
) -> float:
    """Top-k accuracy of the ensemble under ``rule``: ``mean_n 1[ensemble rank(y_n) < k]``."""
    k = _check_positive_int(k, "k")
    r = ensemble_label_rank(logits, labels, rule, seed=seed, index_offset=index_offset)
    _check_nonempty(r.size, "labels")
    return float((r < k).mean())


def improvement(ensemble_accuracy: float, member_accuracies: npt.ArrayLike) -> float:
    """Ensemble improvement ``Δ = Acc_ens − max_i Acc_i`` (the paper's Y axis)."""
    a = _check_float(np.asarray(member_accuracies, dtype=np.float64), "member_accuracies", 1)
    _check_nonempty(a.size, "member_accuracies")
    return float(ensemble_accuracy) - float(a.max())


def improvement_vs_mean(ensemble_accuracy: float, member_accuracies: npt.ArrayLike) -> float:
    """``Acc_ens − mean_i Acc_i``."""
    a = _check_float(np.asarray(member_accuracies, dtype=np.float64), "member_accuracies", 1)
    _check_nonempty(a.size, "member_accuracies")
    return float(ensemble_accuracy) - float(a.mean())
