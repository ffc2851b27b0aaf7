"""Candidate-pool projective warps ``quadrilateral_no_bars`` and ``perspective_no_bars`` (Pillow, lazily).

* ``quadrilateral_no_bars``: corners ``float32([[0,0],[0,S],[S,S],[S,0]]) += fp(s, S/3)·U(−1, 1, size=(4, 2))``
  (float32 in-place add); Pillow ``QUAD`` transform with bilinear resampling.
* ``perspective_no_bars``: eight ``U()`` draws choose the signs of ``offset = ±fp(s, 0.1)``,
  ``shift = ±fp(s, S/10)``, ``factor = 2^(±fp(s, 0.15))`` (x then y), the last two draws have no effect;
  denominators ``fp(s, 0.2/S)``; Pillow ``PERSPECTIVE`` transform with bilinear resampling.

"No bars": pixels whose source falls outside keep the original image (a warped all-255 mask selects).
Results depend on Pillow's transform code; the references were made with Pillow 13.0.0.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ovdiv.data.corruptions.magnitude import float_parameter

__all__ = [
    "apply_perspective_no_bars",
    "apply_quadrilateral_no_bars",
    "sample_perspective_no_bars",
    "sample_quadrilateral_no_bars",
]


def _warp_keep_outside(image: np.ndarray, method: Any, data: Any) -> np.ndarray:
    from PIL import Image

    size = image.shape[0]
    warped = Image.fromarray(image).transform((size, size), method, data, resample=Image.Resampling.BILINEAR)
    im = np.array(warped).astype(np.float32)
    ones = Image.fromarray(np.ones_like(image).astype(np.uint8) * 255)
    mask = ones.transform((size, size), method, data, resample=Image.Resampling.BILINEAR)
    weight = np.array(mask).astype(np.float32) / 255
    return (weight * im + (1 - weight) * image).astype(np.uint8)


def sample_quadrilateral_no_bars(rs: np.random.RandomState, severity: float, im_size: int) -> dict[str, Any]:
    """Draw the parameters in the reference order (``QuadrilateralNoBars.sample_parameters``)."""
    points = np.array([[0, 0], [0, im_size], [im_size, im_size], [im_size, 0]]).astype(np.float32)
    points += float_parameter(severity, im_size / 3) * rs.uniform(low=-1, high=1, size=(4, 2))
    return {"points": points}


def apply_quadrilateral_no_bars(image: np.ndarray, *, points: Any) -> np.ndarray:
    """Apply ``quadrilateral_no_bars`` with given parameters to a uint8 ``(S, S, 3)`` image."""
    from PIL import Image

    return _warp_keep_outside(image, Image.Transform.QUAD, np.asarray(points, dtype=np.float32).flatten())


def sample_perspective_no_bars(rs: np.random.RandomState, severity: float, im_size: int) -> dict[str, Any]:
    """Draw the parameters in the reference order (``PerspectiveNoBars.sample_parameters``)."""
    offset_x = float_parameter(severity, 0.1)
    if rs.uniform() > 0.5:
        offset_x = -offset_x
    offset_y = float_parameter(severity, 0.1)
    if rs.uniform() > 0.5:
        offset_y = -offset_y
    shift_x = float_parameter(severity, im_size / 10)
    if rs.uniform() > 0.5:
        shift_x = -shift_x
    shift_y = float_parameter(severity, im_size / 10)
    if rs.uniform() > 0.5:
        shift_y = -shift_y
    factor_x = float_parameter(severity, 0.15)
    if rs.uniform() > 0.5:
        factor_x = -factor_x
    factor_x = 2**factor_x
    factor_y = float_parameter(severity, 0.15)
    if rs.uniform() > 0.5:
        factor_y = -factor_y
    factor_y = 2**factor_y
    denom_x = float_parameter(severity, 0.2 / im_size)
    rs.uniform()  # the reference draws here but keeps denom_x's sign
    denom_y = float_parameter(severity, 0.2 / im_size)
    rs.uniform()  # likewise for denom_y
    params = np.array([factor_x, offset_x, shift_x, offset_y, factor_y, shift_y, denom_x, denom_y])
    return {"perspective_params": params}


def apply_perspective_no_bars(image: np.ndarray, *, perspective_params: Any) -> np.ndarray:
    """Apply ``perspective_no_bars`` with given parameters to a uint8 ``(S, S, 3)`` image."""
    from PIL import Image

    return _warp_keep_outside(image, Image.Transform.PERSPECTIVE, np.asarray(perspective_params, dtype=np.float64))
