"""Per-image seeds: the one function that makes every generated or corrupted image reproducible.

A dataset spec has a *dataset seed* ``s`` (``--seed``, default 0). Image ``i`` of that dataset (its
index in the dataset's canonical order, before any ``--limit`` subset is taken) gets the seed

    image_seed(s, i) = sm(sm(s) XOR i) >> 32        (an int in [0, 2**32))

where ``sm`` is the SplitMix64 finaliser (Steele, Lea & Flood 2014) on unsigned
64-bit integers, and all arithmetic is modulo 2**64::

    sm(x):  x = x + 0x9E3779B97F4A7C15
            x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9
            x = (x ^ (x >> 27)) * 0x94D049BB133111EB
            return x ^ (x >> 31)

The result fits numpy's legacy ``RandomState(seed)`` (which the ImageNet-C-bar corruptions use) and
depends only on ``(s, i)`` — never on batch size, worker count or shard — so a corrupted dataset has
the same bytes however it is produced.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["image_seed", "image_seeds", "stream_seed"]

_MASK = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def image_seed(dataset_seed: int, index: int) -> int:
    """Seed of image ``index`` of a dataset with seed ``dataset_seed`` (see the module docstring).

    Args:
        dataset_seed: The dataset seed (any int; taken modulo 2**64).
        index: The image's index in the dataset's canonical order (>= 0).

    Returns:
        An int in ``[0, 2**32)``.
    """
    return _splitmix64(_splitmix64(dataset_seed & _MASK) ^ (index & _MASK)) >> 32


def image_seeds(dataset_seed: int, indices: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Vectorised :func:`image_seed` for many indices.

    Args:
        dataset_seed: The dataset seed.
        indices: Image indices, any shape.

    Returns:
        int64 array of the same shape, values in ``[0, 2**32)``.
    """
    idx = np.asarray(indices, dtype=np.uint64)
    base = np.uint64(_splitmix64(dataset_seed & _MASK))
    with np.errstate(over="ignore"):
        x = (idx ^ base) + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(32)).astype(np.int64)


def stream_seed(dataset_seed: int, stream: str) -> int:
    """A 64-bit seed for an independent named stream of a dataset (e.g. ``"demo:train"``).

    ``stream_seed(s, name) = sm(s ⊕ fnv1a64(name))`` so different streams with the same dataset seed
    never share per-image seeds (up to hash collisions).
    """
    h = 0xCBF29CE484222325
    for byte in stream.encode("utf-8"):
        h = ((h ^ byte) * 0x100000001B3) & _MASK
    return _splitmix64((dataset_seed & _MASK) ^ h)
