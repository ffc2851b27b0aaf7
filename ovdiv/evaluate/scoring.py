"""Scoring of cached per-member data: member rows and ensemble rows for one ensemble or every k-subset.

Everything here runs on cached arrays only (no model executes). Formulas are those of
:mod:`ovdiv.metrics` (DESIGN.md §5); pairwise metrics are computed once on the pool as ``(M, M)``
matrices and an ensemble ``S`` takes the mean over its unordered pairs (:func:`ovdiv.metrics.pair_mean`),
so scoring all k-subsets costs one consensus evaluation per subset. Attribution diversity of a subset
follows exactly from the pool's pairwise SSD sums (:func:`ovdiv.metrics.attribution_diversity_from_ssd`).

Rows per dataset:

* member rows (``member`` set): ``top1``, ``top5`` (top-min(5, C)), ``nll``, ``ece``;
* ensemble rows (``ensemble`` set), per consensus rule (suffix ``:rule`` except for the first rule):
  ``ensemble_top1``, ``ensemble_top5``, ``ensemble_nll``, ``ensemble_ece``, ``improvement``,
  ``improvement_vs_mean``, ``shannon_equitability_correct``, ``shannon_equitability_wrong``;
  and once: ``mean_member_top1``, ``max_member_top1``, ``disagreement``, ``q_statistic``,
  ``correlation``, ``double_fault``, ``pdr``, ``kl_divergence``, and when computed
  ``attribution_diversity``, ``attribution_rmse``, ``hash_ahash``, ``hash_phash``, ``hash_dhash``,
  ``hash_whash`` (over the first ``attribution_samples`` images) and ``cka_mean`` (mean pairwise linear
  CKA of penultimate features over the first ``cka_samples`` images).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ovdiv import metrics as mt
from ovdiv.evaluate.ensemble import ensemble_name
from ovdiv.evaluate.options import EvalOptions
from ovdiv.metrics import pairwise as pw

__all__ = [
    "score_dataset",
    "new_attribution_stats",
    "save_attribution_stats",
    "load_attribution_stats",
    "postprocess_maps",
    "cka_matrices",
]

_CONSENSUS_METRICS = (
    "ensemble_top1",
    "ensemble_top5",
    "ensemble_nll",
    "ensemble_ece",
    "improvement",
    "improvement_vs_mean",
    "shannon_equitability_correct",
    "shannon_equitability_wrong",
)


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


def _suffix(rule: Any, first: Any) -> str:
    return "" if rule == first else f":{rule}"


def score_dataset(
    spec: str,
    *,
    names: Sequence[str],
    logits: np.ndarray,
    labels: np.ndarray,
    options: EvalOptions,
    attribution_stats: mt.AttributionDiversity | None = None,
    features: Sequence[dict[str, np.ndarray] | None] | None = None,
    examples: dict[str, np.ndarray] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, dict[str, np.ndarray]]]:
    """Rows for one dataset (see module docstring) and its report side data.

    Args:
        spec: Dataset spec (the rows' ``dataset``).
        names: Pool member names (M).
        logits: Pool logits ``(M, N, C)``.
        labels: ``(N,)`` int labels.
        options: The run's options (consensus rules, subset size, seed).
        attribution_stats: Merged pairwise attribution statistics of the pool, if attribution ran.
        features: Per member CKA features (dict layer -> ``(n, D)``), if computed.
        examples: Example maps for the report (see :mod:`ovdiv.evaluate.results`).

    Returns:
        ``(rows, {"saliency": arrays, "cka": arrays})`` (kinds present only when computed).
    """
    m, _, c = logits.shape
    y = np.asarray(labels, dtype=np.int64)
    k5 = min(5, c)
    rows: list[dict[str, Any]] = []

    def row(metric: str, value: float, *, member: str | None = None, ens: str | None = None) -> None:
        rows.append({"ensemble": ens, "member": member, "dataset": spec, "metric": metric, "value": float(value)})

    top1 = mt.member_topk_accuracy(logits, y, 1)
    top5 = mt.member_topk_accuracy(logits, y, k5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mt.MetricWarning)
        for i, name in enumerate(names):
            row("top1", top1[i], member=name)
            row("top5", top5[i], member=name)
            row("nll", mt.nll_from_logits(logits[i], y), member=name)
            row("ece", mt.expected_calibration_error(mt.softmax(logits[i]), y), member=name)

    arrays: dict[str, dict[str, np.ndarray]] = {}
    if m < 2:
        return rows, arrays

    preds = logits.argmax(axis=2).astype(np.int64)
    tables = mt.correctness_tables(preds == y[None, :])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mt.MetricWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        pair = {"pdr": mt.pdr(preds), "kl_divergence": mt.kl_divergence_from_logits(logits)}
        pair["disagreement"] = pw.disagreement_from_tables(tables)
        pair["q_statistic"] = pw.q_statistic_from_tables(tables)
        pair["correlation"] = pw.correlation_from_tables(tables)
        pair["double_fault"] = pw.double_fault_from_tables(tables)
    att: dict[str, Any] | None = None
    if attribution_stats is not None and attribution_stats.n > 0:
        att = attribution_stats.compute()
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

    k = options.subset_size or m
    rules = options.consensus
    for subset in itertools.combinations(range(m), k):
        idx = np.asarray(subset, dtype=np.int64)
        ens = ensemble_name([names[i] for i in subset])
        sub = logits[idx]
        accs = top1[idx]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", mt.MetricWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            for rule in rules:
                sfx = _suffix(rule, rules[0])
                acc = mt.ensemble_topk_accuracy(sub, y, 1, rule, seed=options.seed)
                row(f"ensemble_top1{sfx}", acc, ens=ens)
                row(f"ensemble_top5{sfx}", mt.ensemble_topk_accuracy(sub, y, k5, rule, seed=options.seed), ens=ens)
                probs = mt.ensemble_probs(sub, rule)
                row(f"ensemble_nll{sfx}", mt.nll(probs, y), ens=ens)
                row(f"ensemble_ece{sfx}", mt.expected_calibration_error(probs, y), ens=ens)
                row(f"improvement{sfx}", mt.improvement(acc, accs), ens=ens)
                row(f"improvement_vs_mean{sfx}", mt.improvement_vs_mean(acc, accs), ens=ens)
                eq = mt.shannon_equitability(
                    preds[idx], y, mt.ensemble_predict(sub, rule, seed=options.seed), num_classes=c
                )
                row(f"shannon_equitability_correct{sfx}", eq.correct, ens=ens)
                row(f"shannon_equitability_wrong{sfx}", eq.wrong, ens=ens)
            row("mean_member_top1", float(accs.mean()), ens=ens)
            row("max_member_top1", float(accs.max()), ens=ens)
            for name in ("disagreement", "q_statistic", "correlation", "double_fault", "pdr", "kl_divergence"):
                row(name, mt.pair_mean(pair[name], idx), ens=ens)
            if att is not None and attribution_stats is not None:
                row(
                    "attribution_diversity",
                    mt.attribution_diversity_from_ssd(attribution_stats.ssd, attribution_stats.n, idx),
                    ens=ens,
                )
                row("attribution_rmse", mt.pair_mean(att["attribution_rmse"], idx), ens=ens)
                for h in mt.HASH_METHODS:
                    key = f"hash_{h}"
                    if key in att:
                        row(key, mt.pair_mean(att[key], idx), ens=ens)
            if cka is not None and "penultimate" in cka:
                row("cka_mean", mt.pair_mean(cka["penultimate"], idx), ens=ens)
    return rows, arrays
