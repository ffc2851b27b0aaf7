"""Official ImageNet-C-bar ``perlin_noise`` (``corrupt.PerlinNoise`` + ``utils/perlin_noise.py``).

Parameters (global stream): ``seed = randint(0, 2**32)``; constants ``m = I₂/(32·S/224)``,
``turbulence = 16``, ``gain = bias = 0.5``, ``alpha = 0.05·s``.

Generator (private ``rs = RandomState(seed)``): 514 gradients ``v = (rs.randint(0, 2**31, size=2) mod 512
− 256)/256`` normalised by ``sqrt(v0² + v1²)`` (a zero vector gives NaN, as in the reference); permutation
``p = arange(514)`` shuffled by ``for i = 255..0: j = rs.randint(0, 2**31) mod 256; swap p[i], p[j]``; then
``p[256:514] = p[0:258]`` and ``g[256:514] = g[0:258]`` (sequential copy).

Per pixel: ``(X, Y) = (y·m00, x·m11)`` (the Perlin x axis is the image ROW), classic 2-D gradient noise
with ``s_curve(t) = pow(t, 2)·(3 − 2t)`` (glibc ``pow``), ``noise = 1.5·(a + sy·(b − a))``, turbulence
``T = Σ_{f=1,2,4,8,16} |noise(f·X, f·Y)|/f``, ``F = clip(0.5·T + 0.5, 0, 1)``;
``out = uint8(clip(float32(float32(1 − α)·float32(image)) + (255·α)·F, 0, 255))`` (the first product is
float32, the rest float64). Vectorised over row blocks.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ovdiv.data.corruptions.blocks import row_blocks
from ovdiv.data.corruptions.magnitude import float_parameter
from ovdiv.data.corruptions.rng import private_stream

__all__ = ["apply_perlin_noise", "sample_perlin_noise"]

_B = 256
_N = 16 * 256


def sample_perlin_noise(rs: np.random.RandomState, severity: float, im_size: int) -> dict[str, Any]:
    """Draw the parameters in the reference order (``PerlinNoise.sample_parameters``)."""
    m = np.array([[1, 0], [0, 1]]) / (32 * im_size / 224)
    alpha = float_parameter(severity, 0.50)
    seed = int(rs.randint(low=0, high=2**32))
    return {"m": m, "turbulence": 16.0, "seed": seed, "gain": 0.5, "bias": 0.5, "alpha": alpha}


def _generator(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rs = private_stream(seed)
    raw = rs.randint(low=0, high=2**31, size=2 * (2 * _B + 2)).reshape(2 * _B + 2, 2)
    vec = (raw % (2 * _B) - _B) / _B
    with np.errstate(invalid="ignore", divide="ignore"):
        grad = vec / np.sqrt(vec[:, 0] * vec[:, 0] + vec[:, 1] * vec[:, 1])[:, None]
    perm = list(range(2 * _B + 2))
    for i, j in zip(range(_B - 1, -1, -1), (rs.randint(low=0, high=2**31, size=_B) % _B).tolist(), strict=True):
        perm[i], perm[j] = perm[j], perm[i]
    p = np.array(perm, dtype=np.int64)
    p[_B : 2 * _B] = p[:_B]
    p[2 * _B :] = p[:2]
    grad[_B : 2 * _B] = grad[:_B]
    grad[2 * _B :] = grad[:2]
    return p, grad


def _noise(p: np.ndarray, g: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    t = x + _N
    bx0 = t.astype(np.int64) % _B
    bx1 = (bx0 + 1) % _B
    rx0 = np.remainder(t, 1)
    rx1 = rx0 - 1.0
    t = y + _N
    by0 = t.astype(np.int64) % _B
    by1 = (by0 + 1) % _B
    ry0 = np.remainder(t, 1)
    ry1 = ry0 - 1.0
    i = p[bx0]
    j = p[bx1]
    b00 = p[i + by0]
    b10 = p[j + by0]
    b01 = p[i + by1]
    b11 = p[j + by1]
    sx = np.float_power(rx0, 2) * (3.0 - 2.0 * rx0)
    sy = np.float_power(ry0, 2) * (3.0 - 2.0 * ry0)
    g0, g1 = g[:, 0], g[:, 1]
    u = rx0 * g0[b00] + ry0 * g1[b00]
    v = rx1 * g0[b10] + ry0 * g1[b10]
    a = u + sx * (v - u)
    u = rx0 * g0[b01] + ry1 * g1[b01]
    v = rx1 * g0[b11] + ry1 * g1[b11]
    b = u + sx * (v - u)
    return 1.5 * (a + sy * (b - a))


def _turbulence(p: np.ndarray, g: np.ndarray, x: np.ndarray, y: np.ndarray, octaves: float) -> np.ndarray:
    if octaves == 1.0:
        return _noise(p, g, x, y)
    total = np.zeros(x.shape)
    f = 1.0
    while f <= octaves:
        total = total + np.abs(_noise(p, g, f * x, f * y)) / f
        f = f * 2
    return total


def apply_perlin_noise(
    image: np.ndarray, *, m: Any, turbulence: float, seed: int, gain: float, bias: float, alpha: float
) -> np.ndarray:
    """Apply ``perlin_noise`` with given parameters to a uint8 ``(S, S, 3)`` image."""
    size = image.shape[0]
    mat = np.asarray(m, dtype=np.float64)
    p, g = _generator(seed)
    coords = np.arange(size, dtype=np.float64)
    out = np.empty_like(image)
    keep = np.float32(1 - alpha)
    for r0, r1 in row_blocks(size, size):
        rows = coords[r0:r1, None]
        cols = coords[None, :]
        # np.matmul([y, x], m): y·m00 + x·m10 and y·m01 + x·m11 (the off-diagonal terms are exact zeros).
        px = np.broadcast_to(rows * mat[0, 0] + cols * mat[1, 0], (r1 - r0, size))
        py = np.broadcast_to(rows * mat[0, 1] + cols * mat[1, 1], (r1 - r0, size))
        with np.errstate(invalid="ignore"):
            total = _turbulence(p, g, px, py, turbulence)
        field = np.clip(gain * total + bias, 0, 1.0)
        block = (keep * image[r0:r1].astype(np.float32)) + (255 * alpha * field)[..., None]
        with np.errstate(invalid="ignore"):  # a NaN gradient gives NaN -> 0 (black), as on x86 in the reference
            out[r0:r1] = np.clip(block, 0, 255).astype(np.uint8)
    return out
