"""Super-network data loaders: ImageFolder trees and ovdiv dataset specs (no nncf)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ovdiv.cards import IMAGENET_MEAN, IMAGENET_STD
from ovdiv.errors import DatasetNotFoundError
from ovdiv.supernet import validate_config
from ovdiv.supernet.data import arrays_to_tensor, build_loaders

pytestmark = pytest.mark.nas

TINY = Path(__file__).resolve().parents[2] / "supernet_configs" / "resnet50_tiny.json"


def _cfg(**over):
    raw = json.loads(TINY.read_text())
    raw.update(over)
    return validate_config(raw)


def _tree(root: Path, n: int = 3) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(d / f"{i}.png")


def test_imagefolder_loaders(tmp_path: Path) -> None:
    _tree(tmp_path)
    cfg = _cfg(dataset="imagenet", val_dataset=None, train_limit=None, val_limit=None, batch_size=2)
    tr, va = build_loaders(cfg, data_root=tmp_path, dataset=None, seed=0)
    assert tr is not None
    x, y = next(iter(tr))
    assert x.shape == (2, 3, 32, 32) and x.dtype == torch.float32 and set(y.tolist()) <= {0, 1}
    assert len(va.dataset) == 6 and len(tr) == 3  # 6 images, batch 2, drop_last
    with pytest.raises(DatasetNotFoundError, match="--data-root"):
        build_loaders(cfg, data_root=None, dataset=None, seed=0)
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        build_loaders(cfg, data_root=tmp_path / "nope", dataset=None, seed=0)


def test_spec_loaders_normalise() -> None:
    cfg = _cfg()
    tr, va = build_loaders(cfg, data_root=None, dataset=None, seed=0)
    assert tr is not None and len(tr) == 32 // 4 and len(va.dataset) == 16
    x, y = next(iter(va))
    assert x.shape == (8, 3, 32, 32) and y.dtype == torch.int64
    img = np.full((1, 32, 32, 3), 255, dtype=np.uint8)
    t = arrays_to_tensor(img, (32, 32))
    expected = (1.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(t[0, :, 0, 0].numpy(), expected, rtol=1e-6)
