from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from ovdiv.cards import ModelCard
from ovdiv.cli import cli
from ovdiv.models import create_model, save_checkpoint


def _one_line_error(res, *needles: str) -> None:
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.output
    for n in needles:
        assert n in lines[0]


def test_export_missing_checkpoint(tmp_path) -> None:
    res = CliRunner().invoke(cli, ["export", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "o")])
    _one_line_error(res, "missing.pt", "does not exist")


def test_export_corrupt_checkpoint(tmp_path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"PK\x03\x04 definitely not a zip archive")
    res = CliRunner().invoke(cli, ["export", str(bad), "--out", str(tmp_path / "o")])
    _one_line_error(res, "bad.pt", "corrupt")


def test_export_int8_without_calibration(tmp_path) -> None:
    res = CliRunner().invoke(cli, ["export", "x.pt", "--out", str(tmp_path), "--format", "ir", "--precision", "int8"])
    _one_line_error(res, "INT8", "--calib")


@pytest.mark.slow
def test_export_subprocess_exit_code(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ovdiv", "export", str(tmp_path / "missing.pt"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_export_onnx_via_cli(tmp_path) -> None:
    torch.manual_seed(0)
    ckpt = tmp_path / "sq.pt"
    save_checkpoint(
        ckpt,
        create_model("tiny_squeezenet", num_classes=4),
        arch="tiny_squeezenet",
        arch_args={},
        num_classes=4,
        input_size=(32, 32),
    )
    out = tmp_path / "out"
    res = CliRunner().invoke(
        cli, ["export", str(ckpt), "--out", str(out), "--format", "onnx", "--name", "sq"], terminal_width=200
    )
    assert res.exit_code == 0, res.output
    assert "sq.onnx" in res.output and "rel err" in res.output and "<= 1e-04" in res.output
    card = ModelCard.load(out / "sq.json")
    assert card.input_size == (32, 32) and card.num_classes == 4 and card.export_check["passed"]
    assert sorted(p.name for p in out.iterdir()) == ["sq.json", "sq.onnx"]


@pytest.mark.slow
def test_export_int8_with_calib_spec_via_cli(tmp_path) -> None:
    torch.manual_seed(0)
    ckpt = tmp_path / "r.pt"
    save_checkpoint(
        ckpt,
        create_model("tiny_resnet", num_classes=10),
        arch="tiny_resnet",
        arch_args={},
        num_classes=10,
        input_size=(64, 64),
    )
    out = tmp_path / "out"
    res = CliRunner().invoke(
        cli,
        [
            "export",
            str(ckpt),
            "--out",
            str(out),
            "--format",
            "ir",
            "--precision",
            "fp32,fp16,int8",
            "--calib",
            "demo",
            "--calib-size",
            "48",
            "--bake-preprocessing",
        ],
        terminal_width=200,
    )
    assert res.exit_code == 0, res.output
    card = ModelCard.load(out / "r_int8.json")
    assert card.layout == "NHWC_U8" and card.export_check["n_images"] == 48
    assert card.extra["int8"]["subset_size"] == 48
