"""Pool statistics -> metrics of any k-subset of a pool of members, without touching the models again.

:class:`PoolStats` is a streaming accumulator fed batch by batch with the pool's member logits
``(M, B, C)``, labels ``(B,)`` and optionally attribution maps ``(M, B, 3, H, W)`` and penultimate
features (one ``(B, D_i)`` array per member). What it keeps:

* per member, O(1): top-1/top-5 hit counts, NLL sum, ECE bin statistics;
* per pair ``(M, M)``, O(1): 2x2 correctness tables, label-disagreement counts, KL sums, attribution
  pairwise sums of mean squared differences (SSD) and of per-sample RMSE, the four image-hash Hamming
  distance sums, and unbiased HSIC sums for minibatch CKA. Maps and features are reduced and dropped;
* per sample: labels ``(N,)`` int64 and member predictions ``(M, N)`` int32 (small);
* for every subset size k and consensus rule declared up front (``subset_sizes``, ``consensus``): the
  additive ensemble statistics of all ``C(M, k)`` subsets (:class:`~ovdiv.metrics.subsets.SubsetStats`),
  accumulated batch by batch — exact, and O(C(M, k)) memory whatever N is;
* the member logits themselves only if ``keep_logits=True`` (float32, ``M·N·C`` values; needed to score
  subset sizes or rules that were not declared, by streaming the same batch computation over them).

So memory does not grow with N beyond the stored per-sample labels/predictions and, when asked for,
the logits. :func:`score_subsets` then returns one row per subset with every metric (canonical names of
the ``INTERFACES.md`` contract); pairwise metrics of a subset are means over its pairs ``i < k`` of the
pool matrices, D_att is exact from the pairwise SSDs: ``D_att(S) = Σ_{i<k ∈ S} SSD[i, k] / (|S|² N)``.

Shards: build each with ``start_index`` = its first sample's global index and :meth:`PoolStats.merge`
them in order (the majority tie-break is keyed by global sample index).
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ovdiv.atomic import atomic_path
from ovdiv.metrics._checks import _check_float, _check_int, _check_positive_int, _fail
from ovdiv.metrics.accumulators import AttributionDiversity
from ovdiv.metrics.attribution import HASH_METHODS
from ovdiv.metrics.calibration import _ece_compute, _ece_update, _near_bin_edges
from ovdiv.metrics.cka import _hsic1
from ovdiv.metrics.consensus import _label_rank, logsumexp
from ovdiv.metrics.pairwise import (
    _kl_update,
    _pdr_update,
    _tables_update,
    correlation_from_tables,
    disagreement_from_tables,
    double_fault_from_tables,
    q_statistic_from_tables,
)
from ovdiv.metrics.subsets import SubsetStats, subset_batch_stats
from ovdiv.types import AttributionNorm, Consensus, Progress, ProgressCallback

__all__ = ["PoolStats", "score_subsets", "ENSEMBLE_METRICS", "POOL_FORMAT"]

log = logging.getLogger("ovdiv.metrics")

F64 = npt.NDArray[np.float64]
POOL_FORMAT = "ovdiv-poolstats/1"
_CHUNK = 32  # samples per internal chunk of the all-subset pass (bounds memory; cache-sized)

_ENSEMBLE_SCORES: tuple[str, ...] = (
    "ensemble_top1",
    "ensemble_top5",
    "ensemble_nll",
    "ensemble_ece",
    "improvement",
    "improvement_vs_mean",
)
"""Scores of the ensemble's prediction under a consensus rule (and its improvements over the members)."""

_DIVERSITY_METRICS: tuple[str, ...] = (
    "disagreement",
    "q_statistic",
    "correlation",
    "double_fault",
    "pdr",
    "kl_divergence",
    "shannon_equitability_correct",
    "shannon_equitability_wrong",
    "attribution_diversity",
    "attribution_rmse",
    "hash_ahash",
    "hash_phash",
    "hash_dhash",
    "hash_whash",
    "cka_mean",
)
"""Diversity metrics of a :func:`score_subsets` row, in row order (also the correlation study's)."""

ENSEMBLE_METRICS: tuple[str, ...] = (*_ENSEMBLE_SCORES, "mean_member_top1", "max_member_top1", *_DIVERSITY_METRICS)
"""Metric keys of a :func:`score_subsets` row (consensus-dependent ones get a ``:rule`` suffix)."""

_RULE_DEPENDENT: tuple[str, ...] = (*_ENSEMBLE_SCORES, "shannon_equitability_correct", "shannon_equitability_wrong")
"""The consensus-dependent keys of :data:`ENSEMBLE_METRICS`."""


def _rule(rule: Any) -> Consensus:
    try:
        return Consensus(rule)
    except ValueError:
        raise _fail("consensus", f"one of {[r.value for r in Consensus]}", repr(rule)) from None


def _all_subsets(m: int, k: int) -> npt.NDArray[np.int64]:
    if not 1 <= k <= m:
        raise _fail("k", f"a subset size in [1, {m}]", repr(k))
    return np.array(list(itertools.combinations(range(m), k)), dtype=np.int64).reshape(-1, k)


class PoolStats:
    """Streaming sufficient statistics of a pool of M members on one dataset (module docstring).

    Args:
        member_names: Names of the M members, in pool order (ensemble names join them with ``+``).
        num_classes: C.
        subset_sizes: Subset sizes k whose all-subset ensemble statistics are accumulated during
            :meth:`update` (e.g. ``(3,)`` for the paper's 364 3-subsets of 14 members).
        consensus: Consensus rules accumulated for those sizes.
        seed: Majority-vote tie-break seed.
        n_bins: ECE bins.
        attribution_norm: Normalisation of ``|a|`` for attribution statistics.
        hashes: Compute image-hash distances of maps (needs ``imagehash``; maps with H, W >= 8).
        keep_logits: Keep the member logits (float32) so undeclared sizes/rules can be scored later.
        start_index: Global index of this accumulator's first sample (shards).
    """

    def __init__(
        self,
        member_names: Sequence[str],
        num_classes: int,
        *,
        subset_sizes: Sequence[int] = (),
        consensus: Sequence[Consensus | str] = ("average",),
        seed: int = 0,
        n_bins: int = 15,
        attribution_norm: AttributionNorm | str = "max",
        hashes: bool = True,
        keep_logits: bool = False,
        start_index: int = 0,
    ) -> None:
        names = [str(n) for n in member_names]
        if not names or len(set(names)) != len(names):
            raise _fail("member_names", "a non-empty list of distinct names", repr(names))
        self.member_names = names
        self.num_members = len(names)
        self.num_classes = _check_positive_int(num_classes, "num_classes")
        self.subset_sizes = tuple(sorted({int(k) for k in subset_sizes}))
        for k in self.subset_sizes:
            _all_subsets(self.num_members, k)  # validates k
        self.consensus = tuple(dict.fromkeys(_rule(r) for r in consensus))
        self.seed = int(seed)
        self.n_bins = _check_positive_int(n_bins, "n_bins")
        try:
            self.attribution_norm = AttributionNorm(attribution_norm)
        except ValueError:
            raise _fail("attribution_norm", "one of max/sum/none", repr(attribution_norm)) from None
        self.hashes = bool(hashes)
        self.keep_logits = bool(keep_logits)
        self.start_index = int(start_index)
        self.reset()

    # ------------------------------------------------------------------ state

    def reset(self) -> None:
        """Forget every batch."""
        m = self.num_members
        self.n = 0
        self._labels: list[npt.NDArray[np.int64]] = []
        self._preds: list[npt.NDArray[np.int32]] = []
        self._logits: list[npt.NDArray[np.float32]] = []
        self.member_top1 = np.zeros(m)
        self.member_top5 = np.zeros(m)
        self.member_nll = np.zeros(m)
        self.member_ece = np.zeros((m, self.n_bins + 1, 3))
        self.tables = np.zeros((m, m, 4))
        self.pdr_counts = np.zeros((m, m))
        self.kl_sums = np.zeros((m, m))
        self.attribution = AttributionDiversity(m, self.attribution_norm, hashes=self.hashes)
        self.hsic = np.zeros((m, m))
        self.cka_batches = 0
        self.subset_stats: dict[tuple[int, Consensus], SubsetStats] = {
            (k, r): SubsetStats(_all_subsets(m, k), n_bins=self.n_bins)
            for k in self.subset_sizes
            for r in self.consensus
        }

    @property
    def labels(self) -> npt.NDArray[np.int64]:
        """``(N,)`` labels of all samples seen."""
        return np.concatenate(self._labels) if self._labels else np.zeros(0, dtype=np.int64)

    @property
    def preds(self) -> npt.NDArray[np.int32]:
        """``(M, N)`` member predictions (argmax of logits, lowest index on ties)."""
        if not self._preds:
            return np.zeros((self.num_members, 0), dtype=np.int32)
        return np.concatenate(self._preds, axis=1)

    @property
    def logits(self) -> npt.NDArray[np.float32] | None:
        """``(M, N, C)`` float32 member logits if ``keep_logits`` else None."""
        if not self.keep_logits:
            return None
        if not self._logits:
            return np.zeros((self.num_members, 0, self.num_classes), dtype=np.float32)
        return np.concatenate(self._logits, axis=1)

    # ------------------------------------------------------------------ update

    def update(
        self,
        logits: npt.ArrayLike,
        labels: npt.ArrayLike,
        maps: npt.ArrayLike | None = None,
        features: Sequence[npt.ArrayLike] | npt.ArrayLike | None = None,
    ) -> None:
        """Add one batch.

        Args:
            logits: ``(M, B, C)`` member logits (float; stored as float32 when kept).
            labels: ``(B,)`` int labels in ``[0, C)``.
            maps: Optional ``(M, B, 3, H, W)`` (or ``(M, B, ...)``) attribution maps; reduced to pairwise
                statistics and dropped.
            features: Optional per-member features for CKA: ``(M, B, D)`` or a list of M ``(B, D_i)``
                arrays (B >= 4); reduced to unbiased HSIC sums and dropped.
        """
        m, c = self.num_members, self.num_classes
        z = _check_float(logits, "logits", 3, shape={0: m, 2: c}, what=f"(M={m}, B, C={c})")
        b = z.shape[1]
        y = _check_int(labels, "labels", 1, shape={0: b}, num_classes=c, what="(B,)")
        a = self._valid_maps(maps, b) if maps is not None else None
        feats = self._valid_features(features, b) if features is not None else None
        if b == 0:
            return
        preds = z.argmax(axis=2).astype(np.int64)
        z64 = np.asarray(z, dtype=np.float64)
        lse = logsumexp(z64, axis=2)  # (M, B), shared by member NLL/ECE and KL
        self._update_members(z64, y, preds, lse)
        self.tables += _tables_update(preds == y[None, :])
        self.pdr_counts += _pdr_update(preds)
        self.kl_sums += _kl_update(z64, lse)
        del z64
        if a is not None:
            self.attribution._update_checked(a)
        if feats is not None:
            self._add_features(feats)
        for (_k, rule), stats in self.subset_stats.items():
            for lo in range(0, b, _CHUNK):
                hi = min(b, lo + _CHUNK)
                stats.add(
                    subset_batch_stats(
                        z[:, lo:hi],
                        y[lo:hi],
                        stats.subsets,
                        rule,
                        preds=preds[:, lo:hi],
                        seed=self.seed,
                        index_offset=self.start_index + self.n + lo,
                        n_bins=self.n_bins,
                    )
                )
        self._labels.append(y.copy())
        self._preds.append(preds.astype(np.int32))
        if self.keep_logits:
            self._logits.append(np.array(z, dtype=np.float32))
        self.n += b

    def _valid_maps(self, maps: npt.ArrayLike, b: int | None) -> npt.NDArray[np.floating]:
        m = self.num_members
        shape = {0: m} if b is None else {0: m, 1: b}
        return _check_float(maps, "maps", (3, 4, 5), shape=shape, what=f"(M={m}, B, ...) attribution maps")

    def _valid_features(self, features: Sequence[npt.ArrayLike] | npt.ArrayLike, b: int | None) -> list[F64]:
        m = self.num_members
        flist: list[Any] = list(features)  # type: ignore[arg-type]
        if len(flist) != m:
            raise _fail("features", f"{m} per-member feature arrays", f"{len(flist)}")
        n = b if b is not None else np.asarray(flist[0]).shape[0]
        feats: list[F64] = [
            np.asarray(_check_float(f, f"features[{i}]", (2, 3, 4), shape={0: n}), dtype=np.float64).reshape(n, -1)
            for i, f in enumerate(flist)
        ]
        if n < 4:
            raise _fail("features", "a batch of at least 4 samples (unbiased HSIC)", f"{n} samples")
        return feats

    def _add_features(self, feats: list[F64]) -> None:
        grams = [f @ f.T for f in feats]
        for i in range(self.num_members):
            for k in range(i, self.num_members):
                self.hsic[i, k] += _hsic1(grams[i], grams[k])
                self.hsic[k, i] = self.hsic[i, k]
        self.cka_batches += 1

    def update_attributions(self, maps: npt.ArrayLike) -> None:
        """Add attribution maps ``(M, B, 3, H, W)`` of any B samples (independently of :meth:`update`).

        Use it when maps are computed for a sample subset only; D_att and the other attribution metrics
        are then means over the samples that had maps.
        """
        self.attribution._update_checked(self._valid_maps(maps, None))

    def update_features(self, features: Sequence[npt.ArrayLike] | npt.ArrayLike) -> None:
        """Add one batch (B >= 4) of per-member CKA features (``(M, B, D)`` or M arrays ``(B, D_i)``)."""
        self._add_features(self._valid_features(features, None))

    def _update_members(self, z64: F64, y: npt.NDArray[np.int64], preds: npt.NDArray[np.int64], lse: F64) -> None:
        rows = np.arange(y.size)
        for i in range(self.num_members):
            zi = z64[i]
            rank = _label_rank(zi, y)
            self.member_top1[i] += (rank == 0).sum()
            self.member_top5[i] += (rank < 5).sum()
            self.member_nll[i] += (lse[i] - zi[rows, y]).sum()
            conf = np.exp(zi[rows, preds[i]] - lse[i])
            near = _near_bin_edges(conf, self.n_bins)
            if near.any():  # the reference formula where a bin edge is within rounding distance
                zn = zi[near]
                conf[near] = 1.0 / np.exp(zn - zn.max(axis=1, keepdims=True)).sum(axis=1)
            self.member_ece[i] += _ece_update(conf, preds[i] == y, self.n_bins)

    # ------------------------------------------------------------------ merge / io

    def _settings(self) -> dict[str, Any]:
        return {
            "member_names": self.member_names,
            "num_classes": self.num_classes,
            "subset_sizes": list(self.subset_sizes),
            "consensus": [r.value for r in self.consensus],
            "seed": self.seed,
            "n_bins": self.n_bins,
            "attribution_norm": self.attribution_norm.value,
            "hashes": self.hashes,
            "keep_logits": self.keep_logits,
        }

    def merge(self, other: PoolStats) -> None:
        """Append a shard that follows this one (``other.start_index == self.start_index + self.n``)."""
        if not isinstance(other, PoolStats) or other._settings() != self._settings():
            raise _fail("other", "a PoolStats with the same members and settings", "different settings")
        if other.n and other.start_index != self.start_index + self.n:
            raise _fail(
                "other",
                f"the shard starting at global index {self.start_index + self.n}",
                f"start_index {other.start_index}",
            )
        self.n += other.n
        self._labels += other._labels
        self._preds += other._preds
        self._logits += other._logits
        self.member_top1 += other.member_top1
        self.member_top5 += other.member_top5
        self.member_nll += other.member_nll
        self.member_ece += other.member_ece
        self.tables += other.tables
        self.pdr_counts += other.pdr_counts
        self.kl_sums += other.kl_sums
        self.attribution.merge(other.attribution)
        self.hsic += other.hsic
        self.cka_batches += other.cka_batches
        for key, stats in self.subset_stats.items():
            stats.add(other.subset_stats[key])

    def save(self, path: str | Path) -> Path:
        """Write everything to one ``.npz`` file atomically (format :data:`POOL_FORMAT`)."""
        path = Path(path)
        meta = {"format": POOL_FORMAT, **self._settings(), "n": self.n, "start_index": self.start_index}
        meta["cka_batches"] = self.cka_batches
        arrays: dict[str, Any] = {
            "meta": np.array(json.dumps(meta)),
            "labels": self.labels,
            "preds": self.preds,
            "member_top1": self.member_top1,
            "member_top5": self.member_top5,
            "member_nll": self.member_nll,
            "member_ece": self.member_ece,
            "tables": self.tables,
            "pdr_counts": self.pdr_counts,
            "kl_sums": self.kl_sums,
            "attr_ssd": self.attribution.ssd,
            "attr_rmse": self.attribution.rmse,
            "attr_hamming": self.attribution.hamming,
            "attr_n": np.array(self.attribution.n),
            **({} if self.attribution.sample_ssd is None else {"attr_sample_ssd": self.attribution.sample_ssd}),
            "hsic": self.hsic,
        }
        if self.keep_logits:
            arrays["logits"] = self.logits
        for j, ((k, rule), stats) in enumerate(self.subset_stats.items()):
            arrays.update(stats.arrays(f"subset{j}_"))
            arrays[f"subset{j}_key"] = np.array(f"{k}:{rule.value}")
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> PoolStats:
        """Read a file written by :meth:`save`."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
            meta = json.loads(str(arrays["meta"]))
        except (OSError, ValueError, KeyError) as exc:
            raise _fail("path", f"an {POOL_FORMAT} .npz file", f"{path} ({exc})") from exc
        if meta.get("format") != POOL_FORMAT:
            raise _fail("path", f"an {POOL_FORMAT} .npz file", f"format {meta.get('format')!r}")
        pool = cls(
            meta["member_names"],
            meta["num_classes"],
            subset_sizes=meta["subset_sizes"],
            consensus=meta["consensus"],
            seed=meta["seed"],
            n_bins=meta["n_bins"],
            attribution_norm=meta["attribution_norm"],
            hashes=meta["hashes"],
            keep_logits=meta["keep_logits"],
            start_index=meta["start_index"],
        )
        pool.n = int(meta["n"])
        pool.cka_batches = int(meta["cka_batches"])
        if pool.n:
            pool._labels = [arrays["labels"].astype(np.int64)]
            pool._preds = [arrays["preds"].astype(np.int32)]
            if pool.keep_logits:
                pool._logits = [arrays["logits"].astype(np.float32)]
        for name in ("member_top1", "member_top5", "member_nll", "member_ece", "tables", "pdr_counts", "kl_sums"):
            setattr(pool, name, arrays[name].astype(np.float64))
        pool.hsic = arrays["hsic"].astype(np.float64)
        pool.attribution.ssd = arrays["attr_ssd"].astype(np.float64)
        pool.attribution.rmse = arrays["attr_rmse"].astype(np.float64)
        pool.attribution.hamming = arrays["attr_hamming"].astype(np.float64)
        pool.attribution.n = int(arrays["attr_n"])
        if "attr_sample_ssd" in arrays or pool.attribution.n:  # a file without them: D_att gets no interval
            pool.attribution.sample_ssd = arrays.get("attr_sample_ssd")
        j = 0
        while f"subset{j}_key" in arrays:
            k_str, rule = str(arrays[f"subset{j}_key"]).split(":")
            pool.subset_stats[(int(k_str), Consensus(rule))] = SubsetStats.from_arrays(arrays, f"subset{j}_")
            j += 1
        return pool

    # ------------------------------------------------------------------ results

    def member_metrics(self) -> dict[str, dict[str, float]]:
        """``{member: {"top1", "top5", "nll", "ece"}}`` over all samples (NaN before any sample)."""
        n = self.n or float("nan")
        return {
            name: {
                "top1": float(self.member_top1[i] / n),
                "top5": float(self.member_top5[i] / n),
                "nll": float(self.member_nll[i] / n),
                "ece": _ece_compute(self.member_ece[i]),
            }
            for i, name in enumerate(self.member_names)
        }

    def pairwise(self) -> dict[str, F64]:
        """Pool ``(M, M)`` matrices: correctness metrics, pdr, kl_divergence, attribution and CKA ones.

        Attribution entries (``attribution_ssd``, ``attribution_rmse``, ``hash_*``) are NaN without maps,
        ``cka`` is NaN without features.
        """
        m, n = self.num_members, self.n or float("nan")
        out: dict[str, F64] = {
            "disagreement": disagreement_from_tables(self.tables),
            "q_statistic": q_statistic_from_tables(self.tables),
            "correlation": correlation_from_tables(self.tables),
            "double_fault": double_fault_from_tables(self.tables),
            "pdr": self.pdr_counts / n,
            "kl_divergence": self.kl_sums / n,
        }
        na = self.attribution.n or float("nan")
        out["attribution_ssd"] = self.attribution.ssd / na
        out["attribution_rmse"] = self.attribution.rmse / na
        for j, name in enumerate(HASH_METHODS):
            out[f"hash_{name}"] = self.attribution.hamming[j] / na
        d = np.sqrt(np.clip(np.diag(self.hsic), 0, None))
        den = d[:, None] * d[None, :]
        with np.errstate(invalid="ignore", divide="ignore"):
            cka = np.where(den > 0, self.hsic / np.where(den > 0, den, 1.0), np.nan)
        out["cka"] = cka if self.cka_batches else np.full((m, m), np.nan)
        return out

    def ensemble_stats(self, k: int, consensus: Consensus | str = "average", *, seed: int | None = None) -> SubsetStats:
        """All-``k``-subset ensemble statistics: accumulated ones, or computed now from kept logits.

        Raises:
            MetricInputError: Neither declared in ``subset_sizes``/``consensus`` (with this seed) nor
                computable because the logits were not kept.
        """
        rule = _rule(consensus)
        seed = self.seed if seed is None else int(seed)
        subsets = _all_subsets(self.num_members, k)
        key = (int(k), rule)
        if key in self.subset_stats and (seed == self.seed or rule is not Consensus.MAJORITY):
            return self.subset_stats[key]
        if not self.keep_logits:
            raise _fail(
                "k/consensus",
                f"declared when the PoolStats was built (subset_sizes=({k},), consensus=({rule.value!r},)) "
                "or keep_logits=True",
                f"k={k}, consensus={rule.value!r} not accumulated and logits not kept",
            )
        out = SubsetStats(subsets, n_bins=self.n_bins)
        offset = self.start_index
        for z, y, p in zip(self._logits, self._labels, self._preds, strict=True):
            for lo in range(0, y.size, _CHUNK):
                hi = min(y.size, lo + _CHUNK)
                out.add(
                    subset_batch_stats(
                        z[:, lo:hi],
                        y[lo:hi],
                        subsets,
                        rule,
                        preds=p[:, lo:hi].astype(np.int64),
                        seed=seed,
                        index_offset=offset + lo,
                        n_bins=self.n_bins,
                    )
                )
            offset += y.size
        return out


def _pair_index(subsets: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    k = subsets.shape[1]
    a, b = np.triu_indices(k, 1)
    return subsets[:, a], subsets[:, b]


def _subset_pair_mean(matrix: F64, ia: npt.NDArray[np.int64], ib: npt.NDArray[np.int64]) -> F64:
    """Mean over each subset's pairs of ``(A[i, k] + A[k, i]) / 2``, NaN pairs skipped (NaN if none)."""
    if ia.shape[1] == 0:
        return np.full(ia.shape[0], np.nan)
    vals = (matrix[ia, ib] + matrix[ib, ia]) / 2.0
    ok = ~np.isnan(vals)
    cnt = ok.sum(axis=1)
    with np.errstate(invalid="ignore"):
        out: F64 = np.where(cnt > 0, np.where(ok, vals, 0.0).sum(axis=1) / np.maximum(cnt, 1), np.nan)
    return out


def score_subsets(
    pool_stats: PoolStats,
    k: int,
    *,
    consensus: Consensus | str = "average",
    seed: int | None = None,
    progress: ProgressCallback | None = None,
) -> list[dict[str, Any]]:
    """Score every k-subset of the pool: one row per subset, in ``itertools.combinations`` order.

    Each row has ``"ensemble"`` (member names joined by ``+`` in pool order), ``"members"`` (list of
    names), ``"size"`` and every metric of :data:`ENSEMBLE_METRICS`:

    * ``ensemble_top1/top5/nll/ece`` of the consensus rule (definitions in :mod:`ovdiv.metrics.subsets`),
      ``improvement = ensemble_top1 − max_member_top1``, ``improvement_vs_mean``, ``mean_member_top1``,
      ``max_member_top1``;
    * pairwise metrics (``disagreement``, ``q_statistic``, ``correlation``, ``double_fault``, ``pdr``,
      ``kl_divergence`` (mean over ordered pairs), ``attribution_rmse``, ``hash_*``, ``cka_mean``) as means
      over the subset's pairs, undefined pairs skipped, NaN if none (k = 1, no maps, no features);
    * ``shannon_equitability_correct/wrong`` (NaN if the ensemble is never right / never wrong);
    * ``attribution_diversity``: D_att exactly from the pairwise SSD sums (NaN without maps).

    With a rule other than ``average`` the consensus-dependent keys carry a ``:rule`` suffix
    (``ensemble_top1:majority``, ``improvement:majority``, ...).

    Args:
        pool_stats: The accumulated pool.
        k: Subset size.
        consensus: Consensus rule (must have been declared in the pool, or its logits kept).
        seed: Majority tie-break seed (default: the pool's).
        progress: Optional progress callback (one event when done).

    Returns:
        ``C(M, k)`` dict rows.
    """
    pool = pool_stats
    if not isinstance(pool, PoolStats):
        raise _fail("pool_stats", "a PoolStats", type(pool).__name__)
    if pool.n == 0:
        raise _fail("pool_stats", "a PoolStats with at least one sample", "an empty pool")
    rule = _rule(consensus)
    stats = pool.ensemble_stats(k, rule, seed=seed)
    subsets = stats.subsets
    n = float(pool.n)
    suffix = "" if rule is Consensus.AVERAGE else f":{rule.value}"
    member_top1 = pool.member_top1 / n
    sub_top1 = member_top1[subsets]
    ens_top1 = stats.top1 / n
    cols: dict[str, F64] = {
        "ensemble_top1": ens_top1,
        "ensemble_top5": stats.top5 / n,
        "ensemble_nll": stats.nll / n,
        "ensemble_ece": np.array([_ece_compute(e) for e in stats.ece]),
        "improvement": ens_top1 - sub_top1.max(axis=1),
        "improvement_vs_mean": ens_top1 - sub_top1.mean(axis=1),
        "mean_member_top1": sub_top1.mean(axis=1),
        "max_member_top1": sub_top1.max(axis=1),
    }
    with np.errstate(invalid="ignore", divide="ignore"):
        eq = np.where(stats.eq_count > 0, stats.eq / np.where(stats.eq_count > 0, stats.eq_count, 1), np.nan)
    cols["shannon_equitability_correct"] = eq[:, 0]
    cols["shannon_equitability_wrong"] = eq[:, 1]
    ia, ib = _pair_index(subsets)
    mats = pool.pairwise()
    for name in ("disagreement", "q_statistic", "correlation", "double_fault", "pdr", "kl_divergence"):
        cols[name] = _subset_pair_mean(mats[name], ia, ib)
    if pool.attribution.n:
        ssd = pool.attribution.ssd
        cols["attribution_diversity"] = ssd[ia, ib].sum(axis=1) / (k * k * pool.attribution.n)
    else:
        cols["attribution_diversity"] = np.full(subsets.shape[0], np.nan)
    cols["attribution_rmse"] = _subset_pair_mean(mats["attribution_rmse"], ia, ib)
    for name in HASH_METHODS:
        cols[f"hash_{name}"] = _subset_pair_mean(mats[f"hash_{name}"], ia, ib)
    cols["cka_mean"] = _subset_pair_mean(mats["cka"], ia, ib)
    keys = {name: (name + suffix if name in _RULE_DEPENDENT else name) for name in ENSEMBLE_METRICS}
    names = pool.member_names
    rows: list[dict[str, Any]] = []
    for s, members in enumerate(subsets.tolist()):
        row: dict[str, Any] = {
            "ensemble": "+".join(names[i] for i in members),
            "members": [names[i] for i in members],
            "size": int(k),
        }
        for name in ENSEMBLE_METRICS:
            row[keys[name]] = float(cols[name][s])
        rows.append(row)
    if progress is not None:
        progress(Progress("score subsets", len(rows), len(rows), detail=f"k={k} {rule.value}"))
    log.debug("scored %d %d-subsets (%s), %d exact fallbacks", len(rows), k, rule.value, stats.fallback)
    return rows
