"""Every joint heuristic trains a tiny ensemble on demo data (CPU, few steps); checkpoints, log, resume."""

from __future__ import annotations

import json

import pytest
import torch

from ovdiv.models import load_checkpoint
from ovdiv.train import DataSource, EnsembleConfig, RunOptions, read_metrics, train_ensemble
from ovdiv.train.engine import pairwise_disagreement

HEURISTICS = [
    ("independent", None, None),
    ("gncl", 0.2, "average"),
    ("gncl", 0.2, "median"),
    ("gncl", 0.2, "geometric"),
    ("gncl", 0.2, "majority"),
    ("gncl_masked", 0.2, "average"),
    ("balanced", 0.2, "average"),
]


def _cfg(raw, heuristic, lam, consensus):
    raw["heuristic"] = heuristic
    if lam is not None:
        raw["lambda"] = lam
    if consensus is not None:
        raw["consensus"] = consensus
    return EnsembleConfig.from_dict(raw)


@pytest.mark.parametrize(("heuristic", "lam", "consensus"), HEURISTICS, ids=[f"{h}-{c}" for h, _, c in HEURISTICS])
def test_heuristic_trains_and_loss_decreases(tmp_path, demo_arrays, tiny_raw, heuristic, lam, consensus):
    cfg = _cfg(tiny_raw, heuristic, lam, consensus)
    data = DataSource(arrays=demo_arrays[0], val_arrays=demo_arrays[1])
    res = train_ensemble(cfg, out_dir=tmp_path, data=data, epochs=4)
    assert [r["epoch"] for r in res.metrics] == [1, 2, 3, 4]
    assert res.metrics[-1]["step"] == 16  # 128 images / batch 32 x 4 epochs: one optimizer step per batch
    first, last = res.metrics[0], res.metrics[-1]
    assert last["train_loss"] < first["train_loss"]
    for name in ("r", "m"):
        assert last["train_member_loss"][name] < first["train_member_loss"][name]
    assert set(last["val_member_top1"]) == {"r", "m"}
    assert 0.0 <= last["val_disagreement"] <= 1.0 and 0.0 <= last["val_ensemble_top1"] <= 1.0
    if heuristic.startswith("gncl"):
        assert last["train_gncl_penalty"] > 0
    # the JSONL log is what the result reports
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2, 3, 4]
    # members are ordinary ovdiv checkpoints
    assert [p.name for p in res.members] == ["r.pt", "m.pt"]
    net, meta = load_checkpoint(res.members[0])
    assert meta.arch == "tiny_resnet" and meta.num_classes == 10 and tuple(meta.input_size) == (32, 32)
    assert meta.extra["heuristic"] == heuristic and meta.extra["epoch"] == 4
    assert net(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_attribution_diversity_trains(tmp_path, demo_arrays, tiny_raw):
    tiny_raw["members"] = [{"name": "r", "arch": "tiny_resnet"}, {"name": "r2", "arch": "tiny_resnet"}]
    cfg = _cfg(tiny_raw, "attribution_diversity", 1.0, None)
    data = DataSource(arrays=demo_arrays[0], val_arrays=demo_arrays[1])
    res = train_ensemble(cfg, out_dir=tmp_path, data=data, epochs=3)
    first, last = res.metrics[0], res.metrics[-1]
    assert last["train_loss"] < first["train_loss"]
    assert last["train_d_att"] > 0
    # loss = mean CE - lambda * D_att, both logged as epoch means
    mean_ce = sum(last["train_member_loss"].values()) / 2
    assert last["train_loss"] == pytest.approx(mean_ce - 1.0 * last["train_d_att"], rel=1e-4, abs=1e-5)


def test_resume_continues_exactly(tmp_path, demo_arrays, tiny_raw):
    """2 epochs straight == 1 epoch, stop, resume for the 2nd (same weights, same log)."""
    cfg = _cfg(tiny_raw, "gncl", 0.2, "average")
    data = DataSource(arrays=demo_arrays[0], val_arrays=demo_arrays[1])
    straight = train_ensemble(cfg, out_dir=tmp_path / "a", data=data, epochs=2)
    train_ensemble(cfg, out_dir=tmp_path / "b", data=data, epochs=2, max_steps=4)  # stops after epoch 1
    assert [r["epoch"] for r in read_metrics(tmp_path / "b")] == [1]
    resumed = train_ensemble(cfg, out_dir=tmp_path / "b", data=data, epochs=2)
    assert [r["epoch"] for r in resumed.metrics] == [1, 2]
    assert resumed.metrics[-1]["train_loss"] == pytest.approx(straight.metrics[-1]["train_loss"], rel=1e-5)
    for pa, pb in zip(straight.members, resumed.members, strict=True):
        sa, sb = torch.load(pa, weights_only=True)["state_dict"], torch.load(pb, weights_only=True)["state_dict"]
        for k in sa:
            torch.testing.assert_close(sa[k], sb[k], rtol=1e-5, atol=1e-6)
    # a finished run is not retrained
    again = train_ensemble(cfg, out_dir=tmp_path / "b", data=data, epochs=2)
    assert [r["epoch"] for r in again.metrics] == [1, 2]


def test_cpu_amp_and_channels_last_code_paths(tmp_path, demo_arrays, tiny_raw):
    """The AMP (autocast, bf16 on CPU) and channels-last branches run end to end, incl. double backprop."""
    tiny_raw["members"] = [{"name": "r", "arch": "tiny_resnet"}, {"name": "r2", "arch": "tiny_resnet"}]
    cfg = _cfg(tiny_raw, "attribution_diversity", 0.1, None)
    opts = RunOptions(epochs=1, max_steps=2, cpu_amp=True, cpu_channels_last=True, val_every=1)
    events = []
    data = DataSource(arrays=demo_arrays[0], val_arrays=demo_arrays[1])
    res = train_ensemble(cfg, out_dir=tmp_path, data=data, options=opts, progress=events.append)
    assert res.metrics[-1]["step"] == 2
    assert [(e.completed, e.total) for e in events] == [(1, 2), (2, 2)] and "loss" in events[-1].detail
    assert all(torch.isfinite(torch.tensor(v)) for v in res.metrics[-1]["train_member_loss"].values())


def test_pairwise_disagreement_by_hand():
    correct = torch.tensor([[1, 1, 0, 0], [1, 0, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    # pairs: (0,1): 2/4, (0,2): 2/4, (1,2): 2/4
    assert pairwise_disagreement(correct) == pytest.approx(0.5)
    assert pairwise_disagreement(correct[:1]) == 0.0


def test_members_export_and_evaluate(tmp_path, demo_arrays, tiny_raw):
    """Jointly trained members export to ONNX + IR through ovdiv.export and evaluate like any member."""
    import numpy as np

    import ovdiv
    from ovdiv.models import load_checkpoint

    cfg = _cfg(tiny_raw, "gncl", 0.2, "average")
    data = DataSource(arrays=demo_arrays[0], val_arrays=demo_arrays[1])
    res = train_ensemble(cfg, out_dir=tmp_path, data=data, epochs=1, max_steps=2, export=True)
    xmls = sorted(a.path for a in res.exported if str(a.path).endswith(".xml"))
    assert [p.name for p in xmls] == ["m_fp32.xml", "r_fp32.xml"]
    images = demo_arrays[1][0][:8]
    for ckpt in res.members:
        member = ovdiv.load_member(tmp_path / "export" / f"{ckpt.stem}_fp32.xml")
        net, meta = load_checkpoint(ckpt)
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - torch.tensor(meta.mean).view(1, 3, 1, 1)
        x = x / torch.tensor(meta.std).view(1, 3, 1, 1)
        with torch.no_grad():
            ref = net.eval()(x).numpy()
        np.testing.assert_allclose(member.predict(images), ref, rtol=1e-3, atol=1e-3)
    result = ovdiv.evaluate([str(p) for p in xmls], datasets=["demo"], attribution=None, limit=32)
    metrics = {r["metric"] for r in result.rows}
    assert {"top1", "ensemble_top1", "disagreement"} <= metrics
