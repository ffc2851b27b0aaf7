"""Official ImageNet-C-bar ``sparkles`` and ``inverse_sparkles`` (``corrupt.Sparkles`` / ``InverseSparkles``).

Both use the star-shaped kernel: for pixel p = (y, x), centre c, ray lengths ``ℓ`` (R rays) and value
``v = float32(pixel)``::

    dy, dx = y − c0, x − c1 ;  dist = sqrt(dy·dy + dx·dx)
    d = ((arctan2(dx, dy) + π)/(2π))·R ;  i = int(d) ;  f = d − i
    L = ℓ[i mod R] + f·(ℓ[(i+1) mod R] − ℓ[i mod R])
    g = pow(pow(L, 2)/(pow(dist, 2) + 1e-4), (100 − amount)/50)      # glibc pow, as on numpy scalars
    f = clip((1 − pow(f − 0.5, 2))·g, 0, 1)

* ``inverse_sparkles``: draws ``center = U(0.25, 0.75, size=2)·S``, ``seed``, ``rays = randint(50, 200)``;
  ``radius = S/4``, ``amount = 100 − 6.5·s``; ``ℓ_k = radius + (0.25·radius)·randn()`` from
  ``RandomState(seed)``; ``out = uint8(clip(255 + f·(v − 255), 0, 255))`` (fades to white outside the star).
* ``sparkles``: draws ``centers = U(0, S, size=(5, 2))``, ``seed``, ``nrays = randint(50, 200, size=5)``;
  radii ``0.01·s·S``, amount 50 (so ``g`` is not raised). Five full-image passes in order, each with
  ``ℓ_j = max(1, r + (0.25·r)·randn())`` from the same private stream, ``J = v + f·(255 − v)`` and ``v``
  re-rounded to float32 between passes; ``out = uint8(clip(J, 0, 255))``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ovdiv.data.corruptions.blocks import row_blocks
from ovdiv.data.corruptions.magnitude import float_parameter
from ovdiv.data.corruptions.rng import private_stream

__all__ = ["apply_inverse_sparkles", "apply_sparkles", "sample_inverse_sparkles", "sample_sparkles"]


def _star(
    rows: np.ndarray,
    cols: np.ndarray,
    center: tuple[float, float],
    lengths: np.ndarray,
    exponent: float | None,
    *,
    fraction_only: bool = False,
) -> np.ndarray:
    """The kernel's blend factor ``f`` for a pixel block.

    ``exponent=None`` skips ``pow(g, e)`` (e = 1); ``fraction_only`` is the reference's ``radius == 0`` path,
    where ``f`` stays the angular fraction.
    """
    rays = len(lengths)
    dy = rows - center[0]
    dx = cols - center[1]
    dist = np.sqrt(dy * dy + dx * dx)
    d = (np.arctan2(dx, dy) + np.pi) / (2 * np.pi) * rays
    i = d.astype(np.int64)
    f = d - i
    if fraction_only:
        return np.clip(f, 0, 1)
    lo = lengths[i % rays]
    length = lo + f * (lengths[(i + 1) % rays] - lo)
    g = np.float_power(length, 2) / (np.float_power(dist, 2) + 1e-4)
    if exponent is not None:
        g = np.float_power(g, exponent)
    f = f - 0.5
    f = 1 - np.float_power(f, 2)
    f = f * g
    return np.clip(f, 0, 1)


def sample_inverse_sparkles(rs: np.random.RandomState, severity: float, im_size: int) -> dict[str, Any]:
    """Draw the parameters in the reference order (``InverseSparkles.sample_parameters``)."""
    center = rs.uniform(low=0.25, high=0.75, size=2) * im_size
    radius = 0.25 * im_size
    amount = 100 - float_parameter(severity, 65)
    color = np.array([255, 255, 255])
    seed = int(rs.randint(low=0, high=2**32))
    rays = int(rs.randint(low=50, high=200))
    return {
        "center": center,
        "radius": radius,
        "color": color,
        "randomness": 25,
        "seed": seed,
        "rays": rays,
        "amount": amount,
    }


def apply_inverse_sparkles(
    image: np.ndarray,
    *,
    center: Any,
    radius: float,
    rays: int,
    amount: float,
    color: Any,
    randomness: float,
    seed: int,
) -> np.ndarray:
    """Apply ``inverse_sparkles`` with given parameters to a uint8 ``(S, S, 3)`` image."""
    size = image.shape[0]
    normals = private_stream(seed).standard_normal(int(rays))
    lengths = radius + randomness / 100.0 * radius * normals
    col = np.asarray(color, dtype=np.int64)
    c = (float(center[0]), float(center[1]))
    exponent = (100 - amount) / 50.0
    coords = np.arange(size, dtype=np.float64)
    out = np.empty_like(image)
    for r0, r1 in row_blocks(size, size):
        f = _star(coords[r0:r1, None], coords[None, :], c, lengths, exponent)[..., None]
        value = image[r0:r1].astype(np.float32)
        out[r0:r1] = np.clip(col + f * (value - col), 0, 255).astype(np.uint8)
    return out


def sample_sparkles(rs: np.random.RandomState, severity: float, im_size: int) -> dict[str, Any]:
    """Draw the parameters in the reference order (``Sparkles.sample_parameters``)."""
    centers = rs.uniform(low=0, high=im_size, size=(5, 2))
    radii = np.array([float_parameter(severity, 0.1) for _ in range(5)]) * im_size
    amounts = np.array([50 for _ in range(5)])
    color = np.array([255, 255, 255])
    seed = int(rs.randint(low=0, high=2**32))
    nrays = rs.randint(low=50, high=200, size=5)
    return {
        "centers": centers,
        "radii": radii,
        "color": color,
        "randomness": 25,
        "seed": seed,
        "nrays": nrays,
        "amounts": amounts,
    }


def apply_sparkles(
    image: np.ndarray,
    *,
    centers: Any,
    radii: Any,
    nrays: Any,
    amounts: Any,
    color: Any,
    randomness: float,
    seed: int,
) -> np.ndarray:
    """Apply ``sparkles`` with given parameters to a uint8 ``(S, S, 3)`` image."""
    size = image.shape[0]
    rs = private_stream(seed)
    col = np.asarray(color, dtype=np.int64)
    centers = np.asarray(centers, dtype=np.float64)
    radii = np.asarray(radii, dtype=np.float64)
    amounts = np.asarray(amounts)
    coords = np.arange(size, dtype=np.float64)
    current: np.ndarray = image
    for k, rays in enumerate(np.asarray(nrays).tolist()):
        radius = radii[k]
        lengths = np.maximum(1, radius + randomness / 100.0 * radius * rs.standard_normal(int(rays)))
        exponent = (100 - float(amounts[k])) / 50.0
        c = (float(centers[k, 0]), float(centers[k, 1]))
        nxt = np.empty(image.shape, dtype=np.float64)
        for r0, r1 in row_blocks(size, size):
            value = current[r0:r1].astype(np.float32)
            f = _star(
                coords[r0:r1, None],
                coords[None, :],
                c,
                lengths,
                None if exponent == 1.0 else exponent,  # pow(g, 1.0) == g exactly
                fraction_only=radius == 0,
            )
            nxt[r0:r1] = value + f[..., None] * (col - value)
        current = nxt
    return np.clip(current, 0, 255).astype(np.uint8)
