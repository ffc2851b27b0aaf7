"""Benchmark: score all k-subsets of a synthetic pool (paper case: 14 members x 50 000 samples x 1000 classes).

Prints ONE JSON line. Timed separately:
  gen_s     generating the synthetic member logits (batch by batch, never all in memory),
  update_s  PoolStats.update over all batches: per-member, pairwise and all-subset ensemble statistics
            (the one pass over the logits, streaming, as the evaluation engine does),
  score_s   score_subsets(pool, k): every metric of every subset from the accumulated statistics.
  intervals_s  subset_evidence(pool, k): confidence intervals for every subset — Clopper-Pearson of the
            ensemble top-1/top-5, exact McNemar vs the best member, and a paired bootstrap over images
            (--bootstrap resamples, default 2000; --ci-method percentile|bca) of Δ, Δ vs mean, member
            accuracies and the pairwise diversity metrics, all resamples as ONE matrix product; run in a
            forked child holding the pool, whose peak RSS (pool + interval temporaries) is
            intervals_peak_rss_gb. Interval cost does not depend on the number of classes.
A side-by-side check on a slice: the exact fast path (certified top-K bound + factorised log-sum-exp)
vs the per-subset reference loop over full score vectors — max abs difference and speed ratio.
Peak RSS is the process maximum (ru_maxrss); the 1-minute load average at start and end is recorded
because the machine is shared.

    OMP_NUM_THREADS=1 python scripts/bench_subsets.py            # full size
    python scripts/bench_subsets.py --samples 5000 --classes 100 # quick
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing as mp
import os
import resource
import time
from typing import Any

import numpy as np

from ovdiv.metrics import PoolStats, score_subsets
from ovdiv.metrics.evidence import subset_evidence
from ovdiv.metrics.subsets import subset_batch_stats
from ovdiv.types import Consensus


def make_batch(rng: np.random.Generator, m: int, b: int, c: int, skill: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Trained-classifier-like logits: member noise, a shared per-sample difficulty, signal on the label."""
    y = rng.integers(0, c, b)
    z = rng.standard_normal((m, b, c), dtype=np.float32) * 1.5
    shared = rng.standard_normal((b, c), dtype=np.float32)  # samples confuse all members alike
    z += 0.8 * shared[None]
    difficulty = rng.uniform(0.0, 1.0, b).astype(np.float32)
    signal = skill[:, None] * (1.0 - difficulty)[None, :] * 16.0 + rng.normal(0, 1.5, (m, b)).astype(np.float32)
    z[:, np.arange(b), y] += signal
    return z, y


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--members", type=int, default=14)
    ap.add_argument("--samples", type=int, default=50_000)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--map-samples", type=int, default=512, help="samples that also get attribution maps")
    ap.add_argument("--feature-samples", type=int, default=2000, help="samples that also get CKA features")
    ap.add_argument("--check-samples", type=int, default=256, help="slice for the fast-vs-reference check")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples for the intervals (0: off)")
    ap.add_argument("--ci-method", default="percentile", choices=["percentile", "bca"])
    args = ap.parse_args()
    m, n, c, k, bs = args.members, args.samples, args.classes, args.k, args.batch
    load_start = os.getloadavg()[0]

    rng = np.random.default_rng(args.seed)
    skill = rng.uniform(0.6, 1.0, m).astype(np.float32)
    pool = PoolStats([f"m{i:02d}" for i in range(m)], c, subset_sizes=(k,), consensus=("average",), keep_logits=False)
    gen_s = update_s = 0.0
    first = None
    for lo in range(0, n, bs):
        b = min(bs, n - lo)
        t0 = time.perf_counter()
        z, y = make_batch(rng, m, b, c, skill)
        maps = feats = None
        if lo < args.map_samples:
            nm = min(b, args.map_samples - lo)
            z, y = z[:, :nm], y[:nm]
            maps = rng.standard_normal((m, nm, 3, 32, 32), dtype=np.float32)
        elif lo < args.map_samples + args.feature_samples:
            d = min(64, c)
            feats = [rng.standard_normal((b, d), dtype=np.float32) + z[i, :, :d] for i in range(m)]
        gen_s += time.perf_counter() - t0
        if first is None:
            first = (z[:, : args.check_samples].copy(), y[: args.check_samples].copy())
        t0 = time.perf_counter()
        pool.update(z, y, maps=maps, features=feats)
        update_s += time.perf_counter() - t0
        if maps is not None and z.shape[1] < b:  # the rest of this batch without maps
            z2, y2 = make_batch(rng, m, b - z.shape[1], c, skill)
            t0 = time.perf_counter()
            pool.update(z2, y2)
            update_s += time.perf_counter() - t0

    t0 = time.perf_counter()
    rows = score_subsets(pool, k)
    score_s = time.perf_counter() - t0
    stats = pool.subset_stats[(k, Consensus.AVERAGE)]

    # Side by side on a slice: exact fast path vs the per-subset reference loop (full score vectors).
    assert first is not None
    zc, yc = first
    subsets = np.array(list(itertools.combinations(range(m), k)))
    t0 = time.perf_counter()
    fast = subset_batch_stats(zc, yc, subsets, Consensus.AVERAGE, fast=True)
    fast_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = subset_batch_stats(zc, yc, subsets, Consensus.AVERAGE, fast=False)
    ref_s = time.perf_counter() - t0
    max_diff = max(
        float(np.abs(fast.top1 - ref.top1).max()),
        float(np.abs(fast.top5 - ref.top5).max()),
        float(np.abs(fast.nll - ref.nll).max() / yc.size),
        float(np.abs(fast.ece - ref.ece).max() / yc.size),
    )
    deltas = np.array([r["improvement"] for r in rows])
    intervals = _time_intervals(pool, k, args.bootstrap, args.ci_method)
    out = {
        "bench": "subsets",
        "members": m,
        "samples": n,
        "classes": c,
        "k": k,
        "subsets": len(rows),
        "metrics_per_row": len(rows[0]) - 3,
        "gen_s": round(gen_s, 2),
        "update_s": round(update_s, 2),
        "score_s": round(score_s, 4),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 3),
        "exact_fallback_fraction": round(stats.fallback / (len(rows) * n), 4),
        "slice_samples": int(yc.size),
        "slice_fast_s": round(fast_s, 3),
        "slice_reference_s": round(ref_s, 3),
        "slice_speedup": round(ref_s / fast_s, 2),
        "slice_max_abs_diff": max_diff,
        "mean_member_top1": round(float(np.mean([r["mean_member_top1"] for r in rows])), 4),
        "improvement_range": [round(float(deltas.min()), 4), round(float(deltas.max()), 4)],
        **intervals,
        "load_avg_1m": [round(load_start, 2), round(os.getloadavg()[0], 2)],
        "cpus": os.cpu_count(),
    }
    print(json.dumps(out))


def _intervals_child(pool: PoolStats, k: int, b: int, method: str, conn: Any) -> None:
    t0 = time.perf_counter()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    ev = subset_evidence(pool, k, n_resamples=b, method=method, seed=0)
    dt = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    width = ev.high["improvement"] - ev.low["improvement"] if b else np.array([np.nan])
    conn.send(
        {
            "intervals_s": round(dt, 2),
            "intervals_cpu_s": round(cpu, 2),  # all threads; wall time depends on the shared machine's load
            "intervals_peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 3),
            "intervals_resamples": b,
            "intervals_method": method,
            "improvement_ci_width_median": round(float(np.median(width)), 5),
            "mcnemar_p_below_0.05": int((ev.p_value < 0.05).sum()),
        }
    )
    conn.close()


def _time_intervals(pool: PoolStats, k: int, b: int, method: str) -> dict[str, Any]:
    """Run subset_evidence in a forked child (its peak RSS is the pool plus the interval work)."""
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_intervals_child, args=(pool, k, b, method, child))
    proc.start()
    out: dict[str, Any] = parent.recv()
    proc.join()
    return out


if __name__ == "__main__":
    main()
