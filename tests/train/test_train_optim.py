"""Optimizers and per-step lr schedules built from recipe dicts, against hand-computed values / torch."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from timm.optim import AdaBelief

from ovdiv.errors import ConfigError
from ovdiv.models.recipes import load_recipe
from ovdiv.train.optim import build_optimizer, build_scheduler, schedule_factor

REPO = Path(__file__).resolve().parents[2]


def _params():
    return [torch.nn.Parameter(torch.zeros(3))]


def _lrs(spec, spe, total, lr=1.0, opt_spec=None):
    opt = build_optimizer(_params(), opt_spec or {"name": "sgd", "lr": lr, "momentum": 0.9})
    sched = build_scheduler(opt, spec, steps_per_epoch=spe, total_steps=total)
    out = []
    for _ in range(total):
        out.append((opt.param_groups[0]["lr"], opt.param_groups[0].get("momentum")))
        opt.step()
        sched.step()
    return out


def test_optimizers_and_their_arguments():
    ab = build_optimizer(_params(), {"name": "adabelief", "lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8})
    assert isinstance(ab, AdaBelief)
    assert ab.defaults["betas"] == (0.9, 0.999) and ab.defaults["eps"] == 1e-8 and ab.defaults["lr"] == 1e-3
    rms = build_optimizer(_params(), {"name": "rmsprop", "lr": 0.256, "decay": 0.9, "momentum": 0.9, "eps": 1e-3})
    assert isinstance(rms, torch.optim.RMSprop) and rms.defaults["alpha"] == 0.9
    assert isinstance(build_optimizer(_params(), {"name": "adamw", "lr": 5e-4}), torch.optim.AdamW)
    with pytest.raises(ConfigError, match="unknown key"):
        build_optimizer(_params(), {"name": "sgd", "lr": 0.1, "nesterov_momentum": 1})
    with pytest.raises(ConfigError, match="unknown optimizer"):
        build_optimizer(_params(), {"name": "lamb", "lr": 0.1})
    with pytest.raises(ConfigError, match="missing 'lr'"):
        build_optimizer(_params(), {"name": "sgd"})


def test_step_schedule_x01_every_30_epochs():
    f = schedule_factor({"name": "step", "step_epochs": 30, "gamma": 0.1}, steps_per_epoch=10, total_steps=1000)
    assert f(0) == 1.0 and f(299) == 1.0
    assert f(300) == pytest.approx(0.1) and f(599) == pytest.approx(0.1) and f(600) == pytest.approx(0.01)


def test_exponential_every_2_4_epochs_mnasnet():
    f = schedule_factor({"name": "exponential", "step_epochs": 2.4, "gamma": 0.97}, steps_per_epoch=10, total_steps=100)
    assert (
        f(23) == 1.0
        and f(24) == pytest.approx(0.97)
        and f(48) == pytest.approx(0.97**2)
        and f(71) == pytest.approx(0.97**2)
    )


def test_cosine_with_warmup_and_floor():
    f = schedule_factor({"name": "cosine", "warmup_epochs": 1, "min_factor": 0.1}, steps_per_epoch=10, total_steps=110)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert f(110) == pytest.approx(0.1)


def test_onecycle_matches_torch_and_cycles_momentum():
    spec = {"name": "onecycle", "pct_start": 0.3, "base_momentum": 0.85, "max_momentum": 0.95}
    ours = _lrs(spec, spe=5, total=20, lr=0.1)
    opt = torch.optim.SGD(_params(), lr=0.1, momentum=0.9)
    ref_s = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=0.1, total_steps=20, pct_start=0.3, base_momentum=0.85, max_momentum=0.95
    )
    ref = []
    for _ in range(20):
        ref.append((opt.param_groups[0]["lr"], opt.param_groups[0]["momentum"]))
        opt.step()
        ref_s.step()
    assert [v for pair in ours for v in pair] == pytest.approx([v for pair in ref for v in pair])
    lrs = [lr for lr, _ in ours]
    moms = [m for _, m in ours]
    peak = lrs.index(max(lrs))
    assert moms[peak] == pytest.approx(0.85) and moms[0] == pytest.approx(0.95)  # momentum inverse to lr


def test_every_paper_recipe_builds_its_optimizer_and_schedule():
    from ovdiv.train.dino_recipe import load_dino_recipe, recipe_kind

    for path in sorted((REPO / "models").glob("*.json")) + sorted((REPO / "models" / "tiny").glob("*.json")):
        if recipe_kind(path) == "dino":  # two phases, each with its own optimizer and schedule
            d = load_dino_recipe(path)
            phases = [(d.backbone.optimizer, d.backbone.schedule, d.backbone.epochs)]
            phases.append((d.classifier.optimizer, d.classifier.schedule, d.classifier.epochs))
        else:
            r = load_recipe(path)
            phases = [(r.optimizer, r.schedule, r.epochs)]
        for optimizer, schedule, epochs in phases:
            opt = build_optimizer(_params(), optimizer)
            build_scheduler(opt, schedule, steps_per_epoch=100, total_steps=100 * epochs)


def test_unknown_schedule_key_is_a_config_error():
    opt = build_optimizer(_params(), {"name": "sgd", "lr": 0.1})
    with pytest.raises(ConfigError, match="unknown key"):
        build_scheduler(opt, {"name": "step", "step_size": 30}, steps_per_epoch=1, total_steps=10)


def test_cyclic_cosine_anneals_to_min_lr_each_cycle():
    """Snapshot schedule of the feature-visualisation study: lr 0.1 -> 1e-5 in each of two cycles."""
    opt = build_optimizer(_params(), {"name": "sgd", "lr": 0.1})
    sched = build_scheduler(
        opt, {"name": "cyclic_cosine", "cycles": 2, "min_lr": 1e-5}, steps_per_epoch=10, total_steps=100
    )
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    low = 1e-5 / 0.1
    ref = [0.1 * (low + (1 - low) * 0.5 * (1 + math.cos(math.pi * (s % 50) / 50))) for s in range(100)]
    assert lrs == pytest.approx(ref)
    assert lrs[0] == lrs[50] == pytest.approx(0.1) and min(lrs) > 1e-5
