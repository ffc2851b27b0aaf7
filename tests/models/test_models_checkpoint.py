from __future__ import annotations

import collections

import pytest
import torch

from ovdiv.cards import IMAGENET_MEAN
from ovdiv.errors import CheckpointError, ModelError
from ovdiv.models import create_model, load_checkpoint, read_checkpoint_meta, save_checkpoint
from ovdiv.models.checkpoint import CHECKPOINT_FORMAT


class _NotAllowed:  # pickled as a custom class: must be refused by weights_only loading
    def __init__(self) -> None:
        self.x = 1


def _save_tiny(path, **kw):
    torch.manual_seed(0)
    m = create_model("tiny_resnet", num_classes=5, dropout=0.1)
    args = dict(arch="tiny_resnet", arch_args={"dropout": 0.1}, num_classes=5, input_size=(48, 40))
    args.update(kw)
    save_checkpoint(path, m, **args)
    return m.eval()


def test_round_trip(tmp_path) -> None:
    p = tmp_path / "sub" / "a.pt"
    m = _save_tiny(p, recipe={"name": "r", "epochs": 3}, extra={"epoch": 2, "tags": ("a", "b")}, std=(0.5, 0.5, 0.5))
    assert p.exists() and not [q for q in p.parent.iterdir() if q.name.startswith(".")]
    m2, meta = load_checkpoint(p)
    assert not m2.training
    x = torch.randn(2, 3, 48, 40)
    with torch.no_grad():
        torch.testing.assert_close(m2(x), m(x), rtol=0, atol=0)
    assert meta.arch == "tiny_resnet" and meta.arch_args == {"dropout": 0.1}
    assert meta.num_classes == 5 and meta.input_size == (48, 40)
    assert meta.mean == IMAGENET_MEAN and meta.std == (0.5, 0.5, 0.5)
    assert meta.recipe == {"name": "r", "epochs": 3}
    assert meta.extra == {"epoch": 2, "tags": ["a", "b"]}  # JSON-normalised
    assert meta.path == p and meta.created
    assert read_checkpoint_meta(p) == meta
    # plain torch can read it with the safe loader
    raw = torch.load(p, weights_only=True)
    assert raw["format"] == CHECKPOINT_FORMAT and "fc.weight" in raw["state_dict"]


def test_prebuilt_module_and_module_arch(tmp_path) -> None:
    p = tmp_path / "b.pt"
    m = _save_tiny(p, arch="module:ovdiv.models.resnet:tiny_resnet")
    m2, meta = load_checkpoint(p)
    assert meta.arch.startswith("module:")
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(m2(x), m(x))
    target = create_model("tiny_resnet", num_classes=5)
    m3, _ = load_checkpoint(p, model=target)
    assert m3 is target
    with torch.no_grad():
        torch.testing.assert_close(m3(x), m(x))


def test_missing_and_directory(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="directory"):
        load_checkpoint(tmp_path)


def test_corrupt_files(tmp_path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(garbage)
    good = tmp_path / "good.pt"
    _save_tiny(good)
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(trunc)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError):
        load_checkpoint(empty)


def test_non_ovdiv_and_unsafe_files(tmp_path) -> None:
    sd = tmp_path / "sd.pt"
    torch.save(create_model("tiny_resnet").state_dict(), sd)
    with pytest.raises(CheckpointError, match="not an ovdiv checkpoint"):
        load_checkpoint(sd)
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "obj": _NotAllowed()}, unsafe)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(unsafe)
    whole = tmp_path / "whole.pt"
    torch.save(create_model("tiny_resnet"), whole)  # a pickled nn.Module
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(whole)


def test_malformed_metadata_and_mismatched_weights(tmp_path) -> None:
    p = tmp_path / "m.pt"
    _save_tiny(p)
    raw = torch.load(p, weights_only=True)
    del raw["input_size"]
    bad = tmp_path / "bad_meta.pt"
    torch.save(raw, bad)
    with pytest.raises(CheckpointError, match="malformed metadata"):
        load_checkpoint(bad)
    raw = torch.load(p, weights_only=True)
    raw["arch_args"] = {"widths": [8, 16, 32]}
    wrong = tmp_path / "wrong.pt"
    torch.save(raw, wrong)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(wrong)
    raw = torch.load(p, weights_only=True)
    raw["state_dict"] = collections.OrderedDict(list(raw["state_dict"].items())[:-1])
    torch.save(raw, wrong)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(wrong)


def test_arch_resolution_errors(tmp_path) -> None:
    p = tmp_path / "c.pt"
    for arch, match in [
        ("module:os:system", "outside"),
        ("module:ovdiv.models.resnet:nope", "no function"),
        ("module:ovdiv.nonexistent_mod:f", "cannot import"),
        ("module:ovdiv.models.resnet", "must look like"),
        ("module:ovdiv.atomic:write_text", "not a model builder"),
        ("no_such_arch", "unknown architecture"),
    ]:
        _save_tiny(p, arch=arch)
        with pytest.raises(ModelError, match=match):
            load_checkpoint(p)


def test_save_rejects_non_json_metadata(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="JSON"):
        _save_tiny(tmp_path / "x.pt", extra={"obj": object()})
    with pytest.raises(CheckpointError, match="mean"):
        _save_tiny(tmp_path / "x.pt", mean=(0.5, 0.5))
    assert not (tmp_path / "x.pt").exists()
