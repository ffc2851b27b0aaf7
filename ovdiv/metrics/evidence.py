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
  - ``improvement_vs_mean``, ``mean_member_top1``, ``max_member_top1``, and ``improvement_vs_member``
    (``(S, k)``: Acc_ens − Acc_member for each member of the subset, with its McNemar p-value);
  - ``disagreement``, ``q_statistic``, ``correlation``, ``double_fault`` (from resampled 2x2 correctness
    tables of every member pair) and ``pdr`` (from resampled different-prediction counts), averaged over
    the subset's pairs like :func:`~ovdiv.metrics.score_subsets` (undefined pairs skipped).

  D_att and ``cka_mean`` have their own paired bootstraps on the images they are computed on
  (:func:`attribution_bootstrap` from the per-sample pairwise SSD the attribution accumulator keeps,
  :func:`cka_bootstrap` from the kept features by a weighted-Gram formula), with the same seed and B.
  Not bootstrapped, for want of per-sample data (the pool reduces them to sums and drops the rest):
  ``attribution_rmse``, ``hash_*``, ``kl_divergence``, ``ensemble_nll``, ``ensemble_ece``,
  ``shannon_equitability_*``. They get no interval (never an invented one).

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

import logging
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

__all__ = [
    "BOOTSTRAP_METRICS",
    "SubsetEvidence",
    "subset_bootstrap",
    "subset_evidence",
    "attribution_bootstrap",
    "weighted_linear_cka",
    "cka_bootstrap",
    "correlation_evidence",
]

log = logging.getLogger("ovdiv.metrics")

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
        member_p_value: ``(S, k)`` one-sided exact McNemar p-value of "ensemble top-1 > top-1 of member
            ``subsets[s, j]``" (the test of the ``improvement_vs_member`` statistic, whose arrays are
            ``(S, k)`` too: Acc_ens − Acc of each member, bootstrapped like Δ).
        best_member: Index of the best member of each subset.
        discordant: ``(S, 2)``: images the ensemble gets right and its best member wrong, and the reverse.
        level: Confidence level.
        n_resamples: B (0: no bootstrap).
        seed: Resampling seed.
        n: Number of images resampled (N; the first ``n`` images of the dataset).
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
    member_p_value: F64 = field(default_factory=lambda: np.zeros((0, 0)))
    level: float = 0.95
    n_resamples: int = 0
    seed: int = 0
    n: int = 0

    def add(self, other: SubsetEvidence) -> None:
        """Take the statistics of ``other`` (same subsets).

        Its bootstrap distributions are kept only when both resampled the same images (same ``n``, seed and
        B): only then is resample ``b`` the same image multiset for every statistic, which the correlation
        study pairs across statistics.
        """
        if other.subsets.shape != self.subsets.shape or not np.array_equal(other.subsets, self.subsets):
            raise _fail("other", "evidence of the same subsets", f"subsets {other.subsets.shape}")
        same = (other.n, other.seed, other.n_resamples) == (self.n, self.seed, self.n_resamples)
        for d_self, d_other in ((self.estimate, other.estimate), (self.low, other.low), (self.high, other.high)):
            d_self.update(d_other)
        self.method.update(other.method)
        if same:
            self.boot.update(other.boot)


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
        "improvement_vs_member": acc_e[:, None] - sub,  # (S, k, X): Acc_ens − Acc of each subset member
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

    est = {k: v[..., 0] for k, v in _statistics(*split(totals[:, None]), float(n), sub, pi, pj, sub_pairs).items()}
    if member_preds is None:
        est["pdr"] = np.full(s_count, np.nan)
    out = SubsetEvidence(sub, estimate=est, level=float(level), n_resamples=int(n_resamples), seed=int(seed), n=n)

    # McNemar: ensemble vs its best member (argmax of top-1 in the subset, lowest index on ties).
    best = sub[np.arange(s_count), np.argmax(totals[rows[1] : rows[2]][sub], axis=1)]
    both_eb = np.einsum("sn,sn->s", x[: rows[1]], x[rows[1] : rows[2]][best], dtype=np.float64)
    disc_b = totals[: rows[1]] - both_eb
    disc_c = totals[rows[1] : rows[2]][best] - both_eb
    out.best_member = best
    out.discordant = np.stack([disc_b, disc_c], axis=1)
    out.p_value = mcnemar_from_counts(disc_b, disc_c, "greater")
    # McNemar of the ensemble vs each of its members (column j of subsets)
    both_em = np.stack(
        [
            np.einsum("sn,sn->s", x[: rows[1]], x[rows[1] : rows[2]][sub[:, j]], dtype=np.float64)
            for j in range(sub.shape[1])
        ],
        axis=1,
    )
    out.member_p_value = mcnemar_from_counts(
        totals[: rows[1], None] - both_em, totals[rows[1] : rows[2]][sub] - both_em, "greater"
    )
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
                u = v - est[k][..., None]
                zero = np.zeros(u.shape[:-1])
                acc = moments.setdefault(k, [zero, zero.copy(), zero.copy()])
                acc[0] += u.sum(axis=-1)
                acc[1] += (u * u).sum(axis=-1)
                acc[2] += (u * u * u).sum(axis=-1)
        accel = {k: acceleration_from_moments(n, *v) for k, v in moments.items()}
    name = CI_METHOD_NAMES[method]
    for k in (*BOOTSTRAP_METRICS, "improvement_vs_member"):
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


def _subset_pair_ids(num_members: int, subsets: I64) -> I64:
    """``(S, k(k−1)/2)`` ids (``numpy.triu_indices(M, 1)`` order) of each subset's member pairs."""
    _, _, pid = _pairs(num_members)
    a, b = np.triu_indices(subsets.shape[1], 1)
    return pid[subsets[:, a], subsets[:, b]] if a.size else np.zeros((subsets.shape[0], 0), dtype=np.int64)


def _check_subsets(subsets: npt.ArrayLike, num_members: int) -> I64:
    sub = np.asarray(subsets, dtype=np.int64)
    if sub.ndim != 2 or (sub.size and (sub.min() < 0 or sub.max() >= num_members)):
        raise _fail("subsets", f"(S, k) member indices in [0, {num_members})", f"shape {sub.shape}")
    return sub


def attribution_bootstrap(
    sample_ssd: npt.ArrayLike,
    subsets: npt.ArrayLike,
    num_members: int,
    *,
    n_resamples: int = 2000,
    level: float = 0.95,
    method: str = "percentile",
    seed: int = 0,
    keep_boot: bool = True,
) -> SubsetEvidence:
    """Paired bootstrap over images of the attribution diversity D_att of every subset at once.

    ``D_att(S) = Σ_{i<k ∈ S} Σ_n d_n[i, k] / (|S|² N)`` with ``d_n[i, k] = mean_pixels (a_i − a_k)²`` of
    sample n (``= mean_n mean_pixels Var_{i∈S} a_i``, :func:`~ovdiv.metrics.attribution_diversity`). On a
    resample with multinomial counts ``w`` the image sums become ``d @ w``: all resamples of all subsets are
    ONE matrix product ``dᵀ (P, N) @ Wᵀ (N, B)`` (float64) followed by a sum over each subset's pairs.
    BCa's jackknife is closed-form (leave-one-out sums ``total − d_i``).

    Attribution runs on the first ``attribution_samples`` images of a dataset (N here), so the resamples
    are ``bootstrap_weights(N, B, seed)``: the same resampled images as the accuracy and diversity statistics
    of :func:`subset_bootstrap` when N is the dataset size (same seed and B), a different draw otherwise
    (then :meth:`SubsetEvidence.add` does not pair them in the correlation study).

    Args:
        sample_ssd: ``(N, M(M−1)/2)`` per-sample pairwise values
            (:attr:`~ovdiv.metrics.AttributionDiversity.sample_ssd`, pairs in ``triu_indices(M, 1)`` order).
        subsets: ``(S, k)`` member indices.
        num_members: M.
        n_resamples: B (0: estimates only).
        level: Confidence level.
        method: ``percentile`` or ``bca``.
        seed: Resampling seed.
        keep_boot: Keep the ``(S, B)`` distribution.

    Returns:
        A :class:`SubsetEvidence` with the statistic ``attribution_diversity``.
    """
    m = int(num_members)
    d = _check_float_2d(sample_ssd, "sample_ssd", m * (m - 1) // 2)
    sub = _check_subsets(subsets, m)
    if method not in BOOTSTRAP_METHODS:
        raise _fail("method", f"one of {list(BOOTSTRAP_METHODS)}", repr(method))
    n = d.shape[0]
    if n < 1:
        raise _fail("sample_ssd", "values of at least one sample", f"shape {d.shape}")
    sp = _subset_pair_ids(m, sub)
    scale = float(sub.shape[1] ** 2)
    x = d.T  # (P, N)
    totals = x.sum(axis=1)
    est = totals[sp].sum(axis=1) / (scale * n)
    out = SubsetEvidence(sub, level=float(level), n_resamples=max(int(n_resamples), 0), seed=int(seed), n=n)
    out.estimate["attribution_diversity"] = est
    if n_resamples <= 0:
        return out
    w = bootstrap_weights(n, n_resamples, seed)
    sums = np.zeros((x.shape[0], w.shape[0]))
    for lo in range(0, n, _JACK_CHUNK):  # float64 product in image blocks (W stays float32 in memory)
        sums += x[:, lo : lo + _JACK_CHUNK] @ w[:, lo : lo + _JACK_CHUNK].T.astype(np.float64)
    del w
    boot = sums[sp].sum(axis=1) / (scale * n)  # (S, B); every resample has N draws
    accel = None
    if method == "bca":
        s1, s2, s3 = np.zeros(len(sub)), np.zeros(len(sub)), np.zeros(len(sub))
        for lo in range(0, n, _JACK_CHUNK):
            per = x[:, lo : lo + _JACK_CHUNK][sp].sum(axis=1)  # (S, block) per-sample subset sums
            u = (totals[sp].sum(axis=1)[:, None] - per) / (scale * max(n - 1, 1)) - est[:, None]
            s1 += u.sum(axis=1)
            s2 += (u * u).sum(axis=1)
            s3 += (u * u * u).sum(axis=1)
        accel = acceleration_from_moments(n, s1, s2, s3)
    lo_, hi_ = bootstrap_interval(boot, level, method, estimate=est, acceleration=accel)
    out.low["attribution_diversity"], out.high["attribution_diversity"] = lo_, hi_
    out.method["attribution_diversity"] = CI_METHOD_NAMES[method]
    if keep_boot:
        out.boot["attribution_diversity"] = boot
    return out


def _check_float_2d(values: npt.ArrayLike, name: str, cols: int | None = None) -> F64:
    a = np.asarray(values, dtype=np.float64)
    if a.ndim != 2 or (cols is not None and a.shape[1] != cols) or not np.isfinite(a).all():
        want = f"(N, {cols})" if cols is not None else "(N, D)"
        raise _fail(name, f"a finite {want} array", f"shape {a.shape}")
    return a


def _rows(features: npt.ArrayLike) -> F64:
    """Features ``(n, ...)`` flattened per sample to ``(n, D)`` float64."""
    a = np.asarray(features, dtype=np.float64)
    return a.reshape(a.shape[0], -1) if a.ndim >= 1 else a


def _weighted_terms(gram: F64, w: F64, s: F64) -> tuple[F64, F64]:
    """``R = W K / s`` ``(B, n)`` and ``c = Σ_a w_a R_a / s`` ``(B,)`` of one Gram matrix under weights ``W (B, n)``."""
    r = (w @ gram) / s[:, None]
    return r, (w * r).sum(axis=1) / s


def _weighted_hsic(gk: F64, gl: F64, w: F64, s: F64, rk: F64, ck: F64, rl: F64, cl: F64) -> F64:
    """``Σ_ab w_a w_b K̃_ab L̃_ab`` per weight row, ``K̃`` centred with the weighted mean (see :func:`cka_bootstrap`)."""
    t1 = ((w @ (gk * gl)) * w).sum(axis=1)
    out: F64 = t1 - 2.0 * s * (w * rk * rl).sum(axis=1) + s * s * ck * cl
    return out


def weighted_linear_cka(features: Sequence[npt.ArrayLike], weights: npt.ArrayLike) -> F64:
    """Pairwise linear CKA ``(X, M, M)`` of M members' features, each row weighted by ``weights (X, n)``.

    With integer weights (bootstrap counts) this is :func:`~ovdiv.metrics.linear_cka` of the features with
    row ``a`` repeated ``w_a`` times, computed without materialising them (Gram form, see
    :func:`cka_bootstrap`); with all-ones weights it is the plain linear CKA. NaN where undefined.

    Args:
        features: M arrays ``(n, D_i)`` of the same n samples.
        weights: ``(X, n)`` non-negative weights (rows with a positive sum).
    """
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    feats = [_check_float_2d(_rows(f), f"features[{i}]") for i, f in enumerate(features)]
    n = feats[0].shape[0]
    if any(f.shape[0] != n for f in feats) or w.ndim != 2 or w.shape[1] != n or (w.sum(axis=1) <= 0).any():
        raise _fail("features/weights", f"M feature arrays of the same n={n} samples and (X, n) weights", "mismatch")
    grams = [(f - f.mean(axis=0)) @ (f - f.mean(axis=0)).T for f in feats]  # shift-invariant; centring tames rounding
    s = w.sum(axis=1)
    terms = [_weighted_terms(g, w, s) for g in grams]
    m = len(grams)
    h = np.zeros((w.shape[0], m, m))
    for i in range(m):
        for k in range(i, m):
            h[:, i, k] = h[:, k, i] = _weighted_hsic(grams[i], grams[k], w, s, *terms[i], *terms[k])
    diag = np.clip(np.einsum("xii->xi", h), 0.0, None)
    den = np.sqrt(diag[:, :, None] * diag[:, None, :])
    with np.errstate(invalid="ignore", divide="ignore"):
        out: F64 = np.where(den > 0, h / np.where(den > 0, den, 1.0), np.nan)
    return out


_CKA_BLOCK = 128  # resamples per block of the CKA bootstrap (memory O(M · block · n))


def cka_bootstrap(
    features: Sequence[npt.ArrayLike],
    subsets: npt.ArrayLike,
    *,
    n_resamples: int = 2000,
    level: float = 0.95,
    method: str = "percentile",
    seed: int = 0,
    keep_boot: bool = True,
) -> SubsetEvidence:
    """Paired bootstrap over images of ``cka_mean`` (mean pairwise linear CKA) of every subset.

    On a resample with counts ``w`` (``bootstrap_weights(n, B, seed)``: the n CKA images are the first
    ``cka_samples`` of the dataset; same images as the other statistics when n is the dataset size), the
    linear CKA of the resampled rows is, with Gram matrices ``K = X Xᵀ`` of the features and the resample's
    weighted mean ``μ = Xᵀw / s`` (``s = Σ w``)::

        HSIC_w(K, L) = Σ_ab w_a w_b K̃_ab L̃_ab = wᵀ(K∘L)w − 2 s Σ_a w_a r_a q_a + s² c d

    where ``K̃ = (X − μ)(X − μ)ᵀ``, ``r = K w / s``, ``c = wᵀ r / s`` (``q``, ``d`` the same for L), and
    ``CKA_w = HSIC_w(K, L) / sqrt(HSIC_w(K, K) HSIC_w(L, L))``. Every term is a product of the ``(B, n)``
    weight matrix with an ``(n, n)`` matrix — no resampled feature matrix is built. Cost O(M² B n²) time
    and O(M n² + M · 128 · n) memory (fine for the default 256 CKA images; the engine skips it when the
    Gram matrices would not fit). BCa's jackknife uses the same formula with leave-one-out weights
    ``1 − e_i`` (n more weight rows).

    Linear CKA is a ratio of V-statistics, biased upward by O(1/n) for weakly related features, and a
    resample's duplicated images add to that bias: on few images the whole bootstrap distribution can sit
    above the estimate. A subset whose estimate lies outside its interval gets NaN bounds (no interval,
    logged) rather than an interval that does not contain the reported value.

    Args:
        features: M arrays ``(n, D_i)`` (e.g. penultimate features) of the same n images.
        subsets: ``(S, k)`` member indices.
        n_resamples: B (0: estimates only).
        level: Confidence level.
        method: ``percentile`` or ``bca``.
        seed: Resampling seed.
        keep_boot: Keep the ``(S, B)`` distribution.

    Returns:
        A :class:`SubsetEvidence` with the statistic ``cka_mean`` (mean over the subset's pairs, NaN pairs
        skipped, like :func:`~ovdiv.metrics.pair_mean`).
    """
    m = len(features)
    sub = _check_subsets(subsets, m)
    if method not in BOOTSTRAP_METHODS:
        raise _fail("method", f"one of {list(BOOTSTRAP_METHODS)}", repr(method))
    feats = [_check_float_2d(_rows(f), f"features[{i}]") for i, f in enumerate(features)]
    n = feats[0].shape[0]
    if n < 2 or any(f.shape[0] != n for f in feats):
        raise _fail("features", "M arrays (n, D) of the same n >= 2 images", f"{[f.shape for f in feats]}")
    sp = _subset_pair_ids(m, sub)
    pi, pj, _ = _pairs(m)

    def subset_values(weights: F64) -> F64:  # (X, n) -> (S, X)
        mats = weighted_linear_cka(feats, weights)
        return _pair_mean(mats[:, pi, pj].T, sp)

    est = subset_values(np.ones((1, n)))[:, 0]
    out = SubsetEvidence(sub, level=float(level), n_resamples=max(int(n_resamples), 0), seed=int(seed), n=n)
    out.estimate["cka_mean"] = est
    if n_resamples <= 0:
        return out
    w = bootstrap_weights(n, n_resamples, seed)
    boot = np.concatenate(
        [subset_values(w[lo : lo + _CKA_BLOCK].astype(np.float64)) for lo in range(0, w.shape[0], _CKA_BLOCK)], axis=1
    )
    accel = None
    if method == "bca":
        jack = np.concatenate(
            [
                subset_values(np.ones((min(_CKA_BLOCK, n - lo), n)) - np.eye(n)[lo : lo + _CKA_BLOCK])
                for lo in range(0, n, _CKA_BLOCK)
            ],
            axis=1,
        )
        u = jack - est[:, None]
        accel = acceleration_from_moments(n, u.sum(axis=1), (u * u).sum(axis=1), (u * u * u).sum(axis=1))
    lo_, hi_ = bootstrap_interval(boot, level, method, estimate=est, acceleration=accel)
    outside = ~((lo_ <= est) & (est <= hi_))
    if outside.any():  # resampling bias (duplicated images inflate CKA) exceeds the spread: no interval
        log.warning(
            "cka_mean: the estimate lies outside the bootstrap interval for %d of %d subsets (CKA on %d images "
            "is biased by resampling); those subsets get no interval — use more --cka-samples",
            int(outside.sum()),
            outside.size,
            n,
        )
        lo_, hi_ = np.where(outside, np.nan, lo_), np.where(outside, np.nan, hi_)
    out.low["cka_mean"], out.high["cka_mean"], out.method["cka_mean"] = lo_, hi_, CI_METHOD_NAMES[method]
    if keep_boot:
        out.boot["cka_mean"] = boot
    return out


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
