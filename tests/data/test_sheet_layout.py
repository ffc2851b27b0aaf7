"""``ovdiv data show`` sizes its sheet for the images it has and takes several specs (issue 19)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from click.testing import CliRunner
from PIL import Image

from ovdiv.cli import cli
from ovdiv.data import write_contact_sheet
from ovdiv.data.sheet import _LABEL_W, _PAD


def _folder_of_three(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for i in range(3):
        d = root / f"class{i}"
        d.mkdir(parents=True)
        Image.fromarray(rng.integers(0, 255, (300, 280, 3), dtype=np.uint8)).save(d / "x.png")
    return root


def test_sheet_is_as_wide_as_its_images(tmp_path: Path) -> None:
    root = _folder_of_three(tmp_path / "three")
    info = write_contact_sheet(f"imagefolder:{root}", tmp_path / "s.png", n=8)
    img = np.asarray(Image.open(info.path))
    cell = 224  # imagefolder images are cropped to 224 (>= 128: no upscaling)
    assert info.n == 3
    assert img.shape[1] == _LABEL_W + 3 * (cell + _PAD) + _PAD  # 3 columns, not 8 with 5 blank
    assert img.shape[0] == 1 * (cell + _PAD) + _PAD
    right = img[:, _LABEL_W + 2 * (cell + _PAD) + _PAD :]
    assert (right != 255).any(axis=2).mean() > 0.5  # the last column holds an image, not white


def test_several_specs_and_a_whole_corruption_in_one_sheet(tmp_path: Path) -> None:
    out = tmp_path / "g.png"
    res = CliRunner().invoke(
        cli, ["data", "show", "lines1.6@demo", "cbar:plasma_noise@demo", "demo", "--n", "2", "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    img = np.asarray(Image.open(out))
    rows = ["demo", "lines1.6@demo"] + [f"plasma_noise{m}@demo" for m in ("4.75", "7.0", "8.5", "9.25", "10.0")]
    assert all(r in res.output for r in rows)
    cell = 128  # 64-px demo images upscaled x2
    assert img.shape == (len(rows) * (cell + _PAD) + _PAD, _LABEL_W + 2 * (cell + _PAD) + _PAD, 3)
    # row k holds the images of rows[k]: the plasma rows differ from the clean row and from each other
    tiles = [img[_PAD + k * (cell + _PAD) : _PAD + k * (cell + _PAD) + cell, _LABEL_W + _PAD :][:, :cell] for k in
             range(len(rows))]  # fmt: skip
    assert not np.array_equal(tiles[0], tiles[1])
    assert len({t.tobytes() for t in tiles}) == len(rows)
