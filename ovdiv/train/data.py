"""Training / validation data: ImageFolder trees or ovdiv dataset specs, with the paper's transforms.

Sources (:class:`DataSource`):

- an ImageFolder root ``D`` with ``D/train/<class>/*.jpg`` and ``D/val/<class>/*.jpg``;
- a dataset spec for :func:`ovdiv.data.load` (e.g. ``demo:train``; validation defaults to the spec
  without ``:train``, e.g. ``demo``) — uint8 ``(N, H, W, 3)`` arrays held in memory;
- in-memory arrays ``(images uint8 (N, H, W, 3), labels int64 (N,))`` (tests, pipelines).

Train transform (DESIGN.md §8; :class:`ovdiv.models.recipes.TransformSpec` adjusts it):
``RandomResizedCrop(size, scale=(0.08, 1), ratio=(3/4, 4/3), bilinear)``, horizontal flip p=0.5,
``/255``, ImageNet mean/std normalisation. Validation: ImageFolder → resize the short side to
``size / eval_crop_pct`` (0.875) then centre-crop ``size`` (the ImageNet convention); arrays →
bilinear resize to ``size`` when it differs (what :mod:`ovdiv.runtime` does for deployed members,
so validation here matches evaluation later).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, SequentialSampler
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

from ovdiv.errors import DataError, DatasetNotFoundError
from ovdiv.models.recipes import TransformSpec

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ArrayDataset",
    "DataSource",
    "Loaders",
    "build_loaders",
    "eval_transform",
    "train_transform",
]

log = logging.getLogger("ovdiv.train")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Arrays = tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]


_INTERP = {
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "nearest": InterpolationMode.NEAREST,
}


def train_transform(
    size: tuple[int, int],
    spec: TransformSpec | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> T.Compose:
    """Training augmentation for uint8 CHW tensors / PIL images -> normalised float32 CHW.

    Args:
        size: ``(H, W)`` output size.
        spec: Transform settings; default = the paper's (RandomResizedCrop scale 0.08-1, ratio
            3/4-4/3, bilinear; flip 0.5). ``train_crop="none"`` only resizes to ``size``.
        mean: Normalisation mean ([0, 1] units).
        std: Normalisation std.
    """
    spec = spec or TransformSpec()
    interp = _INTERP[spec.interpolation]
    ops: list[Any] = [T.ToImage()]
    if spec.train_crop == "random_resized_crop":
        ops.append(T.RandomResizedCrop(size, scale=spec.scale, ratio=spec.ratio, interpolation=interp, antialias=True))
    else:
        ops.append(T.Resize(size, interpolation=interp, antialias=True))
    if spec.hflip > 0:
        ops.append(T.RandomHorizontalFlip(spec.hflip))
    ops += [T.ToDtype(torch.float32, scale=True), T.Normalize(list(mean), list(std))]
    return T.Compose(ops)


def eval_transform(
    size: tuple[int, int],
    *,
    crop_pct: float | None = 0.875,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> T.Compose:
    """Validation preprocessing: resize (+ centre crop when ``crop_pct``) then normalise."""
    ops: list[Any] = [T.ToImage()]
    if crop_pct:
        ops += [
            T.Resize(round(min(size) / crop_pct), interpolation=InterpolationMode.BILINEAR, antialias=True),
            T.CenterCrop(size),
        ]
    else:
        ops.append(T.Resize(size, interpolation=InterpolationMode.BILINEAR, antialias=True))
    ops += [T.ToDtype(torch.float32, scale=True), T.Normalize(list(mean), list(std))]
    return T.Compose(ops)


class ArrayDataset(Dataset[tuple[torch.Tensor, int]]):
    """uint8 ``(N, H, W, 3)`` images + labels as a map-style dataset of transformed tensors."""

    def __init__(self, images: npt.NDArray[np.uint8], labels: npt.NDArray[np.int64], transform: Any) -> None:
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise DataError(f"training images must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
        if labels.shape != (images.shape[0],):
            raise DataError(f"labels must be ({images.shape[0]},), got {labels.shape}")
        self.images = images
        self.labels = labels.astype(np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = torch.from_numpy(np.ascontiguousarray(self.images[i])).permute(2, 0, 1)  # (3, H, W) uint8
        return self.transform(img), int(self.labels[i])


@dataclass
class DataSource:
    """Where training (and validation) data come from — exactly one of the three fields.

    Attributes:
        root: ImageFolder root holding ``train/`` and ``val/``.
        spec: Dataset spec for :func:`ovdiv.data.load` (``demo:train``).
        arrays: In-memory ``(images, labels)`` training arrays.
        val_spec: Validation spec (default: ``spec`` without ``:train``); ignored for ``root``.
        val_arrays: In-memory validation arrays.
        limit: Use at most this many training images (spec sources).
        val_limit: Use at most this many validation images (spec sources).
        seed: Dataset seed passed to :func:`ovdiv.data.load`.
    """

    root: Path | None = None
    spec: str | None = None
    arrays: Arrays | None = None
    val_spec: str | None = None
    val_arrays: Arrays | None = None
    limit: int | None = None
    val_limit: int | None = 500
    seed: int = 0

    @classmethod
    def coerce(cls, data: DataSource | str | Path | Arrays) -> DataSource:
        """``DataSource`` from a source, a ``Path`` (ImageFolder root), a ``str`` (dataset spec) or arrays."""
        if isinstance(data, DataSource):
            return data
        if isinstance(data, tuple):
            return cls(arrays=data)
        if isinstance(data, Path):
            return cls(root=data)
        return cls(spec=data)

    def describe(self) -> str:
        """Short human/JSON description."""
        if self.root is not None:
            return str(self.root)
        if self.spec is not None:
            return self.spec
        return "arrays"


@dataclass
class Loaders:
    """Train / validation loaders and what the log records about them.

    ``generator`` drives the single-process shuffling; the trainer reseeds it every epoch
    (``seed, epoch``), so a resumed run sees the same order as an uninterrupted one.
    """

    train: DataLoader[Any]
    val: DataLoader[Any] | None
    train_size: int
    val_size: int
    num_classes_seen: int
    sampler: DistributedSampler[Any] | None
    generator: torch.Generator | None = None


def _load_spec(spec: str, limit: int | None, seed: int) -> Arrays:
    from ovdiv.data import load  # L2 -> L2 (data); imported lazily so losses import without it

    images, labels = load(spec, limit=limit, seed=seed)
    return np.asarray(images), np.asarray(labels, dtype=np.int64)


def _image_folder(path: Path, transform: Any) -> Dataset[Any]:
    from torchvision.datasets import ImageFolder

    if not path.is_dir():
        raise DatasetNotFoundError(
            f"data folder {path} does not exist", "expected <data-root>/train/<class>/*.jpg and <data-root>/val/..."
        )
    try:
        return ImageFolder(str(path), transform=transform)
    except (FileNotFoundError, RuntimeError) as exc:
        raise DatasetNotFoundError(f"data folder {path} has no class folders with images: {exc}") from exc


def build_loaders(
    source: DataSource,
    *,
    input_size: tuple[int, int],
    batch_size: int,
    workers: int = 0,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    validate: bool = True,
    pin_memory: bool = False,
    transforms: TransformSpec | None = None,
) -> Loaders:
    """Build the training and validation loaders.

    Training: shuffled, ``drop_last``, a ``DistributedSampler`` when ``world_size > 1``. Validation:
    sequential, every rank sees all of it.

    Args:
        source: Where the data comes from.
        input_size: ``(H, W)`` network input.
        batch_size: Per-process batch size.
        workers: DataLoader worker processes.
        mean: Normalisation mean.
        std: Normalisation std.
        seed: Shuffling seed.
        rank: This process's rank.
        world_size: Number of processes.
        validate: Whether to build the validation loader.
        pin_memory: Pin host memory (CUDA).
        transforms: Augmentation settings (default: the paper's).

    Returns:
        :class:`Loaders`.
    """
    tspec = transforms or TransformSpec()
    ttf = train_transform(input_size, tspec, mean, std)
    train_ds: Dataset[Any]
    val_ds: Dataset[Any] | None = None
    if source.root is not None:
        root = Path(source.root)
        if not root.is_dir():
            raise DatasetNotFoundError(f"data root {root} does not exist", "pass --data-root with train/ and val/")
        train_ds = _image_folder(root / "train", ttf)
        classes = len(train_ds.classes)  # type: ignore[attr-defined]
        if validate:
            val_ds = _image_folder(
                root / "val", eval_transform(input_size, crop_pct=tspec.eval_crop_pct, mean=mean, std=std)
            )
    else:
        if source.arrays is not None:
            images, labels = source.arrays
        elif source.spec is not None:
            images, labels = _load_spec(source.spec, source.limit, source.seed)
        else:
            raise DataError("no training data given", "pass --data-root DIR or --dataset SPEC")
        train_ds = ArrayDataset(images, labels, ttf)
        classes = int(labels.max()) + 1 if len(labels) else 0
        if validate:
            vtf = eval_transform(input_size, crop_pct=None, mean=mean, std=std)
            if source.val_arrays is not None:
                val_ds = ArrayDataset(*source.val_arrays, vtf)
            elif source.spec is not None:
                vspec = source.val_spec or source.spec.removesuffix(":train")
                if vspec != source.spec:
                    val_ds = ArrayDataset(*_load_spec(vspec, source.val_limit, source.seed), vtf)
    if len(train_ds) < batch_size * world_size:  # type: ignore[arg-type]
        raise DataError(
            f"training set {source.describe()} has {len(train_ds)} images, fewer than one batch "  # type: ignore[arg-type]
            f"({batch_size} x {world_size} processes)",
            "lower batch_size or use more data",
        )
    sampler: DistributedSampler[Any] | None = None
    gen = torch.Generator().manual_seed(seed)
    if world_size > 1:
        sampler = DistributedSampler(train_ds, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
        train_sampler: Any = sampler
    else:
        train_sampler = RandomSampler(train_ds, generator=gen)  # type: ignore[arg-type]
    common: dict[str, Any] = {"num_workers": workers, "pin_memory": pin_memory, "persistent_workers": workers > 0}
    train = DataLoader(train_ds, batch_size=batch_size, sampler=train_sampler, drop_last=True, **common)
    val = None
    if val_ds is not None:
        seq = SequentialSampler(val_ds)  # type: ignore[arg-type]
        val = DataLoader(val_ds, batch_size=batch_size, sampler=seq, **common)
    return Loaders(
        train=train,
        val=val,
        train_size=len(train_ds),  # type: ignore[arg-type]
        val_size=len(val_ds) if val_ds is not None else 0,  # type: ignore[arg-type]
        num_classes_seen=classes,
        sampler=sampler,
        generator=gen if sampler is None else None,
    )
