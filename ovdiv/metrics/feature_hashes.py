r"""Image-hash distances between feature visualisations of sibling networks (Whitaker & Whitley, Tables III/IV).

A feature visualisation is an RGB image; two siblings (a parent and its snapshot checkpoints or
prune-and-tune children) are compared neuron by neuron through the Hamming distance of perceptual image
hashes, computed by ``imagehash`` on the uint8 RGB image (PIL):

=============  ============================================================================  ======
``ahash``      ``imagehash.average_hash(img, hash_size=8)`` (greyscale, 8x8 mean threshold)  64 bit
``phash``      ``imagehash.phash(img, hash_size=8)`` (DCT of 32x32 greyscale)                  64 bit
``dhash``      ``imagehash.dhash(img, hash_size=8)`` (horizontal gradient signs)               64 bit
``whash``      ``imagehash.whash(img, hash_size=8)`` (Haar wavelet, image scale 2^k)            64 bit
``colorhash``  ``imagehash.colorhash(img, binbits=3)`` (HSV black/grey/hue-bin fractions)      42 bit
=============  ============================================================================  ======

The colour hash is ``14 * binbits`` bits long (1 black + 1 grey + 6 faint-hue + 6 saturated-hue
fractions, each in ``binbits`` bits), so it can never be exactly 64 bits (``binbits=4`` gives 56,
``5`` gives 70). The study uses imagehash's default ``binbits=3`` (42 bits); :data:`HASH_BITS` records
the length of every hash and the tables report it next to each distance, so a colour-hash distance is
never read as out of 64.

For ``M`` members and ``K`` channels the per-pair distance ``d_{ij,k}`` is reported with its mean over
channels and the standard error of that mean, ``sem = std_{ddof=1}(d_{ij,.}) / sqrt(K)`` (NaN for
``K = 1``). Only numpy, PIL and imagehash are imported (never torch or openvino).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from ovdiv.errors import MetricInputError

__all__ = ["FEATURE_HASH_METHODS", "HASH_BITS", "COLORHASH_BINBITS", "feature_hash_bits", "sibling_hash_distances"]

FEATURE_HASH_METHODS: tuple[str, ...] = ("ahash", "phash", "dhash", "whash", "colorhash")
COLORHASH_BINBITS = 3
HASH_BITS: dict[str, int] = {"ahash": 64, "phash": 64, "dhash": 64, "whash": 64, "colorhash": 14 * COLORHASH_BINBITS}
F64 = npt.NDArray[np.float64]


def _check_rgb(images: npt.ArrayLike, ndim: int, what: str) -> npt.NDArray[np.uint8]:
    arr = np.asarray(images)
    if arr.dtype != np.uint8 or arr.ndim != ndim or arr.shape[-1] != 3 or min(arr.shape[-3:-1], default=0) < 8:
        want = "(N, H, W, 3)" if ndim == 4 else "(M, K, H, W, 3)"
        raise MetricInputError(
            f"{what}: expected uint8 {want} RGB images with H, W >= 8, got {arr.dtype} {arr.shape}",
            "pass the uint8 feature visualisations",
        )
    return arr


def feature_hash_bits(images: npt.ArrayLike) -> dict[str, npt.NDArray[np.bool_]]:
    """The five hashes of each RGB image: ``{method: (N, HASH_BITS[method]) bool}``.

    Args:
        images: uint8 ``(N, H, W, 3)``, H, W >= 8.
    """
    import imagehash
    from PIL import Image

    arr = _check_rgb(images, 4, "images")
    funcs: dict[str, Any] = {
        "ahash": lambda im: imagehash.average_hash(im, hash_size=8),
        "phash": lambda im: imagehash.phash(im, hash_size=8),
        "dhash": lambda im: imagehash.dhash(im, hash_size=8),
        "whash": lambda im: imagehash.whash(im, hash_size=8),
        "colorhash": lambda im: imagehash.colorhash(im, binbits=COLORHASH_BINBITS),
    }
    out: dict[str, npt.NDArray[np.bool_]] = {
        name: np.zeros((arr.shape[0], HASH_BITS[name]), dtype=bool) for name in FEATURE_HASH_METHODS
    }
    for n, img in enumerate(arr):
        pil = Image.fromarray(np.ascontiguousarray(img), mode="RGB")
        for name in FEATURE_HASH_METHODS:
            out[name][n] = np.asarray(funcs[name](pil).hash, dtype=bool).ravel()
    return out


def sibling_hash_distances(images: npt.ArrayLike) -> dict[str, dict[str, Any]]:
    r"""Hamming distances of the five hashes between members, per channel, with mean ± standard error.

    Args:
        images: uint8 ``(M, K, H, W, 3)``: member ``i``'s visualisation of channel ``k`` (the same
            channel index ``k`` in every member).

    Returns:
        ``{method: {"bits": int, "per_channel": (M, M, K) float64, "mean": (M, M), "sem": (M, M)}}`` with
        ``mean = (1/K) \sum_k d_{ij,k}`` and ``sem = std_{ddof=1}(d_{ij,.}) / \sqrt K`` (NaN when K = 1);
        diagonals are 0.

    Raises:
        MetricInputError: wrong dtype/shape.
    """
    arr = _check_rgb(images, 5, "images")
    m, k = arr.shape[:2]
    bits = [feature_hash_bits(arr[i]) for i in range(m)]
    out: dict[str, dict[str, Any]] = {}
    for name in FEATURE_HASH_METHODS:
        d = np.zeros((m, m, k), dtype=np.float64)
        for i in range(m):
            for j in range(i + 1, m):
                d[i, j] = d[j, i] = (bits[i][name] != bits[j][name]).sum(axis=1)
        mean = d.mean(axis=2)
        sem = d.std(axis=2, ddof=1) / np.sqrt(k) if k > 1 else np.full((m, m), np.nan)
        out[name] = {"bits": HASH_BITS[name], "per_channel": d, "mean": mean, "sem": sem}
    return out
