"""Vectorised re-implementation of the reference's per-point bilinear sampler (``utils/image.py``).

The reference samples one point at a time::

    l, u = floor(p0), floor(p1);  r, d = l + 1, u + 1        # (row, column) neighbours
    I[a, b] = 0 outside [0, H) x [0, W)                        # zero fill, no edge clamping
    al = I[l,u]*((1.0 - p1) + u) + I[l,d]*((1.0 - d) + p1)
    ar = I[r,u]*((1.0 - p1) + u) + I[r,d]*((1.0 - d) + p1)
    out = al*((1.0 - p0) + l) + ar*((1.0 - r) + p0)

:class:`BilinearZero` evaluates exactly this association in float64 for arrays of points, so it is
bit-identical to the per-point loop (uint8 and float32 pixels convert to float64 exactly, as numpy >= 2
promotes a float32 pixel times a float64 weight to float64). The zero fill is a zero border around a
channel-planar copy of the image, so each tap is one flat gather.
"""

from __future__ import annotations

import numpy as np

__all__ = ["BilinearZero", "bilinear_zero"]


class BilinearZero:
    """Reusable sampler over one ``(H, W, C)`` image (uint8 / float32 / float64).

    Args:
        image: The image to sample.
        margin: Zero border (px) prepared up front; points needing more fall back to a clamped gather.
    """

    def __init__(self, image: np.ndarray, margin: int = 32) -> None:
        self.height, self.width, self.channels = image.shape
        self.image = image
        self.margin = margin
        padded = np.zeros((self.channels, self.height + 2 * margin, self.width + 2 * margin), dtype=image.dtype)
        padded[:, margin : margin + self.height, margin : margin + self.width] = np.moveaxis(image, 2, 0)
        self.stride = self.width + 2 * margin
        self.flat = padded.reshape(self.channels, -1)

    def __call__(self, p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
        """Sample at rows ``p0`` and columns ``p1`` (float64, 1-D, length ``N``); returns float64 ``(C, N)``."""
        p0 = np.asarray(p0, dtype=np.float64)
        p1 = np.asarray(p1, dtype=np.float64)
        out = np.empty((self.channels, p0.size), dtype=np.float64)
        if p0.size == 0:
            return out
        lo_r = np.floor(p0)
        lo_c = np.floor(p1)
        w_u = (1.0 - p1) + lo_c
        w_d = (1.0 - (lo_c + 1.0)) + p1
        w_l = (1.0 - p0) + lo_r
        w_r = (1.0 - (lo_r + 1.0)) + p0
        m = self.margin
        inside_margin = (
            lo_r.min() >= -m
            and lo_c.min() >= -m
            and lo_r.max() <= self.height + m - 2
            and lo_c.max() <= self.width + m - 2
        )
        if inside_margin:
            base = (lo_r.astype(np.int64) + m) * self.stride + (lo_c.astype(np.int64) + m)
            taps = [base, base + 1, base + self.stride, base + self.stride + 1]
            for ch in range(self.channels):
                plane = self.flat[ch]
                v_lu, v_ld, v_ru, v_rd = (plane.take(t).astype(np.float64) for t in taps)
                out[ch] = (v_lu * w_u + v_ld * w_d) * w_l + (v_ru * w_u + v_rd * w_d) * w_r
            return out
        r = lo_r.astype(np.int64)
        c = lo_c.astype(np.int64)
        img = self.image.astype(np.float64)
        values = []
        for a, b in ((r, c), (r, c + 1), (r + 1, c), (r + 1, c + 1)):
            ok = (a >= 0) & (a < self.height) & (b >= 0) & (b < self.width)
            v = img[np.clip(a, 0, self.height - 1), np.clip(b, 0, self.width - 1)]  # (N, C)
            values.append(np.where(ok[:, None], v, 0.0).T)
        v_lu, v_ld, v_ru, v_rd = values
        out[:] = (v_lu * w_u + v_ld * w_d) * w_l + (v_ru * w_u + v_rd * w_d) * w_r
        return out


def bilinear_zero(image: np.ndarray, p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
    """One-shot :class:`BilinearZero` call: float64 ``(C, N)`` samples of ``image`` at ``(p0, p1)``."""
    return BilinearZero(image)(p0, p1)


def bilinear_points(image: np.ndarray, p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
    """Like :func:`bilinear_zero` for a few points, without building a padded copy of ``image``.

    Args:
        image: ``(H, W, C)`` array (uint8 / float32 / float64).
        p0: Row coordinates, float64, 1-D of length ``N``.
        p1: Column coordinates, float64, length ``N``.

    Returns:
        float64 ``(C, N)``.
    """
    height, width = image.shape[:2]
    p0 = np.asarray(p0, dtype=np.float64)
    p1 = np.asarray(p1, dtype=np.float64)
    lo_r = np.floor(p0)
    lo_c = np.floor(p1)
    w_u = (1.0 - p1) + lo_c
    w_d = (1.0 - (lo_c + 1.0)) + p1
    w_l = (1.0 - p0) + lo_r
    w_r = (1.0 - (lo_r + 1.0)) + p0
    r = lo_r.astype(np.int64)
    c = lo_c.astype(np.int64)
    taps = []
    for a, b in ((r, c), (r, c + 1), (r + 1, c), (r + 1, c + 1)):
        ok = (a >= 0) & (a < height) & (b >= 0) & (b < width)
        v = image[np.clip(a, 0, height - 1), np.clip(b, 0, width - 1)].astype(np.float64).T  # (C, N)
        taps.append(np.where(ok, v, 0.0))
    v_lu, v_ld, v_ru, v_rd = taps
    return (v_lu * w_u + v_ld * w_d) * w_l + (v_ru * w_u + v_rd * w_d) * w_r
