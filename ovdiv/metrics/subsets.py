"""Ensemble statistics of many member subsets on one batch (the engine behind :func:`score_subsets`).

For a batch of member logits ``z (M, B, C)``, labels ``y (B,)`` and subsets ``S (n_subsets, k)`` (member
indices, ascending), :func:`subset_batch_stats` returns additive sufficient statistics of every subset's
ensemble on the batch. Definitions (identical to the functional API, which the tests use as the brute
force reference):

* ranking / prediction: :func:`~ovdiv.metrics.ensemble_label_rank` and
  :func:`~ovdiv.metrics.ensemble_predict` of ``z[S]`` (``top1 = rank == 0``, ``top5 = rank < 5``);
* NLL: ``logsumexp(s) − s_y`` of the scores ``s`` for ``average`` / ``geometric``;
  ``−log max(p_y, 1e-15)`` of the ensemble probabilities for ``average_probs`` / ``median``; NaN for
  ``majority`` (vote shares are not a likelihood model);
* ECE: confidence ``p[pred]`` (the ensemble probability of its own prediction), correct ``pred == y``;
* Shannon equitability of the subset members' predictions, split by ensemble correctness.

``average`` (the paper's rule) has an exact fast path:

* *Ranking by certified candidate bounds.* Every class outside member i's top-K has ``z_ic <= t_i``,
  member i's (K+1)-th largest logit. Tier 1 scores, for all subsets at once, the candidates ``U`` = the
  union of all M members' top-4 classes plus the label (exact sums); any other class scores at most
  ``b = Σ_{i∈S} t_i / k``. If ``s_y > b`` the label's rank is the number of candidates ranked above it;
  if at least 5 candidates rank above the label it is in no top-5 (and not top-1) — both exact. The
  best candidate is the true maximum (needed for the ECE confidence) when it beats ``b``. Undecided
  (subset, sample) pairs go to tier 2: the subset members' top-24 classes plus the label, with the
  tighter bound from their 25th largest logits. Only pairs neither tier decides (counted in
  ``SubsetStats.fallback``) get full score vectors. Rounding is monotone and sums are formed in the same
  member order as the brute force, so the bounds also hold for the computed floats.
* *log-sum-exp by factorisation.* ``Σ_c exp(s_c − Σ_i m_i / k) = Σ_c Π_{i∈S} exp((z_ic − m_i)/k)`` with
  ``m_i`` member i's max logit: one ``exp`` per member and class, then one batched matrix-vector
  product per subset prefix (the product of the first k−1 members is shared by all its extensions).
  Sums below 1e-280 (where relative precision would suffer) fall back to the direct formula.

Both paths agree with the brute force to ~1e-15 (tests: ≤ 1e-9 on random pools and adversarial ties).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from ovdiv.metrics.calibration import NLL_EPS, _near_bin_edges
from ovdiv.metrics.consensus import _label_rank, _majority_rank, _scores, logsumexp, softmax, tie_priority
from ovdiv.types import Consensus

__all__ = ["SubsetStats", "subset_batch_stats", "CANDIDATES_PER_MEMBER"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

CANDIDATES_PER_MEMBER = 4
"""K of tier 1 of the certified top-K candidate bound of the ``average`` fast path (pooled over members)."""
CANDIDATES_TIER2 = 24
"""K of tier 2 (per undecided subset and sample, over the subset's members only)."""
_TINY_SUM = 1e-280


@dataclass
class SubsetStats:
    """Additive statistics of the ensembles of ``subsets (n_subsets, k)``; fields are sums over samples.

    Attributes:
        subsets: ``(n_subsets, k)`` int member indices.
        top1: ``(n_subsets,)`` number of samples with ensemble rank 0.
        top5: ``(n_subsets,)`` number with rank < 5.
        nll: ``(n_subsets,)`` sum of per-sample NLL (NaN for ``majority``).
        ece: ``(n_subsets, n_bins + 1, 3)`` ECE bin statistics.
        eq: ``(n_subsets, 2)`` sums of Shannon equitability over ensemble-correct / -wrong samples.
        eq_count: ``(n_subsets, 2)`` counts of those samples.
        n: Number of samples.
        fallback: Number of (subset, sample) pairs the fast path resolved with full score vectors
            (neither candidate tier was decisive).
        correct_parts: Per-sample top-1 correctness of every subset's ensemble, one ``(n_subsets, B)``
            bool block per batch in sample order (:attr:`correct` joins them); the paired bootstrap and
            McNemar test of :mod:`ovdiv.metrics.evidence` need it (364 x 50 000 = 18 MB).
    """

    subsets: I64
    n_bins: int = 15
    top1: F64 = field(init=False)
    top5: F64 = field(init=False)
    nll: F64 = field(init=False)
    ece: F64 = field(init=False)
    eq: F64 = field(init=False)
    eq_count: F64 = field(init=False)
    n: int = 0
    fallback: int = 0
    correct_parts: list[npt.NDArray[np.bool_]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        s = self.subsets.shape[0]
        self.top1 = np.zeros(s)
        self.top5 = np.zeros(s)
        self.nll = np.zeros(s)
        self.ece = np.zeros((s, self.n_bins + 1, 3))
        self.eq = np.zeros((s, 2))
        self.eq_count = np.zeros((s, 2))
        self.correct_parts = []

    @property
    def correct(self) -> npt.NDArray[np.bool_] | None:
        """``(n_subsets, N)`` per-sample ensemble top-1 correctness, or None when not kept for every sample."""
        got = sum(p.shape[1] for p in self.correct_parts)
        if got != self.n:
            return None
        if not self.correct_parts:
            return np.zeros((self.subsets.shape[0], 0), dtype=bool)
        if len(self.correct_parts) > 1:
            self.correct_parts = [np.concatenate(self.correct_parts, axis=1)]
        return self.correct_parts[0]

    def add(self, other: SubsetStats) -> None:
        """Add the statistics of other samples for the same subsets."""
        self.top1 += other.top1
        self.top5 += other.top5
        self.nll += other.nll
        self.ece += other.ece
        self.eq += other.eq
        self.eq_count += other.eq_count
        self.n += other.n
        self.fallback += other.fallback
        self.correct_parts += other.correct_parts

    def arrays(self, prefix: str) -> dict[str, npt.NDArray[np.generic]]:
        """Flat ``{prefix + name: array}`` for saving."""
        correct = self.correct
        extra = {} if correct is None else {f"{prefix}correct": np.packbits(correct, axis=1)}
        return {
            **extra,
            f"{prefix}subsets": self.subsets,
            f"{prefix}top1": self.top1,
            f"{prefix}top5": self.top5,
            f"{prefix}nll": self.nll,
            f"{prefix}ece": self.ece,
            f"{prefix}eq": self.eq,
            f"{prefix}eq_count": self.eq_count,
            f"{prefix}n": np.array([self.n, self.fallback, self.n_bins]),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, npt.NDArray[np.generic]], prefix: str) -> SubsetStats:
        """Inverse of :meth:`arrays`."""
        n, fallback, n_bins = (int(v) for v in arrays[f"{prefix}n"])
        out = cls(np.asarray(arrays[f"{prefix}subsets"], dtype=np.int64), n_bins=n_bins)
        out.top1 = np.asarray(arrays[f"{prefix}top1"], dtype=np.float64)
        out.top5 = np.asarray(arrays[f"{prefix}top5"], dtype=np.float64)
        out.nll = np.asarray(arrays[f"{prefix}nll"], dtype=np.float64)
        out.ece = np.asarray(arrays[f"{prefix}ece"], dtype=np.float64)
        out.eq = np.asarray(arrays[f"{prefix}eq"], dtype=np.float64)
        out.eq_count = np.asarray(arrays[f"{prefix}eq_count"], dtype=np.float64)
        out.n, out.fallback = n, fallback
        if f"{prefix}correct" in arrays:  # files written before per-sample correctness was kept lack it
            bits = np.asarray(arrays[f"{prefix}correct"], dtype=np.uint8)
            out.correct_parts = [np.unpackbits(bits, axis=1, count=n).astype(bool)]
        return out


def _ece_update_many(conf: F64, correct: npt.NDArray[np.bool_], n_bins: int) -> F64:
    """ECE bin statistics ``(S, n_bins + 1, 3)`` of every row of ``conf (S, B)`` (same bins as calibration)."""
    s_count = conf.shape[0]
    bounds = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(bounds, conf, side="right") - 1, 0, n_bins)
    idx += (np.arange(s_count) * (n_bins + 1))[:, None]
    size = s_count * (n_bins + 1)
    out = np.empty((s_count, n_bins + 1, 3))
    out[..., 0] = np.bincount(idx.ravel(), minlength=size).reshape(s_count, -1)
    out[..., 1] = np.bincount(idx.ravel(), weights=conf.ravel(), minlength=size).reshape(s_count, -1)
    out[..., 2] = np.bincount(idx.ravel(), weights=correct.ravel().astype(np.float64), minlength=size).reshape(
        s_count, -1
    )
    return out


def _equitability(preds: I64, subsets: I64, correct: npt.NDArray[np.bool_], num_classes: int) -> tuple[F64, F64]:
    """Sums and counts ``(S, 2)`` of per-sample equitability over ensemble-correct / -wrong samples.

    Vectorised form of :func:`~ovdiv.metrics.pairwise.shannon_equitability_per_sample` for all subsets:
    with ``c_j`` the number of subset members voting like member j, ``H = −(1/k) Σ_j ln(c_j / k)``.
    """
    k = subsets.shape[1]
    denom = np.log(min(k, num_classes))
    ps = preds[subsets]  # (S, k, B)
    if k == 1 or denom == 0:
        e = np.zeros((subsets.shape[0], preds.shape[1]))
    else:
        counts = (ps[:, :, None, :] == ps[:, None, :, :]).sum(axis=1).astype(np.float64)  # (S, k, B)
        e = -np.log(counts / k).sum(axis=1) / k / denom
    ok = correct
    eq_sum = np.stack([np.where(ok, e, 0.0).sum(axis=1), np.where(ok, 0.0, e).sum(axis=1)], axis=1)
    n_ok = ok.sum(axis=1).astype(np.float64)
    eq_cnt = np.stack([n_ok, ok.shape[1] - n_ok], axis=1)
    return eq_sum, eq_cnt


def _generic(
    z: npt.NDArray[np.floating], y: I64, subsets: I64, rule: Consensus, seed: int, offset: int
) -> tuple[I64, F64, F64]:
    """Per-subset loop over the functional helpers: ``rank (S, B)``, ``nll (S, B)``, ``conf (S, B)``."""
    s_count, b = subsets.shape[0], y.size
    rank = np.zeros((s_count, b), dtype=np.int64)
    nll = np.zeros((s_count, b))
    conf = np.zeros((s_count, b))
    rows = np.arange(b)
    prio = None
    if rule is Consensus.MAJORITY:
        prio = tie_priority(seed, np.arange(offset, offset + b)[:, None], np.arange(z.shape[2])[None, :])
    for s, members in enumerate(subsets):
        sub = z[members]
        k = members.size
        sc = _scores(sub, rule)
        if prio is not None:
            rank[s] = _majority_rank(sc, y, prio)
            masked = np.where(sc == sc.max(axis=1, keepdims=True), prio, np.uint64(0))
            pred = masked.argmax(axis=1)
            nll[s] = np.nan
            conf[s] = sc[rows, pred] / k
            continue
        rank[s] = _label_rank(sc, y)
        pred = sc.argmax(axis=1)
        if rule in (Consensus.AVERAGE, Consensus.GEOMETRIC):
            nll[s] = logsumexp(sc, axis=1) - sc[rows, y]
            conf[s] = softmax(sc)[rows, pred]
        else:
            p = sc / sc.sum(axis=1, keepdims=True)
            nll[s] = -np.log(np.clip(p[rows, y], NLL_EPS, 1.0))
            conf[s] = p[rows, pred]
    return rank, nll, conf


def _decide(
    sc: F64, valid: npt.NDArray[np.bool_], lower: npt.NDArray[np.bool_], sy: F64, bound: F64
) -> tuple[I64, F64, npt.NDArray[np.bool_]]:
    """Candidate scores ``sc (..., Q)`` -> (label rank or a lower bound >= 5, best score, certified)."""
    sc = np.where(valid, sc, -np.inf)
    smax = sc.max(axis=-1)
    syx = sy[..., None]
    above = np.count_nonzero((sc > syx) | ((sc == syx) & lower), axis=-1).astype(np.int64)
    ok = (sy > bound) | ((above >= 5) & (smax > bound))
    return above, smax, ok


def _dedupe(cand: I64) -> tuple[I64, npt.NDArray[np.bool_]]:
    cand = np.sort(cand, axis=-1)
    valid = np.ones(cand.shape, dtype=bool)
    valid[..., 1:] = cand[..., 1:] != cand[..., :-1]
    return cand, valid


def _average_fast(z: npt.NDArray[np.floating], y: I64, subsets: I64, n_bins: int = 15) -> tuple[I64, F64, F64, int]:
    """Exact ``average`` statistics via certified top-K bounds and a factorised log-sum-exp.

    Returned ranks are exact when < 5 and otherwise a lower bound >= 5 (only ``rank == 0`` and
    ``rank < 5`` are used).
    """
    m, b, c = z.shape
    k = subsets.shape[1]
    k2 = min(CANDIDATES_TIER2, c - 1)
    k1 = min(CANDIDATES_PER_MEMBER, k2)
    z64 = np.asarray(z, dtype=np.float64)
    rows = np.arange(b)
    # Partition the input dtype (float32 values are exact in float64, so the order is the same).
    part = np.argpartition(np.negative(z), sorted({k1, k2}), axis=2)  # (M, B, C)
    t1 = np.take_along_axis(z64, part[:, :, k1 : k1 + 1], axis=2)[:, :, 0]  # (k1+1)-th largest
    t2 = np.take_along_axis(z64, part[:, :, k2 : k2 + 1], axis=2)[:, :, 0]  # (k2+1)-th largest
    top2 = part[:, :, :k2]
    zy = z64[:, rows, y]  # (M, B)

    # Tier 1, all subsets at once: candidates = every member's top-k1 classes + the label.
    cand, valid = _dedupe(np.concatenate([part[:, :, :k1].transpose(1, 0, 2).reshape(b, m * k1), y[:, None]], 1))
    zc = z64[:, rows[:, None], cand]  # (M, B, Q)
    sc = zc[subsets[:, 0]].copy()  # (S, B, Q), summed in member order like the brute force
    sy = zy[subsets[:, 0]].copy()
    bound = t1[subsets[:, 0]].copy()
    for j in range(1, k):
        sc += zc[subsets[:, j]]
        sy += zy[subsets[:, j]]
        bound += t1[subsets[:, j]]
    sc /= k
    sy /= k
    bound /= k
    rank, smax, ok = _decide(sc, valid[None], (cand < y[:, None])[None], sy, bound)
    del sc, zc

    # log-sum-exp: Σ_c Π_i exp((z_ic − m_i)/k), products of the first k−1 members shared by prefix.
    zmax = z64.max(axis=2)  # (M, B)
    e = z64 - zmax[:, :, None]
    e /= k
    np.exp(e, out=e)
    et = np.ascontiguousarray(e.transpose(1, 0, 2))  # (B, M, C)
    sumexp = np.empty((subsets.shape[0], b))
    prefixes, inverse = np.unique(subsets[:, :-1], axis=0, return_inverse=True)
    for g, prefix in enumerate(prefixes.tolist()):
        idx = np.flatnonzero(inverse.ravel() == g)
        prod = np.ones((b, c)) if not prefix else e[prefix[0]].copy()
        for i in prefix[1:]:
            prod *= e[i]
        lasts = subsets[idx, -1]
        contiguous = lasts.size > 1 and bool((np.diff(lasts) == 1).all())  # combinations order: a view
        block = et[:, lasts[0] : lasts[-1] + 1, :] if contiguous else et[:, lasts, :]
        sumexp[idx] = np.matmul(block, prod[:, :, None])[:, :, 0].T
    lse = np.log(np.maximum(sumexp, _TINY_SUM)) + zmax[subsets].sum(axis=1) / k

    # Tier 2 for undecided (subset, sample) pairs: the subset members' top-k2 classes + the label.
    fb_s, fb_b = np.nonzero(~ok)
    full_s: list[I64] = []
    full_b: list[I64] = []
    for lo in range(0, fb_s.size, 4096):
        ss, bb = fb_s[lo : lo + 4096], fb_b[lo : lo + 4096]
        mem = subsets[ss]  # (F, k)
        c2, valid2 = _dedupe(np.concatenate([top2[mem, bb[:, None]].reshape(ss.size, -1), y[bb][:, None]], 1))
        s2 = z64[mem[:, 0][:, None], bb[:, None], c2].copy()
        bound2 = t2[mem[:, 0], bb].copy()
        for j in range(1, k):
            s2 += z64[mem[:, j][:, None], bb[:, None], c2]
            bound2 += t2[mem[:, j], bb]
        s2 /= k
        bound2 /= k
        r2, m2, ok2 = _decide(s2, valid2, c2 < y[bb][:, None], sy[ss, bb], bound2)
        rank[ss[ok2], bb[ok2]] = r2[ok2]
        smax[ss[ok2], bb[ok2]] = m2[ok2]
        full_s.append(ss[~ok2])
        full_b.append(bb[~ok2])
    # Full score vectors for what remains, and direct log-sum-exp where the product sum is tiny.
    tiny_s, tiny_b = np.nonzero(sumexp < _TINY_SUM)
    fs = np.concatenate([*full_s, tiny_s]).astype(np.int64)
    fbb = np.concatenate([*full_b, tiny_b]).astype(np.int64)
    for lo in range(0, fs.size, 256):
        ss, bb = fs[lo : lo + 256], fbb[lo : lo + 256]
        full = z64[subsets[ss].T, bb[None, :]].sum(axis=0) / k  # (F, C), member order as brute force
        rank[ss, bb] = _label_rank(full, y[bb])
        smax[ss, bb] = full.max(axis=1)
        tiny = sumexp[ss, bb] < _TINY_SUM
        if tiny.any():
            lse[ss[tiny], bb[tiny]] = logsumexp(full[tiny], axis=1)
    nll = lse - sy
    conf = np.exp(smax - lse)
    # Confidences within 1e-12 of an ECE bin edge: recompute with the reference formula so the bin is
    # exactly the brute force's (e.g. all-equal logits give 1/C, an edge for C = 15; margins > 37 give 1).
    ns, nb = np.nonzero(_near_bin_edges(conf, n_bins))
    for lo in range(0, ns.size, 256):
        ss, bb = ns[lo : lo + 256], nb[lo : lo + 256]
        full = z64[subsets[ss].T, bb[None, :]].sum(axis=0) / k
        conf[ss, bb] = 1.0 / np.exp(full - full.max(axis=1, keepdims=True)).sum(axis=1)
    return rank, nll, conf, int(sum(x.size for x in full_s))


def subset_batch_stats(
    logits: npt.NDArray[np.floating],
    labels: I64,
    subsets: I64,
    rule: Consensus,
    *,
    preds: I64 | None = None,
    seed: int = 0,
    index_offset: int = 0,
    n_bins: int = 15,
    fast: bool = True,
) -> SubsetStats:
    """Statistics of the ensembles of ``subsets`` on one batch (inputs are trusted: validate upstream).

    Args:
        logits: ``(M, B, C)`` member logits.
        labels: ``(B,)`` int64 labels.
        subsets: ``(n_subsets, k)`` int64 member indices, ascending within a row.
        rule: Consensus rule.
        preds: ``(M, B)`` member argmax predictions (computed if None).
        seed: Majority tie-break seed.
        index_offset: Global index of the batch's first sample (majority tie-break).
        n_bins: ECE bins.
        fast: Use the exact fast path for ``average`` (False: the per-subset reference loop).

    Returns:
        A :class:`SubsetStats` for this batch.
    """
    z = logits
    b, c = z.shape[1], z.shape[2]
    if preds is None:
        preds = z.argmax(axis=2).astype(np.int64)
    out = SubsetStats(subsets, n_bins=n_bins)
    out.n = b
    if b == 0:
        return out
    if fast and rule is Consensus.AVERAGE and c >= 3:
        rank, nll, conf, out.fallback = _average_fast(z, labels, subsets, n_bins)
    else:
        rank, nll, conf = _generic(z, labels, subsets, rule, seed, index_offset)
    correct = rank == 0
    out.top1 = correct.sum(axis=1).astype(np.float64)
    out.top5 = (rank < 5).sum(axis=1).astype(np.float64)
    out.nll = nll.sum(axis=1)
    out.ece = _ece_update_many(conf, correct, n_bins)
    out.eq, out.eq_count = _equitability(preds, subsets, correct, c)
    out.correct_parts = [correct]
    return out
