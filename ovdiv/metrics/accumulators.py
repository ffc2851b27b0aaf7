"""Streaming accumulators (update / compute / reset / merge) built on the functional helpers.

Each class keeps only additive sufficient statistics, so feeding a dataset batch by batch (or merging
shards) gives exactly the one-shot value of the matching function, and memory does not grow with N:

=========================  ================================  ==========================================
class                      ``update`` arguments              ``compute()`` equals
=========================  ================================  ==========================================
:class:`TopKAccuracy`      ``scores (B, C), labels (B,)``    :func:`~ovdiv.metrics.topk_accuracy`
:class:`CalibrationError`  ``probs (B, C), labels (B,)``     :func:`~ovdiv.metrics.expected_calibration_error`
:class:`NegativeLogLikelihood` ``logits (B, C), labels``     :func:`~ovdiv.metrics.nll_from_logits`
:class:`PairwiseCorrectness` ``correct (M, B)``              disagreement / q / correlation / double fault
:class:`PredictionDisagreement` ``preds (M, B)``             :func:`~ovdiv.metrics.pdr`
:class:`KLDivergence`      ``logits (M, B, C)``              :func:`~ovdiv.metrics.kl_divergence_from_logits`
:class:`ShannonEquitability` ``preds, labels, ens_pred``     :func:`~ovdiv.metrics.shannon_equitability`
:class:`AttributionDiversity` ``maps (M, B, ...)``           D_att, RMSE and hash distances
=========================  ================================  ==========================================
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from ovdiv.metrics._checks import _check_bool, _check_float, _check_int, _check_positive_int, _check_probs, _fail, _warn
from ovdiv.metrics.attribution import (
    HASH_METHODS,
    _channel_max_maps,
    _check_maps,
    _hash_bits,
    _hash_update,
    _norm,
    _normalize,
    _ssd_update,
)
from ovdiv.metrics.calibration import _ece_compute, _ece_update
from ovdiv.metrics.consensus import _label_rank, logsumexp
from ovdiv.metrics.pairwise import (
    Equitability,
    _equitability_per_sample,
    _kl_update,
    _pdr_update,
    _tables_update,
    correlation_from_tables,
    disagreement_from_tables,
    double_fault_from_tables,
    q_statistic_from_tables,
)
from ovdiv.types import AttributionNorm

__all__ = [
    "TopKAccuracy",
    "CalibrationError",
    "NegativeLogLikelihood",
    "PairwiseCorrectness",
    "PredictionDisagreement",
    "KLDivergence",
    "ShannonEquitability",
    "AttributionDiversity",
]

F64 = npt.NDArray[np.float64]


def _same_type(self: object, other: object) -> None:
    if not (isinstance(other, type(self)) or isinstance(self, type(other))):  # subclasses merge too
        raise _fail("other", f"a {type(self).__name__}", type(other).__name__)


class TopKAccuracy:
    """Top-k accuracy of one classifier (ties: lower class index first)."""

    higher_is_better = True

    def __init__(self, k: int = 1) -> None:
        self.k = _check_positive_int(k, "k")
        self.reset()

    def reset(self) -> None:
        """Forget all batches."""
        self.correct = 0
        self.total = 0

    def update(self, scores: npt.ArrayLike, labels: npt.ArrayLike) -> None:
        """Add a batch of ``scores (B, C)`` and ``labels (B,)``."""
        s = _check_float(scores, "scores", 2, what="(B, C)")
        y = _check_int(labels, "labels", 1, shape={0: s.shape[0]}, num_classes=s.shape[1], what="(B,)")
        self.correct += int((_label_rank(s, y) < self.k).sum())
        self.total += y.size

    def merge(self, other: TopKAccuracy) -> None:
        """Add another accumulator's state."""
        _same_type(self, other)
        self.correct += other.correct
        self.total += other.total

    def compute(self) -> float:
        """Accuracy (NaN before any sample)."""
        return self.correct / self.total if self.total else float("nan")


class CalibrationError:
    """Top-label ECE with ``n_bins`` equal-width bins (see :mod:`ovdiv.metrics.calibration`)."""

    higher_is_better = False

    def __init__(self, n_bins: int = 15) -> None:
        self.n_bins = _check_positive_int(n_bins, "n_bins")
        self.reset()

    def reset(self) -> None:
        """Forget all batches."""
        self.stats = np.zeros((self.n_bins + 1, 3), dtype=np.float64)

    def update(self, probs: npt.ArrayLike, labels: npt.ArrayLike) -> None:
        """Add a batch of ``probs (B, C)`` and ``labels (B,)``."""
        p = _check_probs(probs, "probs", 2, what="(B, C)")
        y = _check_int(labels, "labels", 1, shape={0: p.shape[0]}, num_classes=p.shape[1], what="(B,)")
        pred = p.argmax(axis=1)
        self.stats += _ece_update(p[np.arange(y.size), pred].astype(np.float64), pred == y, self.n_bins)

    def merge(self, other: CalibrationError) -> None:
        """Add another accumulator's state."""
        _same_type(self, other)
        self.stats += other.stats

    def compute(self) -> float:
        """ECE (NaN before any sample)."""
        return _ece_compute(self.stats)


class NegativeLogLikelihood:
    """Mean NLL of ``softmax(logits)`` (exact, via log-sum-exp)."""

    higher_is_better = False

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget all batches."""
        self.total = 0.0
        self.count = 0

    def update(self, logits: npt.ArrayLike, labels: npt.ArrayLike) -> None:
        """Add a batch of ``logits (B, C)`` and ``labels (B,)``."""
        z = _check_float(logits, "logits", 2, what="(B, C)")
        y = _check_int(labels, "labels", 1, shape={0: z.shape[0]}, num_classes=z.shape[1], what="(B,)")
        self.total += float((logsumexp(z, axis=1) - z[np.arange(y.size), y]).sum())
        self.count += y.size

    def merge(self, other: NegativeLogLikelihood) -> None:
        """Add another accumulator's state."""
        _same_type(self, other)
        self.total += other.total
        self.count += other.count

    def compute(self) -> float:
        """Mean NLL (NaN before any sample)."""
        return self.total / self.count if self.count else float("nan")


class PairwiseCorrectness:
    """2x2 correctness tables of every member pair -> disagreement, Q, ρ, double fault ``(M, M)``."""

    def __init__(self, num_members: int) -> None:
        self.num_members = _check_positive_int(num_members, "num_members")
        self.reset()

    def reset(self) -> None:
        """Forget all batches."""
        self.tables = np.zeros((self.num_members, self.num_members, 4), dtype=np.float64)

    def update(self, correct: npt.ArrayLike) -> None:
        """Add ``correct (M, B)`` bools."""
        c = _check_bool(correct, "correct", 2, what="(M, B)")
        if c.shape[0] != self.num_members:
            raise _fail("correct", f"(M, B) with M = {self.num_members}", f"shape {c.shape}")
        self.tables += _tables_update(c)

    def merge(self, other: PairwiseCorrectness) -> None:
        """Add another accumulator's state."""
        _same_type(self, other)
        self.tables += other.tables

    def compute(self) -> dict[str, F64]:
        """``{"disagreement", "q_statistic", "correlation", "double_fault"}`` -> ``(M, M)`` matrices."""
        return {
            "disagreement": disagreement_from_tables(self.tables),
            "q_statistic": q_statistic_from_tables(self.tables),
            "correlation": correlation_from_tables(self.tables),
            "double_fault": double_fault_from_tables(self.tables),
        }


class PredictionDisagreement:
    """Label-level PDR ``(M, M)``."""

    def __init__(self, num_members: int) -> None:
        self.num_members = _check_positive_int(num_members, "num_members")
        self.reset()

    def reset(self) -> None:
        """Forget all batches."""
        self.counts = np.zeros((self.num_members, self.num_members), dtype=np.float64)
        self.n = 0

    def update(self, preds: npt.ArrayLike) -> None:
        """Add ``preds (M, B)``."""
        p = _check_int(preds, "preds", 2, shape={0: self.num_members}, what="(M, B)")
        self.counts += _pdr_update(p)
        self.n += p.shape[1]

    def merge(self, other: PredictionDisagreement) -> None:
        """Add another accumulator's state."""
        _same_type(self, other)
        self.counts += other.counts
        self.n += other.n

    def compute(self) -> F64:
        """``(M, M)`` PDR (NaN before any sample)."""
        out: F64 = self.counts / self.n if self.n else np.full_like(self.counts, np.nan)
        return out


class KLDivergence:
    """Pairwise KL divergence ``K[i, k]`` of member softmaxes, from logits ``(M, B, C)``."""

    def __init__(self, num_members: int) -> None:
        self.num_members = _check_positive_int(num_members, "num_members")
        self.reset()

    def reset(self) -> None:
        """Forget all batches."""
        self.sums = np.zeros((self.num_members, self.num_members), dtype=np.float64)
        self.n = 0

    def update(self, logits: npt.ArrayLike) -> None:
        """Add ``logits (M, B, C)``."""
        z = _check_float(logits, "logits", 3, shape={0: self.num_members}, what="(M, B, C)")
        self.sums += _kl_update(z)
        self.n += z.shape[1]

    def merge(self, other: KLDivergence) -> None:
        """Add another accumulator's state."""
        _same_type(self, other)
        self.sums += other.sums
        self.n += other.n

    def compute(self) -> F64:
        """``(M, M)`` mean KL (NaN before any sample)."""
        out: F64 = self.sums / self.n if self.n else np.full_like(self.sums, np.nan)
        return out


class ShannonEquitability:
    """Shannon equitability split by ensemble-correct / ensemble-wrong samples."""

    def __init__(self, num_classes: int | None = None) -> None:
        self.num_classes = None if num_classes is None else _check_positive_int(num_classes, "num_classes")
        self.reset()

    def reset(self) -> None:
        """Forget all batches."""
        self.sums = np.zeros(2, dtype=np.float64)  # [correct, wrong]
        self.counts = np.zeros(2, dtype=np.int64)

    def update(self, preds: npt.ArrayLike, labels: npt.ArrayLike, ens_pred: npt.ArrayLike) -> None:
        """Add ``preds (M, B)``, ``labels (B,)``, ``ens_pred (B,)``."""
        p = _check_int(preds, "preds", 2, what="(M, B)")
        y = _check_int(labels, "labels", 1, shape={0: p.shape[1]}, what="(B,)")
        e = _check_int(ens_pred, "ens_pred", 1, shape={0: p.shape[1]}, what="(B,)")
        eq = _equitability_per_sample(p, self.num_classes)
        ok = e == y
        self.sums += [eq[ok].sum(), eq[~ok].sum()]
        self.counts += [int(ok.sum()), int((~ok).sum())]

    def merge(self, other: ShannonEquitability) -> None:
        """Add another accumulator's state."""
        _same_type(self, other)
        self.sums += other.sums
        self.counts += other.counts

    def compute(self) -> Equitability:
        """``Equitability(correct, wrong)``; an empty group is NaN with a warning."""
        vals = []
        for j, group in enumerate(("correct", "wrong")):
            if self.counts[j] == 0:
                _warn(f"Shannon equitability over ensemble-{group} samples is undefined (no such sample); NaN")
                vals.append(float("nan"))
            else:
                vals.append(float(self.sums[j] / self.counts[j]))
        return Equitability(vals[0], vals[1])


class AttributionDiversity:
    """Pairwise attribution statistics of M members: SSD (for D_att), RMSE and image-hash distances.

    ``update(maps (M, B, ...))`` normalises ``|a|`` per map, adds the pairwise sums and drops the maps.
    ``compute()`` returns ``{"attribution_diversity": float, "ssd": (M, M), "attribution_rmse": (M, M),
    "hash_ahash": (M, M), ...}`` (hash entries only when ``hashes=True``; they need maps
    ``(M, B, 3, H, W)`` or ``(M, B, H, W)`` with H, W >= 8).

    It also keeps, per sample, the ``M(M−1)/2`` pairwise ``mean_pixels (a_i − a_k)²`` values
    (:attr:`sample_ssd`, ``(n, P)`` float64, pairs in ``numpy.triu_indices(M, 1)`` order; 91 values a
    sample for 14 members) — what the paired bootstrap of D_att over images resamples
    (:func:`ovdiv.metrics.evidence.attribution_bootstrap`). ``merge`` appends the other's samples after
    this one's (merge shards in sample order). ``sample_ssd`` is None when a merged or loaded state
    lacks them (written by an older version): D_att then has no interval.

    Args:
        num_members: M.
        norm: ``max`` / ``sum`` / ``none`` normalisation of ``|a|``.
        hashes: Also compute the four 64-bit image-hash distances (needs ``imagehash``).
    """

    def __init__(self, num_members: int, norm: AttributionNorm | str = "max", *, hashes: bool = True) -> None:
        self.num_members = _check_positive_int(num_members, "num_members")
        self.norm = _norm(norm)
        self.hashes = bool(hashes)
        self.reset()

    def reset(self) -> None:
        """Forget all batches."""
        m = self.num_members
        self.ssd = np.zeros((m, m), dtype=np.float64)
        self.rmse = np.zeros((m, m), dtype=np.float64)
        self.hamming = np.zeros((len(HASH_METHODS), m, m), dtype=np.float64)
        self.n = 0
        self._samples: list[npt.NDArray[np.float64]] | None = []

    @property
    def sample_ssd(self) -> npt.NDArray[np.float64] | None:
        """``(n, M(M−1)/2)`` per-sample pairwise mean squared differences (None: not kept for all samples)."""
        if self._samples is None:
            return None
        if len(self._samples) != 1:
            p = self.num_members * (self.num_members - 1) // 2
            self._samples = [np.concatenate(self._samples) if self._samples else np.zeros((0, p))]
        return self._samples[0]

    @sample_ssd.setter
    def sample_ssd(self, value: npt.ArrayLike | None) -> None:
        p = self.num_members * (self.num_members - 1) // 2
        if value is None:
            self._samples = None
            return
        a = np.asarray(value, dtype=np.float64)
        if a.ndim != 2 or a.shape[1] != p:
            raise _fail("sample_ssd", f"an (n, {p}) array", f"shape {a.shape}")
        self._samples = [a]

    def update(self, maps: npt.ArrayLike) -> None:
        """Add one batch of maps ``(M, B, ...)``."""
        a = _check_maps(maps)
        if a.shape[0] != self.num_members:
            raise _fail("maps", f"(M, B, ...) with M = {self.num_members}", f"shape {a.shape}")
        self._update_checked(a)

    def _update_checked(self, a: npt.NDArray[np.floating]) -> None:
        norm = _normalize(a, self.norm)
        ssd, rmse, per_sample = _ssd_update(norm.reshape(norm.shape[0], norm.shape[1], -1))
        self.ssd += ssd
        self.rmse += rmse
        if self._samples is not None:
            self._samples.append(per_sample)
        if self.hashes:
            if a.ndim not in (4, 5) or a.shape[-1] < 8 or a.shape[-2] < 8:
                raise _fail("maps", "(M, B, 3, H, W) or (M, B, H, W) with H, W >= 8 for hashes", f"shape {a.shape}")
            s = _channel_max_maps(norm, a.ndim == 5)
            self.hamming += _hash_update(np.stack([_hash_bits(s[i]) for i in range(s.shape[0])]))
        self.n += a.shape[1]

    def merge(self, other: AttributionDiversity) -> None:
        """Add another accumulator's state (same members, normalisation and hash setting)."""
        _same_type(self, other)
        if (other.num_members, other.norm, other.hashes) != (self.num_members, self.norm, self.hashes):
            raise _fail(
                "other",
                f"an AttributionDiversity with M={self.num_members}, norm={self.norm.value}, hashes={self.hashes}",
                f"M={other.num_members}, norm={other.norm.value}, hashes={other.hashes}",
            )
        self.ssd += other.ssd
        self.rmse += other.rmse
        self.hamming += other.hamming
        if self._samples is not None:
            theirs = other.sample_ssd
            if theirs is None or (other.n and theirs.shape[0] != other.n):
                self._samples = None
            else:
                self._samples.append(theirs)
        self.n += other.n

    def compute(self) -> dict[str, Any]:
        """D_att of all members and the pairwise matrices (means over samples)."""
        m, n = self.num_members, self.n
        if n == 0:
            nan = np.full((m, m), np.nan)
            out: dict[str, Any] = {"attribution_diversity": float("nan"), "ssd": nan, "attribution_rmse": nan}
        else:
            out = {
                "attribution_diversity": float(np.triu(self.ssd, 1).sum() / (m * m * n)),
                "ssd": self.ssd / n,
                "attribution_rmse": self.rmse / n,
            }
        if self.hashes:
            for j, name in enumerate(HASH_METHODS):
                out[f"hash_{name}"] = self.hamming[j] / n if n else np.full((m, m), np.nan)
        return out
