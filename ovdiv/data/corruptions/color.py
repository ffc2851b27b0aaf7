"""Candidate-pool colour corruptions (none is in official ImageNet-C-bar).

* ``bleach_bypass`` (no draws, ``amount = s/10``): ``luma = Σ_c image_c·(0.2126, 0.7152, 0.0722)_c / 255``;
  ``l = clip(10·(luma − 0.45), 0, 1)``; ``r1 = (2·image [uint8, WRAPS mod 256])·luma/255``;
  ``r2 = 1 − (2·(1 − luma))·(1 − image/255)``; ``o = ((1 − l)·r1 + l·r2)·255``;
  ``out = ((1 − a)·image + a·o)`` cast to uint8 WITHOUT clipping (x86 conversion, as the reference).
* ``technicolor`` (no draws, ``amount = s/10``): mattes ``rm = 1 − (R/255 − (G/2 + B/2)/255)`` etc.;
  ``new = (gm·bm·R, rm·bm·G, rm·gm·B)``; ``out = ((1 − a)·image + a·new)`` cast without clipping (wraps).
* ``pseudocolor``: ``smoothness σ = U(0.25, 0.75)`` and five ``randint(0, 255, size=3)`` uint8 colours;
  piecewise (4 luma bands) blend of a linear and a smoothstep ramp between consecutive colours (the colour
  difference is a wrapping uint8 subtraction); ``out = uint8(clip((1 − a)·image + a·mix, 0, 255))``,
  ``a = 0.05·s``.
* ``color_balance``: ``factor = 1 + choice([−1, 1])·s/10``; Pillow's ``ImageEnhance.Color`` (called lazily).
* ``hue_shift``: ``amount = ±0.05·s`` (negated when ``U() < 0.5``); scikit-image's float32
  ``rgb2hsv``/``hsv2rgb`` re-implemented; hue += ``amount mod 1``; ``out = uint8(clip(rgb·255, 0, 255))``.
* ``color_dither`` (no draws): ``levels = 14 − int(s)``; the reference's (degenerate) error diffusion, which
  quantises ``Q(c) = int(255·k/(levels−1))`` with ``k = int(levels·c/256)`` and pushes the error only to the
  right neighbour (``7/16`` on rows ≥ 1, then ``1/16`` on rows ≤ S−2, each clipped and truncated to uint8).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ovdiv.data.corruptions.blocks import map_row_blocks
from ovdiv.data.corruptions.magnitude import float_parameter, int_parameter

__all__ = [
    "apply_bleach_bypass",
    "apply_color_balance",
    "apply_color_dither",
    "apply_hue_shift",
    "apply_pseudocolor",
    "apply_technicolor",
    "sample_bleach_bypass",
    "sample_color_balance",
    "sample_color_dither",
    "sample_hue_shift",
    "sample_pseudocolor",
    "sample_technicolor",
]

_LUMA = np.array([0.2126, 0.7152, 0.0722]).reshape(1, 1, 3)


def _wrap_cast(values: np.ndarray) -> np.ndarray:
    """``values.astype(uint8)`` without clipping, as the reference (x86: int32 truncation, low byte)."""
    with np.errstate(invalid="ignore"):
        return values.astype(np.uint8)


def sample_bleach_bypass(rs: np.random.RandomState, severity: float, im_size: int) -> dict[str, Any]:
    """No random draws; ``amount = s/10``."""
    return {"amount": float_parameter(severity, 1.0)}


def apply_bleach_bypass(image: np.ndarray, *, amount: float) -> np.ndarray:
    """Apply ``bleach_bypass`` with given parameters to a uint8 ``(S, S, 3)`` image (per-pixel, in row blocks)."""
    return map_row_blocks(lambda rows: _bleach_bypass(rows, amount), image)


def _bleach_bypass(image: np.ndarray, amount: float) -> np.ndarray:
    luma = np.sum(image * _LUMA, axis=2, keepdims=True) / 255
    lift = np.clip(10.0 * (luma - 0.45), 0, 1.0)
    result1 = 2 * image * luma / 255  # 2 * uint8 wraps modulo 256, as in the reference
    result2 = 1.0 - 2.0 * (1.0 - luma) * (1.0 - image / 255)
    out = ((1 - lift) * result1 + lift * result2) * 255
    return _wrap_cast((1 - amount) * image + amount * out)


def sample_technicolor(rs: np.random.RandomState, severity: float, im_size: int) -> dict[str, Any]:
    """No random draws; ``amount = s/10``."""
    return {"amount": float_parameter(severity, 1.0)}


def apply_technicolor(image: np.ndarray, *, amount: float) -> np.ndarray:
    """Apply ``technicolor`` with given parameters to a uint8 ``(S, S, 3)`` image (per-pixel, in row blocks)."""
    return map_row_blocks(lambda rows: _technicolor(rows, amount), image)


def _technicolor(image: np.ndarray, amount: float) -> np.ndarray:
    red, green, blue = image[:, :, 0], image[:, :, 1], image[:, :, 2]
    red_matte = 1.0 - (red / 255 - (green / 2 + blue / 2) / 255)
    green_matte = 1.0 - (green / 255 - (red / 2 + blue / 2) / 255)
    blue_matte = 1.0 - (blue / 255 - (red / 2 + green / 2) / 255)
    new_color = np.stack(
        (
            green_matte * blue_matte * red.astype(np.float32),
            red_matte * blue_matte * green.astype(np.float32),
            red_matte * green_matte * blue.astype(np.float32),
        ),
        axis=2,
    )
    return _wrap_cast((1 - amount) * image + amount * new_color)


def sample_pseudocolor(rs: np.random.RandomState, severity: float, im_size: int) -> dict[str, Any]:
    """Draw the parameters in the reference order (``Pseudocolor.sample_parameters``)."""
    smoothness = rs.uniform(low=0.25, high=0.75)
    colors = [rs.randint(low=0, high=255, size=3).astype(np.uint8) for _ in range(5)]
    params: dict[str, Any] = {"smoothness": smoothness}
    params.update({f"color{i}": c for i, c in enumerate(colors)})
    params["amount"] = float_parameter(severity, 0.5)
    return params


def _smoothstep_array(low: float, high: float, x: np.ndarray) -> np.ndarray:
    x = np.clip(x, low, high)
    x = (x - low) / (high - low)
    return np.clip(3 * (x**2) - 2 * (x**3), 0, 1)  # array powers: square and the power ufunc, as the reference


def apply_pseudocolor(
    image: np.ndarray,
    *,
    color0: Any,
    color1: Any,
    color2: Any,
    color3: Any,
    color4: Any,
    smoothness: float,
    amount: float,
) -> np.ndarray:
    """Apply ``pseudocolor`` with given parameters to a uint8 ``(S, S, 3)`` image (per-pixel, in row blocks)."""
    colors = [np.asarray(c).astype(np.uint8) for c in (color0, color1, color2, color3, color4)]
    return map_row_blocks(lambda rows: _pseudocolor(rows, colors, smoothness, amount), image)


def _pseudocolor(image: np.ndarray, colors: list[np.ndarray], smoothness: float, amount: float) -> np.ndarray:

    def get_color(c0: np.ndarray, c1: np.ndarray, edge0: float, edge1: float, luma: np.ndarray) -> np.ndarray:
        smooth_color = c0 + ((c1 - c0) * _smoothstep_array(edge0, edge1, luma))
        a = 4.0 * (luma - edge0)
        linear_color = (1 - a) * c0 + a * c1
        return (1 - smoothness) * linear_color + smoothness * smooth_color

    luma = np.sum(image.astype(np.float32) * _LUMA, axis=2, keepdims=True) / 255
    c1 = get_color(colors[0], colors[1], 0.0, 0.25, luma)
    c2 = get_color(colors[1], colors[2], 0.25, 0.50, luma)
    c3 = get_color(colors[2], colors[3], 0.5, 0.75, luma)
    c4 = get_color(colors[3], colors[4], 0.75, 1.0, luma)
    out = (
        (luma < 0.25) * c1
        + ((luma >= 0.25) & (luma < 0.5)) * c2
        + ((luma >= 0.5) & (luma < 0.75)) * c3
        + (luma >= 0.75) * c4
    )
    return np.clip((1 - amount) * image + amount * out, 0, 255).astype(np.uint8)


def sample_color_balance(rs: np.random.RandomState, severity: float, im_size: int) -> dict[str, Any]:
    """Draw the parameters in the reference order (``ColorBalance.sample_parameters``)."""
    shift = float_parameter(severity, 1.0)
    return {"factor": 1.0 + rs.choice([-1, 1]) * shift}


def apply_color_balance(image: np.ndarray, *, factor: float) -> np.ndarray:
    """Apply ``color_balance`` (Pillow ``ImageEnhance.Color(...).enhance(factor)``) to a uint8 image."""
    from PIL import Image, ImageEnhance

    return np.array(ImageEnhance.Color(Image.fromarray(image)).enhance(factor))


def sample_hue_shift(rs: np.random.RandomState, severity: float, im_size: int) -> dict[str, Any]:
    """Draw the parameters in the reference order (``HueShift.sample_parameters``)."""
    amount = float_parameter(severity, 0.5)
    if rs.uniform() < 0.5:
        amount *= -1
    return {"amount": amount}


def _rgb2hsv(rgb: np.ndarray) -> np.ndarray:
    """scikit-image ``rgb2hsv`` for a float32 ``(H, W, 3)`` array (float32 arithmetic throughout)."""
    out = np.empty_like(rgb)
    out_v = rgb.max(-1)
    delta = np.ptp(rgb, -1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out_s = delta / out_v
        out_s[delta == 0.0] = 0.0
        hue = out[..., 0]
        idx = rgb[..., 0] == out_v
        hue[idx] = (rgb[idx, 1] - rgb[idx, 2]) / delta[idx]
        idx = rgb[..., 1] == out_v
        hue[idx] = 2.0 + (rgb[idx, 2] - rgb[idx, 0]) / delta[idx]
        idx = rgb[..., 2] == out_v
        hue[idx] = 4.0 + (rgb[idx, 0] - rgb[idx, 1]) / delta[idx]
        out_h = (out[..., 0] / 6.0) % 1.0
        out_h[delta == 0.0] = 0.0
    out[..., 0] = out_h
    out[..., 1] = out_s
    out[..., 2] = out_v
    out[np.isnan(out)] = 0
    return out


def _hsv2rgb(hsv: np.ndarray) -> np.ndarray:
    """scikit-image ``hsv2rgb`` for a float32 ``(H, W, 3)`` array."""
    hi = np.floor(hsv[..., 0] * 6)
    f = hsv[..., 0] * 6 - hi
    p = hsv[..., 2] * (1 - hsv[..., 1])
    q = hsv[..., 2] * (1 - f * hsv[..., 1])
    t = hsv[..., 2] * (1 - (1 - f) * hsv[..., 1])
    v = hsv[..., 2]
    with np.errstate(invalid="ignore"):
        sector = np.stack([hi, hi, hi], axis=-1).astype(np.uint8) % 6
    choices = np.stack(
        [
            np.stack((v, t, p), axis=-1),
            np.stack((q, v, p), axis=-1),
            np.stack((p, v, t), axis=-1),
            np.stack((p, q, v), axis=-1),
            np.stack((t, p, v), axis=-1),
            np.stack((v, p, q), axis=-1),
        ]
    )
    return np.choose(sector, choices)


def apply_hue_shift(image: np.ndarray, *, amount: float) -> np.ndarray:
    """Apply ``hue_shift`` with given parameters to a uint8 ``(S, S, 3)`` image (per-pixel, in row blocks)."""
    return map_row_blocks(lambda rows: _hue_shift(rows, amount), image)


def _hue_shift(image: np.ndarray, amount: float) -> np.ndarray:
    hsv = _rgb2hsv(image.astype(np.float32) / 255)
    hsv[:, :, 0] += amount % 1.0
    return np.clip(_hsv2rgb(hsv) * 255, 0, 255).astype(np.uint8)


def sample_color_dither(rs: np.random.RandomState, severity: float, im_size: int) -> dict[str, Any]:
    """No random draws; ``levels = 14 − int(s)``."""
    return {"levels": 14 - int_parameter(severity, 10)}


def apply_color_dither(image: np.ndarray, *, levels: int) -> np.ndarray:
    """Apply ``color_dither`` with given parameters to a uint8 ``(S, S, 3)`` image (rows in parallel)."""
    size = image.shape[0]
    color_map = np.array([int(255 * i / (levels - 1)) for i in range(levels)], dtype=np.int64)
    div = np.array([int(levels * i / 256) for i in range(256)], dtype=np.int64)
    quantise = color_map[div]  # uint8 value -> output level
    cur = image.copy()
    out = np.zeros_like(image)
    rows_7 = np.arange(size) >= 1  # "i = 0, j = +1" needs row > 0
    rows_1 = np.arange(size) <= size - 2  # "i = +1, j = +1" needs row + 1 < S
    for x in range(size):
        value = cur[:, x, :]
        new = quantise[value]
        out[:, x, :] = new
        if x + 1 >= size:
            continue
        err = value.astype(np.int64) - new
        nxt = cur[:, x + 1, :]
        step = np.clip(nxt.astype(np.float32) + err * 7 / 16, 0, 255).astype(np.uint8)
        nxt[rows_7] = step[rows_7]
        step = np.clip(nxt.astype(np.float32) + err * 1 / 16, 0, 255).astype(np.uint8)
        nxt[rows_1] = step[rows_1]
    return out
