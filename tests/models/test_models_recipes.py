from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ovdiv.errors import ConfigError
from ovdiv.models import count_params
from ovdiv.models.recipes import RECIPE_DIR, Recipe, load_recipe

RECIPES = [  # member recipes; DINO recipes ("kind": "dino") have their own schema (tests/train/test_train_dino.py)
    p
    for p in sorted(RECIPE_DIR.glob("*.json")) + sorted((RECIPE_DIR / "tiny").glob("*.json"))
    if json.loads(p.read_text(encoding="utf-8")).get("kind", "member") == "member"
]
TABLE_I = [
    "resnext50_32_2",
    "resnext50_32_4l",
    "resnext50_16_4",
    "mnasnet1_0",
    "mnasnet1_0_rmsprop",
    "squeezenet1_1",
    "deit_tiny_patch16_224",
    "resnet50",
]


def test_recipe_files_present() -> None:
    names = {p.stem for p in RECIPES}
    assert set(TABLE_I) <= names
    assert {"tiny_resnet", "tiny_resnext", "tiny_mnasnet", "tiny_squeezenet", "tiny_deit"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_every_recipe_loads_builds_and_round_trips(path: Path) -> None:
    r = load_recipe(path)
    assert r.path == path and r.name == path.stem
    with torch.device("meta"):
        m = r.create_model()
    assert m(torch.empty(1, 3, *r.input_size, device="meta")).shape == (1, r.num_classes)
    assert Recipe.from_dict(json.loads(json.dumps(r.to_dict()))) == r


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipes_accepted_by_the_trainer(path: Path) -> None:
    optim = pytest.importorskip("ovdiv.train.optim")
    r = load_recipe(path)
    opt = optim.build_optimizer([torch.nn.Parameter(torch.zeros(2))], r.optimizer)
    sched = optim.build_scheduler(opt, r.schedule, steps_per_epoch=10, total_steps=10 * r.epochs)
    opt.step()
    sched.step()


def test_table_i_values() -> None:
    r = {n: load_recipe(RECIPE_DIR / f"{n}.json") for n in TABLE_I}
    for n in ("resnext50_32_2", "resnext50_32_4l", "resnext50_16_4"):
        assert r[n].optimizer == {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4}
        assert r[n].schedule == {"name": "step", "step_epochs": 30, "gamma": 0.1}
        assert (r[n].epochs, r[n].batch_size, r[n].arch_args["dropout"]) == (100, 32, 0.2)
        with torch.device("meta"):
            params = sum(p.numel() for p in r[n].create_model().parameters())
        assert params == count_params(n)  # the recipe builds exactly the paper's named variant
    assert r["resnext50_32_4l"].arch_args["layers"] == [2, 2, 3, 2]
    assert (r["resnext50_16_4"].arch_args["cardinality"], r["resnext50_32_2"].arch_args["width_per_group"]) == (16, 2)
    rms = r["mnasnet1_0_rmsprop"]
    assert rms.optimizer["name"] == "rmsprop" and rms.optimizer["lr"] == 0.256
    assert (rms.optimizer["decay"], rms.optimizer["momentum"]) == (0.9, 0.9)
    assert rms.schedule == {"name": "exponential", "step_epochs": 2.4, "gamma": 0.97}
    assert r["mnasnet1_0"].optimizer["name"] == "sgd" and r["mnasnet1_0"].arch_args["dropout"] == 0.2
    sq = r["squeezenet1_1"]
    assert (sq.optimizer["lr"], sq.optimizer["weight_decay"], sq.batch_size) == (0.01, 2e-4, 128)
    assert load_recipe(RECIPE_DIR / "squeezenet1_1_b512.json").batch_size == 512
    deit = r["deit_tiny_patch16_224"]
    assert (deit.optimizer["name"], deit.optimizer["lr"], deit.schedule["name"]) == ("adamw", 5e-4, "cosine")
    assert (deit.epochs, deit.batch_size) == (300, 256)
    t = r["resnext50_32_2"].transforms
    assert (t.train_crop, t.scale, t.interpolation, t.hflip) == ("random_resized_crop", (0.08, 1.0), "bilinear", 0.5)
    assert t.ratio == pytest.approx((3 / 4, 4 / 3))


def test_tiny_recipes_use_demo_data() -> None:
    r = load_recipe(RECIPE_DIR / "tiny" / "tiny_deit.json")
    assert r.data.train == "demo:train" and r.data.val == "demo"
    assert r.input_size == (64, 64) and r.num_classes == 10 and r.transforms.train_crop == "none"


BASE = {
    "name": "x",
    "arch": "tiny_resnet",
    "optimizer": {"name": "sgd", "lr": 0.1},
    "schedule": {"name": "constant"},
    "epochs": 1,
    "batch_size": 8,
}


def _write(tmp_path: Path, **changes) -> Path:
    d = dict(BASE)
    for k, v in changes.items():
        if v is ...:
            d.pop(k)
        else:
            d[k] = v
    p = tmp_path / "r.json"
    p.write_text(json.dumps(d))
    return p


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"epoch": 3}, r"unknown key 'epoch'"),
        ({"arch": "resnet51"}, r"key 'arch' names unknown architecture 'resnet51'"),
        ({"arch_args": {"depth": 2}}, r"arch_args: unknown key 'depth' for architecture 'tiny_resnet'"),
        ({"epochs": "10"}, r"key 'epochs' must be an integer, got '10'"),
        ({"epochs": 0}, r"key 'epochs' must be >= 1"),
        ({"batch_size": 2.5}, r"key 'batch_size' must be an integer"),
        ({"amp": 1}, r"key 'amp' must be true/false"),
        ({"batch_size": ...}, r"missing required key 'batch_size'"),
        ({"optimizer": {"name": "sgd", "lr": 0.1, "momentun": 0.9}}, r"optimizer \(sgd\): unknown key 'momentun'"),
        ({"optimizer": {"name": "lion", "lr": 0.1}}, r"optimizer: key 'name' must be one of"),
        ({"optimizer": {"name": "sgd"}}, r"missing required key 'lr'"),
        ({"optimizer": {"name": "sgd", "lr": -1}}, r"key 'lr' must be > 0"),
        ({"schedule": {"name": "step", "step_size": 30}}, r"schedule \(step\): unknown key 'step_size'"),
        ({"schedule": {"name": "poly"}}, r"schedule: key 'name' must be one of"),
        ({"schedule": {"name": "cyclic_cosine", "cycles": 0}}, r"'cycles' must be >= 1"),
        ({"transforms": {"hflip": 2}}, r"transforms: key 'hflip' must be a probability"),
        ({"transforms": {"crop": "x"}}, r"transforms: unknown key 'crop'"),
        ({"transforms": {"scale": [0.5]}}, r"transforms: key 'scale' must be a list of 2 numbers"),
        ({"data": {"train": "demo:train", "limit": 5}}, r"data: unknown key 'limit'"),
        ({"input_size": [64]}, r"key 'input_size' must be a list of 2 numbers"),
        ({"std": [0.2, 0.2, 0.0]}, r"key 'std' must be > 0"),
        ({"arch": "tiny_deit", "input_size": [32, 32]}, r"does not match architecture 'tiny_deit' \(img_size 64\)"),
    ],
)
def test_recipe_validation_errors(tmp_path: Path, changes: dict, match: str) -> None:
    p = _write(tmp_path, **changes)
    with pytest.raises(ConfigError, match=match) as info:
        load_recipe(p)
    assert str(p) in str(info.value)  # the message names the file


def test_recipe_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_recipe(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "x",\n "arch": }')
    with pytest.raises(ConfigError, match=r"not valid JSON \(line 2"):
        load_recipe(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="JSON object"):
        load_recipe(bad)


def test_vit_input_size_follows_img_size(tmp_path: Path) -> None:
    r = load_recipe(_write(tmp_path, arch="tiny_deit", input_size=[32, 32], arch_args={"img_size": 32}))
    assert r.input_size == (32, 32)


def test_defaults_from_registry(tmp_path: Path) -> None:
    r = load_recipe(_write(tmp_path))
    assert r.num_classes == 10 and r.input_size == (64, 64) and r.arch_args == {}
    r = load_recipe(_write(tmp_path, optimizer={"name": "sgd", "lr": 1}))
    assert r.optimizer["lr"] == 1
