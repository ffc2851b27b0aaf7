"""Scoring of cached per-member data: member rows and ensemble rows for one ensemble or every k-subset.

Everything here runs on cached arrays only (no model executes). The pool's logits stream chunk by
chunk into :class:`ovdiv.metrics.PoolStats` (all-subset sufficient statistics, memory flat in N) and
:func:`ovdiv.metrics.score_subsets` scores every subset (DESIGN.md §5 formulas). Attribution diversity
of a subset follows exactly from the pool's pairwise SSD sums, accumulated per chunk by the engine.

Rows per dataset:

* member rows (``member`` set): ``top1``, ``top5``, ``nll``, ``ece``;
* ensemble rows (``ensemble`` set), per consensus rule (suffix ``:rule`` for rules other than
  ``average``, e.g. ``ensemble_top1:majority``): ``ensemble_top1``, ``ensemble_top5``, ``ensemble_nll``,
  ``ensemble_ece``, ``improvement``, ``improvement_vs_mean``, ``shannon_equitability_correct``,
  ``shannon_equitability_wrong``; and once: ``mean_member_top1``, ``max_member_top1``,
  ``disagreement``, ``q_statistic``, ``correlation``, ``double_fault``, ``pdr``, ``kl_divergence``, and
  when computed ``attribution_diversity``, ``attribution_rmse``, ``hash_ahash``, ``hash_phash``,
  ``hash_dhash``, ``hash_whash`` (over the first ``attribution_samples`` images) and ``cka_mean`` (mean
  pairwise linear CKA of penultimate features over the first ``cka_samples`` images; the per-layer
  matrices go to the report's side data).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ovdiv import metrics as mt
from ovdiv.evaluate.options import EvalOptions

__all__ = [
    "score_dataset",
    "new_attribution_stats",
    "save_attribution_stats",
    "load_attribution_stats",
    "postprocess_maps",
    "cka_matrices",
]


class _Stats(mt.AttributionDiversity):
    """:class:`ovdiv.metrics.AttributionDiversity` whose ``update`` also takes the batch's logits/labels."""

    def update(self, logits: Any, labels: Any, maps: Any) -> None:  # type: ignore[override]
        """Add the maps ``(M, B, 3, H, W)`` of one batch (logits/labels are not needed here)."""
        super().update(maps)

    def save(self, path: Path) -> None:
        """Atomically write the accumulator's sufficient statistics."""
        save_attribution_stats(self, path)


def new_attribution_stats(names: Sequence[str], num_classes: int, options: EvalOptions) -> _Stats:
    """An empty pairwise attribution accumulator for a pool (norm from ``options``)."""
    return _Stats(len(names), options.attribution_norm, hashes=True)


def save_attribution_stats(stats: mt.AttributionDiversity, path: Path) -> None:
    """Write ``ssd``, ``rmse``, ``hamming`` sums and ``n`` atomically as npz."""
    from ovdiv.evaluate.cache import EvalCache

    EvalCache.save_npz(
        path,
        ssd=stats.ssd,
        rmse=stats.rmse,
        hamming=stats.hamming,
        n=np.int64(stats.n),
        num_members=np.int64(stats.num_members),
        norm=np.asarray(str(stats.norm)),
        hashes=np.bool_(stats.hashes),
    )


def load_attribution_stats(paths: Sequence[Path]) -> mt.AttributionDiversity | None:
    """Merge chunk statistics written by :func:`save_attribution_stats` (None if any is unreadable)."""
    from ovdiv.evaluate.cache import EvalCache

    total: mt.AttributionDiversity | None = None
    for p in paths:
        z = EvalCache.load_npz(p)
        if z is None:
            return None
        s = mt.AttributionDiversity(int(z["num_members"]), str(z["norm"]), hashes=bool(z["hashes"]))
        s.ssd, s.rmse, s.hamming, s.n = z["ssd"], z["rmse"], z["hamming"], int(z["n"])
        if total is None:
            total = s
        else:
            total.merge(s)
    return total


def postprocess_maps(maps: np.ndarray) -> np.ndarray:
    """Report view of raw maps ``(M, B, 3, H, W)``: ``|a|`` channel-max divided by its max, ``(M, B, H, W)``."""
    a = np.abs(np.asarray(maps, dtype=np.float32)).max(axis=2)
    peak = a.reshape(a.shape[0], a.shape[1], -1).max(axis=2)[..., None, None]
    return np.where(peak > 0, a / np.where(peak > 0, peak, 1), 0).astype(np.float32)


def cka_matrices(features: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Linear CKA ``(M, M)`` per layer key every member has (``penultimate``, ``stage1``, ...)."""
    keys = [k for k in features[0] if all(k in f for f in features[1:])]
    m = len(features)
    out: dict[str, np.ndarray] = {}
    for key in keys:
        mat = np.eye(m)
        for i, k in itertools.combinations(range(m), 2):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", mt.MetricWarning)
                mat[i, k] = mat[k, i] = mt.linear_cka(features[i][key], features[k][key])
        out[key] = mat
    return out


_SCORE_SLICE = 64  # samples per PoolStats.update (its pairwise temporaries scale with M^2 x slice x C)
_ATTRIBUTION_METRICS = ("attribution_diversity", "attribution_rmse", *(f"hash_{h}" for h in mt.HASH_METHODS))


def score_dataset(
    spec: str,
    *,
    names: Sequence[str],
    num_classes: int,
    chunks: Iterable[tuple[np.ndarray, np.ndarray]],
    options: EvalOptions,
    attribution_stats: mt.AttributionDiversity | None = None,
    features: Sequence[dict[str, np.ndarray] | None] | None = None,
    examples: dict[str, np.ndarray] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, dict[str, np.ndarray]]]:
    """Rows for one dataset (see module docstring) and its report side data.

    The pool's logits stream chunk by chunk into a :class:`ovdiv.metrics.PoolStats` that accumulates the
    all-subset statistics of the requested subset size and consensus rules, so memory stays flat in N;
    :func:`ovdiv.metrics.score_subsets` then gives one row per subset.

    Args:
        spec: Dataset spec (the rows' ``dataset``).
        names: Pool member names (M).
        num_classes: C.
        chunks: ``(logits (M, B, C), labels (B,))`` in sample order, covering the dataset.
        options: The run's options (consensus rules, subset size, seed, attribution norm).
        attribution_stats: Merged pairwise attribution statistics of the pool, if attribution ran.
        features: Per member CKA features (dict layer -> ``(n, D)``), if computed.
        examples: Example maps for the report (see :mod:`ovdiv.evaluate.results`).

    Returns:
        ``(rows, {"saliency": arrays, "cka": arrays})`` (kinds present only when computed).
    """
    m = len(names)
    k = options.subset_size or m
    rules = options.consensus
    pool = mt.PoolStats(
        names,
        num_classes,
        subset_sizes=(k,) if m >= 2 else (),
        consensus=rules,
        seed=options.seed,
        attribution_norm=options.attribution_norm,
        hashes=True,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mt.MetricWarning)
        for logits, labels in chunks:
            for lo in range(0, len(labels), _SCORE_SLICE):  # small slices: scoring memory is flat in N
                pool.update(logits[:, lo : lo + _SCORE_SLICE], labels[lo : lo + _SCORE_SLICE])
    rows: list[dict[str, Any]] = []

    def row(metric: str, value: Any, *, member: str | None = None, ens: str | None = None) -> None:
        rows.append({"ensemble": ens, "member": member, "dataset": spec, "metric": metric, "value": float(value)})

    for name, vals in pool.member_metrics().items():
        for metric in ("top1", "top5", "nll", "ece"):
            row(metric, vals[metric], member=name)
    arrays: dict[str, dict[str, np.ndarray]] = {}
    if m < 2:
        return rows, arrays

    cka: dict[str, np.ndarray] | None = None
    if features is not None and all(f is not None for f in features):
        cka = cka_matrices([f for f in features if f is not None])
        first = features[0] or {}
        n_cka = int(next(iter(first.values())).shape[0]) if first else 0
        arrays["cka"] = {
            **cka,
            "members": np.asarray(list(names)),
            "dataset": np.asarray(spec),
            "n_samples": np.asarray(n_cka, dtype=np.int64),
        }
    if examples is not None:
        arrays["saliency"] = dict(examples)
    has_att = attribution_stats is not None and attribution_stats.n > 0
    if has_att:
        pool.attribution.merge(attribution_stats)  # type: ignore[arg-type]

    per_rule = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mt.MetricWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        for rule in rules:
            per_rule.append(mt.score_subsets(pool, k, consensus=rule))
    for j, subset_row in enumerate(per_rule[0]):
        ens = subset_row["ensemble"]
        idx = np.asarray([names.index(n) for n in subset_row["members"]], dtype=np.int64)
        seen: set[str] = set()
        for rule_rows in per_rule:
            for metric, value in rule_rows[j].items():
                if metric in ("ensemble", "members", "size") or metric in seen:
                    continue
                if metric == "cka_mean" or (metric in _ATTRIBUTION_METRICS and not has_att):
                    continue
                seen.add(metric)
                row(metric, value, ens=ens)
        if cka is not None and "penultimate" in cka:
            row("cka_mean", mt.pair_mean(cka["penultimate"], idx), ens=ens)
    return rows, arrays
