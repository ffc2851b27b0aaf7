"""ovdiv.evaluate: results equal direct torch computations; cache, resume, shards and k-subsets are exact."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from ovdiv.errors import ConfigError
from ovdiv.evaluate import ArrayDataset, Ensemble, EvalResult, evaluate
from ovdiv.runtime.member import Member
from ovdiv.runtime.openvino_member import OpenVINOMember

N = 96


@pytest.fixture(scope="module")
def data(tiny_pool):
    return ArrayDataset(tiny_pool.images[:N], tiny_pool.labels[:N], name="tiny")


def _values(res: EvalResult) -> dict[tuple, float | None]:
    return {(r["ensemble"], r["member"], r["dataset"], r["metric"]): r["value"] for r in res.rows}


def _assert_same(a: EvalResult, b: EvalResult) -> None:
    va, vb = _values(a), _values(b)
    assert va.keys() == vb.keys()
    for k in va:
        if va[k] is None or vb[k] is None:
            assert va[k] is None and vb[k] is None, k
        else:
            assert va[k] == pytest.approx(vb[k], abs=1e-12, nan_ok=True), k


def _forbid_inference(monkeypatch) -> None:
    def boom(*args, **kwargs):
        raise AssertionError("a model was executed")

    monkeypatch.setattr(OpenVINOMember, "submit_batches", boom)
    monkeypatch.setattr(OpenVINOMember, "predict_batches", boom)
    monkeypatch.setattr(OpenVINOMember, "_infer", boom)
    monkeypatch.setattr(Member, "features", boom)


def test_ensemble_metrics_equal_direct_torch(tiny_pool, data, tmp_path):
    names = ["m0", "m2", "m4"]
    ens = Ensemble.from_paths([tiny_pool.ir[n] for n in names])
    res = evaluate(
        ens,
        [data],
        attribution="none",
        cka_samples=0,
        consensus=["average", "majority"],
        cache_dir=tmp_path,
        batch_size=16,
        chunk_size=40,
    )
    z = torch.from_numpy(tiny_pool.torch_logits(names, data.images))  # (M, N, C) straight from torch
    y = torch.from_numpy(data.labels)
    member_acc = (z.argmax(2) == y).double().mean(1)
    ens_acc = (z.mean(0).argmax(1) == y).double().mean().item()
    for i, n in enumerate(names):
        assert res.value("top1", dataset="tiny", member=n) == pytest.approx(member_acc[i].item())
        top5 = (z[i].topk(5, dim=1).indices == y[:, None]).any(1).double().mean().item()
        assert res.value("top5", dataset="tiny", member=n) == pytest.approx(top5)
        nll = torch.nn.functional.cross_entropy(z[i].double(), y).item()
        assert res.value("nll", dataset="tiny", member=n) == pytest.approx(nll, rel=1e-5)
    e = "m0+m2+m4"
    assert res.ensembles == [e]
    assert res.value("ensemble_top1", dataset="tiny", ensemble=e) == pytest.approx(ens_acc)
    assert res.value("improvement", dataset="tiny", ensemble=e) == pytest.approx(ens_acc - member_acc.max().item())
    assert res.value("improvement_vs_mean", dataset="tiny", ensemble=e) == pytest.approx(
        ens_acc - member_acc.mean().item()
    )
    # majority vote: where the vote has a unique winner it must be that winner
    votes = torch.nn.functional.one_hot(z.argmax(2), z.shape[2]).sum(0)  # (N, C)
    top = votes.max(1).values
    unique = (votes == top[:, None]).sum(1) == 1
    maj_acc = res.value("ensemble_top1:majority", dataset="tiny", ensemble=e)
    n_correct_unique = ((votes.argmax(1) == y) & unique).sum().item()
    n_tied = (~unique).sum().item()
    assert n_correct_unique / N <= maj_acc <= (n_correct_unique + n_tied) / N
    # disagreement (paper Eq. 4): mean over pairs of the fraction where exactly one is correct
    c = (z.argmax(2) == y).numpy()
    dis = np.mean([np.mean(c[i] != c[k]) for i, k in itertools.combinations(range(3), 2)])
    assert res.value("disagreement", dataset="tiny", ensemble=e) == pytest.approx(dis)
    pdr = np.mean(
        [np.mean(z[i].argmax(1).numpy() != z[k].argmax(1).numpy()) for i, k in itertools.combinations(range(3), 2)]
    )
    assert res.value("pdr", dataset="tiny", ensemble=e) == pytest.approx(pdr)
    md = res.metadata
    assert [m["name"] for m in md["members"]] == names
    assert md["precision"] == "f32" and md["inference_precision"] == "f32" and md["device"] == "CPU"
    assert md["datasets"][0]["manifest"]["manifest_hash"] == data.manifest["manifest_hash"]
    assert {"logits", "scoring", "total"} <= set(md["timings"])


def test_backends_give_same_results(tiny_pool, data, tmp_path):
    names = ["m1", "m3"]
    ir = evaluate([tiny_pool.ir[n] for n in names], [data], attribution="none", cka_samples=0, cache_dir=tmp_path)
    ort = evaluate(
        [tiny_pool.onnx[n] for n in names],
        [data],
        attribution="none",
        cka_samples=0,
        cache_dir=tmp_path,
        backend="onnxruntime",
    )
    assert ort.metadata["backend"] == "onnxruntime" and ir.metadata["backend"] == "openvino"
    for a, b in zip(ir.rows, ort.rows, strict=True):
        assert (a["metric"], a["member"], a["ensemble"]) == (b["metric"], b["member"], b["ensemble"])
        assert a["value"] == pytest.approx(b["value"], abs=1e-4), a


def test_second_run_served_from_cache(tiny_pool, data, tmp_path, monkeypatch):
    paths = [tiny_pool.ir[n] for n in ("m0", "m1", "m2")]
    kw = dict(attribution="saliency", attribution_samples=24, cka_samples=32, cache_dir=tmp_path, chunk_size=32)
    first = evaluate(paths, [data], out=tmp_path / "out1", **kw)
    assert first.metadata["cache"]["misses"]["logits"] == 9  # 3 members x 3 chunks
    _forbid_inference(monkeypatch)
    import ovdiv.attribution as attribution

    monkeypatch.setattr(attribution, "Saliency", lambda *a, **k: pytest.fail("attribution re-ran"))
    second = evaluate(paths, [data], out=tmp_path / "out2", **kw)
    _assert_same(first, second)
    assert second.metadata["cache"]["misses"] == {}
    # results files round-trip
    loaded = EvalResult.load(tmp_path / "out2")
    _assert_same(second, loaded)
    assert loaded.metadata["members"][0]["sha256"] == first.metadata["members"][0]["sha256"]
    doc = json.loads((tmp_path / "out2" / "results.json").read_text())
    assert doc["schema"] == "ovdiv-results/2"
    assert doc["metadata"]["ci"] == {
        "level": 0.95,
        "bootstrap": 2000,
        "method": "percentile",
        "seed": 0,
        "binomial": "clopper-pearson",
    }
    assert set(doc["extras"]) == {"saliency", "cka"}
    by_metric = {(r["metric"], r["member"]): r for r in doc["rows"]}
    for key, method in (
        (("top1", "m0"), "clopper-pearson"),
        (("ensemble_top1", None), "clopper-pearson"),
        (("improvement", None), "bootstrap-percentile"),
        (("disagreement", None), "bootstrap-percentile"),
        (("attribution_diversity", None), "bootstrap-percentile"),
    ):
        r = by_metric[key]
        assert r["ci_method"] == method and r["ci_level"] == 0.95, key
        assert r["ci_low"] <= r["value"] <= r["ci_high"], key
    assert 0 <= by_metric[("improvement", None)]["p_value"] <= 1
    for m in ("m0", "m1", "m2"):  # Acc_ens − Acc_member rows of the --ensemble run
        (r,) = [r for r in doc["rows"] if r["metric"] == "improvement_vs_member" and r["member"] == m]
        want = by_metric[("ensemble_top1", None)]["value"] - by_metric[("top1", m)]["value"]
        assert r["ensemble"] is not None and r["value"] == pytest.approx(want, abs=1e-12)
        assert r["ci_method"] == "bootstrap-percentile" and r["ci_low"] <= r["value"] <= r["ci_high"]
        assert 0 <= r["p_value"] <= 1
    cka_row = by_metric[("cka_mean", None)]  # an interval only where it contains the estimate (see cka_bootstrap)
    assert "ci_low" not in cka_row or cka_row["ci_low"] <= cka_row["value"] <= cka_row["ci_high"]
    assert "ci_low" not in by_metric[("ensemble_nll", None)] and "p_value" not in by_metric[("top1", "m0")]
    assert [r.get("ci_low") for r in loaded.rows] == [r.get("ci_low") for r in second.rows]
    csv_lines = (tmp_path / "out2" / "results.csv").read_text().splitlines()
    assert csv_lines[0] == "ensemble,member,dataset,metric,value,ci_low,ci_high,ci_method,ci_level,p_value"
    assert len(csv_lines) == len(second.rows) + 1
    sal = loaded.load_extra("saliency", "tiny")
    assert sal["maps"].shape[:2] == (3, 16) and sal["images"].shape == (16, 32, 32, 3)
    assert np.all((sal["maps"] >= 0) & (sal["maps"] <= 1))
    cka = loaded.load_extra("cka", "tiny")
    assert cka["penultimate"].shape == (3, 3) and np.allclose(np.diag(cka["penultimate"]), 1)


def test_interrupted_run_resumes_identically(tiny_pool, data, tmp_path, monkeypatch):
    paths = [tiny_pool.ir[n] for n in ("m0", "m3")]
    kw = dict(attribution="none", cka_samples=16, chunk_size=32, batch_size=16)  # 3 chunks of 2 batches
    reference = evaluate(paths, [data], cache_dir=tmp_path / "ref", **kw)

    real = OpenVINOMember.submit_batches
    calls = {"members": 0, "batches": 0}

    def flaky(self, batches, out):
        calls["members"] += 1

        def gen():
            for item in batches:
                calls["batches"] += 1
                if calls["members"] == 2 and calls["batches"] == 6 + 4:  # 2nd member, 4th batch: "killed"
                    raise KeyboardInterrupt
                yield item

        return real(self, gen(), out)

    monkeypatch.setattr(OpenVINOMember, "submit_batches", flaky)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        evaluate(paths, [data], cache_dir=tmp_path / "c", out=out, **kw)
    assert not (out / "results.json").exists()
    resumed = evaluate(paths, [data], cache_dir=tmp_path / "c", out=out, **kw)
    # member 1: 3 chunks cached; member 2: its first chunk (2 batches) was saved before the interruption
    assert resumed.metadata["cache"]["hits"]["logits"] == 4
    assert resumed.metadata["cache"]["misses"]["logits"] == 2
    _assert_same(reference, resumed)


def test_shards_merge_to_unsharded(tiny_pool, data, tmp_path, monkeypatch):
    paths = [tiny_pool.ir[n] for n in ("m1", "m2", "m4")]
    kw = dict(attribution="saliency", attribution_samples=40, cka_samples=16, chunk_size=16)
    reference = evaluate(paths, [data], cache_dir=tmp_path / "ref", **kw)
    s0 = evaluate(paths, [data], cache_dir=tmp_path / "c", shard="0/2", **kw)
    assert not s0.complete and s0.rows == []
    s1 = evaluate(paths, [data], cache_dir=tmp_path / "c", shard="1/2", **kw)
    assert s1.complete  # the last shard to finish finds every chunk and scores
    _forbid_inference(monkeypatch)
    merged = evaluate(paths, [data], cache_dir=tmp_path / "c", **kw)
    _assert_same(reference, merged)
    _assert_same(reference, s1)
    att = reference.value("attribution_diversity", dataset="tiny", ensemble="m1+m2+m4")
    assert att is not None and att > 0


def test_all_subsets_equal_direct_ensembles(tiny_pool, data, tmp_path):
    pool = [tiny_pool.ir[n] for n in tiny_pool.names]
    kw = dict(attribution="none", cka_samples=24, consensus=["average", "median"], cache_dir=tmp_path)
    scored = evaluate(pool, [data], subset_size=3, **kw)
    assert len(scored.ensembles) == 10
    ens_rows: dict[str, dict[str, float | None]] = {}
    for r in scored.rows:
        if r["ensemble"] is not None:
            ens_rows.setdefault(r["ensemble"], {})[r["metric"]] = r["value"]
    for subset in itertools.combinations(tiny_pool.names, 3):
        name = "+".join(subset)
        direct = evaluate([tiny_pool.ir[n] for n in subset], [data], **kw)
        got = {r["metric"]: r["value"] for r in direct.rows if r["ensemble"] == name}
        assert got.keys() == ens_rows[name].keys() and "cka_mean" in got and "ensemble_top1:median" in got
        for metric, v in got.items():
            assert ens_rows[name][metric] == pytest.approx(v, abs=1e-9, nan_ok=True), (name, metric)


def test_subset_attribution_diversity_equals_direct(tiny_pool, data, tmp_path):
    # with label targets a member's maps do not depend on the pool, so subset D_att is exactly the direct one
    pool = [tiny_pool.ir[n] for n in ("m0", "m1", "m2", "m3")]
    kw = dict(attribution="saliency", attribution_target="label", attribution_samples=16, cka_samples=0)
    scored = evaluate(pool, [data], subset_size=3, cache_dir=tmp_path, **kw)
    subset = ("m0", "m2", "m3")
    direct = evaluate([tiny_pool.ir[n] for n in subset], [data], cache_dir=tmp_path / "d", **kw)
    for metric in ("attribution_diversity", "attribution_rmse", "hash_phash", "hash_whash"):
        a = scored.value(metric, dataset="tiny", ensemble="+".join(subset))
        b = direct.value(metric, dataset="tiny", ensemble="+".join(subset))
        assert a is not None and a == pytest.approx(b, rel=1e-5), metric
    # D_att (paper Eq. 7) recomputed from the saliency maps themselves
    from ovdiv.attribution import Saliency
    from ovdiv.runtime import load_member

    maps = np.stack(
        [Saliency(load_member(tiny_pool.ir[n])).attribute(data.images[:16], target=data.labels[:16]) for n in subset]
    )
    a = np.abs(maps)
    a = a / a.reshape(3, 16, -1).max(axis=2)[:, :, None, None, None]
    d_att = a.var(axis=0).mean()
    assert direct.value("attribution_diversity", dataset="tiny", ensemble="+".join(subset)) == pytest.approx(
        d_att, rel=1e-4
    )


def test_option_errors(tiny_pool, data, tmp_path):
    paths = [tiny_pool.ir["m0"], tiny_pool.ir["m1"]]
    with pytest.raises(ConfigError, match="--size 3 is not between 2 and the pool size 2"):
        evaluate(paths, [data], subset_size=3, cache_dir=tmp_path)
    with pytest.raises(ConfigError, match="--consensus 'mean' is not valid"):
        evaluate(paths, [data], consensus="mean", cache_dir=tmp_path)
    with pytest.raises(ConfigError, match="--shard"):
        evaluate(paths, [data], shard="2/2", cache_dir=tmp_path)


def test_public_api_and_policy(tiny_pool, data, tmp_path):
    import ovdiv
    import ovdiv.evaluate  # binds ovdiv.evaluate to the package: it must still be callable

    ens = ovdiv.Ensemble.from_paths([tiny_pool.ir["m0"], tiny_pool.ir["m1"]], device="CPU", precision="f32")
    res = ovdiv.evaluate(ens, datasets=[data], attribution="none", cka_samples=0, cache_dir=tmp_path)
    assert isinstance(res, ovdiv.EvalResult) and res.ensembles == ["m0+m1"]
    best = max(res.value("top1", dataset="tiny", member=m) for m in ("m0", "m1"))
    policy = tmp_path / "policy.json"
    policy.write_text(
        json.dumps(
            {
                "rules": [
                    {"id": "acc", "dataset": "tiny", "metric": "ensemble_top1", "min": 0.0},
                    {
                        "id": "beats",
                        "dataset": "tiny",
                        "metric": "ensemble_top1",
                        "min": 1.0 - best + 1e-9,
                        "relative_to": {"member": "best", "metric": "top1"},
                    },
                ]
            }
        )
    )
    verdict = res.check(ovdiv.Policy.from_file(policy))
    assert [r["passed"] for r in verdict.rules] == [True, False]


def test_maps_of_different_input_sizes_are_aligned():
    from PIL import Image

    from ovdiv.evaluate.engine import _stack_maps

    rng = np.random.default_rng(0)
    small = rng.random((2, 3, 8, 8), dtype=np.float32)
    big = rng.random((2, 3, 16, 16), dtype=np.float32)
    out = _stack_maps([small, big])
    assert out.shape == (2, 2, 3, 16, 16)
    np.testing.assert_array_equal(out[1], big)
    ref = np.asarray(Image.fromarray(small[1, 2], mode="F").resize((16, 16), Image.Resampling.BILINEAR))
    np.testing.assert_allclose(out[0, 1, 2], ref)
