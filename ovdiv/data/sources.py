"""Where the images of a clean dataset come from: folder listings with labels, and the data root.

A :class:`FileSource` is the canonical, ordered list of files of one dataset with their labels. The
canonical order defines image indices (and so per-image corruption seeds): classes in label order,
files within a class sorted by name (torchvision's ImageFolder order).

Labelling rules:

- ``imagenet`` (``<root>/imagenet/val/<wnid>/``): label = the wnid's index among the 1000 sorted
  ImageNet wnids (:mod:`ovdiv.data.imagenet_classes`), so a partial tree keeps the standard labels.
  A tree whose folders are not all ImageNet wnids falls back to the ImageFolder rule (sorted names).
- ``imagenetv2`` (``<root>/imagenetv2/<k>/``, also ``imagenetv2-matched-frequency-format-val``):
  label = ``int(k)``. The folders are class indices, so they are sorted **numerically** (``2`` < ``10``);
  string sorting (torchvision's ImageFolder) silently mislabels 990 of the 1000 classes.
- ``imagefolder:<path>``: label = position in the natural sort of folder names (``2`` < ``10``), or
  the line number (0-based) of the folder name in a ``classes`` file.
  A relative path is taken from the current directory, or, when it does not exist there, from the
  data root.
- published ImageNet-C-bar (``<root>/imagenet-c-bar/<corruption>/<severity>/<wnid>/``, severity
  folder ``%.2f`` magnitude or ``1..5``): labels as for ``imagenet``; the files are already 224x224
  and are never resized or cropped again.

The source hash identifies the listing: SHA-256 over one line ``<relative path> TAB <size in bytes>`` per
file in canonical order (file contents are not read, so listing 50 000 files stays fast).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ovdiv.data.imagenet_classes import IMAGENET_WNID_INDEX
from ovdiv.data.preprocess import natural_key
from ovdiv.data.specs import DatasetSpec, format_severity
from ovdiv.errors import DataError, DatasetNotFoundError

__all__ = [
    "DATA_ENV",
    "IMAGE_EXTENSIONS",
    "FileSource",
    "resolve_data_root",
    "file_source",
    "published_cbar_dir",
    "list_image_folder",
]

log = logging.getLogger("ovdiv.data")

DATA_ENV = "OVDIV_DATA"
"""Environment variable naming the data root (``--data-root`` overrides it)."""

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
"""File extensions (case-insensitive) read as images, as torchvision's ImageFolder."""

_CBAR_DIRS = ("imagenet-c-bar", "ImageNet-C-Bar", "imagenet_c_bar", "ImageNet-C-bar")
_V2_DIRS = ("imagenetv2", "imagenetv2-matched-frequency-format-val", "imagenetv2-matched-frequency")


@dataclass
class FileSource:
    """The ordered files of a dataset and their labels.

    Attributes:
        root: Folder the paths are relative to.
        files: Image paths in canonical order.
        labels: int64 ``(len(files),)``.
        classes: Class folder names; ``classes[k]`` names label ``k`` where known (``imagenet*``: the wnid).
        preprocess: True: apply the eval transform (resize + center crop); False: images are used as
            stored (published ImageNet-C-bar, already 224x224).
        description: Human-readable origin for messages and manifests.
    """

    root: Path
    files: list[Path]
    labels: npt.NDArray[np.int64]
    classes: list[str]
    preprocess: bool = True
    description: str = ""
    _hash: str | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.files)

    @property
    def source_hash(self) -> str:
        """SHA-256 of the listing (relative paths and sizes, canonical order)."""
        if self._hash is None:
            h = hashlib.sha256()
            for f in self.files:
                rel = f.relative_to(self.root).as_posix()
                h.update(f"{rel}\t{f.stat().st_size}\n".encode())
            self._hash = h.hexdigest()
        return self._hash


def resolve_data_root(data_root: str | os.PathLike[str] | None, spec: str) -> Path:
    """The data root: ``data_root`` if given, else ``$OVDIV_DATA``.

    Raises:
        DatasetNotFoundError: Neither is set, or the folder does not exist.
    """
    value = data_root if data_root is not None else os.environ.get(DATA_ENV)
    if value is None or str(value) == "":
        raise DatasetNotFoundError(
            f"dataset {spec!r} needs a data root, but none is set",
            f"pass --data-root DIR (data_root=...) or set ${DATA_ENV}",
        )
    root = Path(value).expanduser()
    if not root.is_dir():
        origin = "--data-root" if data_root is not None else f"${DATA_ENV}"
        raise DatasetNotFoundError(
            f"data root {root} ({origin}) does not exist", "point it at the folder with your datasets"
        )
    return root


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _class_files(folder: Path) -> list[Path]:
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames.sort()
        files.extend(Path(dirpath) / n for n in sorted(filenames) if _is_image(n))
    if not files:
        raise DataError(
            f"class folder {folder} contains no images ({', '.join(IMAGE_EXTENSIONS)})",
            "add images or remove the empty folder",
        )
    return files


def _subfolders(root: Path) -> list[str]:
    return [e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith(".")]


def list_image_folder(root: Path, *, classes: Sequence[str] | None = None, description: str = "") -> FileSource:
    """List an ImageFolder tree: label = natural-sort position of the folder, or index in ``classes``.

    Raises:
        DatasetNotFoundError: ``root`` is missing, or a listed class has no folder.
        DataError: No class folders, or an empty class folder.
    """
    if not root.is_dir():
        raise DatasetNotFoundError(f"image folder {root} does not exist", "check the path in the spec")
    present = _subfolders(root)
    if classes is None:
        names = sorted(present, key=natural_key)
    else:
        names = list(classes)
        missing = [c for c in names if c not in present]
        if missing:
            raise DatasetNotFoundError(
                f"{len(missing)} class(es) from the classes list have no folder under {root}, e.g. {missing[0]!r}",
                "fix the classes file or the tree",
            )
        ignored = sorted(set(present) - set(names))
        if ignored:
            log.warning("%s: %d folder(s) not in the classes list are ignored, e.g. %s", root, len(ignored), ignored[0])
    if not names:
        raise DataError(f"image folder {root} has no class sub-folders", "expected <root>/<class>/<image files>")
    return _build(root, names, list(range(len(names))), description or f"imagefolder:{root}")


def _build(
    root: Path, names: Sequence[str], labels: Sequence[int], description: str, preprocess: bool = True
) -> FileSource:
    files: list[Path] = []
    label_list: list[int] = []
    for name, lab in zip(names, labels, strict=True):
        cf = _class_files(root / name)
        files.extend(cf)
        label_list.extend([lab] * len(cf))
    return FileSource(
        root=root,
        files=files,
        labels=np.asarray(label_list, dtype=np.int64),
        classes=list(names),
        preprocess=preprocess,
        description=description,
    )


def _imagenet_labelled(root: Path, description: str, preprocess: bool = True) -> FileSource:
    names = sorted(_subfolders(root))
    if not names:
        raise DataError(f"{root} has no class sub-folders", "expected <wnid>/<image files> below it")
    if all(n in IMAGENET_WNID_INDEX for n in names):
        labels = [IMAGENET_WNID_INDEX[n] for n in names]
    else:
        log.warning("%s: folder names are not all ImageNet wnids; labelling by sorted folder order", root)
        labels = list(range(len(names)))
    return _build(root, names, labels, description, preprocess)


def _imagenetv2(root: Path) -> FileSource:
    names = _subfolders(root)
    bad = [n for n in names if not n.isdigit()]
    if bad:
        raise DataError(
            f"ImageNetV2 folder {root} has a non-numeric class folder {bad[0]!r}",
            "ImageNetV2 class folders are the class indices 0..999",
        )
    if not names:
        raise DataError(f"ImageNetV2 folder {root} has no class folders", "expected <class index 0..999>/*.jpeg")
    names.sort(key=int)  # numerically: "2" < "10"
    return _build(root, names, [int(n) for n in names], f"imagenetv2:{root}")


def published_cbar_dir(root: Path, corruption: str, severity: float, table: Sequence[float] | None) -> Path | None:
    """The folder of a published ImageNet-C-bar corruption/severity under ``root``, if it exists.

    Looks for ``<root>/imagenet-c-bar/<corruption>/<"%.2f" % severity>/`` (the generator script's
    layout) and, when ``severity`` is the k-th official magnitude, ``.../<k>/`` (the tarball's layout).
    """
    folders = [f"{severity:.2f}"]
    if table is not None:
        folders += [str(k + 1) for k, m in enumerate(table) if abs(float(m) - severity) < 1e-9]
    for top in _CBAR_DIRS:
        base = root / top / corruption
        for f in folders:
            if (base / f).is_dir():
                return base / f
    return None


def file_source(
    spec: DatasetSpec,
    data_root: str | os.PathLike[str] | None,
    *,
    classes: Sequence[str] | None = None,
    published: bool | None = None,
) -> tuple[FileSource, bool]:
    """The files of a clean file-backed spec, or of a published C-bar tree for a corrupted spec.

    Args:
        spec: A parsed spec of kind imagenet / imagenetv2 / imagefolder / corrupted (on a file base).
        data_root: ``--data-root``; falls back to ``$OVDIV_DATA``.
        classes: Class folder names in label order (``imagefolder`` only).
        published: For a corrupted ``imagenet`` spec: True = require the published tree, False = never
            use it, None = use it when present.

    Returns:
        ``(source, is_published)``: when ``is_published`` the images already carry the corruption.
    """
    if spec.kind == "corrupted":
        base = spec.root_base
        if base.kind == "imagenet" and published is not False:
            root = resolve_data_root(data_root, spec.text)
            assert spec.corruption is not None and spec.severity is not None
            from ovdiv.data import corruptions

            try:
                table: Sequence[float] | None = corruptions.severity_table(spec.corruption)
            except Exception:  # not an official corruption: no 1..5 folders
                table = None
            folder = published_cbar_dir(root, spec.corruption, spec.severity, table)
            if folder is not None:
                desc = f"published ImageNet-C-bar {spec.corruption} {format_severity(spec.severity)}: {folder}"
                return _imagenet_labelled(folder, desc, preprocess=False), True
            if published:
                raise DatasetNotFoundError(
                    f"no published ImageNet-C-bar tree for {spec.text!r} under {root}",
                    f"expected {root}/imagenet-c-bar/{spec.corruption}/{spec.severity:.2f}/<wnid>/*.JPEG",
                )
        return file_source(base, data_root, classes=classes)[0], False
    if spec.kind == "imagefolder":
        assert spec.path is not None
        path = Path(spec.path).expanduser()
        if not path.is_absolute() and not path.exists():
            env_root = data_root if data_root is not None else os.environ.get(DATA_ENV)
            if env_root:
                path = Path(env_root).expanduser() / path
        return list_image_folder(path, classes=classes, description=f"imagefolder:{path}"), False
    if classes is not None:
        raise DataError(f"a classes list only applies to imagefolder specs, not {spec.text!r}")
    root = resolve_data_root(data_root, spec.text)
    if spec.kind == "imagenet":
        val = root / "imagenet" / "val"
        if not val.is_dir():
            raise DatasetNotFoundError(
                f"ImageNet val not found: {val} does not exist",
                f"put ImageNet-1k val at <data root>/imagenet/val/<wnid>/*.JPEG (data root {root})",
            )
        return _imagenet_labelled(val, f"imagenet:{val}"), False
    if spec.kind == "imagenetv2":
        for name in _V2_DIRS:
            if (root / name).is_dir():
                return _imagenetv2(root / name), False
        raise DatasetNotFoundError(
            f"ImageNetV2 not found under {root}",
            f"put ImageNetV2 matched-frequency at <data root>/imagenetv2/<class index>/*.jpeg (data root {root})",
        )
    raise DataError(f"spec {spec.text!r} is not file-backed")
