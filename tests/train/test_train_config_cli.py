"""Ensemble configs (paper + tiny), their validation, and the `ovdiv train` / `ovdiv ensemble train` commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from ovdiv.cli import cli
from ovdiv.errors import ConfigError
from ovdiv.models import load_checkpoint
from ovdiv.train import HEURISTICS, EnsembleConfig, load_ensemble_config

REPO = Path(__file__).resolve().parents[2]
ENSEMBLES = REPO / "models" / "ensembles"
PAPER_JOINT = [
    "independent",
    "gncl_average",
    "gncl_median",
    "gncl_geometric",
    "gncl_majority",
    "gncl_masked",
    "balanced",
    "attribution_diversity",
]


@pytest.mark.parametrize("name", PAPER_JOINT)
def test_paper_configs_are_the_papers_setting(name):
    cfg = load_ensemble_config(ENSEMBLES / f"{name}.json")
    assert [m.arch for m in cfg.members] == ["resnet50"] * 3
    assert cfg.optimizer == {"name": "adabelief", "lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8}
    assert cfg.schedule == {"name": "step", "step_epochs": 30, "gamma": 0.1}
    assert (cfg.epochs, cfg.batch_size, cfg.num_classes, cfg.input_size) == (100, 64, 1000, (224, 224))
    assert cfg.transforms.train_crop == "random_resized_crop" and cfg.transforms.scale == (0.08, 1.0)
    if name.startswith(("gncl", "balanced")):
        assert cfg.lam == 0.2
    if name.startswith("gncl_") and name != "gncl_masked":
        assert cfg.heuristic == "gncl" and cfg.consensus == name.removeprefix("gncl_")
    if name == "attribution_diversity":
        assert cfg.lam in (10, 1, 0.1, 0.01, 0.001)


def test_every_shipped_config_validates_and_covers_every_heuristic():
    paths = sorted(ENSEMBLES.glob("**/*.json"))
    heuristics = {load_ensemble_config(p).heuristic for p in paths if p.parent.name == "tiny"}
    assert heuristics == set(HEURISTICS)
    assert {load_ensemble_config(p).heuristic for p in paths if p.parent.name == "ensembles"} == set(HEURISTICS)


def _base() -> dict:
    return json.loads((ENSEMBLES / "tiny" / "gncl_average.json").read_text())


BAD = [
    ({"heuristic": "gncl_typo"}, "unknown heuristic 'gncl_typo'"),
    ({"lambda": 1.5}, "lambda 1.5 out of range"),
    ({"lambda": -0.1}, "out of range"),
    ({"lambda": None}, "needs 'lambda'"),
    ({"heuristic": "independent"}, "takes no 'lambda'"),
    ({"consensus": "mode"}, "unknown consensus 'mode'"),
    ({"learning_rate": 0.1}, "unknown key(s) learning_rate"),
    ({"members": [{"arch": "tiny_resnet", "width": 3}]}, "members[0]: unknown key(s) width"),
    ({"optimizer": {"name": "adam", "lr": 1}}, "unknown optimizer 'adam'"),
    ({"schedule": {"name": "poly"}}, "unknown schedule 'poly'"),
    ({"epochs": 0}, "'epochs' must be an integer >= 1"),
    ({"heuristic": "attribution_diversity", "lambda": 11}, "use a value in [0.0, 10.0]"),
]


@pytest.mark.parametrize(("change", "message"), BAD, ids=[m for _, m in BAD])
def test_bad_configs_raise_one_line_config_error(change, message):
    raw = _base()
    raw.update(change)
    with pytest.raises(ConfigError) as info:
        EnsembleConfig.from_dict(raw, source="bad.json")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_attribution_lambda_grid_is_accepted():
    for lam in (10, 1, 0.1, 0.01, 0.001):
        raw = _base()
        raw.pop("consensus")
        raw.update(heuristic="attribution_diversity", **{"lambda": lam})
        assert EnsembleConfig.from_dict(raw).lam == lam


def test_cli_bad_config_and_missing_data_are_one_line_exit_2(tmp_path):
    bad = tmp_path / "bad.json"
    raw = _base()
    raw["heuristic"] = "ncl"
    bad.write_text(json.dumps(raw))
    res = CliRunner().invoke(cli, ["ensemble", "train", str(bad), "--out", str(tmp_path / "run")])
    assert res.exit_code == 2
    assert "unknown heuristic 'ncl'" in res.output
    # missing data folder: one line, no traceback
    res = CliRunner().invoke(
        cli,
        [
            "ensemble",
            "train",
            str(ENSEMBLES / "gncl_average.json"),
            "--data-root",
            str(tmp_path / "nope"),
            "--out",
            str(tmp_path / "run2"),
        ],
        terminal_width=300,
    )
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and res.output.strip().count("\n") == 0, res.output
    assert "does not exist" in res.output
    # the paper config without any data
    res = CliRunner().invoke(
        cli, ["ensemble", "train", str(ENSEMBLES / "balanced.json"), "--out", str(tmp_path / "r3")]
    )
    assert res.exit_code == 2 and "no training data" in res.output
    # an ImageFolder root without val/
    (tmp_path / "d" / "train" / "cat").mkdir(parents=True)
    res = CliRunner().invoke(
        cli,
        [
            "ensemble",
            "train",
            str(ENSEMBLES / "balanced.json"),
            "--data-root",
            str(tmp_path / "d"),
            "--out",
            str(tmp_path / "r4"),
        ],
    )
    assert res.exit_code == 2, res.output


def test_cli_ensemble_train_tiny_config_on_demo(tmp_path):
    raw = _base()
    raw["data"] = {"dataset": "demo:train", "val_dataset": "demo", "limit": 96, "val_limit": 32}
    raw["input_size"] = [32, 32]
    raw["batch_size"] = 32
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps(raw))
    out = tmp_path / "run"
    res = CliRunner().invoke(
        cli, ["ensemble", "train", str(cfg), "--out", str(out), "--max-steps", "2"], terminal_width=200
    )
    assert res.exit_code == 0, res.output
    assert "ensemble val top-1" in res.output
    for m in raw["members"]:
        _, meta = load_checkpoint(out / "members" / f"{m['name']}.pt")
        assert meta.arch == m["arch"] and meta.extra["heuristic"] == "gncl"
    log = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 2 and "val_ensemble_top1" in log[-1] and "train_gncl_penalty" in log[-1]


def test_cli_train_member_from_recipe_with_pretrained_and_resume(tmp_path):
    recipe = json.loads((REPO / "models" / "tiny" / "tiny_resnet.json").read_text())
    recipe.update(input_size=[32, 32], batch_size=32, epochs=2)
    recipe["data"] = {"train": "demo:train", "val": "demo", "train_limit": 64, "val_limit": 32}
    path = tmp_path / "tiny_resnet.json"
    path.write_text(json.dumps(recipe))
    out = tmp_path / "run"
    res = CliRunner().invoke(cli, ["train", str(path), "--out", str(out), "--max-steps", "2"], terminal_width=200)
    assert res.exit_code == 0, res.output
    assert (out / "last.pt").is_file() and (out / "best.pt").is_file() and (out / "recipe.json").is_file()
    # resume: the second call continues at step 2 and finishes epoch 2 (2 batches per epoch)
    res = CliRunner().invoke(cli, ["train", str(path), "--out", str(out), "--export"], terminal_width=200)
    assert res.exit_code == 0, res.output
    assert (out / "export" / "tiny_resnet.onnx").is_file() and (out / "export" / "tiny_resnet_fp32.xml").is_file()
    assert "exported" in res.output
    log = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2] and log[-1]["step"] == 4
    _, meta = load_checkpoint(out / "last.pt")
    assert meta.recipe["name"] == "tiny_resnet" and meta.extra["epoch"] == 2
    # --pretrained: a fresh run starts from those weights (lr 0 keeps them exactly)
    recipe["optimizer"] = {"name": "sgd", "lr": 1e-12}
    recipe["schedule"] = {"name": "constant"}
    path.write_text(json.dumps(recipe))
    res = CliRunner().invoke(
        cli,
        ["train", str(path), "--out", str(tmp_path / "ft"), "--max-steps", "1", "--pretrained", str(out / "last.pt")],
        terminal_width=200,
    )
    assert res.exit_code == 0, res.output
    a = torch.load(out / "last.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "ft" / "last.pt", weights_only=True)["state_dict"]
    conv = next(k for k in a if k.endswith("weight") and a[k].ndim == 4)
    torch.testing.assert_close(a[conv], b[conv], rtol=0, atol=1e-9)


def test_resolve_data_precedence(tmp_path):
    from ovdiv.train.data import DataSource
    from ovdiv.train.ensemble import resolve_data

    cfg = load_ensemble_config(ENSEMBLES / "tiny" / "gncl_average.json")
    own = resolve_data(cfg)
    assert (own.spec, own.val_spec, own.limit, own.val_limit) == ("demo:train", "demo", 3000, 500)
    assert resolve_data(cfg, "demo:train") == own  # naming the config's dataset keeps its limits
    other = resolve_data(cfg, "lines1.6@demo")
    assert other.spec == "lines1.6@demo" and other.limit is None
    assert resolve_data(cfg, tmp_path).root == tmp_path
    explicit = DataSource(spec="demo:train", limit=7)
    assert resolve_data(cfg, explicit) is explicit
