"""train_member on an ImageFolder tree; pretrained weights with a different classifier; transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ovdiv.data import make_demo
from ovdiv.errors import CheckpointError, DatasetNotFoundError
from ovdiv.models import create_model, load_checkpoint, save_checkpoint
from ovdiv.models.recipes import Recipe, TransformSpec
from ovdiv.train import train_member
from ovdiv.train.data import eval_transform, train_transform
from ovdiv.train.weights import load_pretrained


def _recipe(**over) -> Recipe:
    raw = {
        "name": "tiny",
        "arch": "tiny_resnet",
        "num_classes": 4,
        "input_size": [32, 32],
        "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
        "schedule": {"name": "cosine"},
        "epochs": 2,
        "batch_size": 8,
        "amp": False,
        "channels_last": False,
    }
    raw.update(over)
    return Recipe.from_dict(raw)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagefolder")
    for split, n, seed in (("train", 32, 0), ("val", 16, 1)):
        images, labels = make_demo(n, size=48, seed=seed, split="train" if split == "train" else "test")
        for i, (img, lab) in enumerate(zip(images, labels % 4, strict=True)):
            d = root / split / f"class{lab}"
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(d / f"{i}.png")
    return root


def test_train_member_on_image_folder(tmp_path, image_folder):
    res = train_member(_recipe(), out_dir=tmp_path, data=image_folder)
    assert [r["epoch"] for r in res.metrics] == [1, 2] and res.metrics[-1]["step"] == 8  # 32 // 8 x 2
    assert "val_member_top1" in res.metrics[-1]
    _, meta = load_checkpoint(res.checkpoint)
    assert meta.recipe["name"] == "tiny" and tuple(meta.input_size) == (32, 32)
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        train_member(_recipe(), out_dir=tmp_path / "x", data=image_folder / "nope")


def test_pretrained_skips_mismatched_classifier(tmp_path):
    src = create_model("tiny_resnet", num_classes=10)
    path = save_checkpoint(
        tmp_path / "src.pt", src, arch="tiny_resnet", arch_args={}, num_classes=10, input_size=(32, 32)
    )
    dst = create_model("tiny_resnet", num_classes=4)
    report = load_pretrained(dst, path)
    assert report["skipped"] and all(k in report["missing"] for k in report["skipped"])
    for k in report["loaded"]:
        torch.testing.assert_close(dst.state_dict()[k], src.state_dict()[k])
    # a bare DDP-style state dict works too
    torch.save({f"module.{k}": v for k, v in src.state_dict().items()}, tmp_path / "bare.pt")
    assert load_pretrained(create_model("tiny_resnet", num_classes=10), tmp_path / "bare.pt")["skipped"] == []
    with pytest.raises(CheckpointError):
        load_pretrained(dst, tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="matches"):
        load_pretrained(create_model("tiny_squeezenet", num_classes=4), path)


def test_transforms_paper_and_none():
    img = torch.from_numpy(make_demo(1, size=64)[0][0]).permute(2, 0, 1)
    paper = train_transform((32, 32))
    rrc = paper.transforms[1]
    assert rrc.scale == (0.08, 1.0) and rrc.ratio == pytest.approx((3 / 4, 4 / 3)) and tuple(rrc.size) == (32, 32)
    assert paper(img).shape == (3, 32, 32) and paper(img).dtype == torch.float32
    plain = train_transform((32, 32), TransformSpec(train_crop="none", hflip=0.0))
    ev = eval_transform((32, 32), crop_pct=None)
    torch.testing.assert_close(plain(img), ev(img))  # no augmentation left = the eval resize
    x = ev(torch.zeros(3, 64, 64, dtype=torch.uint8))
    np.testing.assert_allclose(x[:, 0, 0].numpy(), [-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225], rtol=1e-5)
