"""Paired bootstrap of D_att and CKA (ovdiv.metrics.evidence) vs brute-force loops over resamples."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ovdiv import metrics as mt
from ovdiv.evaluate.scoring import load_attribution_stats, save_attribution_stats
from ovdiv.metrics.evidence import (
    SubsetEvidence,
    attribution_bootstrap,
    cka_bootstrap,
    subset_bootstrap,
    weighted_linear_cka,
)
from ovdiv.metrics.intervals import bca_interval, bootstrap_indices

B, SEED = 300, 7


def _maps(m: int = 4, n: int = 25, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.random((1, n, 3, 8, 8))
    return np.abs(base + 0.5 * rng.random((m, n, 3, 8, 8)))


def _d_att(maps: np.ndarray) -> float:
    """Independent D_att: population variance across members, |a| max-normalised per map."""
    a = np.abs(maps)
    a = a / a.reshape(a.shape[0], a.shape[1], -1).max(axis=2)[:, :, None, None, None]
    return float(a.var(axis=0).mean())


def _resamples(n: int) -> np.ndarray:
    return np.concatenate(list(bootstrap_indices(n, B, SEED)))


def test_accumulator_keeps_per_sample_pair_values() -> None:
    maps = _maps()
    acc = mt.AttributionDiversity(4, "max", hashes=False)
    acc.update(maps[:, :10])
    acc.update(maps[:, 10:])
    other = mt.AttributionDiversity(4, "max", hashes=False)
    other.update(maps[:, :3])
    acc.merge(other)  # appended after the first 25 samples
    d = acc.sample_ssd
    assert d is not None and d.shape == (28, 6)
    a = np.abs(maps) / np.abs(maps).reshape(4, 25, -1).max(axis=2)[:, :, None, None, None]
    i, k = np.triu_indices(4, 1)
    direct = ((a[i] - a[k]) ** 2).reshape(6, 25, -1).mean(axis=2).T
    np.testing.assert_allclose(d[:25], direct, rtol=1e-12)
    np.testing.assert_allclose(d[25:], direct[:3], rtol=1e-12)
    np.testing.assert_allclose(d.sum(axis=0), acc.ssd[i, k], rtol=1e-12)
    old = mt.AttributionDiversity(4, "max", hashes=False)
    old.sample_ssd = None  # e.g. a chunk cached by an older version
    acc.merge(old)
    assert acc.sample_ssd is None


def test_attribution_stats_round_trip_and_old_chunks(tmp_path) -> None:
    acc = mt.AttributionDiversity(4, "max", hashes=False)
    acc.update(_maps())
    save_attribution_stats(acc, tmp_path / "a.npz")
    back = load_attribution_stats([tmp_path / "a.npz"])
    assert back is not None and np.array_equal(back.sample_ssd, acc.sample_ssd)
    z = dict(np.load(tmp_path / "a.npz"))
    del z["sample_ssd"]
    np.savez(tmp_path / "old.npz", **z)
    both = load_attribution_stats([tmp_path / "a.npz", tmp_path / "old.npz"])
    assert both is not None and both.sample_ssd is None and both.n == 50
    pool = mt.PoolStats(["a", "b", "c", "d"], 5, subset_sizes=(), hashes=False)
    pool.update_attributions(_maps())
    pool.save(tmp_path / "pool.npz")
    assert np.array_equal(mt.PoolStats.load(tmp_path / "pool.npz").attribution.sample_ssd, pool.attribution.sample_ssd)


@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_attribution_bootstrap_equals_brute_force(method: str) -> None:
    maps = _maps()
    acc = mt.AttributionDiversity(4, "max", hashes=False)
    acc.update(maps)
    subsets = np.array(list(itertools.combinations(range(4), 3)))
    ev = attribution_bootstrap(acc.sample_ssd, subsets, 4, n_resamples=B, seed=SEED, method=method)
    est = np.array([_d_att(maps[list(s)]) for s in subsets])
    np.testing.assert_allclose(ev.estimate["attribution_diversity"], est, rtol=1e-12)
    idx = _resamples(25)
    boot = np.array([[_d_att(maps[list(s)][:, r]) for r in idx] for s in subsets])
    np.testing.assert_allclose(ev.boot["attribution_diversity"], boot, rtol=1e-10)
    if method == "percentile":
        lo, hi = np.quantile(boot, [0.025, 0.975], axis=1)
    else:
        jack = np.array([[_d_att(np.delete(maps[list(s)], i, axis=1)) for i in range(25)] for s in subsets])
        lo, hi = bca_interval(boot, est, jack, 0.95)
    np.testing.assert_allclose(ev.low["attribution_diversity"], lo, rtol=1e-10)
    np.testing.assert_allclose(ev.high["attribution_diversity"], hi, rtol=1e-10)
    assert np.all((ev.low["attribution_diversity"] <= est) & (est <= ev.high["attribution_diversity"]))
    assert ev.method["attribution_diversity"] == f"bootstrap-{method}"


def _features(n: int = 40, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 6))
    return [z @ rng.normal(size=(6, 5 + i)) + 0.4 * rng.normal(size=(n, 5 + i)) + 3.0 for i in range(4)]


def test_weighted_cka_is_cka_of_repeated_rows() -> None:
    feats = _features()
    m = weighted_linear_cka(feats, np.ones(40))[0]
    for i, k in itertools.combinations(range(4), 2):
        assert m[i, k] == pytest.approx(mt.linear_cka(feats[i], feats[k]), rel=1e-10)
    w = np.random.default_rng(3).integers(0, 3, 40)
    mw = weighted_linear_cka(feats, w[None].astype(float))[0]
    rep = [np.repeat(f, w, axis=0) for f in feats]
    assert mw[0, 2] == pytest.approx(mt.linear_cka(rep[0], rep[2]), rel=1e-10)
    assert np.allclose(np.diag(mw), 1.0)


@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_cka_bootstrap_equals_brute_force(method: str) -> None:
    feats = _features()
    subsets = np.array(list(itertools.combinations(range(4), 3)))

    def cka_mean(rows: np.ndarray, s: np.ndarray) -> float:
        return float(np.mean([mt.linear_cka(feats[i][rows], feats[k][rows]) for i, k in itertools.combinations(s, 2)]))

    ev = cka_bootstrap(feats, subsets, n_resamples=B, seed=SEED, method=method)
    est = np.array([cka_mean(np.arange(40), s) for s in subsets])
    np.testing.assert_allclose(ev.estimate["cka_mean"], est, rtol=1e-10)
    boot = np.array([[cka_mean(r, s) for r in _resamples(40)] for s in subsets])
    np.testing.assert_allclose(ev.boot["cka_mean"], boot, rtol=1e-9)
    if method == "percentile":
        lo, hi = np.quantile(boot, [0.025, 0.975], axis=1)
    else:
        jack = np.array([[cka_mean(np.delete(np.arange(40), i), s) for i in range(40)] for s in subsets])
        lo, hi = bca_interval(boot, est, jack, 0.95)
    np.testing.assert_allclose(ev.low["cka_mean"], lo, rtol=1e-9)
    np.testing.assert_allclose(ev.high["cka_mean"], hi, rtol=1e-9)
    assert np.all((ev.low["cka_mean"] <= est) & (est <= ev.high["cka_mean"]))


def test_cka_interval_withheld_when_resampling_bias_exceeds_spread() -> None:
    rng = np.random.default_rng(0)
    feats = [rng.normal(size=(12, 30)) for _ in range(3)]  # unrelated, few images: CKA biased upward
    ev = cka_bootstrap(feats, np.array([[0, 1], [1, 2], [0, 2]]), n_resamples=B, seed=SEED)
    outside = ev.boot["cka_mean"].min(axis=1) > ev.estimate["cka_mean"]
    assert outside.any()
    assert np.all(np.isnan(ev.low["cka_mean"][outside]) & np.isnan(ev.high["cka_mean"][outside]))


def test_evidence_add_pairs_distributions_only_on_the_same_images() -> None:
    rng = np.random.default_rng(1)
    correct = rng.random((4, 25)) < 0.7
    subsets = np.array(list(itertools.combinations(range(4), 3)))
    ens = rng.random((4, 25)) < 0.8
    ev = subset_bootstrap(correct, ens, subsets, n_resamples=B, seed=SEED)
    acc = mt.AttributionDiversity(4, "max", hashes=False)
    acc.update(_maps())
    ev.add(attribution_bootstrap(acc.sample_ssd, subsets, 4, n_resamples=B, seed=SEED))
    assert "attribution_diversity" in ev.boot and "attribution_diversity" in ev.low
    other = SubsetEvidence(subsets, n=ev.n, seed=SEED, n_resamples=B)
    fewer = attribution_bootstrap(acc.sample_ssd[:20], subsets, 4, n_resamples=B, seed=SEED)
    other.add(fewer)  # 20 attributed images vs 25 resampled: not the same resamples
    assert "attribution_diversity" in other.low and "attribution_diversity" not in other.boot


@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_improvement_vs_each_member_equals_brute_force(method: str) -> None:
    rng = np.random.default_rng(4)
    correct = rng.random((4, 40)) < 0.6
    subsets = np.array(list(itertools.combinations(range(4), 2)))
    ens = correct[subsets[:, 0]] | (rng.random((6, 40)) < 0.3)
    ev = subset_bootstrap(correct, ens, subsets, n_resamples=B, seed=SEED, method=method)
    est = ens.mean(axis=1)[:, None] - correct[subsets].mean(axis=2)
    np.testing.assert_allclose(ev.estimate["improvement_vs_member"], est, atol=1e-12)
    idx = _resamples(40)
    boot = np.stack([ens[:, r].mean(axis=1)[:, None] - correct[subsets][:, :, r].mean(axis=2) for r in idx], axis=-1)
    np.testing.assert_allclose(ev.boot["improvement_vs_member"], boot, atol=1e-12)
    if method == "percentile":
        lo, hi = np.quantile(boot, [0.025, 0.975], axis=-1)
    else:
        keep = [np.delete(np.arange(40), i) for i in range(40)]
        jack = np.stack([ens[:, r].mean(axis=1)[:, None] - correct[subsets][:, :, r].mean(axis=2) for r in keep], -1)
        lo, hi = bca_interval(boot, est, jack, 0.95)
    np.testing.assert_allclose(ev.low["improvement_vs_member"], lo, atol=1e-12)
    np.testing.assert_allclose(ev.high["improvement_vs_member"], hi, atol=1e-12)
    # McNemar of the ensemble vs each member: hand counts, then scipy's exact binomial test
    from scipy.stats import binomtest

    for s, sub in enumerate(subsets):
        for j, member in enumerate(sub):
            b = int((ens[s] & ~correct[member]).sum())
            c = int((~ens[s] & correct[member]).sum())
            want = binomtest(b, b + c, 0.5, alternative="greater").pvalue if b + c else 1.0
            assert ev.member_p_value[s, j] == pytest.approx(want, rel=1e-9)


def test_scoring_adds_cka_interval_within_budget_only(monkeypatch) -> None:
    from ovdiv.evaluate import scoring
    from ovdiv.evaluate.options import EvalOptions

    feats = [{"penultimate": f} for f in _features()]
    subsets = np.array(list(itertools.combinations(range(4), 3)))
    opts = EvalOptions.build(bootstrap=B, subset_size=3)
    cka = scoring.cka_matrices(feats)
    ev = SubsetEvidence(subsets, n=40, seed=0, n_resamples=B)
    scoring._add_map_evidence(ev, None, ["a", "b", "c", "d"], 3, opts, cka, feats, False)  # type: ignore[arg-type]
    want = cka_bootstrap([f["penultimate"] for f in feats], subsets, n_resamples=B, seed=0)
    np.testing.assert_array_equal(ev.low["cka_mean"], want.low["cka_mean"])
    assert "cka_mean" in ev.boot  # 40 CKA images = the 40 resampled: paired in the correlation study
    for s, sub in enumerate(subsets):
        assert ev.estimate["cka_mean"][s] == pytest.approx(mt.pair_mean(cka["penultimate"], sub), rel=1e-10)
    monkeypatch.setattr(scoring, "_CKA_FLOPS", 0)
    ev = SubsetEvidence(subsets, n=40, seed=0, n_resamples=B)
    scoring._add_map_evidence(ev, None, ["a", "b", "c", "d"], 3, opts, cka, feats, False)  # type: ignore[arg-type]
    assert "cka_mean" not in ev.low


def test_correlation_study_gets_d_att_interval_on_shared_resamples() -> None:
    from ovdiv.metrics.evidence import correlation_evidence

    maps = _maps(m=5, n=25)
    acc = mt.AttributionDiversity(5, "max", hashes=False)
    acc.update(maps)
    rng = np.random.default_rng(2)
    correct = rng.random((5, 25)) < 0.6
    subsets = np.array(list(itertools.combinations(range(5), 3)))
    ens = rng.random((len(subsets), 25)) < 0.7
    ev = subset_bootstrap(correct, ens, subsets, n_resamples=B, seed=SEED)
    ev.add(attribution_bootstrap(acc.sample_ssd, subsets, 5, n_resamples=B, seed=SEED))
    rows = [
        {"improvement": ev.estimate["improvement"][s], "attribution_diversity": ev.estimate["attribution_diversity"][s]}
        for s in range(len(subsets))
    ]
    (entry,) = correlation_evidence(rows, ev, dataset="d", metrics=["attribution_diversity"])
    x, y = ev.boot["attribution_diversity"], ev.boot["improvement"]
    r = [np.corrcoef(x[:, b], y[:, b])[0, 1] for b in range(B)]
    lo, hi = np.quantile(r, [0.025, 0.975])
    assert entry["pearson_ci_low"] == pytest.approx(lo, abs=1e-9) and entry["pearson_ci_high"] == pytest.approx(
        hi, abs=1e-9
    )
