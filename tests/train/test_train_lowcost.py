"""Low-cost ensembles: prune-and-tune anti-random pairs and snapshot ensembles."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from ovdiv.models import create_model, load_checkpoint
from ovdiv.train import DataSource, EnsembleConfig, train_ensemble
from ovdiv.train.lowcost import anti_random_masks, apply_masks, make_pruning_permanent, prunable_weights
from ovdiv.train.optim import build_scheduler


def test_anti_random_masks_exact_halves_and_seeded():
    net = create_model("tiny_resnet", num_classes=10)
    masks = anti_random_masks(net, sparsity=0.5, seed=3)
    assert set(masks) == {f"{n}.weight" for n, _ in prunable_weights(net)}
    for key, m in masks.items():
        assert m.dtype == torch.bool and m.shape == dict(net.named_parameters())[key].shape
        assert int(m.sum()) == round(0.5 * m.numel())
    again = anti_random_masks(net, sparsity=0.5, seed=3)
    other = anti_random_masks(net, sparsity=0.5, seed=4)
    assert all(torch.equal(masks[k], again[k]) for k in masks)
    assert any(not torch.equal(masks[k], other[k]) for k in masks)


def test_masked_weights_get_no_update():
    net = create_model("tiny_resnet", num_classes=10)
    masks = anti_random_masks(net, seed=0)
    child = apply_masks(copy.deepcopy(net), masks)
    opt = torch.optim.SGD(child.parameters(), lr=0.1, momentum=0.9)
    for _ in range(3):
        opt.zero_grad()
        child(torch.randn(4, 3, 32, 32)).logsumexp(-1).sum().backward()
        opt.step()
    mods = dict(child.named_modules())
    parent_w = dict(net.named_parameters())
    for key, m in masks.items():
        mod = mods[key.removesuffix(".weight")]
        assert torch.equal(mod.weight_mask.bool(), m)  # the mask buffer never changed
        # no gradient reached the pruned entries (no weight decay here): weight_orig untouched there
        assert torch.equal(mod.weight_orig[~m], parent_w[key][~m])
        assert not torch.equal(mod.weight_orig[m], parent_w[key][m])
    plain = make_pruning_permanent(child)
    for key, m in masks.items():
        w = dict(plain.named_parameters())[key]
        assert torch.all(w[~m] == 0)


def test_prune_and_tune_children_are_complementary_and_masks_stay_fixed(tmp_path, demo_arrays, tiny_raw):
    tiny_raw.update(
        heuristic="prune_and_tune",
        members=[{"name": "r", "arch": "tiny_resnet"}],
        prune_and_tune={
            "pairs": 1,
            "parent_epochs": 2,
            "tune_epochs": 2,
            "tune_optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3},
        },
    )
    cfg = EnsembleConfig.from_dict(tiny_raw)
    res = train_ensemble(cfg, out_dir=tmp_path, data=DataSource(arrays=demo_arrays[0], val_arrays=demo_arrays[1]))
    assert [p.name for p in res.members] == ["r_p0a.pt", "r_p0b.pt"]
    parent, _ = load_checkpoint(tmp_path / "parent.pt")
    a, meta_a = load_checkpoint(res.members[0])
    b, meta_b = load_checkpoint(res.members[1])
    assert (meta_a.extra["side"], meta_b.extra["side"]) == ("a", "b") and meta_a.extra["sparsity"] == 0.5
    masks = torch.load(tmp_path / "masks.pt", weights_only=True)["pair0"]
    pa, pb, pp = dict(a.named_parameters()), dict(b.named_parameters()), dict(parent.named_parameters())
    for key, m in masks.items():
        # exactly complementary supports: A lives on M, B on 1 - M, after tuning (weight decay included)
        assert torch.all(pa[key][~m] == 0) and torch.all(pb[key][m] == 0)
        assert torch.all((pa[key] != 0) | (pb[key] != 0))  # (no weight of the parent was exactly 0)
        # tuning changed the kept weights
        assert not torch.equal(pa[key][m], pp[key][m])
    # the fine-tuning log has one-cycle lr and both children
    last = res.metrics[-1]
    assert set(last["train_member_loss"]) == {"r_p0a", "r_p0b"}
    # children are plain modules (pruning made permanent): no weight_orig / weight_mask
    assert not any("weight_orig" in k or "weight_mask" in k for k in a.state_dict())


def test_snapshot_saves_one_member_per_cycle(tmp_path, demo_arrays, tiny_raw):
    tiny_raw.update(heuristic="snapshot", members=[{"name": "r", "arch": "tiny_resnet"}], snapshot={"cycles": 3})
    tiny_raw["epochs"] = 3
    cfg = EnsembleConfig.from_dict(tiny_raw)
    res = train_ensemble(cfg, out_dir=tmp_path, data=DataSource(arrays=demo_arrays[0], val_arrays=demo_arrays[1]))
    assert [p.name for p in res.members] == ["r_snap1.pt", "r_snap2.pt", "r_snap3.pt"]
    steps = [load_checkpoint(p)[1].extra["step"] for p in res.members]
    assert steps == [4, 8, 12]  # 12 steps, 3 cycles of 4
    sd = [torch.load(p, weights_only=True)["state_dict"] for p in res.members]
    key = next(k for k, v in sd[0].items() if v.is_floating_point())
    assert not torch.equal(sd[0][key], sd[1][key]) and not torch.equal(sd[1][key], sd[2][key])


def test_cyclic_cosine_restarts():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = build_scheduler(opt, {"name": "cyclic_cosine", "cycles": 3}, steps_per_epoch=4, total_steps=12)
    lrs = []
    for _ in range(12):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == lrs[4] == lrs[8] == pytest.approx(1.0)
    assert lrs[2] == pytest.approx(0.5)
    assert lrs[3] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.75)))
