"""Functional metrics vs independent implementations (sklearn, scipy, torchmetrics) and hand values."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
import scipy.special
import scipy.stats
from sklearn.metrics import accuracy_score, log_loss, top_k_accuracy_score

import ovdiv.metrics as om
from ovdiv.errors import MetricInputError


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(42)


def _logits(rng: np.random.Generator, m: int = 4, n: int = 200, c: int = 10) -> np.ndarray:
    return (rng.normal(size=(m, n, c)) * 2).astype(np.float32)


# ---------------------------------------------------------------- consensus / accuracy


def test_softmax_matches_scipy(rng):
    z = rng.normal(size=(5, 7)) * 30
    np.testing.assert_allclose(om.softmax(z), scipy.special.softmax(z, axis=1), rtol=1e-12)
    np.testing.assert_allclose(om.logsumexp(z), scipy.special.logsumexp(z, axis=1), rtol=1e-12)


def test_topk_accuracy_matches_sklearn(rng):
    z = rng.normal(size=(300, 12))
    y = rng.integers(0, 12, 300)
    assert om.topk_accuracy(z, y, 1) == pytest.approx(accuracy_score(y, z.argmax(1)))
    for k in (2, 5):
        ref = top_k_accuracy_score(y, z, k=k, labels=np.arange(12))
        assert om.topk_accuracy(z, y, k) == pytest.approx(ref)


def test_topk_ties_lower_index_first():
    s = np.array([[1.0, 1.0, 1.0, 0.0]])
    assert om.label_rank(s, np.array([0]))[0] == 0
    assert om.label_rank(s, np.array([2]))[0] == 2
    assert om.label_rank(s, np.array([3]))[0] == 3
    assert om.topk_accuracy(s, np.array([2]), 2) == 0.0
    assert om.topk_accuracy(s, np.array([1]), 2) == 1.0


def test_member_topk(rng):
    z = _logits(rng)
    y = rng.integers(0, 10, 200)
    got = om.member_topk_accuracy(z, y, 5)
    ref = [top_k_accuracy_score(y, zi, k=5, labels=np.arange(10)) for zi in z]
    np.testing.assert_allclose(got, ref)


@pytest.mark.parametrize("rule", ["average", "average_probs", "geometric", "median"])
def test_ensemble_probs_rules(rng, rule):
    z = _logits(rng, m=3)
    p = scipy.special.softmax(z.astype(np.float64), axis=2)
    ref = {
        "average": scipy.special.softmax(z.astype(np.float64).mean(0), axis=1),
        "average_probs": p.mean(0),
        "geometric": scipy.special.softmax(np.log(p).mean(0), axis=1),
        "median": np.sort(p, axis=0)[1] / np.sort(p, axis=0)[1].sum(1, keepdims=True),
    }[rule]
    np.testing.assert_allclose(om.ensemble_probs(z, rule), ref, rtol=1e-10, atol=1e-14)
    np.testing.assert_array_equal(om.ensemble_predict(z, rule), ref.argmax(1))


def test_geometric_equals_average(rng):
    z = _logits(rng)
    np.testing.assert_allclose(om.ensemble_probs(z, "geometric"), om.ensemble_probs(z, "average"), atol=1e-12)


def test_majority_vote_and_seeded_uniform_ties():
    # 3 members vote 0, 1, 2 on every sample: a three-way tie broken uniformly at random.
    n = 3000
    z = np.full((3, n, 4), -5.0)
    for i in range(3):
        z[i, :, i] = 5.0
    pred = om.ensemble_predict(z, "majority", seed=7)
    counts = np.bincount(pred, minlength=4)
    assert counts[3] == 0
    assert scipy.stats.chisquare(counts[:3]).pvalue > 1e-3
    # Reproducible, seed-dependent, and independent of batching via index_offset.
    np.testing.assert_array_equal(pred, om.ensemble_predict(z, "majority", seed=7))
    assert not np.array_equal(pred, om.ensemble_predict(z, "majority", seed=8))
    part = om.ensemble_predict(z[:, 1000:], "majority", seed=7, index_offset=1000)
    np.testing.assert_array_equal(pred[1000:], part)
    # A clear majority wins regardless of the seed.
    z2 = z.copy()
    z2[2, :, 2] = -5.0
    z2[2, :, 0] = 5.0
    assert (om.ensemble_predict(z2, "majority", seed=3) == 0).all()


def test_majority_rank_matches_predict(rng):
    z = _logits(rng, m=5, n=500, c=4)
    y = rng.integers(0, 4, 500)
    pred = om.ensemble_predict(z, "majority", seed=1)
    rank = om.ensemble_label_rank(z, y, "majority", seed=1)
    np.testing.assert_array_equal(rank == 0, pred == y)
    votes = om.ensemble_scores(z, "majority")
    assert (votes.sum(1) == 5).all()
    np.testing.assert_allclose(om.ensemble_probs(z, "majority"), votes / 5)


def test_m1_ensemble_is_the_member(rng):
    z = _logits(rng, m=1)
    y = rng.integers(0, 10, 200)
    for rule in ("average", "average_probs", "geometric", "median", "majority"):
        np.testing.assert_array_equal(om.ensemble_predict(z, rule), z[0].argmax(1))
    assert om.ensemble_topk_accuracy(z, y, 1) == om.member_topk_accuracy(z, y, 1)[0]
    assert om.improvement(0.5, [0.5]) == 0.0


def test_improvement():
    assert om.improvement(0.8, [0.7, 0.75, 0.6]) == pytest.approx(0.05)
    assert om.improvement_vs_mean(0.8, [0.7, 0.8, 0.6]) == pytest.approx(0.1)


# ---------------------------------------------------------------- calibration


def test_nll_matches_sklearn(rng):
    z = rng.normal(size=(400, 6))
    y = rng.integers(0, 6, 400)
    p = scipy.special.softmax(z, axis=1)
    ref = log_loss(y, p, labels=np.arange(6))
    assert om.nll(p, y) == pytest.approx(ref, rel=1e-10)
    assert om.nll_from_logits(z, y) == pytest.approx(ref, rel=1e-10)
    acc = om.NegativeLogLikelihood()
    for s in range(0, 400, 64):
        acc.update(z[s : s + 64], y[s : s + 64])
    assert acc.compute() == pytest.approx(ref, rel=1e-10)


def test_nll_confidence_zero_and_one():
    p = np.array([[1.0, 0.0], [1.0, 0.0]])
    assert om.nll(p, np.array([0, 0])) == 0.0
    assert om.nll(p, np.array([1, 1])) == pytest.approx(-np.log(om.calibration.NLL_EPS))
    assert np.isfinite(om.nll(p, np.array([1, 0])))


def test_ece_matches_torchmetrics(rng):
    torch = pytest.importorskip("torch")
    from torchmetrics.functional.classification import multiclass_calibration_error

    for n, c in ((500, 5), (257, 30)):
        z = rng.normal(size=(n, c)) * 3
        y = rng.integers(0, c, n)
        p = scipy.special.softmax(z, axis=1)
        ref = multiclass_calibration_error(torch.tensor(p), torch.tensor(y), num_classes=c, n_bins=15, norm="l1")
        assert om.expected_calibration_error(p, y) == pytest.approx(float(ref), abs=1e-6)
        acc = om.CalibrationError()
        for s in range(0, n, 100):
            acc.update(p[s : s + 100], y[s : s + 100])
        assert acc.compute() == pytest.approx(om.expected_calibration_error(p, y), abs=1e-15)


def test_ece_hand_values_and_confidence_one():
    p = np.array([[1.0, 0.0], [1.0, 0.0], [0.5, 0.5]])
    y = np.array([0, 1, 0])
    # bin {1}: 2 samples, acc 0.5 conf 1 -> 2/3 * 0.5; bin [7/15, 8/15): conf .5 acc 1 -> 1/3 * .5
    assert om.expected_calibration_error(p, y) == pytest.approx(0.5)
    assert om.expected_calibration_error(np.array([[0.0, 0.0]]), np.array([0])) == pytest.approx(1.0)


# ---------------------------------------------------------------- pairwise


def _tables_brute(ci, ck):
    return (
        np.sum(ci & ck),
        np.sum(ci & ~ck),
        np.sum(~ci & ck),
        np.sum(~ci & ~ck),
    )


def test_pairwise_vs_brute_force(rng):
    correct = rng.random((5, 300)) < 0.7
    dis, q, rho, df = (
        om.disagreement(correct),
        om.q_statistic(correct),
        om.correlation(correct),
        om.double_fault(correct),
    )
    for i in range(5):
        for k in range(5):
            if i == k:
                continue
            n11, n10, n01, n00 = _tables_brute(correct[i], correct[k])
            assert dis[i, k] == pytest.approx((n01 + n10) / 300)
            assert q[i, k] == pytest.approx((n11 * n00 - n01 * n10) / (n11 * n00 + n01 * n10))
            assert rho[i, k] == pytest.approx(np.corrcoef(correct[i], correct[k])[0, 1])
            assert df[i, k] == pytest.approx(n00 / 300)
    assert np.allclose(np.diag(q), 1) and np.allclose(np.diag(dis), 0)


def test_q_statistic_zero_denominator_is_nan_with_warning():
    correct = np.array([[1, 1, 1, 1], [1, 0, 1, 0]], dtype=bool)  # member 0 always right
    with pytest.warns(om.MetricWarning):
        q = om.q_statistic(correct)
    assert np.isnan(q[0, 1]) and np.isnan(q[1, 0]) and q[0, 0] == 1
    with pytest.warns(om.MetricWarning):
        assert np.isnan(om.pair_mean(om.correlation(correct)))
    assert om.disagreement(correct)[0, 1] == 0.5


def test_pair_mean():
    a = np.array([[0.0, 1.0, 2.0], [3.0, 0.0, 4.0], [5.0, 6.0, 0.0]])
    assert om.pair_mean(a) == pytest.approx(np.mean([2.0, 3.5, 5.0]))
    assert om.pair_mean(a, [0, 2]) == pytest.approx(3.5)
    assert np.isnan(om.pair_mean(a, [1]))
    a[0, 1] = a[1, 0] = np.nan
    assert om.pair_mean(a) == pytest.approx(np.mean([3.5, 5.0]))


def test_pdr(rng):
    preds = rng.integers(0, 3, (4, 100))
    got = om.pdr(preds)
    for i in range(4):
        for k in range(4):
            assert got[i, k] == pytest.approx(np.mean(preds[i] != preds[k]))


def test_kl_matches_scipy(rng):
    z = _logits(rng, m=3, n=50, c=6).astype(np.float64)
    p = scipy.special.softmax(z, axis=2)
    ref = np.array([[np.mean(scipy.stats.entropy(p[i], p[k], axis=1)) for k in range(3)] for i in range(3)])
    np.testing.assert_allclose(om.kl_divergence(p), ref, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(om.kl_divergence_from_logits(z), ref, rtol=1e-9, atol=1e-12)
    acc = om.KLDivergence(3)
    acc.update(z[:, :20])
    acc.update(z[:, 20:])
    np.testing.assert_allclose(acc.compute(), ref, rtol=1e-9, atol=1e-12)


def test_kl_zero_probabilities():
    p = np.array([[[1.0, 0.0]], [[0.5, 0.5]]])
    k = om.kl_divergence(p)
    assert k[0, 1] == pytest.approx(np.log(2))
    assert np.isinf(k[1, 0])  # as scipy.stats.entropy


def test_shannon_equitability_vs_scipy(rng):
    preds = rng.integers(0, 5, (4, 300))
    y = rng.integers(0, 5, 300)
    ens = rng.integers(0, 5, 300)
    ref = np.array([scipy.stats.entropy(np.bincount(preds[:, n], minlength=5)) / np.log(4) for n in range(300)])
    np.testing.assert_allclose(om.shannon_equitability_per_sample(preds, num_classes=5), ref, atol=1e-12)
    eq = om.shannon_equitability(preds, y, ens, num_classes=5)
    assert eq.correct == pytest.approx(ref[ens == y].mean())
    assert eq.wrong == pytest.approx(ref[ens != y].mean())
    # C < M: normalised by ln C
    ref2 = scipy.stats.entropy([2, 1, 1]) / np.log(3)
    assert om.shannon_equitability_per_sample(np.array([[0], [0], [1], [2]]), num_classes=3)[0] == pytest.approx(ref2)


def test_shannon_equitability_edge_cases():
    assert om.shannon_equitability_per_sample(np.array([[3, 1]]))[0] == 0.0  # M = 1 convention
    with pytest.warns(om.MetricWarning):
        eq = om.shannon_equitability(np.array([[0, 1], [0, 1]]), np.array([0, 1]), np.array([0, 1]))
    assert eq.correct == 0.0 and np.isnan(eq.wrong)


# ---------------------------------------------------------------- CKA


def _cka_gram(x, y):
    n = x.shape[0]
    h = np.eye(n) - 1.0 / n
    k, l_ = h @ x @ x.T @ h, h @ y @ y.T @ h
    return np.sum(k * l_) / np.sqrt(np.sum(k * k) * np.sum(l_ * l_))


def test_linear_cka(rng):
    x = rng.normal(size=(60, 8))
    y = x @ rng.normal(size=(8, 5)) + 0.5 * rng.normal(size=(60, 5))
    assert om.linear_cka(x, y) == pytest.approx(_cka_gram(x, y), rel=1e-10)
    q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    assert om.linear_cka(x, 3 * x @ q + 1.0) == pytest.approx(1.0)


def test_cka_constant_features_nan():
    with pytest.warns(om.MetricWarning):
        assert np.isnan(om.linear_cka(np.ones((10, 3)), np.random.default_rng(0).normal(size=(10, 2))))
    acc = om.MinibatchCKA(1, 1)
    acc.update([np.ones((8, 3))], [np.arange(24.0).reshape(8, 3)])
    with pytest.warns(om.MetricWarning):
        assert np.isnan(acc.compute()[0, 0])


def _hsic_u_statistic(x, y):
    # Song et al. 2012: HSIC_1 as a U-statistic over ordered distinct 4-tuples.
    import itertools

    k, l_ = x @ x.T, y @ y.T
    n = x.shape[0]
    tot, cnt = 0.0, 0
    for i, j, q, r in itertools.permutations(range(n), 4):
        tot += k[i, j] * l_[i, j] + k[i, j] * l_[q, r] - 2 * k[i, j] * l_[i, q]
        cnt += 1
    return tot / cnt


def test_hsic_unbiased_u_statistic(rng):
    x, y = rng.normal(size=(7, 3)), rng.normal(size=(7, 2))
    assert om.hsic_unbiased(x, y) == pytest.approx(_hsic_u_statistic(x, y), rel=1e-9)


def test_minibatch_cka_layers_and_merge(rng):
    xs = [rng.normal(size=(64, 6)), rng.normal(size=(64, 4))]
    ys = [xs[0] @ rng.normal(size=(6, 6)), rng.normal(size=(64, 3))]
    a, b, whole = om.MinibatchCKA(2, 2), om.MinibatchCKA(2, 2), om.MinibatchCKA(2, 2)
    for s in range(0, 64, 16):
        (a if s < 32 else b).update([x[s : s + 16] for x in xs], [y[s : s + 16] for y in ys])
        whole.update([x[s : s + 16] for x in xs], [y[s : s + 16] for y in ys])
    a.merge(b)
    np.testing.assert_allclose(a.compute(), whole.compute())
    num = sum(om.hsic_unbiased(xs[0][s : s + 16], ys[1][s : s + 16]) for s in range(0, 64, 16))
    d1 = sum(om.hsic_unbiased(xs[0][s : s + 16], xs[0][s : s + 16]) for s in range(0, 64, 16))
    d2 = sum(om.hsic_unbiased(ys[1][s : s + 16], ys[1][s : s + 16]) for s in range(0, 64, 16))
    assert whole.compute()[0, 1] == pytest.approx(num / np.sqrt(d1 * d2))
    # a linear map of the same features is far more similar than unrelated features
    assert whole.compute()[0, 0] > 0.5 > whole.compute()[1, 1]


# ---------------------------------------------------------------- attribution


@pytest.mark.parametrize("norm", ["max", "sum", "none"])
def test_attribution_diversity_brute_force(rng, norm):
    maps = rng.normal(size=(4, 5, 3, 6, 6))
    a = np.abs(maps)
    if norm == "max":
        a = a / a.max(axis=(2, 3, 4), keepdims=True)
    elif norm == "sum":
        a = a / a.sum(axis=(2, 3, 4), keepdims=True)
    ref = np.mean([[np.var(a[:, n, c, h, w]) for c in range(3) for h in range(6) for w in range(6)] for n in range(5)])
    assert om.attribution_diversity(maps, norm) == pytest.approx(ref, rel=1e-12)
    ssd = om.pairwise_ssd(maps, norm)
    assert om.attribution_diversity_from_ssd(ssd, 5) == pytest.approx(ref, rel=1e-12)
    sub = [0, 2, 3]
    assert om.attribution_diversity_from_ssd(ssd, 5, sub) == pytest.approx(
        om.attribution_diversity(maps[sub], norm), rel=1e-12
    )
    rm = om.attribution_rmse(maps, norm)
    assert rm[1, 2] == pytest.approx(np.mean([np.sqrt(np.mean((a[1, n] - a[2, n]) ** 2)) for n in range(5)]))


def test_attribution_zero_maps_and_m1():
    z = np.zeros((2, 3, 3, 8, 8))
    assert om.attribution_diversity(z) == 0.0
    assert om.attribution_diversity(np.ones((1, 3, 4))) == 0.0


def test_hash_distances_match_imagehash(rng):
    import imagehash
    from PIL import Image

    maps = rng.normal(size=(3, 4, 3, 16, 16))
    got = om.hash_distances(maps)
    a = np.abs(maps)
    a = (a / a.max(axis=(2, 3, 4), keepdims=True)).max(axis=2)
    funcs = {
        "ahash": imagehash.average_hash,
        "phash": imagehash.phash,
        "dhash": imagehash.dhash,
        "whash": imagehash.whash,
    }
    for name, f in funcs.items():
        hashes = [
            [f(Image.fromarray(np.rint(255 * a[i, n] / a[i, n].max()).astype(np.uint8))) for n in range(4)]
            for i in range(3)
        ]
        ref = np.array([[np.mean([hashes[i][n] - hashes[k][n] for n in range(4)]) for k in range(3)] for i in range(3)])
        np.testing.assert_allclose(got[name], ref)
    assert set(got) == {"ahash", "phash", "dhash", "whash"}


def test_to_uint8_image():
    np.testing.assert_array_equal(om.to_uint8_image(np.array([[0.0, 0.5], [1.0, 2.0]])), [[0, 64], [128, 255]])
    np.testing.assert_array_equal(om.to_uint8_image(np.zeros((2, 2))), np.zeros((2, 2)))


def test_attribution_accumulator_streaming(rng):
    maps = rng.normal(size=(3, 10, 3, 8, 8)).astype(np.float32)
    a, b = om.AttributionDiversity(3), om.AttributionDiversity(3)
    a.update(maps[:, :4])
    b.update(maps[:, 4:])
    a.merge(b)
    out = a.compute()
    assert out["attribution_diversity"] == pytest.approx(om.attribution_diversity(maps), rel=1e-10)
    np.testing.assert_allclose(out["attribution_rmse"], om.attribution_rmse(maps), rtol=1e-10)
    np.testing.assert_allclose(out["hash_phash"], om.hash_distances(maps)["phash"])


# ---------------------------------------------------------------- accumulators


def test_pairwise_accumulators_streaming(rng):
    correct = rng.random((4, 100)) < 0.6
    preds = rng.integers(0, 3, (4, 100))
    pc, pd = om.PairwiseCorrectness(4), om.PredictionDisagreement(4)
    for s in range(0, 100, 30):
        pc.update(correct[:, s : s + 30])
        pd.update(preds[:, s : s + 30])
    np.testing.assert_allclose(pc.compute()["q_statistic"], om.q_statistic(correct))
    np.testing.assert_allclose(pd.compute(), om.pdr(preds))
    se = om.ShannonEquitability(3)
    y, ens = rng.integers(0, 3, 100), rng.integers(0, 3, 100)
    se.update(preds[:, :50], y[:50], ens[:50])
    se.update(preds[:, 50:], y[50:], ens[50:])
    assert se.compute().correct == pytest.approx(om.shannon_equitability(preds, y, ens, num_classes=3).correct)
    t = om.TopKAccuracy(5)
    z = rng.normal(size=(100, 9))
    t.update(z[:40], y[:40] * 3)
    t.update(z[40:], y[40:] * 3)
    assert t.compute() == pytest.approx(om.topk_accuracy(z, y * 3, 5))
    t.reset()
    assert np.isnan(t.compute())


# ---------------------------------------------------------------- validation and layering


@pytest.mark.parametrize(
    ("call", "arg"),
    [
        (lambda: om.ensemble_predict(np.zeros((3, 4))), "logits"),
        (lambda: om.ensemble_predict(np.zeros((2, 3, 4), dtype=np.int64)), "logits"),
        (lambda: om.ensemble_predict(np.full((2, 3, 4), np.nan)), "logits"),
        (lambda: om.ensemble_predict(np.zeros((2, 3, 4)), "vote"), "rule"),
        (lambda: om.topk_accuracy(np.zeros((3, 4)), np.array([0, 1])), "labels"),
        (lambda: om.topk_accuracy(np.zeros((3, 4)), np.array([0, 1, 4])), "labels"),
        (lambda: om.topk_accuracy(np.zeros((3, 4)), np.array([0.0, 1.0, 2.0])), "labels"),
        (lambda: om.topk_accuracy(np.zeros((3, 4)), np.array([0, 1, 2]), 0), "k"),
        (lambda: om.nll(np.full((2, 2), 1.5), np.array([0, 1])), "probs"),
        (lambda: om.expected_calibration_error(np.zeros((2, 2)), np.array([0, 1]), n_bins=0), "n_bins"),
        (lambda: om.q_statistic(np.array([[0.5, 1.0]])), "correct"),
        (lambda: om.pdr(np.zeros(5, dtype=int)), "preds"),
        (lambda: om.linear_cka(np.zeros((5, 2)), np.zeros((4, 2))), "y"),
        (lambda: om.attribution_diversity(np.zeros((2, 3, 4)), "l2"), "norm"),
        (lambda: om.attribution_diversity(np.array([[[np.inf]]])), "maps"),
    ],
)
def test_bad_inputs_name_the_argument(call, arg):
    with pytest.raises(MetricInputError, match=f"`{arg}`"):
        call()


def test_import_without_torch_and_openvino():
    # A finder that refuses the heavy backends (as if they were not installed). Not ``sys.modules[x] = None``:
    # scipy's array-API helpers look modules up in sys.modules and choke on a None entry, which no real
    # environment without torch has.
    code = (
        "import sys, importlib.abc\n"
        "BLOCKED = ('torch', 'openvino', 'torchvision', 'onnxruntime', 'nncf')\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in BLOCKED:\n"
        "            raise ModuleNotFoundError(f'No module named {name!r} (blocked by the test)')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import ovdiv.metrics as m, numpy as np\n"
        "assert not any(k.split('.')[0] in BLOCKED for k in sys.modules), sorted(sys.modules)\n"
        "m.binomial_interval(7, 10)\n"
        "print(m.ensemble_predict(np.zeros((2, 3, 4)), 'average').tolist())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[0, 0, 0]"


def test_no_warning_on_clean_input(rng):
    correct = rng.random((3, 200)) < 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        om.q_statistic(correct)
        om.correlation(correct)
