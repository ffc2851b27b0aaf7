"""Supernet configs: the shipped ones are valid and faithful; typos are named; CLI errors are one line, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ovdiv.cli import cli
from ovdiv.errors import ConfigError
from ovdiv.supernet import load_config, validate_config

pytestmark = pytest.mark.nas

ROOT = Path(__file__).resolve().parents[2]
REAL = ROOT / "supernet_configs" / "resnet50.json"
TINY = ROOT / "supernet_configs" / "resnet50_tiny.json"


def _raw(path: Path = TINY) -> dict:
    return json.loads(path.read_text())


def test_paper_config() -> None:
    cfg = load_config(REAL)
    assert cfg.num_classes == 1000 and cfg.input_size == (224, 224)
    tr = cfg.bnas["training"]
    assert tr["algorithm"] == "progressive_shrinking"
    assert tr["progressivity_of_elasticity"] == ["depth", "width"]
    assert tr["batchnorm_adaptation"]["num_bn_adaptation_samples"] == 1500
    stages = cfg.stages
    assert [s["epochs"] for s in stages] == [25, 40, 50, 50]
    assert [s["depth_indicator"] for s in stages] == [1, 2, 2, 2]
    assert [s.get("width_indicator") for s in stages] == [None, None, 2, 3]
    assert all(s["init_lr"] == 2.5e-6 for s in stages) and [s["epochs_lr"] for s in stages] == [25, 40, 50, 50]
    assert all(s.get("reorg_weights") and s.get("bn_adapt") for s in stages[2:])
    width = tr["elasticity"]["width"]
    assert (width["max_num_widths"], width["min_width"], width["width_step"]) == (3, 32, 32)
    assert width["width_multipliers"] == [1, 0.8, 0.6]
    search = cfg.bnas["search"]
    assert (search["algorithm"], search["num_evals"], search["population"], search["ref_acc"]) == (
        "NSGA2",
        1000,
        50,
        93.65,
    )
    assert cfg.expected_search_space == {"width_groups": 37, "skippable_blocks": 6}
    assert cfg.data["require_pretrained"] is True


def test_tiny_config_keeps_architecture_and_space() -> None:
    real, tiny = load_config(REAL), load_config(TINY)
    assert tiny.data["model"] == "resnet50" and tiny.input_size == (32, 32) and tiny.num_classes == 10
    assert tiny.bnas["training"]["elasticity"] == real.bnas["training"]["elasticity"]
    assert len(tiny.stages) == 4 and all(s["epochs"] == 1 for s in tiny.stages)


@pytest.mark.parametrize(
    ("edit", "key", "suggestion"),
    [
        (lambda r: r.update(batch_sise=4), "batch_sise", "batch_size"),
        (
            lambda r: r["bootstrapNAS"]["training"]["schedule"]["list_stage_descriptions"][1].update(epocs=2),
            "epocs",
            "epochs",
        ),
        (
            lambda r: r["bootstrapNAS"]["training"]["elasticity"]["width"].update(min_out_channels=32),
            "min_out_channels",
            None,
        ),
        (lambda r: r["bootstrapNAS"]["search"].update(populaton=4), "populaton", "population"),
        (lambda r: r["optimizer"]["optimizer_params"].update(momentun=0.9), "momentun", "momentum"),
    ],
)
def test_typos_are_named(edit, key: str, suggestion: str | None) -> None:
    raw = _raw()
    edit(raw)
    with pytest.raises(ConfigError, match=key) as exc:
        validate_config(raw, source="x.json")
    if suggestion:
        assert f"did you mean {suggestion!r}" in str(exc.value)


def test_bad_values() -> None:
    raw = _raw()
    raw["bootstrapNAS"]["training"]["algorithm"] = "once_for_all"
    with pytest.raises(ConfigError, match="algorithm"):
        validate_config(raw)
    raw = _raw()
    del raw["bootstrapNAS"]["training"]["elasticity"]["depth"]  # auto blocks
    raw["bootstrapNAS"]["training"]["schedule"]["list_stage_descriptions"][1]["depth_indicator"] = 3
    with pytest.raises(ConfigError, match="depth_indicator=3"):
        validate_config(raw)
    raw = _raw()
    raw["input_info"]["sample_size"] = [1, 3, 16, 16]
    with pytest.raises(ConfigError, match="too small"):
        validate_config(raw)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(ROOT / "nope.json")


def _one_line_exit2(args: list[str]) -> str:
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.output
    return lines[0]


def test_cli_typo_missing_pretrained(tmp_path: Path) -> None:
    raw = _raw()
    raw["bootstrapNAS"]["training"]["schedule"]["list_stage_descriptions"][0]["epocs"] = 1
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(raw))
    line = _one_line_exit2(["supernet", "train", str(bad), "--out", str(tmp_path / "run")])
    assert "epocs" in line and "epochs" in line
    line = _one_line_exit2(["supernet", "train", str(TINY), "--pretrained", str(tmp_path / "missing.pth")])
    assert "missing.pth" in line and "does not exist" in line
    line = _one_line_exit2(["supernet", "train", str(REAL), "--out", str(tmp_path / "run")])
    assert "--pretrained" in line
    assert not (tmp_path / "run").exists()
    line = _one_line_exit2(
        [
            "supernet",
            "extract",
            str(tmp_path),
            "--subnet",
            "B_0",
            "--out",
            str(tmp_path / "x"),
            "--format",
            "onnx,tflite",
        ]
    )
    assert "tflite" in line
    line = _one_line_exit2(["supernet", "extract", str(tmp_path), "--subnet", "B_7", "--out", str(tmp_path / "x")])
    assert "B_7" in line and "wB_1c" in line
