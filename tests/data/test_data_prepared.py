from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import ovdiv.data.prepared as prepared_mod
from ovdiv.data import PreparedDataset, image_seed, load, make_demo, plan, prepare
from ovdiv.errors import CacheError, DataError


def _trusted(cache: Path) -> list[Path]:
    parent = cache / "prepared"
    return sorted(p for p in parent.iterdir() if not p.name.startswith(".")) if parent.is_dir() else []


def _tree(root: Path, n_classes: int = 3, per_class: int = 4) -> Path:
    rng = np.random.default_rng(0)
    for c in range(n_classes):
        for k in range(per_class):
            p = root / f"c{c}" / f"{k}.jpg"
            p.parent.mkdir(parents=True, exist_ok=True)
            h, w = 240 + 7 * k, 300 - 5 * c
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(p)
    return root


# ---- determinism ---------------------------------------------------------------------------------
def test_clean_bytes_independent_of_batch_size_and_workers(tmp_path: Path) -> None:
    spec = f"imagefolder:{_tree(tmp_path / 't')}"
    ref, lab = load(spec, batch_size=64, workers=1)
    for bs, w in [(1, 1), (7, 2), (64, 2)]:
        x, y = load(spec, batch_size=bs, workers=w)
        assert np.array_equal(x, ref) and np.array_equal(y, lab)


@pytest.mark.parametrize("spec", ["lines1.6@demo", "plasma4.0@demo", "checkerboard4.0@demo", "waterdrop7.0@demo"])
def test_corrupted_bytes_independent_of_batch_size_workers_and_shard(spec: str) -> None:
    ref, lab = load(spec, limit=33, batch_size=64, workers=1)
    assert ref.shape == (33, 64, 64, 3)
    clean, clean_lab = make_demo(33)
    assert np.array_equal(lab, clean_lab)
    assert not np.array_equal(ref, clean)  # the corruption did something
    for bs, w in [(1, 1), (7, 2), (64, 2)]:
        x, _ = load(spec, limit=33, batch_size=bs, workers=w)
        assert np.array_equal(x, ref), (bs, w)
    # per-image seeds: image i is corrupt(image_i, seed=image_seed(0, i)) whatever else is produced
    from ovdiv.data.corruptions import corrupt
    from ovdiv.data.specs import parse_spec

    p = parse_spec(spec)
    assert p.corruption is not None and p.severity is not None
    for i in (0, 13, 32):
        assert np.array_equal(ref[i], corrupt(clean[i], p.corruption, p.severity, image_seed(0, i)))


def test_corrupted_file_dataset_matches_corrupting_the_clean_crops(tmp_path: Path) -> None:
    from ovdiv.data.corruptions import corrupt

    spec = f"imagefolder:{_tree(tmp_path / 't', 2, 3)}"
    clean, _ = load(spec)
    x, _ = load(f"lines1.6@{spec}", workers=2, batch_size=4)
    for i in range(len(clean)):
        assert np.array_equal(x[i], corrupt(clean[i], "lines", 1.6, image_seed(0, i)))


def test_subsets() -> None:
    first = plan("demo", limit=10)
    assert first.indices.tolist() == list(range(10)) and first.subset == "first"
    rand = plan("demo", limit=10, subset="random", seed=3)
    assert rand.indices.tolist() == sorted(rand.indices.tolist()) and len(set(rand.indices.tolist())) == 10
    assert rand.indices.tolist() == plan("demo", limit=10, subset="random", seed=3).indices.tolist()
    assert rand.indices.tolist() != plan("demo", limit=10, subset="random", seed=4).indices.tolist()
    x, y = load("demo", limit=10, subset="random", seed=3)
    ref_x, ref_y = make_demo(1000, seed=3)
    assert np.array_equal(x, ref_x[rand.indices]) and np.array_equal(y, ref_y[rand.indices])
    with pytest.raises(DataError, match="subset"):
        plan("demo", limit=3, subset="middle")  # type: ignore[arg-type]


def test_jpeg_roundtrip_matches_pillow_q85() -> None:
    x, _ = load("demo", limit=3, jpeg_quality=85)
    clean, _ = make_demo(3)
    for i in range(3):
        buf = io.BytesIO()
        Image.fromarray(clean[i]).save(buf, format="JPEG", quality=85, optimize=True)
        assert np.array_equal(x[i], np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")))
    assert not np.array_equal(x, clean)


def test_multi_dataset_spec_must_be_expanded() -> None:
    with pytest.raises(DataError, match="expand_spec"):
        load("cbar@demo")


# ---- the cache -----------------------------------------------------------------------------------
def test_prepare_writes_memmap_labels_manifest_and_reuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    ds = prepare("demo", limit=50, cache_dir=cache)
    assert isinstance(ds, PreparedDataset) and len(ds) == 50
    assert isinstance(ds.images, np.memmap) and ds.images.dtype == np.uint8 and ds.images.shape == (50, 64, 64, 3)
    x, y = make_demo(50)
    assert np.array_equal(np.asarray(ds.images), x) and np.array_equal(ds.labels, y)
    m = ds.manifest
    for key in ("spec", "seed", "source", "ovdiv_version", "n", "image_size", "jpeg_quality", "corruption"):
        assert key in m
    assert m["spec"] == "demo" and m["n"] == 50 and m["seed"] == 0
    identity = {k: v for k, v in m.items() if k not in prepared_mod._RESULT_KEYS}
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":")).encode()
    assert m["manifest_hash"] == hashlib.sha256(canonical).hexdigest()
    assert ds.path.name.endswith(m["manifest_hash"][:16])
    assert json.loads((ds.path / "manifest.json").read_text()) == m
    # batches
    got = list(ds.batches(16, start=4, stop=40))
    assert [s for s, _, _ in got] == [4, 20, 36]
    assert np.array_equal(np.concatenate([b for _, b, _ in got]), x[4:40])

    # reuse: nothing is produced again
    def boom(*a: object, **k: object) -> None:
        raise AssertionError("should have reused the cache")

    monkeypatch.setattr(prepared_mod, "_write_prepared", boom)
    again = prepare("demo", limit=50, cache_dir=cache)
    assert again.path == ds.path
    xs, ys = load("demo", limit=50, cache_dir=cache)
    assert np.array_equal(xs, x) and np.array_equal(ys, y)
    # a different request is a different folder
    monkeypatch.undo()
    other = prepare("demo", limit=50, cache_dir=cache, seed=1)
    assert other.path != ds.path and len(_trusted(cache)) == 2


def test_cache_dir_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OVDIV_CACHE", str(tmp_path / "envcache"))
    ds = prepare("demo", limit=5)
    assert ds.path.parent == tmp_path / "envcache" / "prepared"


def test_exception_mid_write_leaves_nothing(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    calls = []

    def progress(ev: object) -> None:
        calls.append(ev)
        if len(calls) == 3:
            raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of writing

    with pytest.raises(KeyboardInterrupt):
        prepare("demo", limit=200, cache_dir=cache, batch_size=32, progress=progress)
    assert list((cache / "prepared").iterdir()) == []  # no final folder, temp folder removed
    ds = prepare("demo", limit=200, cache_dir=cache)
    assert np.array_equal(np.asarray(ds.images), make_demo(200)[0])


def test_killed_prepare_is_never_trusted(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    script = textwrap.dedent(
        f"""
        import os, signal
        from ovdiv.data import prepare
        n = [0]
        def progress(ev):
            n[0] += 1
            if n[0] == 3:
                os.kill(os.getpid(), signal.SIGKILL)  # dies half-way, no cleanup runs
        prepare("demo", limit=256, cache_dir={str(cache)!r}, batch_size=32, workers=1, progress=progress)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120, check=False)
    assert proc.returncode == -9, proc.stderr.decode()
    leftovers = list((cache / "prepared").iterdir())
    assert leftovers and all(p.name.startswith(".tmp-") for p in leftovers)  # only an untrusted temp dir
    assert _trusted(cache) == []
    ds = prepare("demo", limit=256, cache_dir=cache)
    assert np.array_equal(np.asarray(ds.images), make_demo(256)[0])
    assert [p.name for p in (cache / "prepared").iterdir()] == [ds.path.name]  # stale temp dir cleaned


def test_inconsistent_folder_is_rebuilt(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    ds = prepare("demo", limit=40, cache_dir=cache)
    path = ds.path
    del ds
    # a folder with images but without its manifest (e.g. a copy that stopped half-way)
    (path / "manifest.json").unlink()
    ds = prepare("demo", limit=40, cache_dir=cache)
    assert (path / "manifest.json").exists() and np.array_equal(np.asarray(ds.images), make_demo(40)[0])
    del ds
    # truncated images file with a valid manifest
    data = (path / "images.npy").read_bytes()
    (path / "images.npy").write_bytes(data[: len(data) // 2])
    ds = prepare("demo", limit=40, cache_dir=cache)
    assert np.array_equal(np.asarray(ds.images), make_demo(40)[0])
    del ds
    # tampered manifest: hash no longer matches its identity
    m = json.loads((path / "manifest.json").read_text())
    m["seed"] = 7
    (path / "manifest.json").write_text(json.dumps(m))
    ds = prepare("demo", limit=40, cache_dir=cache)
    assert ds.manifest["seed"] == 0


def test_unusable_cache_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(CacheError, match="cache-dir"):
        prepare("demo", limit=2, cache_dir=blocker)
