from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ovdiv.data import load, prepare
from ovdiv.data.imagenet_classes import IMAGENET_WNIDS
from ovdiv.data.preprocess import eval_transform, natural_key
from ovdiv.errors import CorruptImageError, DataError, DatasetNotFoundError


def _save(path: Path, h: int, w: int, seed: int, fmt: str | None = None) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    # smooth-ish content so JPEG and resampling are realistic
    base = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    arr = np.asarray(Image.fromarray(base).resize((w, h), Image.Resampling.BICUBIC))
    Image.fromarray(arr).save(path, format=fmt)
    return arr


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("OVDIV_DATA", raising=False)
    return tmp_path / "data"


# ---- preprocessing -----------------------------------------------------------------------------
@pytest.mark.parametrize(("h", "w"), [(300, 400), (400, 300), (256, 256), (200, 230), (257, 1000), (375, 500)])
def test_eval_transform_equals_torchvision(h: int, w: int) -> None:
    tv = pytest.importorskip("torchvision.transforms")
    rng = np.random.default_rng(h * w)
    img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    ref = np.asarray(tv.Compose([tv.Resize(256), tv.CenterCrop(224)])(img))
    ours = eval_transform(img)
    assert ours.shape == (224, 224, 3) and ours.dtype == np.uint8
    assert np.array_equal(ours, ref)


def test_imagefolder_pipeline_equals_torchvision_imagefolder(root: Path) -> None:
    tv = pytest.importorskip("torchvision")
    for c, (h, w) in zip(["cat", "dog"], [(300, 420), (512, 380)], strict=True):
        for k in range(2):
            _save(root / "tree" / c / f"{k}.jpg", h + k, w, seed=k + h)
    ds = tv.datasets.ImageFolder(
        str(root / "tree"),
        transform=tv.transforms.Compose([tv.transforms.Resize(256), tv.transforms.CenterCrop(224)]),
    )
    x, y = load(f"imagefolder:{root / 'tree'}")
    for i in range(len(ds)):
        img, lab = ds[i]
        assert np.array_equal(x[i], np.asarray(img)) and y[i] == lab


def test_natural_key() -> None:
    assert sorted(["10", "2", "1", "b", "a10", "a2"], key=natural_key) == ["1", "2", "10", "a2", "a10", "b"]


# ---- labelling ---------------------------------------------------------------------------------
def test_imagenetv2_numeric_folders_map_to_their_class(root: Path) -> None:
    marks = {}
    for c in ["0", "1", "2", "10"]:  # lossless content (PNG bytes) so the images can be matched exactly
        marks[c] = _save(root / "imagenetv2" / c / "a.jpeg", 256, 256 + int(c), seed=int(c), fmt="PNG")
    x, y = load("imagenetv2", data_root=root)
    # numeric order 0, 1, 2, 10 (string order would put 10 before 2); label = the folder's number
    assert y.tolist() == [0, 1, 2, 10]
    for i, c in enumerate(["0", "1", "2", "10"]):
        assert np.array_equal(x[i], eval_transform(Image.fromarray(marks[c])))


def test_imagenetv2_alternative_folder_name_and_bad_folder(root: Path) -> None:
    _save(root / "imagenetv2-matched-frequency-format-val" / "999" / "a.jpeg", 64, 64, seed=1)
    _, y = load("imagenetv2", data_root=root)
    assert y.tolist() == [999]
    _save(root / "imagenetv2-matched-frequency-format-val" / "cat" / "a.jpeg", 64, 64, seed=1)
    with pytest.raises(DataError, match="non-numeric"):
        load("imagenetv2", data_root=root)


def test_imagenet_labels_by_wnid_even_for_a_partial_tree(root: Path) -> None:
    for w in (IMAGENET_WNIDS[5], IMAGENET_WNIDS[999]):
        _save(root / "imagenet" / "val" / w / "x.JPEG", 300, 300, seed=1)
    _, y = load("imagenet", data_root=root)
    assert y.tolist() == [5, 999]


def test_imagefolder_natural_sort_and_classes_file(root: Path, tmp_path: Path) -> None:
    for c in ["10", "2", "1"]:
        _save(root / "t" / c / "a.png", 230, 230, seed=int(c))
    _, y = load(f"imagefolder:{root / 't'}")
    assert y.tolist() == [0, 1, 2]  # folders 1, 2, 10
    classes = tmp_path / "classes.txt"
    classes.write_text("10\n1\n")
    x, y = load(f"imagefolder:{root / 't'}", classes=classes)
    assert y.tolist() == [0, 1] and x.shape == (2, 224, 224, 3)
    classes.write_text("10\nmissing\n")
    with pytest.raises(DatasetNotFoundError, match="missing"):
        load(f"imagefolder:{root / 't'}", classes=classes)


# ---- published ImageNet-C-bar ------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["magnitude", "index"])
def test_published_cbar_is_read_as_stored(root: Path, layout: str) -> None:
    pytest.importorskip("ovdiv.data.corruptions", reason="corruptions API").severity_table  # noqa: B018
    folder = "4.75" if layout == "magnitude" else "1"
    stored = []
    for k, w in enumerate(IMAGENET_WNIDS[:2]):
        p = root / "imagenet-c-bar" / "plasma_noise" / folder / w / f"ILSVRC2012_val_{k:08d}.JPEG"
        _save(p, 224, 224, seed=k)
        stored.append(np.asarray(Image.open(p).convert("RGB")))
    x, y = load("plasma_noise4.75", data_root=root)
    assert y.tolist() == [0, 1]
    assert np.array_equal(x, np.stack(stored))  # decoded bytes, no resize / crop / re-corruption
    ds = prepare("plasma4.75", data_root=root, cache_dir=root.parent / "cache")
    assert ds.manifest["source"]["kind"] == "published-cbar"
    assert ds.manifest["corruption"]["applied"] == "published"
    assert np.array_equal(np.asarray(ds.images), np.stack(stored))


def test_published_cbar_wrong_size_is_an_error(root: Path) -> None:
    pytest.importorskip("ovdiv.data.corruptions", reason="corruptions API").severity_table  # noqa: B018
    _save(root / "imagenet-c-bar" / "plasma_noise" / "4.75" / IMAGENET_WNIDS[0] / "a.JPEG", 256, 300, seed=0)
    with pytest.raises(DataError, match="expected 224x224"):
        load("plasma_noise4.75", data_root=root, strict=True)


# ---- bad input ---------------------------------------------------------------------------------
def _one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_missing_root_names_env_var_and_option(root: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as exc:
        load("imagenet")
    msg = _one_line(exc)
    assert "OVDIV_DATA" in msg and "--data-root" in msg
    with pytest.raises(DatasetNotFoundError) as exc:
        load("imagenet", data_root=root / "nope")
    assert "does not exist" in _one_line(exc)
    root.mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError) as exc:
        load("imagenet", data_root=root)
    assert "imagenet/val" in _one_line(exc)


def test_env_var_is_used(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _save(root / "imagenet" / "val" / IMAGENET_WNIDS[3] / "x.JPEG", 260, 300, seed=1)
    monkeypatch.setenv("OVDIV_DATA", str(root))
    _, y = load("imagenet")
    assert y.tolist() == [3]


def test_empty_class_folder(root: Path) -> None:
    _save(root / "t" / "a" / "x.png", 230, 230, seed=0)
    (root / "t" / "b").mkdir()
    with pytest.raises(DataError) as exc:
        load(f"imagefolder:{root / 't'}")
    assert "contains no images" in _one_line(exc) and str(root / "t" / "b") in str(exc.value)


def test_corrupt_jpeg_is_skipped_with_warning_or_fails_when_strict(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _save(root / "t" / "a" / "good.jpg", 240, 240, seed=0)
    good = root / "t" / "a" / "good2.jpg"
    _save(good, 240, 260, seed=1)
    bad = root / "t" / "a" / "bad.jpg"
    bad.write_bytes(good.read_bytes()[:300])  # truncated JPEG
    (root / "t" / "a" / "junk.jpg").write_bytes(b"not an image at all")
    with caplog.at_level(logging.WARNING, logger="ovdiv.data"):
        x, y = load(f"imagefolder:{root / 't'}")
    assert x.shape[0] == 2 and y.tolist() == [0, 0]
    assert "bad.jpg" in caplog.text and "junk.jpg" in caplog.text
    ds = prepare(f"imagefolder:{root / 't'}", cache_dir=root.parent / "cache")
    assert ds.manifest["skipped"] == 2 and len(ds) == 2 and ds.images.shape == (2, 224, 224, 3)
    assert np.array_equal(np.asarray(ds.images), x)
    with pytest.raises(CorruptImageError) as exc:
        load(f"imagefolder:{root / 't'}", strict=True)
    assert "bad.jpg" in _one_line(exc)


def test_unknown_spec_and_bad_options(root: Path) -> None:
    with pytest.raises(DataError, match="unknown dataset spec"):
        load("imagenet-val")
    with pytest.raises(DataError, match="limit"):
        load("demo", limit=0)
    with pytest.raises(DataError, match="jpeg_quality"):
        load("demo", jpeg_quality=101)
    with pytest.raises(DataError, match="classes"):
        load("demo", classes=["a"])
