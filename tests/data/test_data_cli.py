from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from ovdiv.cli import cli
from ovdiv.data import make_demo


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.delenv("OVDIV_DATA", raising=False)
    return CliRunner()


def test_data_list(runner: CliRunner) -> None:
    res = runner.invoke(cli, ["data", "list"])
    assert res.exit_code == 0, res.output
    for word in ("imagenetv2", "imagefolder", "demo:train", "cbar", "plasma_noise", "checkerboard_cutout", "lines"):
        assert word in res.output
    assert "4.75" in res.output  # plasma_noise severity table


def test_data_prepare_demo_and_reuse(runner: CliRunner, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    args = ["data", "prepare", "demo", "lines1.6@demo", "--limit", "20", "--cache-dir", str(cache), "--workers", "2"]
    res = runner.invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert "lines1.6@demo" in res.output
    folders = sorted(p for p in (cache / "prepared").iterdir())
    assert len(folders) == 2
    imgs = np.load(next(p for p in folders if p.name.startswith("demo-")) / "images.npy")
    assert np.array_equal(imgs, make_demo(20)[0])
    res2 = runner.invoke(cli, args)
    assert res2.exit_code == 0 and sorted((cache / "prepared").iterdir()) == folders


def test_data_prepare_expands_cbar(runner: CliRunner, tmp_path: Path) -> None:
    res = runner.invoke(cli, ["data", "prepare", "cbar:plasma@demo", "--limit", "2", "--cache-dir", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert len(list((tmp_path / "prepared").iterdir())) == 5


def test_data_show_writes_a_contact_sheet(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "sheet.png"
    res = runner.invoke(cli, ["data", "show", "checkerboard4.0@demo", "--out", str(out), "--n", "3"])
    assert res.exit_code == 0, res.output
    img = np.asarray(Image.open(out))
    assert img.ndim == 3 and img.shape[0] > 2 * 128 and img.shape[1] > 3 * 128  # 2 rows x 3 upscaled images


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["data", "prepare", "imagenet"], "OVDIV_DATA"),
        (["data", "prepare", "nosuch3.0@demo"], "unknown corruption"),
        (["data", "prepare", "cbar:plasma:9@demo"], "outside"),
        (["data", "show", "bogus", "--out", "x.png"], "unknown dataset spec"),
    ],
)
def test_bad_input_is_one_red_line_exit_2(runner: CliRunner, args: list[str], needle: str, tmp_path: Path) -> None:
    res = runner.invoke(cli, [*args, *(["--cache-dir", str(tmp_path)] if args[1] == "prepare" else [])])
    assert res.exit_code == 2, res.output
    assert needle in res.output
    assert "Traceback" not in res.output
