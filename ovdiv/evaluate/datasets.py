"""In-memory datasets for :func:`ovdiv.evaluate` (besides spec strings resolved by :func:`ovdiv.data.prepare`).

Anything with ``images`` (uint8 ``(N, H, W, 3)``), ``labels`` (int64 ``(N,)``), ``manifest`` (a dict with
``spec`` and ``manifest_hash``), ``__len__`` and ``batches(batch_size, start=0, stop=None)`` yielding
``(start_index, images, labels)`` can be evaluated; :class:`ArrayDataset` wraps two arrays that way,
content-addressed by the SHA-256 of their bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from ovdiv.errors import DataError
from ovdiv.runtime.preprocessing import check_images

__all__ = ["ArrayDataset"]


class ArrayDataset:
    """uint8 images and int labels held in memory, with a content-hash manifest.

    Args:
        images: uint8 ``(N, H, W, 3)``.
        labels: int ``(N,)``.
        name: The dataset name used as ``dataset`` in result rows.
    """

    def __init__(self, images: npt.ArrayLike, labels: npt.ArrayLike, *, name: str = "arrays") -> None:
        self.images = check_images(images, what=f"dataset {name!r} images")
        self.labels = np.asarray(labels).astype(np.int64, copy=False)
        if self.labels.shape != (len(self.images),):
            raise DataError(
                f"dataset {name!r}: labels shape {self.labels.shape} does not match {len(self.images)} images"
            )
        h = hashlib.sha256()
        for s in range(0, len(self.images), 256):  # block by block: no full copy of a memory-mapped array
            h.update(np.ascontiguousarray(self.images[s : s + 256]).data)
        h.update(np.ascontiguousarray(self.labels).data)
        self.manifest: dict[str, Any] = {
            "spec": name,
            "source": "arrays",
            "n": len(self.images),
            "image_size": list(self.images.shape[1:3]),
            "manifest_hash": h.hexdigest(),
        }

    def __len__(self) -> int:
        return len(self.images)

    def batches(
        self, batch_size: int, start: int = 0, stop: int | None = None
    ) -> Iterator[tuple[int, npt.NDArray[np.uint8], npt.NDArray[np.int64]]]:
        """Yield ``(start_index, images, labels)`` over ``[start, stop)``."""
        stop = len(self) if stop is None else min(stop, len(self))
        for s in range(start, stop, batch_size):
            e = min(s + batch_size, stop)
            yield s, self.images[s:e], self.labels[s:e]
