"""Data loaders for super-network training, BN adaptation and search (torch only, no nncf).

Two sources:

- an ImageFolder tree under ``--data-root`` (dataset ``imagenet``/``imagefolder``): ``train/`` and
  ``val/`` sub-folders (the root itself when they are absent); training uses RandomResizedCrop +
  flip, validation Resize(size/0.875) + CenterCrop — ImageNet normalisation in both;
- any ovdiv dataset spec (``demo:train``, ``lines1.6@demo``...) read with ``ovdiv.data.load`` into
  memory (uint8 NHWC), resized once to the network input, normalised; training adds a random flip.
  This is how the search evaluates subnets on a cached validation subset.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from ovdiv.cards import IMAGENET_MEAN, IMAGENET_STD
from ovdiv.errors import DataError, DatasetNotFoundError

from .config import IMAGEFOLDER_DATASETS

__all__ = ["load_arrays", "arrays_to_tensor", "make_loader", "build_loaders"]

log = logging.getLogger("ovdiv.supernet")


def load_arrays(
    spec: str, *, limit: int | None, data_root: str | Path | None, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N,H,W,3) images and int64 (N,) labels of an ovdiv dataset spec."""
    from ovdiv.data import load

    images, labels = load(spec, limit=limit, data_root=data_root, seed=seed)
    return np.asarray(images), np.asarray(labels, dtype=np.int64)


def arrays_to_tensor(images: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """uint8 (N,H,W,3) -> float32 (N,3,size) normalised with ImageNet mean/std (bilinear resize if needed)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
    if tuple(x.shape[-2:]) != tuple(size):
        x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous()


class _FlipDataset(Dataset):
    """A tensor dataset with a random horizontal flip (p=0.5) drawn from a seeded generator."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, seed: int) -> None:
        self.x, self.y = x, y
        self.gen = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img = self.x[i]
        if bool(torch.rand((), generator=self.gen) < 0.5):
            img = img.flip(-1)
        return img, self.y[i]


def make_loader(
    dataset: Any, batch_size: int, *, shuffle: bool, seed: int, workers: int, drop_last: bool
) -> DataLoader:
    """A DataLoader with a seeded shuffle."""
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=gen,
        num_workers=workers,
        drop_last=drop_last,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=workers > 0,
    )


def _imagefolder(root: Path, size: tuple[int, int], train: bool) -> Dataset:
    from torchvision import datasets, transforms

    norm = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    if train:
        tf = transforms.Compose(
            [transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip(), transforms.ToTensor(), norm]
        )
    else:
        resize = (round(size[0] / 0.875), round(size[1] / 0.875))
        tf = transforms.Compose([transforms.Resize(resize), transforms.CenterCrop(size), transforms.ToTensor(), norm])
    try:
        return datasets.ImageFolder(str(root), transform=tf)
    except (FileNotFoundError, OSError) as exc:
        raise DatasetNotFoundError(f"no class folders with images under {root}: {exc}") from exc


def _subset(ds: Any, limit: int | None, seed: int) -> Any:
    if limit is None or limit >= len(ds):
        return ds
    idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:limit].tolist()
    return torch.utils.data.Subset(ds, sorted(idx))


def build_loaders(
    cfg: Any,
    *,
    data_root: str | Path | None,
    dataset: str | None,
    seed: int,
    val_limit: int | None = None,
    need_train: bool = True,
) -> tuple[DataLoader | None, DataLoader]:
    """Training and validation loaders for a :class:`SupernetConfig`.

    Args:
        cfg: The validated config.
        data_root: ImageFolder root (or the data root of dataset specs that read files).
        dataset: Overrides the config's ``dataset`` (training source).
        seed: Shuffle / subset seed.
        val_limit: Overrides the config's ``val_limit`` (search uses ``search_limit``).
        need_train: Build the training loader (False for search / BN-only use).

    Returns:
        ``(train_loader | None, val_loader)``; both yield ``(x float32 (B,3,H,W), y int64 (B,))``.
    """
    d = cfg.data
    size = cfg.input_size
    train_spec = dataset or d["dataset"]
    val_spec = d.get("val_dataset") or train_spec
    if dataset is not None and d.get("val_dataset") is None:
        val_spec = dataset
    vlimit = val_limit if val_limit is not None else d.get("val_limit")
    workers = int(d["workers"])
    train_loader = None
    if train_spec.lower() in IMAGEFOLDER_DATASETS or val_spec.lower() in IMAGEFOLDER_DATASETS:
        if data_root is None:
            raise DatasetNotFoundError(
                f"dataset {train_spec!r} is an ImageFolder tree and needs --data-root",
                "pass --data-root DIR (with train/ and val/), or --dataset SPEC such as demo:train",
            )
        root = Path(data_root)
        if not root.is_dir():
            raise DatasetNotFoundError(f"data root {root} does not exist")
    if need_train:
        if train_spec.lower() in IMAGEFOLDER_DATASETS:
            root = Path(data_root)  # type: ignore[arg-type]
            tr_root = root / "train" if (root / "train").is_dir() else root
            train_ds: Any = _subset(_imagefolder(tr_root, size, True), d.get("train_limit"), seed)
        else:
            imgs, labels = load_arrays(train_spec, limit=d.get("train_limit"), data_root=data_root, seed=seed)
            train_ds = _FlipDataset(arrays_to_tensor(imgs, size), torch.from_numpy(labels), seed)
        if len(train_ds) < int(d["batch_size"]):
            raise DataError(f"training set {train_spec!r} has {len(train_ds)} images, fewer than one batch")
        train_loader = make_loader(
            train_ds, int(d["batch_size"]), shuffle=True, seed=seed, workers=workers, drop_last=True
        )
    if val_spec.lower() in IMAGEFOLDER_DATASETS:
        root = Path(data_root)  # type: ignore[arg-type]
        va_root = root / "val" if (root / "val").is_dir() else root
        val_ds: Any = _subset(_imagefolder(va_root, size, False), vlimit, seed)
    else:
        imgs, labels = load_arrays(val_spec, limit=vlimit, data_root=data_root, seed=seed)
        val_ds = TensorDataset(arrays_to_tensor(imgs, size), torch.from_numpy(labels))
    if len(val_ds) == 0:
        raise DataError(f"validation set {val_spec!r} is empty")
    val_loader = make_loader(
        val_ds, int(d["batch_size_val"]), shuffle=False, seed=seed, workers=workers, drop_last=False
    )
    log.info("data: train=%s val=%s (%d images)", train_spec, val_spec, len(val_ds))
    return train_loader, val_loader
