"""Turning a dataset spec into arrays: the image pipeline, ``load``, and the prepared-data cache.

Pipeline for one spec (DESIGN.md §3): pick the images (``limit``/``subset``), decode each with PIL
and apply the eval transform (resize shorter side 256, center crop 224; published C-bar files are
taken as stored), or render the ``demo`` images; apply the corruption to the uint8 crop with the
per-image seed ``image_seed(seed, index)`` (``index`` = position in the dataset's canonical order,
before any subset is taken); optionally round-trip through JPEG. Chunks of ``batch_size`` images are
processed by a pool of ``workers`` threads (PIL decoding and numpy release the GIL) and written in
order. Every image depends only on ``(spec, seed, index, size, jpeg_quality)``, so the bytes are
identical for any batch size, worker count or shard.

Subsets (``limit=N``):

- ``subset="first"``: the first N images in canonical order (default for ``demo``, whose labels are
  already in random order);
- ``subset="random"``: N images drawn without replacement by
  ``np.random.default_rng(stream_seed(seed, "subset")).permutation(n_total)[:N]``, kept in ascending
  canonical order (default for file trees, which are sorted by class). The same ``(seed, N)`` picks
  the same images for a clean spec and its corrupted variants.

Prepared-data cache layout (``cache_dir``, default ``$OVDIV_CACHE`` or ``~/.cache/ovdiv``)::

    <cache_dir>/prepared/<spec slug>-<manifest_hash[:16]>/
        images.npy      uint8 (N, H, W, 3), opened as a read-only memmap
        labels.npy      int64 (N,)
        manifest.json   written last: its presence (and a matching identity) makes the folder trusted

The folder is built as ``.tmp-<hash>-<pid>-<random>/`` next to it and renamed into place only when
complete, so an interrupted ``prepare`` never leaves a folder that is later trusted.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from ovdiv.atomic import write_json
from ovdiv.data.seeding import image_seed, stream_seed
from ovdiv.data.sources import FileSource, file_source
from ovdiv.data.specs import DatasetSpec, expand_spec, parse_spec
from ovdiv.data.synthetic import DEMO_SIZES, demo_images
from ovdiv.errors import CacheError, CorruptImageError, DataError
from ovdiv.types import Progress, ProgressCallback
from ovdiv.versions import __version__

__all__ = [
    "CACHE_ENV",
    "MANIFEST_FORMAT",
    "PreparedDataset",
    "default_cache_dir",
    "load",
    "prepare",
    "prepare_many",
    "plan",
    "DatasetPlan",
]

log = logging.getLogger("ovdiv.data")

CACHE_ENV = "OVDIV_CACHE"
MANIFEST_FORMAT = "ovdiv-prepared/1"
Subset = Literal["first", "random"]


def default_cache_dir() -> Path:
    """``$OVDIV_CACHE`` if set, else ``~/.cache/ovdiv``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ovdiv"


# ----------------------------------------------------------------------------------------------
# planning: what to produce
# ----------------------------------------------------------------------------------------------
@dataclass
class DatasetPlan:
    """Everything needed to produce a spec's images, and its cache identity.

    Attributes:
        spec: The parsed spec.
        indices: Selected image indices (ascending, canonical order), int64 ``(N,)``.
        n_total: Size of the full dataset.
        size: Output image side (px).
        source: File listing (None for ``demo``).
        published: True when the images are a published, already-corrupted C-bar tree.
        corruption: ``(name, magnitude)`` to apply on the fly, or None.
        seed: Dataset seed.
        jpeg_quality: JPEG round-trip quality, or None.
        subset: Subset rule actually used.
        limit: The requested limit.
        classes: Explicit class list (imagefolder), or None.
    """

    spec: DatasetSpec
    indices: npt.NDArray[np.int64]
    n_total: int
    size: int
    source: FileSource | None
    published: bool
    corruption: tuple[str, float] | None
    seed: int
    jpeg_quality: int | None
    subset: str
    limit: int | None
    classes: list[str] | None = None
    _identity: dict[str, Any] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def identity(self) -> dict[str, Any]:
        """The manifest fields that determine the bytes (hashed into ``manifest_hash``)."""
        if self._identity is None:
            if self.source is None:
                src: dict[str, Any] = {"kind": "demo", "split": self.spec.root_base.split, "n_total": self.n_total}
                preprocess = "synthetic demo renderer"
            else:
                src = {
                    "kind": "published-cbar" if self.published else "files",
                    "location": self.source.description,
                    "n_total": self.n_total,
                    "listing_sha256": self.source.source_hash,
                }
                preprocess = (
                    "as stored (published 224x224)"
                    if self.published
                    else (f"resize shorter side {_resize_for(self.size)} bilinear (PIL) + center crop {self.size}")
                )
            corruption = None
            if self.corruption is not None:
                corruption = {
                    "name": self.corruption[0],
                    "severity": self.corruption[1],
                    "severity_index": _official_index(*self.corruption),
                    "applied": "on the fly",
                }
            elif self.published:
                assert self.spec.corruption is not None
                corruption = {"name": self.spec.corruption, "severity": self.spec.severity, "applied": "published"}
            self._identity = {
                "format": MANIFEST_FORMAT,
                "spec": self.spec.canonical,
                "seed": int(self.seed),
                "limit": self.limit,
                "subset": self.subset,
                "image_size": [self.size, self.size],
                "jpeg_quality": self.jpeg_quality,
                "preprocess": preprocess,
                "corruption": corruption,
                "source": src,
                "source_sha256": src.get("listing_sha256"),
                "classes_sha256": None if self.classes is None else _sha256_json(self.classes),
                "seed_function": "ovdiv.data.image_seed (SplitMix64)",
                "ovdiv_version": __version__,
            }
        return self._identity

    @property
    def manifest_hash(self) -> str:
        """SHA-256 of the canonical JSON of :attr:`identity` (sorted keys, no whitespace)."""
        return _sha256_json(self.identity)


def _official_index(name: str, severity: float) -> int | None:
    """1..5 if ``severity`` is an official ImageNet-C-bar magnitude of ``name``, else None."""
    from ovdiv.data import corruptions

    try:
        table = corruptions.severity_table(name)
    except Exception:  # a candidate-pool corruption: no official table
        return None
    hits = [k + 1 for k, m in enumerate(table) if abs(float(m) - severity) < 1e-9]
    return hits[0] if hits else None


def _sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _resize_for(crop: int) -> int:
    from ovdiv.data.preprocess import resize_for_crop

    return resize_for_crop(crop)


def plan(
    spec: str | DatasetSpec,
    *,
    limit: int | None = None,
    subset: Subset | None = None,
    data_root: str | os.PathLike[str] | None = None,
    seed: int = 0,
    size: int | None = None,
    jpeg_quality: int | None = None,
    classes: Sequence[str] | str | os.PathLike[str] | None = None,
    published: bool | None = None,
) -> DatasetPlan:
    """Resolve a single-dataset spec into a :class:`DatasetPlan` (lists files; decodes nothing).

    Args: see :func:`prepare`.

    Raises:
        DataError: Bad spec, multi-dataset spec (``cbar``), bad limit/size/quality, missing data.
    """
    parsed = parse_spec(spec) if isinstance(spec, str) else spec
    text = parsed.text
    if parsed.kind == "cbar":
        raise DataError(
            f"spec {text!r} names several datasets (one per corruption and severity)",
            "expand it with ovdiv.data.expand_spec (the CLI does this) and load each one",
        )
    if limit is not None and (not isinstance(limit, int | np.integer) or limit <= 0):
        raise DataError(f"limit must be a positive integer, got {limit!r}")
    if jpeg_quality is not None and not 1 <= int(jpeg_quality) <= 100:
        raise DataError(f"jpeg_quality must be in 1..100, got {jpeg_quality!r}", "85 mimics the published C-bar files")
    if subset is not None and subset not in ("first", "random"):
        raise DataError(f"unknown subset rule {subset!r}", "use 'first' or 'random'")
    class_list = _read_classes(classes)
    base = parsed.root_base
    corruption = None
    if not parsed.is_clean:
        assert parsed.corruption is not None and parsed.severity is not None
        corruption = (parsed.corruption, float(parsed.severity))
    source: FileSource | None = None
    is_published = False
    if base.kind == "demo":
        if class_list is not None:
            raise DataError(f"a classes list only applies to imagefolder specs, not {text!r}")
        out_size = 64 if size is None else int(size)
        if out_size < 16:
            raise DataError(f"image size {out_size} is too small for {text!r}", "use size >= 16")
        n_total = DEMO_SIZES[base.split]
        default_subset = "first"
    else:
        source, is_published = file_source(parsed, data_root, classes=class_list, published=published)
        out_size = 224 if size is None else int(size)
        if is_published and out_size != 224:
            raise DataError(
                f"{text!r} is read from published 224x224 ImageNet-C-bar files; size {out_size} is not possible",
                "omit the size (published images are never resized)",
            )
        if out_size < 16:
            raise DataError(f"image size {out_size} is too small for {text!r}", "use size >= 16 (default 224)")
        if is_published:
            corruption = None
        n_total = len(source)
        default_subset = "random"
    rule = subset or default_subset
    n = n_total if limit is None else min(int(limit), n_total)
    if limit is not None and limit > n_total:
        log.info("%s: limit %d > %d images; using all", text, limit, n_total)
    if rule == "first" or n == n_total:
        indices = np.arange(n, dtype=np.int64)
    else:
        perm = np.random.default_rng(stream_seed(seed, "subset")).permutation(n_total)[:n]
        indices = np.sort(perm).astype(np.int64).reshape(-1)
    return DatasetPlan(
        spec=parsed,
        indices=indices,
        n_total=n_total,
        size=out_size,
        source=source,
        published=is_published,
        corruption=corruption,
        seed=int(seed),
        jpeg_quality=None if jpeg_quality is None else int(jpeg_quality),
        subset=rule if limit is not None else "all",
        limit=None if limit is None else int(limit),
        classes=class_list,
    )


def _read_classes(classes: Sequence[str] | str | os.PathLike[str] | None) -> list[str] | None:
    if classes is None:
        return None
    if isinstance(classes, str | os.PathLike):
        path = Path(classes)
        if not path.is_file():
            raise DataError(f"classes file {path} does not exist", "one class folder name per line")
        names = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    else:
        names = [str(c) for c in classes]
    if not names:
        raise DataError(f"classes list {classes!s} is empty", "one class folder name per line")
    if len(set(names)) != len(names):
        raise DataError(f"classes list {classes!s} has duplicate names")
    return names


# ----------------------------------------------------------------------------------------------
# producing images
# ----------------------------------------------------------------------------------------------
@dataclass
class _Chunk:
    images: npt.NDArray[np.uint8]
    labels: npt.NDArray[np.int64]
    skipped: list[str]


def _produce_chunk(p: DatasetPlan, idx: npt.NDArray[np.int64], strict: bool) -> _Chunk:
    """Images for the canonical indices ``idx`` (ascending); skipped unreadable files are dropped."""
    skipped: list[str] = []
    if p.source is None:
        base = p.spec.root_base
        images, labels = demo_images(idx, size=p.size, seed=p.seed, split=base.split)  # type: ignore[arg-type]
        kept = idx
    else:
        from ovdiv.data.preprocess import eval_transform, open_rgb

        out: list[np.ndarray] = []
        keep: list[int] = []
        for j, i in enumerate(idx):
            path = p.source.files[int(i)]
            try:
                img = open_rgb(path)
                if p.published:
                    if img.size != (p.size, p.size):
                        raise CorruptImageError(
                            f"published C-bar image {path} is {img.size[0]}x{img.size[1]}, expected {p.size}x{p.size}",
                            "published ImageNet-C-bar files are 224x224; re-download the tree",
                        )
                    arr = np.asarray(img, dtype=np.uint8).copy()
                else:
                    arr = eval_transform(img, crop=p.size)
            except CorruptImageError as exc:
                if strict:
                    raise
                log.warning("skipping unreadable image: %s", exc.message)
                skipped.append(str(path))
                continue
            out.append(arr)
            keep.append(j)
        kept = idx[keep]
        images = np.stack(out) if out else np.empty((0, p.size, p.size, 3), np.uint8)
        labels = p.source.labels[kept]
    if p.corruption is not None and len(kept):
        from ovdiv.data.corruptions import corrupt_batch

        name, severity = p.corruption
        images = corrupt_batch(images, name, severity, [image_seed(p.seed, int(i)) for i in kept])
    if p.jpeg_quality is not None and len(kept):
        from ovdiv.data.preprocess import jpeg_roundtrip

        images = np.stack([jpeg_roundtrip(im, p.jpeg_quality) for im in images])
    return _Chunk(np.ascontiguousarray(images, dtype=np.uint8), np.asarray(labels, dtype=np.int64), skipped)


def _default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def _iter_chunks(
    p: DatasetPlan, *, workers: int | None, batch_size: int, strict: bool, executor: str = "local"
) -> Iterator[tuple[int, _Chunk]]:
    """Yield ``(n_requested_so_far, chunk)`` in canonical order (``executor="ray"``: chunks are Ray tasks)."""
    if batch_size <= 0:
        raise DataError(f"batch_size must be positive, got {batch_size}")
    n_workers = _default_workers() if workers is None else int(workers)
    if n_workers <= 0:
        raise DataError(f"workers must be >= 1, got {workers}")
    bounds = [(s, min(s + batch_size, len(p.indices))) for s in range(0, len(p.indices), batch_size)]
    if executor == "ray":
        from ovdiv.data.executor_ray import iter_chunks_ray

        yield from iter_chunks_ray(p, bounds, strict=strict)
        return

    def job(b: tuple[int, int]) -> _Chunk:
        return _produce_chunk(p, p.indices[b[0] : b[1]], strict)

    if n_workers == 1 or len(bounds) <= 1:
        for b in bounds:
            yield b[1], job(b)
        return
    with ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="ovdiv-data") as pool:
        # bounded look-ahead so memory stays O(workers * batch_size) images
        pending: list[tuple[int, Any]] = []
        it = iter(bounds)
        for b in it:
            pending.append((b[1], pool.submit(job, b)))
            if len(pending) >= 2 * n_workers:
                break
        while pending:
            end, fut = pending.pop(0)
            chunk = fut.result()
            nxt = next(it, None)
            if nxt is not None:
                pending.append((nxt[1], pool.submit(job, nxt)))
            yield end, chunk


def _emit(progress: ProgressCallback | None, task: str, done: int, total: int, detail: str = "") -> None:
    if progress is not None:
        progress(Progress(task=task, completed=done, total=total, detail=detail))


def materialise(
    p: DatasetPlan,
    *,
    workers: int | None = None,
    batch_size: int = 32,
    strict: bool = False,
    progress: ProgressCallback | None = None,
    write: Callable[[int, _Chunk], None] | None = None,
    executor: str = "local",
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64], list[str]] | tuple[None, None, list[str]]:
    """Produce the plan's images; in memory, or streamed to ``write(offset, chunk)``.

    Returns:
        ``(images, labels, skipped_files)``; images/labels are None when ``write`` is given.
    """
    task = f"prepare {p.spec.canonical}"
    skipped: list[str] = []
    parts: list[_Chunk] = []
    offset = 0
    _emit(progress, task, 0, len(p))
    for done, chunk in _iter_chunks(p, workers=workers, batch_size=batch_size, strict=strict, executor=executor):
        skipped.extend(chunk.skipped)
        if write is not None:
            write(offset, chunk)
        else:
            parts.append(chunk)
        offset += len(chunk.labels)
        _emit(progress, task, done, len(p), f"{len(skipped)} skipped" if skipped else "")
    if skipped:
        log.warning(
            "%s: skipped %d unreadable image(s) (use strict=True / --strict to fail)", p.spec.text, len(skipped)
        )
    if write is not None:
        return None, None, skipped
    if parts:
        return np.concatenate([c.images for c in parts]), np.concatenate([c.labels for c in parts]), skipped
    return np.empty((0, p.size, p.size, 3), np.uint8), np.empty(0, np.int64), skipped


# ----------------------------------------------------------------------------------------------
# the prepared-data cache
# ----------------------------------------------------------------------------------------------
@dataclass
class PreparedDataset:
    """A prepared dataset in the cache.

    Attributes:
        path: Its cache folder.
        images: uint8 ``(N, H, W, 3)`` read-only memmap.
        labels: int64 ``(N,)``.
        manifest: The manifest dict (identity fields + ``manifest_hash``, ``n``, ``skipped``, ...).
    """

    path: Path
    images: np.memmap
    labels: npt.NDArray[np.int64]
    manifest: dict[str, Any]

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def manifest_hash(self) -> str:
        """SHA-256 of the manifest's identity fields (also the cache folder key)."""
        return str(self.manifest["manifest_hash"])

    @property
    def spec(self) -> str:
        """Canonical spec."""
        return str(self.manifest["spec"])

    def batches(
        self, batch_size: int, start: int = 0, stop: int | None = None
    ) -> Iterator[tuple[int, npt.NDArray[np.uint8], npt.NDArray[np.int64]]]:
        """Yield ``(start_index, images (B,H,W,3), labels (B,))`` over ``[start, stop)``."""
        if batch_size <= 0:
            raise DataError(f"batch_size must be positive, got {batch_size}")
        stop = len(self) if stop is None else min(stop, len(self))
        for s in range(start, stop, batch_size):
            e = min(s + batch_size, stop)
            yield s, np.asarray(self.images[s:e]), self.labels[s:e]

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> PreparedDataset:
        """Open a prepared folder; raises CacheError unless it is complete and consistent."""
        path = Path(path)
        mpath = path / "manifest.json"
        try:
            manifest = json.loads(mpath.read_text(encoding="utf-8"))
            images = np.load(path / "images.npy", mmap_mode="r")
            labels = np.load(path / "labels.npy")
        except (OSError, ValueError) as exc:
            raise CacheError(
                f"prepared dataset {path} is incomplete or unreadable: {exc}", "delete the folder"
            ) from exc
        n = manifest.get("n")
        size = manifest.get("image_size", [None, None])
        ok = (
            isinstance(manifest, dict)
            and manifest.get("format") == MANIFEST_FORMAT
            and images.dtype == np.uint8
            and images.shape == (n, size[0], size[1], 3)
            and labels.shape == (n,)
            and manifest.get("manifest_hash") == _sha256_json(_identity_of(manifest))
        )
        if not ok:
            raise CacheError(f"prepared dataset {path} is inconsistent with its manifest", "delete the folder")
        return cls(path=path, images=images, labels=labels.astype(np.int64, copy=False), manifest=manifest)


_RESULT_KEYS = ("manifest_hash", "n", "skipped", "skipped_files", "created", "labels_sha256", "ovdiv_tool")


def _identity_of(manifest: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in manifest.items() if k not in _RESULT_KEYS}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:48].strip("_") or "spec"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean_stale(parent: Path, key: str) -> None:
    for tmp in parent.glob(f".tmp-{key}-*"):
        try:
            pid = int(tmp.name.split("-")[2])
        except (IndexError, ValueError):
            continue
        if not _pid_alive(pid):
            log.info("removing an interrupted prepare: %s", tmp)
            shutil.rmtree(tmp, ignore_errors=True)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def prepare(
    spec: str | DatasetSpec,
    *,
    limit: int | None = None,
    subset: Subset | None = None,
    data_root: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    workers: int | None = None,
    strict: bool = False,
    jpeg_quality: int | None = None,
    size: int | None = None,
    classes: Sequence[str] | str | os.PathLike[str] | None = None,
    published: bool | None = None,
    batch_size: int = 32,
    progress: ProgressCallback | None = None,
    executor: str = "local",
    ray_address: str | None = None,
) -> PreparedDataset:
    """Prepare a dataset spec once into the cache (or reuse a matching prepared copy).

    Args:
        spec: A single-dataset spec (``cbar`` must be expanded first, see :func:`expand_spec`).
        limit: At most this many images (see ``subset``).
        subset: ``"first"`` or ``"random"`` (module docstring); default first for demo, random otherwise.
        data_root: Root of the datasets; default ``$OVDIV_DATA``.
        cache_dir: Cache root; default ``$OVDIV_CACHE`` or ``~/.cache/ovdiv``.
        seed: Dataset seed (per-image seeds ``image_seed(seed, index)``).
        workers: Threads decoding/corrupting in parallel (default min(4, cpu count)).
        strict: Fail on the first unreadable image instead of skipping it with a warning.
        jpeg_quality: Round-trip every image through JPEG at this quality (85 mimics published C-bar).
        size: Output side: crop size for file datasets (default 224; resize = size/0.875), render
            size for ``demo`` (default 64).
        classes: ``imagefolder`` class names in label order (a list or a file, one name per line).
        published: For corrupted ``imagenet`` specs: use the published C-bar tree (True), generate
            (False), or use it when present (None).
        batch_size: Images per work unit (does not change the bytes).
        progress: Progress callback.
        executor: ``local`` (default: ``workers`` threads) or ``ray`` (each chunk is a Ray task; the
            prepared folder is identical, see :mod:`ovdiv.data.executor_ray`).
        ray_address: Ray cluster for ``executor="ray"`` (default: a running cluster, else a local Ray).

    Returns:
        The :class:`PreparedDataset`.

    Raises:
        DataError: Bad spec or input (see :func:`plan`); CorruptImageError when ``strict``.
        CacheError: The cache folder cannot be written.
    """
    from ovdiv.raycluster import check_executor

    executor = check_executor(executor, ray_address)
    p = plan(
        spec, limit=limit, subset=subset, data_root=data_root, seed=seed, size=size,
        jpeg_quality=jpeg_quality, classes=classes, published=published,
    )  # fmt: skip
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    parent = root / "prepared"
    key = p.manifest_hash
    final = parent / f"{_slug(p.spec.canonical)}-{key[:16]}"
    if final.exists():
        try:
            ds = PreparedDataset.open(final)
            if _identity_of(ds.manifest) == p.identity:
                log.info("%s: reusing prepared %s", p.spec.text, final)
                return ds
        except CacheError as exc:
            log.warning("%s; rebuilding it", exc.message)
        shutil.rmtree(final, ignore_errors=True)
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CacheError(f"cannot create cache folder {parent}: {exc}", "pass a writable --cache-dir") from exc
    _clean_stale(parent, key[:16])
    tmp = parent / f".tmp-{key[:16]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        with _executor_session(executor, ray_address):
            _write_prepared(
                p, tmp, workers=workers, strict=strict, batch_size=batch_size, progress=progress, executor=executor
            )
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.exists():
                raise
            log.info("%s was prepared concurrently; using that copy", final)
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    with contextlib.suppress(OSError):
        fd = os.open(parent, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    return PreparedDataset.open(final)


@contextlib.contextmanager
def _executor_session(executor: str, ray_address: str | None) -> Iterator[None]:
    """A Ray connection around the block for ``executor="ray"`` (reused when one is already open)."""
    if executor != "ray":
        yield
        return
    from ovdiv.raycluster import connect

    with connect(ray_address):
        yield


def _write_prepared(
    p: DatasetPlan,
    tmp: Path,
    *,
    workers: int | None,
    strict: bool,
    batch_size: int,
    progress: ProgressCallback | None,
    executor: str = "local",
) -> None:
    n = len(p)
    images = np.lib.format.open_memmap(tmp / "images.npy", mode="w+", dtype=np.uint8, shape=(n, p.size, p.size, 3))
    labels = np.empty(n, dtype=np.int64)

    def write(offset: int, chunk: _Chunk) -> None:
        k = len(chunk.labels)
        images[offset : offset + k] = chunk.images
        labels[offset : offset + k] = chunk.labels

    _, _, skipped = materialise(
        p, workers=workers, batch_size=batch_size, strict=strict, progress=progress, write=write, executor=executor
    )
    n_ok = n - len(skipped)
    images.flush()
    if n_ok != n:  # compact: the header records the final length
        compact = np.lib.format.open_memmap(
            tmp / "images.tmp.npy", mode="w+", dtype=np.uint8, shape=(n_ok, p.size, p.size, 3)
        )
        compact[:] = images[:n_ok]
        compact.flush()
        del compact
        del images
        os.replace(tmp / "images.tmp.npy", tmp / "images.npy")
    else:
        del images
    np.save(tmp / "labels.npy", labels[:n_ok])
    _fsync_file(tmp / "images.npy")
    _fsync_file(tmp / "labels.npy")
    manifest = dict(p.identity)
    manifest.update(
        manifest_hash=p.manifest_hash,
        n=n_ok,
        skipped=len(skipped),
        skipped_files=skipped[:100],
        labels_sha256=hashlib.sha256(labels[:n_ok].tobytes()).hexdigest(),
        created=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    )
    write_json(tmp / "manifest.json", manifest)  # last: makes the folder trusted


def load(
    spec: str | DatasetSpec,
    *,
    limit: int | None = None,
    data_root: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    workers: int | None = None,
    progress: ProgressCallback | None = None,
    **kwargs: Any,
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    """Images and labels of a dataset spec.

    With ``cache_dir`` the data go through the prepared-data cache (:func:`prepare`; images are a
    read-only memmap); without it they are produced in memory (fine for ``demo`` and small limits).

    Args:
        spec: Dataset spec (see :mod:`ovdiv.data.specs`).
        limit: At most this many images.
        data_root: Root of the datasets; default ``$OVDIV_DATA``.
        cache_dir: Prepared-data cache root; None = produce in memory.
        seed: Dataset seed.
        workers: Worker threads.
        progress: Progress callback.
        **kwargs: ``subset``, ``strict``, ``jpeg_quality``, ``size``, ``classes``, ``published``,
            ``batch_size`` (as :func:`prepare`).

    Returns:
        ``(images uint8 (N,H,W,3), labels int64 (N,))``.
    """
    if cache_dir is not None:
        ds = prepare(spec, limit=limit, data_root=data_root, cache_dir=cache_dir, seed=seed, workers=workers,
                     progress=progress, **kwargs)  # fmt: skip
        return ds.images, ds.labels
    strict = bool(kwargs.pop("strict", False))
    batch_size = int(kwargs.pop("batch_size", 32))
    p = plan(spec, limit=limit, data_root=data_root, seed=seed, **kwargs)
    images, labels, _ = materialise(p, workers=workers, batch_size=batch_size, strict=strict, progress=progress)
    assert images is not None and labels is not None
    return images, labels


def prepare_many(specs: Sequence[str], **kwargs: Any) -> list[PreparedDataset]:
    """Expand every spec (``cbar`` -> 50, see :func:`expand_spec`) and :func:`prepare` each, in order.

    Args:
        specs: Dataset specs.
        **kwargs: Passed to :func:`prepare` (``limit``, ``cache_dir``, ``seed``, ``progress``, ``executor``, ...).
    """
    from ovdiv.raycluster import check_executor

    expanded = [one for spec in specs for one in expand_spec(spec)]
    executor = check_executor(kwargs.get("executor"), kwargs.get("ray_address"))
    with _executor_session(executor, kwargs.get("ray_address")):  # one connection for every spec
        return [prepare(one, **kwargs) for one in expanded]
