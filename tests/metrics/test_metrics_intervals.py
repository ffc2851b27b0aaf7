"""Confidence intervals, McNemar and the paired bootstrap vs independent computations."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import optimize, stats

import ovdiv.metrics as om
from ovdiv.errors import MetricInputError
from ovdiv.metrics import intervals as iv
from ovdiv.metrics.evidence import correlation_evidence, subset_bootstrap, subset_evidence


# ------------------------------------------------------------------------------------------ binomial
def _cp_by_root(k: int, n: int, level: float) -> tuple[float, float]:
    """Clopper-Pearson by its definition: P(X >= k | lo) = α/2 and P(X <= k | hi) = α/2."""
    a = 1 - level
    lo = 0.0 if k == 0 else optimize.brentq(lambda p: stats.binom.sf(k - 1, n, p) - a / 2, 1e-15, 1 - 1e-15)
    hi = 1.0 if k == n else optimize.brentq(lambda p: stats.binom.cdf(k, n, p) - a / 2, 1e-15, 1 - 1e-15)
    return lo, hi


def _wilson_closed(k: int, n: int, level: float) -> tuple[float, float]:
    z = stats.norm.ppf(1 - (1 - level) / 2)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


@pytest.mark.parametrize("level", [0.9, 0.95, 0.99])
def test_clopper_pearson_and_wilson_match_definitions(level) -> None:
    cases = [(0, 10), (1, 10), (7, 10), (10, 10), (3500, 5000), (1, 50_000), (49_999, 50_000)]
    k = np.array([c[0] for c in cases])
    n = np.array([c[1] for c in cases])
    lo, hi = om.clopper_pearson(k, n, level)
    wlo, whi = om.wilson(k, n, level)
    for i, (kk, nn) in enumerate(cases):
        ref = _cp_by_root(kk, nn, level)
        assert lo[i] == pytest.approx(ref[0], abs=1e-9) and hi[i] == pytest.approx(ref[1], abs=1e-9)
        ci = stats.binomtest(kk, nn).proportion_ci(confidence_level=level, method="exact")
        assert lo[i] == pytest.approx(ci.low, abs=1e-12) and hi[i] == pytest.approx(ci.high, abs=1e-12)
        wref = _wilson_closed(kk, nn, level)
        assert wlo[i] == pytest.approx(max(0.0, wref[0]), abs=1e-12)
        assert whi[i] == pytest.approx(min(1.0, wref[1]), abs=1e-12)


def test_binomial_interval_rejects_bad_input() -> None:
    with pytest.raises(MetricInputError):
        om.clopper_pearson(11, 10)
    with pytest.raises(MetricInputError):
        om.wilson(1, 10, level=1.5)
    with pytest.raises(MetricInputError):
        om.binomial_interval(1, 10, method="agresti")


@pytest.mark.parametrize("method", ["clopper-pearson", "wilson"])
def test_binomial_coverage_simulation(method) -> None:
    """Over 500 synthetic datasets with known accuracy, the 95 % interval covers it 93-97 % of the time."""
    rng = np.random.default_rng(2026)
    n, p = 2000, 0.7
    k = rng.binomial(n, p, size=500)
    lo, hi = om.binomial_interval(k, n, 0.95, method)
    coverage = np.mean((lo <= p) & (p <= hi))
    assert 0.93 <= coverage <= 0.97, coverage


# ------------------------------------------------------------------------------------------ McNemar
def test_mcnemar_against_hand_count() -> None:
    a = np.array([1, 1, 1, 1, 1, 0, 0, 1, 1, 0, 1, 1], dtype=bool)
    b = np.array([1, 0, 0, 0, 1, 0, 1, 0, 1, 0, 0, 1], dtype=bool)
    # discordant by hand: a right & b wrong at 1, 2, 3, 7, 10 -> 5; a wrong & b right at 6 -> 1
    bb, cc, p = om.mcnemar(a, b, "greater")
    assert (bb, cc) == (5, 1)
    assert p == pytest.approx(sum(math.comb(6, i) for i in range(5, 7)) / 2**6)  # P(X >= 5 | 6, 1/2)
    _, _, p2 = om.mcnemar(a, b, "two-sided")
    assert p2 == pytest.approx(2 * 7 / 64)
    assert p2 == pytest.approx(stats.binomtest(5, 6, 0.5).pvalue)
    _, _, pl = om.mcnemar(a, b, "less")
    assert pl == pytest.approx(stats.binomtest(5, 6, 0.5, alternative="less").pvalue)
    assert om.mcnemar_from_counts(0, 0, "greater") == 1.0
    vec = om.mcnemar_from_counts(np.array([5, 30, 2]), np.array([1, 12, 9]), "greater")
    ref = [stats.binomtest(x, x + y, 0.5, alternative="greater").pvalue for x, y in [(5, 1), (30, 12), (2, 9)]]
    np.testing.assert_allclose(vec, ref, rtol=1e-12)


# ------------------------------------------------------------------------------------------ bootstrap
def test_weights_are_the_resample_counts() -> None:
    w = om.bootstrap_weights(37, 50, seed=3)
    idx = np.concatenate(list(iv.bootstrap_indices(37, 50, seed=3)))
    assert np.array_equal(idx, np.random.default_rng(3).integers(0, 37, (50, 37)))
    for j in range(50):
        assert np.array_equal(w[j], np.bincount(idx[j], minlength=37))


@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_vectorised_bootstrap_equals_scipy_bootstrap(method) -> None:
    """Same seed -> scipy's paired bootstrap draws the same resamples: identical intervals."""
    rng = np.random.default_rng(0)
    e = (rng.random(300) < 0.7).astype(float)
    m = (rng.random(300) < 0.6).astype(float)
    ref = om.paired_bootstrap(
        [e, m], lambda a, b, axis: a.sum(axis) - b.sum(axis), n_resamples=400, seed=5, method=method
    )
    x = np.stack([e, m])
    sums = om.bootstrap_sums(x, 400, seed=5)
    jack = (x.sum(1)[:, None] - x)[0] - (x.sum(1)[:, None] - x)[1]
    lo, hi = om.bootstrap_interval(sums[0] - sums[1], 0.95, method, estimate=e.sum() - m.sum(), jackknife=jack)
    assert lo == pytest.approx(ref.low, abs=1e-9) and hi == pytest.approx(ref.high, abs=1e-9)


@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_paired_difference_equals_scipy(method) -> None:
    rng = np.random.default_rng(9)
    ens = rng.random(250) < 0.8
    mem = np.where(rng.random(250) < 0.7, ens, rng.random(250) < 0.6)
    got, p = om.paired_difference(ens, mem, n_resamples=300, seed=2, method=method)
    ref = om.paired_bootstrap(
        [ens.astype(float), mem.astype(float)],
        lambda a, b, axis: a.sum(axis) - b.sum(axis),  # integer-valued: ties with θ̂ are exact (BCa's z0)
        n_resamples=300,
        seed=2,
        method=method,
    )
    assert got.estimate == pytest.approx(ens.mean() - mem.mean())
    assert got.low == pytest.approx(ref.low / 250, abs=1e-12) and got.high == pytest.approx(ref.high / 250, abs=1e-12)
    assert got.method == f"bootstrap-{method}" and got.level == 0.95
    b, c = int(np.sum(ens & ~mem)), int(np.sum(~ens & mem))
    assert p == pytest.approx(stats.binomtest(b, b + c, 0.5).pvalue)


def _pool_data(seed: int = 1, m: int = 4, n: int = 60):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 5, n)
    preds = np.where(rng.random((m, n)) < rng.uniform(0.5, 0.8, (m, 1)), labels, rng.integers(0, 5, (m, n)))
    subsets = np.array(list(itertools.combinations(range(m), 3)))
    ens = np.stack([(preds[s] == labels).sum(0) >= 2 for s in subsets])  # a majority-like consensus
    return preds, labels, subsets, ens


def _brute_stats(c, preds, e, subsets, idx):
    """Every statistic of every subset on one resample, by direct per-subset computation."""
    cc, pp, ee = c[:, idx], preds[:, idx], e[:, idx]
    out = {k: [] for k in ("improvement", "improvement_vs_mean", "disagreement", "q_statistic", "double_fault", "pdr")}
    for s, mem in enumerate(subsets):
        acc = cc[mem].mean(1)
        out["improvement"].append(ee[s].mean() - acc.max())
        out["improvement_vs_mean"].append(ee[s].mean() - acc.mean())
        out["disagreement"].append(om.pair_mean(om.disagreement(cc[mem])))
        out["q_statistic"].append(om.pair_mean(om.q_statistic(cc[mem])))
        out["double_fault"].append(om.pair_mean(om.double_fault(cc[mem])))
        out["pdr"].append(om.pair_mean(om.pdr(pp[mem])))
    return {k: np.array(v) for k, v in out.items()}


@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_subset_bootstrap_equals_brute_force_loop(method) -> None:
    preds, labels, subsets, ens = _pool_data()
    c = preds == labels
    n, b = labels.size, 120
    ev = subset_bootstrap(c, ens, subsets, member_preds=preds, n_resamples=b, method=method, seed=11)
    again = subset_bootstrap(c, ens, subsets, member_preds=preds, n_resamples=b, method=method, seed=11)
    other = subset_bootstrap(c, ens, subsets, member_preds=preds, n_resamples=b, method=method, seed=12)
    idx_all = np.concatenate(list(iv.bootstrap_indices(n, b, seed=11)))
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            boot = [_brute_stats(c, preds, ens, subsets, idx) for idx in idx_all]
            est = _brute_stats(c, preds, ens, subsets, np.arange(n))
            jack = [_brute_stats(c, preds, ens, subsets, np.delete(np.arange(n), i)) for i in range(n)]
    for key in est:
        dist = np.stack([r[key] for r in boot], axis=1)  # (S, B)
        np.testing.assert_allclose(ev.estimate[key], est[key], atol=1e-12)
        np.testing.assert_allclose(ev.boot[key], dist, atol=1e-12)
        if method == "percentile":
            lo, hi = np.quantile(dist, [0.025, 0.975], axis=1)
        else:  # BCa by hand (Efron & Tibshirani 14.3), jackknife by a loop over left-out images
            jk = np.stack([r[key] for r in jack], axis=1)
            lo, hi = np.empty(len(subsets)), np.empty(len(subsets))
            for s in range(len(subsets)):
                th = est[key][s]
                frac = (np.sum(dist[s] < th - 1e-12) + np.sum(dist[s] <= th + 1e-12)) / (2 * b)
                z0 = stats.norm.ppf(frac)
                d = jk[s].mean() - jk[s]
                a = (d**3).sum() / (6 * ((d**2).sum()) ** 1.5)
                z = stats.norm.ppf(0.025)
                q1 = stats.norm.cdf(z0 + (z0 + z) / (1 - a * (z0 + z)))
                q2 = stats.norm.cdf(z0 + (z0 - z) / (1 - a * (z0 - z)))
                lo[s], hi[s] = np.quantile(dist[s], q1), np.quantile(dist[s], q2)
        np.testing.assert_allclose(ev.low[key], lo, atol=1e-12, err_msg=key)
        np.testing.assert_allclose(ev.high[key], hi, atol=1e-12, err_msg=key)
        np.testing.assert_array_equal(again.low[key], ev.low[key])
    assert any(not np.array_equal(other.low[k], ev.low[k]) for k in est)  # another seed, other resamples


def test_subset_mcnemar_is_against_the_best_member() -> None:
    preds, labels, subsets, ens = _pool_data(seed=4, n=200)
    c = preds == labels
    ev = subset_bootstrap(c, ens, subsets, member_preds=preds, n_resamples=0)
    assert ev.low == {} and ev.boot == {}
    for s, mem in enumerate(subsets):
        best = mem[np.argmax(c[mem].sum(1))]
        b = int(np.sum(ens[s] & ~c[best]))
        cnt = int(np.sum(~ens[s] & c[best]))
        assert ev.best_member[s] == best and tuple(ev.discordant[s]) == (b, cnt)
        assert ev.p_value[s] == pytest.approx(stats.binomtest(b, b + cnt, 0.5, alternative="greater").pvalue)


def _pool(seed: int = 0, m: int = 5, n: int = 300, c: int = 10) -> om.PoolStats:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    z = rng.standard_normal((m, n, c))
    z[:, np.arange(n), y] += rng.uniform(0.3, 2.0, (m, 1))
    pool = om.PoolStats([f"m{i}" for i in range(m)], c, subset_sizes=(3,), consensus=("average", "majority"))
    for lo in range(0, n, 64):
        pool.update(z[:, lo : lo + 64], y[lo : lo + 64])
    return pool


def test_subset_evidence_matches_score_subsets_and_survives_save(tmp_path) -> None:
    pool = _pool()
    rows = om.score_subsets(pool, 3)
    ev = subset_evidence(pool, 3, n_resamples=200, seed=1)
    for key in ("ensemble_top1", "ensemble_top5", "improvement", "disagreement", "q_statistic", "pdr", "double_fault"):
        np.testing.assert_allclose(ev.estimate[key], [r[key] for r in rows], atol=1e-12, err_msg=key)
    for key in ev.low:
        ok = np.isfinite(ev.low[key])
        assert ok.all(), key
        assert np.all(ev.low[key] <= ev.estimate[key] + 1e-12) and np.all(ev.estimate[key] <= ev.high[key] + 1e-12)
    lo, hi = om.clopper_pearson(np.round([r["ensemble_top1"] * pool.n for r in rows]), pool.n)
    np.testing.assert_allclose(ev.low["ensemble_top1"], lo)
    np.testing.assert_allclose(ev.high["ensemble_top1"], hi)
    assert ev.method["ensemble_top1"] == "clopper-pearson" and ev.method["improvement"] == "bootstrap-percentile"
    loaded = om.PoolStats.load(pool.save(tmp_path / "pool.npz"))
    ev2 = subset_evidence(loaded, 3, "majority", n_resamples=50, seed=1)
    ev1 = subset_evidence(pool, 3, "majority", n_resamples=50, seed=1)
    np.testing.assert_array_equal(ev1.low["improvement"], ev2.low["improvement"])


def test_correlation_evidence_equals_loop_over_resamples() -> None:
    pool = _pool(seed=2, m=6)
    rows = om.score_subsets(pool, 3)
    ev = subset_evidence(pool, 3, n_resamples=100, seed=3)
    out = correlation_evidence(rows, ev, dataset="d")
    ref = {r["metric"]: r for r in om.correlation_study(rows)}
    by = {r["metric"]: r for r in out}
    assert by["disagreement"]["n_ensembles"] == 20
    for metric in ("disagreement", "mean_member_top1", "double_fault"):
        assert by[metric]["pearson"] == pytest.approx(ref[metric]["pearson"])
        assert by[metric]["spearman"] == pytest.approx(ref[metric]["spearman"])
        pr = [stats.pearsonr(ev.boot[metric][:, j], ev.boot["improvement"][:, j])[0] for j in range(100)]
        sr = [stats.spearmanr(ev.boot[metric][:, j], ev.boot["improvement"][:, j])[0] for j in range(100)]
        lo, hi = np.quantile(pr, [0.025, 0.975])
        assert by[metric]["pearson_ci_low"] == pytest.approx(lo) and by[metric]["pearson_ci_high"] == pytest.approx(hi)
        lo, hi = np.quantile(sr, [0.025, 0.975])
        assert by[metric]["spearman_ci_low"] == pytest.approx(lo)
        assert by[metric]["ci_method"] == "bootstrap-percentile" and by[metric]["ci_level"] == 0.95
    assert by["kl_divergence"]["pearson_ci_low"] is None  # no per-sample data: no interval
    assert correlation_evidence(rows[:2], ev, dataset="d") == []


@pytest.mark.slow
def test_bootstrap_coverage_simulation() -> None:
    """Percentile interval of an accuracy difference covers the true difference 93-97 % of the time."""
    rng = np.random.default_rng(7)
    n, hits = 400, 0
    for t in range(500):
        a = rng.random(n) < 0.75
        b = np.where(rng.random(n) < 0.8, a, rng.random(n) < 0.7)  # correlated, true diff computable
        x = np.stack([a, b]).astype(np.float32)
        sums = om.bootstrap_sums(x, 1000, seed=t)
        lo, hi = iv.percentile_interval((sums[0] - sums[1]) / n)
        true = 0.75 - (0.8 * 0.75 + 0.2 * 0.7)
        hits += lo <= true <= hi
    assert 0.93 <= hits / 500 <= 0.97
