"""``checkerboard_cutout`` — grey squares of a rotated checkerboard (``corrupt.CheckerBoardCutOut``).

The only one of the paper's four in official ImageNet-C-bar: "Checkerboard (4.0)" is its severity 3 of 5
(magnitudes 2, 3, 4, 5, 6).

Parameters (global stream, in order): ``angle θ = U(0, 2π)``, ``s = max(U(0.1, 0.25)·im_size, 1)``,
``seed = randint(0, 2**32)``; constant ``fraction = s/10``.

Transform: ``G = int(4·im_size // s)``; ``M = RandomState(seed).uniform(size=(G, G)) < fraction``. For pixel
(row y, column x): ``u = (cos θ·y + sin θ·x)/s``, ``v = (−sin θ·y + cos θ·x)/s``; the pixel is kept when
``int(u mod 2) ≠ int(v mod 2)`` (floor-mod, truncating ``int``) or when ``M[trunc u, trunc v]`` is False
(negative indices wrap, numpy style); otherwise it becomes (128, 128, 128). Vectorised over the grid.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ovdiv.data.corruptions.blocks import row_blocks
from ovdiv.data.corruptions.magnitude import float_parameter

__all__ = ["apply_checkerboard_cutout", "sample_checkerboard_cutout"]


def sample_checkerboard_cutout(rs: np.random.RandomState, severity: float, im_size: int) -> dict[str, Any]:
    """Draw the parameters in the reference order (``CheckerBoardCutOut.sample_parameters``)."""
    angle = rs.uniform(low=0, high=2 * np.pi)
    scale = float(np.maximum(rs.uniform(low=0.1, high=0.25) * im_size, 1))
    fraction = float_parameter(severity, 1.0)
    seed = int(rs.randint(low=0, high=2**32))
    return {"angle": angle, "scales": (scale, scale), "fraction": fraction, "seed": seed}


def apply_checkerboard_cutout(
    image: np.ndarray, *, scales: Any, angle: float, fraction: float, seed: int
) -> np.ndarray:
    """Apply ``checkerboard_cutout`` with given parameters to a uint8 ``(S, S, 3)`` image."""
    im_size = image.shape[0]
    s0, s1 = float(scales[0]), float(scales[1])
    grid = np.random.RandomState(seed=seed).uniform(size=(int(4 * im_size // s0), int(4 * im_size // s1))) < fraction
    cos_t, sin_t = np.cos(angle), np.sin(angle)
    size0, size1 = grid.shape
    # tiled[(i + G0)·2G1 + j + G1] == grid[i, j], with numpy's negative-index wrap for -G <= i, j < 0.
    tiled = np.tile(grid, (2, 2)).ravel()
    x = np.arange(im_size, dtype=np.float64)[None, :]
    out = image.copy()
    for r0, r1 in row_blocks(im_size, im_size, 8192):
        y = np.arange(r0, r1, dtype=np.float64)[:, None]
        nx = (cos_t * y + sin_t * x) / s0
        ny = (-sin_t * y + cos_t * x) / s1
        # int(nx % 2) != int(ny % 2)  <=>  floor(nx) + floor(ny) is odd, except where a value lies in
        # [-2**-53, 0) (then int(v % 2) == 2): those rare pixels are redone exactly.
        white = ((np.floor(nx) + np.floor(ny)).astype(np.int32) & 1).astype(bool)
        tiny = (np.abs(nx) < 2.0**-52) | (np.abs(ny) < 2.0**-52)
        if tiny.any():
            white[tiny] = _int_mod2(nx[tiny]) != _int_mod2(ny[tiny])
        flat = (nx.astype(np.int32) + size0) * (2 * size1) + (ny.astype(np.int32) + size1)
        out[r0:r1][tiled.take(flat) & ~white] = 128
    return out


def _int_mod2(v: np.ndarray) -> np.ndarray:
    """``int(v % 2)`` with numpy's float floor-mod, computed without the (slow) remainder ufunc.

    ``v % 2`` is ``fmod(v, 2)`` (exact) plus 2 when negative; its truncation is ``floor(v) mod 2`` except
    for ``-2**-53 <= v < 0``, where ``fmod + 2`` rounds to exactly 2.0 and the reference gets 2.
    """
    parity = np.floor(v).astype(np.int64) & 1
    tiny_negative = (v < 0) & (v >= -(2.0**-53))
    if tiny_negative.any():
        parity[tiny_negative] = 2
    return parity
