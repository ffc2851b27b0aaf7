"""Confidence intervals and paired tests for every scored subset of a pool (and its correlation study).

From data a :class:`~ovdiv.metrics.PoolStats` already keeps — per-sample member predictions/labels
``(M, N)`` and every subset's per-sample consensus correctness ``(S, N)`` — :func:`subset_evidence` gives,
for all S subsets at once:

* **binomial intervals** (:func:`~ovdiv.metrics.intervals.binomial_interval`) of ``ensemble_top1`` and
  ``ensemble_top5`` (from their counts) and of each member's ``top1``/``top5``;
* **exact McNemar** p-value of "the ensemble beats its best member" (one-sided, ``greater``): the best
  member is the subset member with the highest top-1 on the data (lowest pool index on ties), the one
  ``improvement`` subtracts;
* **paired bootstrap intervals** (same resampled images for every model and subset) of the statistics
  below, each recomputed *as defined* on every resample:

  - ``improvement`` Δ = Acc_ens − max_i Acc_i: the max is re-taken within each resample (the best member
    may change). This is the bootstrap principle — the interval is for the statistic as reported, and
    it carries the uncertainty of *which* member is best; fixing the data's argmax would treat a
    data-dependent choice as known and be anti-conservative when members are close. (Δ is a
    non-smooth functional when two members tie; its bootstrap distribution is then skewed toward
    smaller Δ, so the interval is conservative for the lower bound.);
  - ``improvement_vs_mean``, ``mean_member_top1``, ``max_member_top1``;
  - ``disagreement``, ``q_statistic``, ``correlation``, ``double_fault`` (from resampled 2x2 correctness
    tables of every member pair) and ``pdr`` (from resampled different-prediction counts), averaged over
    the subset's pairs like :func:`~ovdiv.metrics.score_subsets` (undefined pairs skipped).

  Not bootstrapped, for want of per-sample data (the pool reduces them to sums and drops the rest):
  ``attribution_diversity`` (D_att), ``attribution_rmse``, ``hash_*`` (per-sample map statistics are not
  kept), ``cka_mean`` (kernel HSIC is not a per-sample mean, and a bootstrap resample's duplicated images
  bias it), ``kl_divergence``, ``ensemble_nll``, ``ensemble_ece``, ``shannon_equitability_*``. They get no
  interval (never an invented one).

Every bootstrapped statistic is a function of weighted sums of per-sample 0/1 values
``X = [E (S), C (M), both-correct (P), different-prediction (P)]`` (P = M(M−1)/2 member pairs), so all
resamples of all of them come from ONE matrix product ``X @ Wᵀ`` with the multinomial count matrix
``W (B, N)`` (:func:`~ovdiv.metrics.intervals.bootstrap_sums`). BCa's jackknife uses the closed-form
leave-one-out sums ``Σ X − X[:, i]``, streamed over image blocks into power sums (the acceleration needs
only ``Σ d²`` and ``Σ d³``), so memory stays O(S·B + R·block).

:func:`correlation_evidence` adds percentile-bootstrap intervals to the correlation study (Pearson and
Spearman of each metric vs Δ across subsets): on each image resample every subset's Δ and metric are
recomputed (the distributions above) and the correlation across subsets is recomputed. Metrics without
per-sample data get the point correlation and no interval. Resampling images (not subsets) is the
honest choice: the subsets share members and are not independent draws, while the images are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats

from ovdiv.metrics._checks import _fail
from ovdiv.metrics.correlation import _pearson, _rank
from ovdiv.metrics.intervals import (
    BOOTSTRAP_METHODS,
    CI_METHOD_NAMES,
    acceleration_from_moments,
    binomial_interval,
    bootstrap_interval,
    bootstrap_weights,
    mcnemar_from_counts,
)
from ovdiv.metrics.pool import PoolStats, _all_subsets, _rule
from ovdiv.types import Consensus

__all__ = ["BOOTSTRAP_METRICS", "SubsetEvidence", "subset_bootstrap", "subset_evidence", "correlation_evidence"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

BOOTSTRAP_METRICS: tuple[str, ...] = (
    "ensemble_top1",
    "improvement",
    "improvement_vs_mean",
    "mean_member_top1",
    "max_member_top1",
    "disagreement",
    "q_statistic",
    "correlation",
    "double_fault",
    "pdr",
)
"""Statistics :func:`subset_bootstrap` resamples (``ensemble_top1`` too, for the correlation study)."""

_JACK_CHUNK = 2048  # images per leave-one-out block of the BCa jackknife


@dataclass
class SubsetEvidence:
    """Intervals and tests of every subset (arrays are ``(S,)`` in subset order unless stated).

    Attributes:
        subsets: ``(S, k)`` member indices.
        estimate: Statistic name -> point estimate on the data.
        low: Statistic name -> lower bound (NaN where undefined).
        high: Statistic name -> upper bound.
        method: Statistic name -> ``ci_method`` (``clopper-pearson``, ``wilson``, ``bootstrap-...``).
        boot: Statistic name -> ``(S, B)`` bootstrap distribution (bootstrapped statistics, if kept).
        p_value: One-sided exact McNemar p-value of "ensemble top-1 > best member top-1".
        best_member: Index of the best member of each subset.
        discordant: ``(S, 2)``: images the ensemble gets right and its best member wrong, and the reverse.
        level: Confidence level.
        n_resamples: B (0: no bootstrap).
        seed: Resampling seed.
    """

    subsets: I64
    estimate: dict[str, F64] = field(default_factory=dict)
    low: dict[str, F64] = field(default_factory=dict)
    high: dict[str, F64] = field(default_factory=dict)
    method: dict[str, str] = field(default_factory=dict)
    boot: dict[str, F64] = field(default_factory=dict, repr=False)
    p_value: F64 = field(default_factory=lambda: np.zeros(0))
    best_member: I64 = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    discordant: F64 = field(default_factory=lambda: np.zeros((0, 2)))
    level: float = 0.95
    n_resamples: int = 0
    seed: int = 0


def _pairs(m: int) -> tuple[I64, I64, I64]:
    """Pair lists ``i < j`` (P,) and the ``(M, M)`` pair-id lookup."""
    i, j = np.triu_indices(m, 1)
    pid = np.full((m, m), -1, dtype=np.int64)
    pid[i, j] = pid[j, i] = np.arange(i.size)
    return i.astype(np.int64), j.astype(np.int64), pid


def _pair_mean(vals: F64, sub_pairs: I64) -> F64:
    """Mean over each subset's pairs of pair values ``(P, X)`` -> ``(S, X)``, NaN skipped (NaN if none)."""
    if sub_pairs.shape[1] == 0:
        return np.full((sub_pairs.shape[0], vals.shape[1]), np.nan)
    v = vals[sub_pairs]  # (S, kp, X)
    ok = ~np.isnan(v)
    cnt = ok.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out: F64 = np.where(cnt > 0, np.where(ok, v, 0.0).sum(axis=1) / np.maximum(cnt, 1), np.nan)
    return out


def _ratio(num: F64, den: F64) -> F64:
    with np.errstate(invalid="ignore", divide="ignore"):
        out: F64 = np.where(den == 0, np.nan, num / np.where(den == 0, 1.0, den))
    return out


def _statistics(
    ens: F64,
    mem: F64,
    both: F64,
    diff: F64,
    n: F64 | float,
    subsets: I64,
    pair_i: I64,
    pair_j: I64,
    sub_pairs: I64,
) -> dict[str, F64]:
    """Every bootstrapped statistic ``(S, X)`` from weighted sums over X weightings of the images.

    Args:
        ens: ``(S, X)`` weighted count of images each subset's ensemble gets right.
        mem: ``(M, X)`` same for each member.
        both: ``(P, X)`` images both members of pair p get right.
        diff: ``(P, X)`` images the two members of pair p predict differently.
        n: ``(X,)`` or scalar total weight (N for the data and a resample, N − 1 for a jackknife sample).
        subsets: ``(S, k)`` member indices.
        pair_i: ``(P,)`` first member of each pair.
        pair_j: ``(P,)`` second member.
        sub_pairs: ``(S, k(k−1)/2)`` pair ids of each subset's pairs.
    """
    acc_e = ens / n
    acc_m = mem / n
    sub = acc_m[subsets]  # (S, k, X)
    out = {
        "ensemble_top1": acc_e,
        "improvement": acc_e - sub.max(axis=1),
        "improvement_vs_mean": acc_e - sub.mean(axis=1),
        "mean_member_top1": sub.mean(axis=1),
        "max_member_top1": sub.max(axis=1),
    }
    n11 = both
    n10 = mem[pair_i] - n11
    n01 = mem[pair_j] - n11
    n00 = n - mem[pair_i] - mem[pair_j] + n11
    out["disagreement"] = _pair_mean((n10 + n01) / n, sub_pairs)
    out["double_fault"] = _pair_mean(n00 / n, sub_pairs)
    cross = n11 * n00 - n01 * n10
    out["q_statistic"] = _pair_mean(_ratio(cross, n11 * n00 + n01 * n10), sub_pairs)
    den = np.sqrt((n11 + n10) * (n01 + n00) * (n11 + n01) * (n10 + n00))
    out["correlation"] = _pair_mean(_ratio(cross, den), sub_pairs)
    out["pdr"] = _pair_mean(diff / n, sub_pairs)
    return out


def subset_bootstrap(
    member_correct: npt.ArrayLike,
    ensemble_correct: npt.ArrayLike,
    subsets: npt.ArrayLike,
    *,
    member_preds: npt.ArrayLike | None = None,
    n_resamples: int = 2000,
    level: float = 0.95,
    method: str = "percentile",
    seed: int = 0,
    keep_boot: bool = True,
) -> SubsetEvidence:
    """Bootstrap intervals of :data:`BOOTSTRAP_METRICS` and McNemar tests for all subsets at once.

    Args:
        member_correct: ``(M, N)`` bool per-sample top-1 correctness of the members.
        ensemble_correct: ``(S, N)`` bool per-sample top-1 correctness of each subset's ensemble.
        subsets: ``(S, k)`` member indices.
        member_preds: ``(M, N)`` member predictions (for ``pdr``; without them pdr gets no interval).
        n_resamples: B (0: no bootstrap; McNemar p-values and estimates only).
        level: Confidence level.
        method: ``percentile`` or ``bca``.
        seed: Resampling seed.
        keep_boot: Keep the ``(S, B)`` distributions (needed by :func:`correlation_evidence`).

    Returns:
        A :class:`SubsetEvidence` (binomial intervals are added by :func:`subset_evidence`).
    """
    c = np.asarray(member_correct, dtype=bool)
    e = np.asarray(ensemble_correct, dtype=bool)
    sub = np.asarray(subsets, dtype=np.int64)
    if c.ndim != 2 or e.ndim != 2 or e.shape[1] != c.shape[1] or sub.ndim != 2 or sub.shape[0] != e.shape[0]:
        raise _fail("ensemble_correct", "(S, N) with member_correct (M, N) and subsets (S, k)", f"{e.shape}")
    if method not in BOOTSTRAP_METHODS:
        raise _fail("method", f"one of {list(BOOTSTRAP_METHODS)}", repr(method))
    m, n = c.shape
    s_count = sub.shape[0]
    pi, pj, pid = _pairs(m)
    a, b = np.triu_indices(sub.shape[1], 1)
    sub_pairs = pid[sub[:, a], sub[:, b]] if a.size else np.zeros((s_count, 0), dtype=np.int64)
    both = c[pi] & c[pj]
    if member_preds is not None:
        preds = np.asarray(member_preds)
        diff = preds[pi] != preds[pj]
    else:
        diff = np.zeros((pi.size, n), dtype=bool)
    x = np.concatenate([e, c, both, diff]).astype(np.float32)  # (R, N), R = S + M + 2P
    rows = np.cumsum([0, s_count, m, pi.size, pi.size])
    totals = x.sum(axis=1, dtype=np.float64)

    def split(sums: F64) -> tuple[F64, F64, F64, F64]:
        return tuple(sums[rows[t] : rows[t + 1]] for t in range(4))  # type: ignore[return-value]

    est = {k: v[:, 0] for k, v in _statistics(*split(totals[:, None]), float(n), sub, pi, pj, sub_pairs).items()}
    if member_preds is None:
        est["pdr"] = np.full(s_count, np.nan)
    out = SubsetEvidence(sub, estimate=est, level=float(level), n_resamples=int(n_resamples), seed=int(seed))

    # McNemar: ensemble vs its best member (argmax of top-1 in the subset, lowest index on ties).
    best = sub[np.arange(s_count), np.argmax(totals[rows[1] : rows[2]][sub], axis=1)]
    both_eb = np.einsum("sn,sn->s", x[: rows[1]], x[rows[1] : rows[2]][best], dtype=np.float64)
    disc_b = totals[: rows[1]] - both_eb
    disc_c = totals[rows[1] : rows[2]][best] - both_eb
    out.best_member = best
    out.discordant = np.stack([disc_b, disc_c], axis=1)
    out.p_value = mcnemar_from_counts(disc_b, disc_c, "greater")
    if n_resamples <= 0:
        return out

    w = bootstrap_weights(n, n_resamples, seed)
    sums = np.matmul(x, w.T).astype(np.float64)  # (R, B): ONE product for every statistic of every subset
    del w
    boot = _statistics(*split(sums), float(n), sub, pi, pj, sub_pairs)
    del sums
    accel: dict[str, F64] = {}
    if method == "bca":  # jackknife streamed in image blocks: power sums of θ_(i) − θ̂, never (S, N) at once
        moments: dict[str, list[F64]] = {}
        for lo in range(0, n, _JACK_CHUNK):
            loo = totals[:, None] - x[:, lo : lo + _JACK_CHUNK].astype(np.float64)
            for k, v in _statistics(*split(loo), float(n - 1), sub, pi, pj, sub_pairs).items():
                u = v - est[k][:, None]
                acc = moments.setdefault(k, [np.zeros(s_count), np.zeros(s_count), np.zeros(s_count)])
                acc[0] += u.sum(axis=1)
                acc[1] += (u * u).sum(axis=1)
                acc[2] += (u * u * u).sum(axis=1)
        accel = {k: acceleration_from_moments(n, *v) for k, v in moments.items()}
    name = CI_METHOD_NAMES[method]
    for k in BOOTSTRAP_METRICS:
        if k == "pdr" and member_preds is None:
            continue
        lo_, hi_ = bootstrap_interval(boot[k], level, method, estimate=est[k], acceleration=accel.get(k))
        out.low[k], out.high[k], out.method[k] = lo_, hi_, name
        if keep_boot:
            out.boot[k] = boot[k]
    return out


def subset_evidence(
    pool: PoolStats,
    k: int,
    consensus: Consensus | str = "average",
    *,
    n_resamples: int = 2000,
    level: float = 0.95,
    method: str = "percentile",
    binomial: str = "clopper-pearson",
    seed: int = 0,
    keep_boot: bool = True,
) -> SubsetEvidence:
    """:func:`subset_bootstrap` on a pool's kept per-sample data, plus binomial accuracy intervals.

    Adds binomial intervals of ``ensemble_top1``/``ensemble_top5``; subsets are in
    :func:`~ovdiv.metrics.score_subsets` row order.

    Raises:
        MetricInputError: the pool's statistics for ``k``/``consensus`` lack per-sample correctness
            (loaded from a file written before it was kept) — re-score from the logits.
    """
    rule = _rule(consensus)
    stats_ = pool.ensemble_stats(k, rule)
    correct = stats_.correct
    if correct is None:
        raise _fail(
            "pool",
            "subset statistics with per-sample correctness (PoolStats accumulated by this ovdiv version)",
            "statistics without it",
        )
    subsets = _all_subsets(pool.num_members, k)
    labels = pool.labels
    preds = pool.preds
    member_correct = preds == labels[None, :]
    ev = subset_bootstrap(
        member_correct,
        correct,
        subsets,
        member_preds=preds,
        n_resamples=n_resamples,
        level=level,
        method=method,
        seed=seed,
        keep_boot=keep_boot,
    )
    n = float(pool.n)
    for name, counts in (("ensemble_top1", stats_.top1), ("ensemble_top5", stats_.top5)):
        lo, hi = binomial_interval(counts, n, level, binomial)
        ev.low[name], ev.high[name], ev.method[name] = lo, hi, binomial
        ev.estimate[name] = counts / n
    return ev


def _column_pearson(x: F64, y: F64) -> F64:
    """Pearson r of the columns of ``x, y (S, B)`` (NaN where a column has a NaN or is constant)."""
    xc = x - x.mean(axis=0)
    yc = y - y.mean(axis=0)
    den = np.sqrt((xc * xc).sum(axis=0) * (yc * yc).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r: F64 = np.where(den > 0, (xc * yc).sum(axis=0) / np.where(den > 0, den, 1.0), np.nan)
    return np.clip(r, -1.0, 1.0)


def correlation_evidence(
    rows: Sequence[Mapping[str, Any]],
    evidence: SubsetEvidence | None,
    *,
    dataset: str,
    target: str = "improvement",
    metrics: Sequence[str] | None = None,
    level: float = 0.95,
) -> list[dict[str, Any]]:
    """The correlation study of one dataset with bootstrap intervals (contract of ``results.json``).

    Args:
        rows: :func:`~ovdiv.metrics.score_subsets` rows of the dataset (subset order = ``evidence``'s).
        evidence: The dataset's :class:`SubsetEvidence` with kept distributions (None: no intervals).
        dataset: The dataset spec (copied into each entry).
        target: Δ key in the rows (``improvement`` or e.g. ``improvement:majority``); its bootstrap
            distribution is ``evidence.boot["improvement"]`` (evidence of the same consensus rule).
        metrics: Metrics to correlate (default :data:`~ovdiv.metrics.STUDY_METRICS` present in the rows).
        level: Confidence level.

    Returns:
        ``[{dataset, metric, n_ensembles, pearson, pearson_ci_low, pearson_ci_high, spearman,
        spearman_ci_low, spearman_ci_high, ci_method, ci_level}]``; empty with fewer than 3 ensembles.
        Intervals are percentile bootstrap intervals over image resamples (NaN -> None where a metric
        has no per-sample data or a resample's correlation is undefined).
    """
    from ovdiv.metrics.correlation import STUDY_METRICS

    if len(rows) < 3:
        return []
    names = list(metrics) if metrics is not None else [m for m in STUDY_METRICS if m in rows[0]]
    y = np.array([float(r[target]) for r in rows])
    yb = None if evidence is None else evidence.boot.get("improvement")
    out: list[dict[str, Any]] = []
    for metric in names:
        x = np.array([float(r[metric]) for r in rows])
        ok = ~(np.isnan(x) | np.isnan(y))
        a, b = x[ok], y[ok]
        entry: dict[str, Any] = {
            "dataset": dataset,
            "metric": metric,
            "n_ensembles": int(a.size),
            "pearson": _pearson(a, b),
            "pearson_ci_low": None,
            "pearson_ci_high": None,
            "spearman": _pearson(_rank(a), _rank(b)) if a.size >= 3 else float("nan"),
            "spearman_ci_low": None,
            "spearman_ci_high": None,
            "ci_method": None,
            "ci_level": None,
        }
        xb = None if evidence is None else evidence.boot.get(metric)
        if xb is not None and yb is not None and a.size >= 3:
            xs, ys = xb[ok], yb[ok]
            bad = np.isnan(xs).any(axis=0) | np.isnan(ys).any(axis=0)
            pr = np.where(bad, np.nan, _column_pearson(np.nan_to_num(xs), np.nan_to_num(ys)))
            rx = stats.rankdata(np.nan_to_num(xs), axis=0)
            ry = stats.rankdata(np.nan_to_num(ys), axis=0)
            sr = np.where(bad, np.nan, _column_pearson(rx, ry))
            alpha = 1.0 - float(level)
            for key, dist in (("pearson", pr), ("spearman", sr)):
                if np.isnan(dist).any():
                    continue
                lo, hi = np.quantile(dist, [alpha / 2, 1 - alpha / 2])
                entry[f"{key}_ci_low"], entry[f"{key}_ci_high"] = float(lo), float(hi)
            entry["ci_method"] = CI_METHOD_NAMES["percentile"]
            entry["ci_level"] = float(level)
        for key in ("pearson", "spearman"):
            if not np.isfinite(entry[key]):
                entry[key] = None
        out.append(entry)
    return out
