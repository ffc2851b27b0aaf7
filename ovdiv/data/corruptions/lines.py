"""``lines`` — anti-aliased grey lines (``corrupt.Lines``; candidate pool only, NOT in official ImageNet-C-bar).

The paper's "Lines (1.6)" is this corruption at magnitude 1.6 on the 224-px scale.

Parameters (global stream, in order): ``angle = U(0, 2π)``, ``angle_variation = U(0.1, 1.0)``,
``seed = randint(0, 2**32)``; constants ``length = 1.0`` and ``density = s/10``.

Transform: ``N = int(density·im_size)`` lines, each ``2·length·im_size`` px long. A private
``RandomState(seed)`` gives per line ``x = im_size·u``, ``y = im_size·u`` (x is the ROW) and
``a = angle + 2π·angle_variation·(u − 0.5)``; the endpoints are ``int(x ∓ cos a·L)``, ``int(y ∓ sin a·L)``.
Each line is rasterised with scikit-image's ``line_aa`` (Zingl's anti-aliased Bresenham, float64), pixels
outside the image dropped, and blended toward grey: ``out = (1 − v)·float32(out) + 128·v``, written back to
uint8 (truncation) after every line, so later lines blend over earlier ones.

Speed: ``line_aa`` is evaluated in closed form for all lines at once. For a major axis of length ``n``
and minor ``m`` the minor-axis count after ``k`` major steps is ``floor(m·(2k+1) / (2n))`` (proved by
induction from Zingl's step conditions ``2·err ≥ −dc`` / ``2·err ≤ dr``), and every error term
``err = dc − dr − a·dr + b·dc`` is an exact integer, so values and emission order equal the library's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ovdiv.data.corruptions.blocks import BLOCK_PIXELS
from ovdiv.data.corruptions.magnitude import float_parameter
from ovdiv.data.corruptions.rng import private_stream

__all__ = ["apply_lines", "line_pixels", "sample_lines"]


def sample_lines(rs: np.random.RandomState, severity: float, im_size: int) -> dict[str, Any]:
    """Draw the parameters in the reference order (``Lines.sample_parameters``)."""
    length = 1.0
    density = float_parameter(severity, 1.0)
    angle = rs.uniform(low=0.0, high=2 * np.pi)
    angle_variation = rs.uniform(low=0.1, high=1.0)
    seed = int(rs.randint(low=0, high=2**32))
    return {"length": length, "density": density, "angle": angle, "angle_variation": angle_variation, "seed": seed}


def line_pixels(
    r0: np.ndarray, c0: np.ndarray, r1: np.ndarray, c1: np.ndarray, im_size: int, *, return_line: bool = False
) -> tuple[np.ndarray, ...]:
    """The in-image pixels of many ``skimage.draw.line_aa`` lines (float64 variant), computed in closed form.

    Zingl's loop emits per iteration ``k`` the main pixel with ``e = |err − dc + dr|/ed``, then on a column
    step (if ``err + dr < ed``) ``(r + sr, c)`` with ``e = |err + dr|/ed``, then on a row step (if
    ``dc − err < ed``) ``(r, c + sc)`` with ``e = |dc − err|/ed``; ``val = 1 − e``. In major/minor axis
    terms (major = the longer of ``dc``/``dr``), with ``m_k = floor(d_min·(2k+1) / (2·d_maj))`` minor steps
    after ``k`` major steps and ``D = m_k·d_maj − k·d_min``: main ``e = |D|``; the minor-offset side pixel
    (every major step) ``e = |D + d_maj|`` if ``D + d_maj < ed``; the major-offset side pixel (only on a
    minor step, ``m_{k+1} > m_k``) ``e = |d_min − D|`` if ``d_min − D < ed``. All terms are exact integers.
    No pixel repeats within one line.

    Args:
        r0: Start rows, int ``(L,)``.
        c0: Start columns.
        r1: End rows.
        c1: End columns.
        im_size: Image side ``S``; pixels outside ``[0, S)²`` are dropped.
        return_line: Also return the line index of every pixel.

    Returns:
        ``(flat, vals[, line])``: flat pixel index ``row·S + col``, ``val`` (float64) [and line index] of
        every emitted in-image pixel, line-major (the order within a line is not the library's).
    """
    r0 = np.asarray(r0, dtype=np.int64)
    c0 = np.asarray(c0, dtype=np.int64)
    r1 = np.asarray(r1, dtype=np.int64)
    c1 = np.asarray(c1, dtype=np.int64)
    num = len(r0)
    dc = np.abs(c0 - c1)
    dr = np.abs(r0 - r1)
    sc = np.where(c0 < c1, 1, -1)
    sr = np.where(r0 < r1, 1, -1)
    ed = np.where(dc + dr == 0, 1.0, np.sqrt((dc * dc + dr * dr).astype(np.float64)))
    col_major = dc >= dr
    d_maj = np.where(col_major, dc, dr)
    d_min = np.where(col_major, dr, dc)
    maj0 = np.where(col_major, c0, r0)
    min0 = np.where(col_major, r0, c0)
    s_maj = np.where(col_major, sc, sr)
    s_min = np.where(col_major, sr, sc)
    stride_maj = np.where(col_major, 1, im_size)  # flat-index step of one major-axis pixel
    stride_min = np.where(col_major, im_size, 1)

    # Only iterations whose major coordinate lies in [-1, S] can emit an in-image pixel.
    lo = np.maximum(np.where(s_maj > 0, -1 - maj0, maj0 - im_size), 0)
    hi = np.minimum(np.where(s_maj > 0, im_size - maj0, maj0 + 1), d_maj)
    width = int((hi - lo).max()) + 1 if num else 0
    if width <= 0:
        empty = (np.zeros(0, dtype=np.int64), np.zeros(0))
        return (*empty, np.zeros(0, dtype=np.int64)) if return_line else empty

    # Integer work in int32 (all magnitudes are < 2**31 for any sane image size).
    i32 = np.int32

    def col(v: np.ndarray) -> np.ndarray:
        return v.astype(i32)[:, None]

    k = col(lo) + np.arange(width + 1, dtype=i32)[None, :]
    m = (col(d_min) * (2 * k + 1)) // (2 * col(np.maximum(d_maj, 1)))
    minor_step = m[:, 1:] > m[:, :-1]
    k, m = k[:, :-1], m[:, :-1]
    dmaj, dmin = col(d_maj), col(d_min)
    d = m * dmaj - k * dmin
    alive = k <= col(hi)
    before_end = alive & (k < dmaj)

    maj = col(maj0) + col(s_maj) * k
    mnr = col(min0) + col(s_min) * m
    maj1 = maj + col(s_maj)
    min1 = mnr + col(s_min)
    # 0 <= v < S in one comparison: negative int32 values are huge as uint32.
    maj_ok = maj.view(np.uint32) < im_size
    min_ok = mnr.view(np.uint32) < im_size
    maj1_ok = maj1.view(np.uint32) < im_size
    min1_ok = min1.view(np.uint32) < im_size

    shape = (num, 3, width)  # axis 1 = the three pixel kinds; entries come out line-major
    flats = np.empty(shape, dtype=i32)
    np.add(maj * col(stride_maj), mnr * col(stride_min), out=flats[:, 0])
    np.add(flats[:, 0], col(s_min * stride_min), out=flats[:, 1])
    np.add(flats[:, 0], col(s_maj * stride_maj), out=flats[:, 2])
    errs = np.empty(shape, dtype=i32)
    np.add(d, dmaj, out=errs[:, 1])
    np.subtract(dmin, d, out=errs[:, 2])
    ed_col = ed[:, None]
    ok = np.empty(shape, dtype=bool)
    np.logical_and(alive & maj_ok, min_ok, out=ok[:, 0])
    np.logical_and(before_end & (errs[:, 1] < ed_col) & maj_ok, min1_ok, out=ok[:, 1])
    np.logical_and(before_end & minor_step & (errs[:, 2] < ed_col) & maj1_ok, min_ok, out=ok[:, 2])
    errs[:, 0] = d
    np.abs(errs, out=errs)
    vals = 1.0 - errs / ed[:, None, None]
    result = (flats[ok], vals[ok])
    if return_line:
        return (*result, np.nonzero(ok)[0])
    return result


def apply_lines(
    image: np.ndarray, *, length: float, density: float, angle: float, angle_variation: float, seed: int
) -> np.ndarray:
    """Apply ``lines`` with given parameters to a uint8 ``(S, S, 3)`` image; returns a new uint8 array."""
    im_size = image.shape[0]
    num_lines = int(density * im_size)
    line_len = length * im_size
    out = image.copy()
    if num_lines <= 0:
        return out
    draws = private_stream(seed).uniform(size=3 * num_lines).reshape(num_lines, 3)
    x = im_size * draws[:, 0]
    y = im_size * draws[:, 1]
    a = angle + 2 * np.pi * angle_variation * (draws[:, 2] - 0.5)
    s = np.sin(a) * line_len
    c = np.cos(a) * line_len
    r0 = np.trunc(x - c).astype(np.int64)
    r1 = np.trunc(x + c).astype(np.int64)
    c0 = np.trunc(y - s).astype(np.int64)
    c1 = np.trunc(y + s).astype(np.int64)
    pixels = out.reshape(-1, out.shape[2])
    # Groups of consecutive lines are blended one group after another (line order is preserved), which keeps
    # every temporary small.
    group = max(1, BLOCK_PIXELS // (im_size + 3))
    for g in range(0, num_lines, group):
        flat, val = line_pixels(r0[g : g + group], c0[g : g + group], r1[g : g + group], c1[g : g + group], im_size)
        _blend_lines(pixels, flat, val, im_size)
    return out


def _blend_lines(pixels: np.ndarray, flat: np.ndarray, val: np.ndarray, im_size: int) -> None:
    """Blend line-major entries ``(flat, val)`` of consecutive lines toward grey, in line order, in place.

    Wave ``w`` holds every pixel's ``w``-th line (in line order), so within a wave no pixel repeats and the
    waves reproduce the reference's sequential line-by-line blending (with truncation after every line).
    """
    if flat.size == 0:
        return
    key = flat.astype(np.uint16) if im_size * im_size <= 1 << 16 else flat
    rest = np.argsort(key, kind="stable")  # by pixel, then line (entries are line-major); radix for uint16
    rest_flat = flat[rest]
    keep_w = 1.0 - val  # (1 − v) times the uint8 value: exact, like float32(out) in the reference
    grey_w = val * 128
    while True:
        first = np.empty(len(rest), dtype=bool)  # first remaining occurrence of each pixel = this wave
        first[:1] = True
        np.not_equal(rest_flat[1:], rest_flat[:-1], out=first[1:])
        if first.all():
            _blend(pixels, rest_flat, keep_w[rest], grey_w[rest])
            return
        wave = rest[first]
        _blend(pixels, flat[wave], keep_w[wave], grey_w[wave])
        later = ~first
        rest, rest_flat = rest[later], rest_flat[later]


def _blend(pixels: np.ndarray, idx: np.ndarray, keep_w: np.ndarray, grey_w: np.ndarray) -> None:
    """``pixels[idx, c] = uint8((1 − v)·pixels[idx, c] + 128·v)`` per channel, in place (truncation)."""
    for ch in range(pixels.shape[1]):
        plane = pixels[:, ch]
        plane[idx] = keep_w * plane[idx] + grey_w
