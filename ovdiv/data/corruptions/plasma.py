"""``plasma_noise`` — iterated sin/cos flow noise (``corrupt.PlasmaNoise``; official ImageNet-C-bar member).

The paper's "Plasma (4.0)" is magnitude 4.0, a candidate-pool level; the official severities are
4.75 / 7 / 8.5 / 9.25 / 10.

Parameters (global stream, in order): ``time T = U(0, 6π)``, ``iterations K = randint(4, 7)``,
``sharpness σ = U(0.5, 1.0)``, ``scale S = U(0.075, 0.2)·im_size``; constant ``intensity I = 6.4·s``.

Per pixel (row y, column x), all float64, vectorised over the whole ``(H, W)`` grid::

    X, Y = x/S, y/S ;  f = g = h = 1.0
    K times:  a = cos(Y·f + T/g)/h ;  b = sin(X·f + T/g)/h
              a, b = a + (−b)·0.3, b + a·0.3 ;  X += a ;  Y += b
              f *= 1.93 ;  g *= 1.15 ;  h *= (2.25 − σ)       # running products, not pow
    noise = (sin(X − T), sin((X + Y + sin T)·0.5), sin(Y + T))   # R, G, B
    out = uint8(clip((1 − I/255)·image + I·noise, 0, 255))       # truncation
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ovdiv.data.corruptions.blocks import row_blocks
from ovdiv.data.corruptions.magnitude import float_parameter

__all__ = ["apply_plasma_noise", "sample_plasma_noise"]


def sample_plasma_noise(rs: np.random.RandomState, severity: float, im_size: int) -> dict[str, Any]:
    """Draw the parameters in the reference order (``PlasmaNoise.sample_parameters``)."""
    time = rs.uniform(low=0.0, high=6 * np.pi)
    iterations = int(rs.randint(low=4, high=7))
    sharpness = rs.uniform(low=0.5, high=1.0)
    scale = rs.uniform(low=0.075, high=0.2) * im_size
    intensity = float_parameter(severity, 64)
    return {"time": time, "iterations": iterations, "sharpness": sharpness, "scale": scale, "intensity": intensity}


def plasma_block(
    rows: np.ndarray, cols: np.ndarray, *, time: float, iterations: int, sharpness: float, scale: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The plasma noise (R, G, B), each float64 ``(len(rows), len(cols))`` in [-1, 1], for a pixel block."""
    x0 = cols.astype(np.float64) / scale  # (W,)
    y0 = rows.astype(np.float64) / scale  # (h,)
    # Iteration 1 (f = g = h = 1): cos(Y·1.0 + T/1.0)/1.0 == cos(Y + T) depends on the row only, sin on the
    # column only, so they are evaluated once per row/column and broadcast (identical values).
    a = np.cos(y0 * 1.0 + time / 1.0)[:, None] / 1.0
    b = np.sin(x0 * 1.0 + time / 1.0)[None, :] / 1.0
    a, b = a + (-b) * 0.3, b + a * 0.3
    x = x0[None, :] + a
    y = y0[:, None] + b
    f, g, h = 1.93, 1.15, 2.25 - sharpness
    h_step = 2.25 - sharpness
    for _ in range(int(iterations) - 1):
        phase = time / g
        a = np.cos(y * f + phase)
        a /= h
        b = np.sin(x * f + phase)
        b /= h
        a, b = a + (-b) * 0.3, b + a * 0.3
        x += a
        y += b
        f *= 1.93
        g *= 1.15
        h *= h_step
    red = np.sin(x - time)
    green = np.sin((x + y + np.sin(time)) * 0.5)
    blue = np.sin(y + time)
    return red, green, blue


def apply_plasma_noise(
    image: np.ndarray, *, time: float, iterations: int, sharpness: float, scale: float, intensity: float
) -> np.ndarray:
    """Apply ``plasma_noise`` with given parameters to a uint8 ``(S, S, 3)`` image."""
    height, width = image.shape[:2]
    out = np.empty_like(image)
    cols = np.arange(width)
    keep = 1 - intensity / 255
    for r0, r1 in row_blocks(height, width):
        noise = np.stack(
            plasma_block(np.arange(r0, r1), cols, time=time, iterations=iterations, sharpness=sharpness, scale=scale),
            axis=-1,
        )
        block = keep * image[r0:r1] + intensity * noise
        out[r0:r1] = np.clip(block, 0, 255).astype(np.uint8)
    return out
