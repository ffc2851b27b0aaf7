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

Statistical evidence (:mod:`ovdiv.metrics.evidence`; level, resamples, method and seed from the options):
member ``top1``/``top5`` and ``ensemble_top1``/``ensemble_top5`` rows get a binomial interval
(``ci_low``, ``ci_high``, ``ci_method`` = ``clopper-pearson`` or ``wilson``, ``ci_level``); with the
bootstrap on (``bootstrap > 0``) ``improvement``, ``improvement_vs_mean``, ``mean_member_top1``,
``max_member_top1``, ``disagreement``, ``q_statistic``, ``correlation``, ``double_fault`` and ``pdr`` rows
get a paired-bootstrap interval (``bootstrap-percentile`` / ``bootstrap-bca``); ``improvement`` rows get
``p_value``, the exact one-sided McNemar p-value of "the ensemble beats its best member" (bootstrap or
not). ``attribution_diversity`` and ``cka_mean`` rows get paired-bootstrap intervals over the images
they are computed on (:func:`_add_map_evidence`). Every scored ensemble (``--ensemble`` or each subset,
so a subset's rows equal those of a direct run of it) also has, per member and consensus rule, an
``improvement_vs_member`` row (``ensemble`` and ``member`` both set):
Acc_ens − Acc_member with its paired-bootstrap interval and the one-sided exact McNemar ``p_value`` of
"the ensemble beats this member" (what a policy ``relative_to: {"member": NAME}`` with a bound uses).
Other rows have no interval keys (no per-sample data is kept for them).
"""

from __future__ import annotations

import itertools
import logging
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ovdiv import metrics as mt
from ovdiv.evaluate.options import EvalOptions
from ovdiv.metrics.evidence import (
    BOOTSTRAP_METRICS,
    SubsetEvidence,
    attribution_bootstrap,
    cka_bootstrap,
    correlation_evidence,
    subset_evidence,
)
from ovdiv.metrics.pool import _all_subsets
from ovdiv.types import Consensus

log = logging.getLogger("ovdiv.evaluate")

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
    """Write ``ssd``, ``rmse``, ``hamming`` sums, ``n`` and the per-sample ``sample_ssd`` atomically as npz."""
    from ovdiv.evaluate.cache import EvalCache

    extra = {} if stats.sample_ssd is None else {"sample_ssd": stats.sample_ssd}
    EvalCache.save_npz(
        path,
        **extra,
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
        s.sample_ssd = z.get("sample_ssd")  # None in chunks cached by an older version: D_att gets no interval
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


def _with_ci(row: dict[str, Any], lo: Any, hi: Any, method: str, level: float) -> None:
    lo_f, hi_f = float(lo), float(hi)
    if np.isfinite(lo_f) and np.isfinite(hi_f):
        row.update(ci_low=lo_f, ci_high=hi_f, ci_method=method, ci_level=float(level))


_CKA_GRAM_BYTES = 1 << 30  # the CKA bootstrap holds M Gram matrices (n, n) float64; above this it is skipped
_CKA_FLOPS = 6e10  # ~M² B n² multiply-adds: 14 members x 256 images x 2000 resamples (~3e10) is ~45 s on 2 cores


def _add_map_evidence(
    ev: SubsetEvidence,
    pool: mt.PoolStats,
    names: Sequence[str],
    k: int,
    options: EvalOptions,
    cka: dict[str, np.ndarray] | None,
    features: Sequence[dict[str, np.ndarray] | None] | None,
    has_att: bool,
) -> None:
    """Add paired-bootstrap intervals of ``attribution_diversity`` and ``cka_mean`` to ``ev`` (first rule).

    Same seed, B, level and method as the other statistics; D_att resamples the first ``attribution_samples``
    images, CKA the first ``cka_samples`` (the images each is computed on). No interval (and a log line)
    when the per-sample data is missing (attribution cached by an older version) or the CKA bootstrap
    would exceed 1 GB of Gram matrices or ~6e10 multiply-adds (:data:`_CKA_FLOPS`).
    """
    subsets = _all_subsets(len(names), k)
    kw: dict[str, Any] = {
        "n_resamples": options.bootstrap,
        "level": options.ci_level,
        "method": options.ci_method,
        "seed": options.seed,
    }
    if has_att:
        d = pool.attribution.sample_ssd
        if d is None or d.shape[0] != pool.attribution.n:
            log.warning("attribution_diversity: per-sample values not cached (older cache); no interval")
        else:
            ev.add(attribution_bootstrap(d, subsets, len(names), **kw))
    if cka is not None and "penultimate" in cka and features is not None:
        feats = [np.asarray(f["penultimate"]) for f in features if f is not None]
        n_cka = feats[0].shape[0]
        m = len(names)
        if m * n_cka * n_cka * 8 > _CKA_GRAM_BYTES or m * (m + 1) * options.bootstrap * n_cka * n_cka > _CKA_FLOPS:
            log.warning(
                "cka_mean: %d images x %d members x %d resamples is too much for the CKA bootstrap; no interval",
                n_cka,
                m,
                options.bootstrap,
            )
        elif n_cka >= 2:
            ev.add(cka_bootstrap(feats, subsets, **kw))


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
) -> tuple[list[dict[str, Any]], dict[str, dict[str, np.ndarray]], list[dict[str, Any]]]:
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
        ``(rows, {"saliency": arrays, "cka": arrays}, correlation)``: side-data kinds present only when
        computed; ``correlation`` is the dataset's correlation study with bootstrap intervals
        (:func:`ovdiv.metrics.evidence.correlation_evidence`; empty below 3 ensembles).
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

    def row(metric: str, value: Any, *, member: str | None = None, ens: str | None = None) -> dict[str, Any]:
        r = {"ensemble": ens, "member": member, "dataset": spec, "metric": metric, "value": float(value)}
        rows.append(r)
        return r

    level = options.ci_level
    member_ci = {
        "top1": mt.binomial_interval(pool.member_top1, pool.n, level, options.binomial),
        "top5": mt.binomial_interval(pool.member_top5, pool.n, level, options.binomial),
    }
    for i, (name, vals) in enumerate(pool.member_metrics().items()):
        for metric in ("top1", "top5", "nll", "ece"):
            r = row(metric, vals[metric], member=name)
            if metric in member_ci:
                _with_ci(r, member_ci[metric][0][i], member_ci[metric][1][i], options.binomial, level)
    arrays: dict[str, dict[str, np.ndarray]] = {}
    if m < 2:
        return rows, arrays, []

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
    evidence: list[SubsetEvidence] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mt.MetricWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        for r_i, rule in enumerate(rules):
            per_rule.append(mt.score_subsets(pool, k, consensus=rule))
            evidence.append(
                subset_evidence(
                    pool,
                    k,
                    rule,
                    n_resamples=options.bootstrap,
                    level=level,
                    method=options.ci_method,
                    binomial=options.binomial,
                    seed=options.seed,
                    keep_boot=r_i == 0,  # the correlation study uses the first rule's Δ
                )
            )
        if options.bootstrap > 0:
            _add_map_evidence(evidence[0], pool, names, k, options, cka, features, has_att)
    # row metric name -> (rule index, evidence statistic); rule-independent ones come from the first rule
    ci_of: dict[str, tuple[int, str]] = {"attribution_diversity": (0, "attribution_diversity")}
    for r_i, rule in enumerate(rules):
        suffix = "" if rule is Consensus.AVERAGE else f":{rule.value}"
        for stat in (*BOOTSTRAP_METRICS, "ensemble_top5"):
            dependent = stat in ("ensemble_top1", "ensemble_top5", "improvement", "improvement_vs_mean")
            if dependent:
                ci_of[stat + suffix] = (r_i, stat)
            elif r_i == 0:
                ci_of[stat] = (0, stat)
    improvement_keys = {
        ("improvement" if rule is Consensus.AVERAGE else f"improvement:{rule.value}"): r_i
        for r_i, rule in enumerate(rules)
    }
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
                r = row(metric, value, ens=ens)
                if metric in ci_of:
                    ev = evidence[ci_of[metric][0]]
                    stat = ci_of[metric][1]
                    if stat in ev.low:
                        _with_ci(r, ev.low[stat][j], ev.high[stat][j], ev.method[stat], level)
                if metric in improvement_keys:
                    r["p_value"] = float(evidence[improvement_keys[metric]].p_value[j])
        # Acc_ens − Acc_member of each member, with paired evidence (same rows as a direct run of the subset)
        for r_i, rule in enumerate(rules):
            ev = evidence[r_i]
            suffix = "" if rule is Consensus.AVERAGE else f":{rule.value}"
            for pos, member in enumerate(idx):
                r = row(f"improvement_vs_member{suffix}", ev.estimate["improvement_vs_member"][j, pos], ens=ens)
                r["member"] = names[member]
                if "improvement_vs_member" in ev.low:
                    lo_, hi_ = ev.low["improvement_vs_member"][j, pos], ev.high["improvement_vs_member"][j, pos]
                    _with_ci(r, lo_, hi_, ev.method["improvement_vs_member"], level)
                r["p_value"] = float(ev.member_p_value[j, pos])
        if cka is not None and "penultimate" in cka:
            r = row("cka_mean", mt.pair_mean(cka["penultimate"], idx), ens=ens)
            if "cka_mean" in evidence[0].low:
                _with_ci(
                    r,
                    evidence[0].low["cka_mean"][j],
                    evidence[0].high["cka_mean"][j],
                    evidence[0].method["cka_mean"],
                    level,
                )
    rule0 = rules[0]
    target = "improvement" if rule0 is Consensus.AVERAGE else f"improvement:{rule0.value}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        study_rows = [dict(r) for r in per_rule[0]]
        if cka is not None and "penultimate" in cka:
            for r in study_rows:
                idx = np.asarray([names.index(n) for n in r["members"]], dtype=np.int64)
                r["cka_mean"] = mt.pair_mean(cka["penultimate"], idx)
        absent = (*(() if has_att else _ATTRIBUTION_METRICS), *(() if cka is not None else ("cka_mean",)))
        for r in study_rows:  # the study covers the metrics that have rows
            for key in absent:
                r.pop(key, None)
        correlation = correlation_evidence(
            study_rows,
            evidence[0] if options.bootstrap > 0 else None,
            dataset=spec,
            target=target,
            level=level,
        )
    return rows, arrays, correlation
