"""PoolStats / score_subsets vs brute force over the full logits and maps, for every subset."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest

import ovdiv.metrics as om
import ovdiv.metrics.pool as pool_mod
from ovdiv.errors import MetricInputError
from ovdiv.metrics.subsets import subset_batch_stats

RULES = ["average", "average_probs", "geometric", "median", "majority"]


def _pool_data(seed: int, m: int = 5, n: int = 120, c: int = 12, kind: str = "random"):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    if kind == "random":
        z = rng.normal(size=(m, n, c)) * 2
    elif kind == "confident":  # trained-like: shared signal on the label, member noise
        z = rng.normal(size=(m, n, c))
        z[:, np.arange(n), y] += rng.uniform(0, 8, size=(m, n))
    else:  # adversarial ties: integer logits in a tiny range
        z = rng.integers(-1, 2, size=(m, n, c)).astype(float)
    maps = rng.normal(size=(m, n, 3, 8, 8)).astype(np.float32)
    maps[0, :5] = maps[1, :5]  # identical maps for some samples
    feats = [rng.normal(size=(n, 6)) for _ in range(m)]
    feats[1] = feats[0] @ rng.normal(size=(6, 4))
    return z.astype(np.float32), y, maps, feats


def _brute_common(z, y, maps, feats, k, batch):
    """Rule-independent metrics of every subset (computed once per subset)."""
    m, n, _c = z.shape
    preds = z.argmax(2)
    member_top1 = om.member_topk_accuracy(z, y, 1)
    out = []
    hd = om.hash_distances(maps)  # per pair, so the whole-pool matrices serve every subset
    for subset in itertools.combinations(range(m), k):
        s = list(subset)
        correct = preds[s] == y
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", om.MetricWarning)
            q = om.pair_mean(om.q_statistic(correct))
            rho = om.pair_mean(om.correlation(correct))
        ckas = []
        for i, j in itertools.combinations(s, 2):
            acc = om.MinibatchCKA()
            for lo in range(0, n, batch):
                acc.update([feats[i][lo : lo + batch]], [feats[j][lo : lo + batch]])
            ckas.append(acc.compute()[0, 0])
        row = {
            "mean_member_top1": member_top1[s].mean(),
            "max_member_top1": member_top1[s].max(),
            "disagreement": om.pair_mean(om.disagreement(correct)),
            "q_statistic": q,
            "correlation": rho,
            "double_fault": om.pair_mean(om.double_fault(correct)),
            "pdr": om.pair_mean(om.pdr(preds[s])),
            "kl_divergence": om.pair_mean(om.kl_divergence(om.softmax(z[s]))),
            "attribution_diversity": om.attribution_diversity(maps[s]),
            "attribution_rmse": om.pair_mean(om.attribution_rmse(maps[s])),
            "cka_mean": float(np.mean(ckas)) if ckas else float("nan"),
        }
        for name in om.HASH_METHODS:
            row[f"hash_{name}"] = om.pair_mean(hd[name], s)
        out.append(row)
    return out


def _brute(z, y, k, rule, seed, common):
    m, _n, c = z.shape
    preds = z.argmax(2)
    rows = []
    member_top1 = om.member_topk_accuracy(z, y, 1)
    for subset, base in zip(itertools.combinations(range(m), k), common, strict=True):
        s = list(subset)
        sub = z[s]
        rank = om.ensemble_label_rank(sub, y, rule, seed=seed)
        pred = om.ensemble_predict(sub, rule, seed=seed)
        np.testing.assert_array_equal(rank == 0, pred == y)
        probs = om.ensemble_probs(sub, rule)
        if rule in ("average", "geometric"):
            e_nll = om.nll_from_logits(om.ensemble_scores(sub, rule), y)
        elif rule == "majority":
            e_nll = float("nan")
        else:
            e_nll = om.nll(probs, y)
        top1 = float((rank == 0).mean())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", om.MetricWarning)
            eq = om.shannon_equitability(preds[s], y, pred, num_classes=c)
        sfx = "" if rule == "average" else f":{rule}"
        row = dict(base)
        row.update(
            {
                "ensemble_top1" + sfx: top1,
                "ensemble_top5" + sfx: float((rank < 5).mean()),
                "ensemble_nll" + sfx: e_nll,
                "ensemble_ece" + sfx: om.expected_calibration_error(probs, y, preds=pred),
                "improvement" + sfx: top1 - member_top1[s].max(),
                "improvement_vs_mean" + sfx: top1 - member_top1[s].mean(),
                "shannon_equitability_correct" + sfx: eq.correct,
                "shannon_equitability_wrong" + sfx: eq.wrong,
            }
        )
        rows.append(row)
    return rows


def _build(z, y, maps, feats, batch, **kw):
    m = z.shape[0]
    pool = om.PoolStats([f"m{i}" for i in range(m)], z.shape[2], **kw)
    for lo in range(0, z.shape[1], batch):
        pool.update(
            z[:, lo : lo + batch], y[lo : lo + batch], maps[:, lo : lo + batch], [f[lo : lo + batch] for f in feats]
        )
    return pool


def _compare(got_rows, ref_rows):
    assert len(got_rows) == len(ref_rows)
    for got, ref in zip(got_rows, ref_rows, strict=True):
        for key, val in ref.items():
            assert key in got, key
            if not isinstance(val, float | np.floating):
                assert got[key] == val
            elif np.isnan(val):
                assert np.isnan(got[key]), (got["ensemble"], key, got[key])
            else:
                assert abs(got[key] - val) <= 1e-9, (got["ensemble"], key, got[key], val)


@pytest.mark.parametrize(
    ("k", "kind"), [(1, "random"), (2, "ties"), (3, "random"), (3, "confident"), (3, "ties"), (4, "confident")]
)
def test_score_subsets_equals_brute_force(kind, k, monkeypatch):
    monkeypatch.setattr(pool_mod, "_CHUNK", 32)  # several internal chunks per batch
    z, y, maps, feats = _pool_data(10 + k, kind=kind)
    pool = _build(z, y, maps, feats, 50, subset_sizes=(k,), consensus=RULES, seed=3)
    common = _brute_common(z, y, maps, feats, k, 50)
    for rule in RULES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", om.MetricWarning)
            rows = om.score_subsets(pool, k, consensus=rule)
        _compare(rows, _brute(z, y, k, rule, 3, common))
    assert rows[0]["ensemble"] == "+".join(f"m{i}" for i in range(k))


def test_fast_path_equals_reference_loop_and_uses_both_branches():
    for kind, c in (("confident", 60), ("random", 60), ("ties", 200)):
        z, y, _, _ = _pool_data(5, m=6, n=200, c=c, kind=kind)
        subsets = np.array(list(itertools.combinations(range(6), 3)))
        fast = subset_batch_stats(z, y, subsets, _avg(), fast=True)
        slow = subset_batch_stats(z, y, subsets, _avg(), fast=False)
        np.testing.assert_array_equal(fast.top1, slow.top1)
        np.testing.assert_array_equal(fast.top5, slow.top5)
        np.testing.assert_allclose(fast.nll, slow.nll, rtol=1e-12, atol=1e-10)
        np.testing.assert_allclose(fast.ece, slow.ece, rtol=1e-12, atol=1e-10)
        total = subsets.shape[0] * y.size
        if kind == "confident":
            assert fast.fallback < total // 2  # the certified bound decides most samples
        if kind == "ties":
            assert fast.fallback > 0


def _avg():
    from ovdiv.types import Consensus

    return Consensus.AVERAGE


def test_extreme_logits_lse_fallback():
    z = np.zeros((3, 4, 20), dtype=np.float32)
    z[0, :, 0] = 3000.0  # exp((z - max) / k) underflows for every class of some member products
    z[1, :, 1] = 3000.0
    z[2, :, 2] = 3000.0
    y = np.array([0, 1, 2, 3])
    subsets = np.array([[0, 1, 2]])
    fast = subset_batch_stats(z, y, subsets, _avg(), fast=True)
    slow = subset_batch_stats(z, y, subsets, _avg(), fast=False)
    np.testing.assert_allclose(fast.nll, slow.nll, rtol=1e-12)


def test_logits_path_matches_accumulated_path_and_save_load(tmp_path):
    z, y, maps, feats = _pool_data(7, m=4, n=120, c=15, kind="confident")
    acc = _build(z, y, maps, feats, 50, subset_sizes=(2,), consensus=["average", "majority"], seed=1)
    kept = _build(z, y, maps, feats, 50, keep_logits=True, seed=1)
    for rule in ("average", "majority"):
        _compare(om.score_subsets(kept, 2, consensus=rule), om.score_subsets(acc, 2, consensus=rule))
    path = acc.save(tmp_path / "pool.npz")
    back = om.PoolStats.load(path)
    _compare(om.score_subsets(back, 2, consensus="majority"), om.score_subsets(acc, 2, consensus="majority"))
    assert back.member_metrics() == acc.member_metrics()
    kept.save(tmp_path / "kept.npz")
    back2 = om.PoolStats.load(tmp_path / "kept.npz")
    np.testing.assert_array_equal(back2.logits, kept.logits)
    _compare(om.score_subsets(back2, 3), om.score_subsets(kept, 3))
    with pytest.raises(MetricInputError, match="keep_logits"):
        om.score_subsets(acc, 3)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(MetricInputError, match="`path`"):
        om.PoolStats.load(tmp_path / "bad.npz")


def test_merge_shards_equals_single_pool():
    z, y, maps, feats = _pool_data(8, m=4, n=160, c=10)
    whole = _build(z, y, maps, feats, 40, subset_sizes=(3,), consensus=["majority"], seed=5)
    kw = {"subset_sizes": (3,), "consensus": ["majority"], "seed": 5}
    a = _build(z[:, :80], y[:80], maps[:, :80], [f[:80] for f in feats], 40, **kw)
    b = _build(z[:, 80:], y[80:], maps[:, 80:], [f[80:] for f in feats], 40, start_index=80, **kw)
    a.merge(b)
    _compare(om.score_subsets(a, 3, consensus="majority"), om.score_subsets(whole, 3, consensus="majority"))
    wrong = _build(z[:, 80:], y[80:], maps[:, 80:], [f[80:] for f in feats], 40, **kw)
    with pytest.raises(MetricInputError, match="start_index"):
        whole.merge(wrong)


def test_member_metrics_match_functions():
    z, y, maps, feats = _pool_data(9, m=3, n=100, c=8)
    pool = _build(z, y, maps, feats, 30)
    mm = pool.member_metrics()
    for i in range(3):
        got = mm[f"m{i}"]
        assert got["top1"] == pytest.approx(om.topk_accuracy(z[i], y, 1), abs=1e-12)
        assert got["top5"] == pytest.approx(om.topk_accuracy(z[i], y, 5), abs=1e-12)
        assert got["nll"] == pytest.approx(om.nll_from_logits(z[i], y), abs=1e-12)
        assert got["ece"] == pytest.approx(om.expected_calibration_error(om.softmax(z[i]), y), abs=1e-12)


def test_pool_without_maps_or_features_gives_nan():
    z, y, _, _ = _pool_data(2, m=3, n=50, c=8)
    pool = om.PoolStats(["a", "b", "c"], 8, subset_sizes=(1, 3))
    pool.update(z, y)
    row = om.score_subsets(pool, 3)[0]
    assert np.isnan(row["attribution_diversity"]) and np.isnan(row["hash_phash"]) and np.isnan(row["cka_mean"])
    single = om.score_subsets(pool, 1)
    assert np.isnan(single[0]["disagreement"]) and single[0]["improvement"] == pytest.approx(0.0)


@pytest.mark.parametrize(
    ("call", "arg"),
    [
        (lambda p: p.update(np.zeros((2, 4, 8), dtype=np.float32), np.zeros(4, dtype=int)), "logits"),
        (lambda p: p.update(np.zeros((3, 4, 8), dtype=np.float32), np.zeros(5, dtype=int)), "labels"),
        (lambda p: p.update(np.full((3, 4, 8), np.nan, dtype=np.float32), np.zeros(4, dtype=int)), "logits"),
        (
            lambda p: p.update(np.zeros((3, 4, 8), dtype=np.float32), np.zeros(4, dtype=int), np.zeros((3, 5, 8))),
            "maps",
        ),
        (lambda p: om.score_subsets(p, 4), "k"),
        (lambda p: om.score_subsets(p, 2, consensus="vote"), "consensus"),
    ],
)
def test_pool_bad_inputs(call, arg):
    pool = om.PoolStats(["a", "b", "c"], 8, keep_logits=True)
    pool.update(np.zeros((3, 4, 8), dtype=np.float32), np.zeros(4, dtype=int))
    with pytest.raises(MetricInputError, match=f"`{arg}`"):
        call(pool)


def test_duplicate_member_names_rejected():
    with pytest.raises(MetricInputError, match="member_names"):
        om.PoolStats(["a", "a"], 3)


def test_separate_attribution_and_feature_updates():
    z, y, maps, feats = _pool_data(4, m=3, n=80, c=10)
    joint = _build(z, y, maps, feats, 40, subset_sizes=(2,))
    split = om.PoolStats(["m0", "m1", "m2"], 10, subset_sizes=(2,))
    split.update(z, y)
    for lo in (0, 40):
        split.update_attributions(maps[:, lo : lo + 40])
        split.update_features([f[lo : lo + 40] for f in feats])
    _compare(om.score_subsets(split, 2), om.score_subsets(joint, 2))
    with pytest.raises(MetricInputError, match="features"):
        split.update_features([f[:3] for f in feats])
    with pytest.raises(MetricInputError, match="maps"):
        split.update_attributions(maps[:2])


def test_confidences_on_bin_boundaries_and_exactly_one():
    # All-equal logits give conf = 1/C = a bin boundary for C = 15; huge margins give conf = 1.0 exactly.
    rng = np.random.default_rng(3)
    m, n, c = 4, 60, 15
    z = rng.normal(size=(m, n, c))
    z[:, :20] = 0.0
    z[:, 20:40, 3] += 60.0
    z[1, 30:40, 3] -= 60.0
    z[1, 30:40, 5] += 60.0
    y = rng.integers(0, c, n)
    y[20:30] = 3
    z = z.astype(np.float32)
    maps = rng.normal(size=(m, n, 8, 8)).astype(np.float32)
    feats = [rng.normal(size=(n, 5)) for _ in range(m)]
    for k in (1, 2, 3):
        pool = _build(z, y, maps, feats, 30, subset_sizes=(k,), consensus=["average", "geometric"])
        common = _brute_common(z, y, maps, feats, k, 30)
        for rule in ("average", "geometric"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", om.MetricWarning)
                _compare(om.score_subsets(pool, k, consensus=rule), _brute(z, y, k, rule, 0, common))
    mm = pool.member_metrics()
    for i in range(m):
        assert mm[f"m{i}"]["ece"] == pytest.approx(om.expected_calibration_error(om.softmax(z[i]), y), abs=1e-12)
