"""The embedded ``demo`` dataset: a deterministic, synthetic 10-class image classification task.

Each class is one combination of a **shape** (circle, square, triangle, cross, ring), a **texture**
(solid, stripes, dots, checker) and a **colour** (red, yellow, green, blue, magenta); every attribute
is shared by at least two classes, so no single cue identifies a class (see :data:`DEMO_CLASSES`).
Every image draws, from its own seed, a random background (two random colours blended by a smooth
random field, plus faint random-angle stripes), the object's position, scale, rotation, colour
jitter and texture frequency, zero to two occluding rectangles of random colour, a brightness change
and uniform pixel noise. A tiny CNN trained for ~30 s on CPU reaches roughly 80-95 % top-1 on the
test split, and the ImageNet-C-bar corruptions (applied at the images' own size) lower it visibly.

Determinism: image ``i`` of split ``split`` with seed ``seed`` uses
``image_seed(stream_seed(seed, "demo:" + split), i)`` (:mod:`ovdiv.data.seeding`) for all its random
draws, and images are always rendered in fixed, index-aligned blocks of :data:`BLOCK` images, so the
bytes of an image never depend on how many images were asked for, or from where. Labels are balanced:
each aligned group of 10 indices holds every class once, in a seeded random order.

Speed: rendering is vectorised over a block (float32); ~3-6k images/s on one core at 64x64
(``scripts/bench_data.py``).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

from ovdiv.data.seeding import image_seed, stream_seed
from ovdiv.errors import DataError

__all__ = ["DEMO_CLASSES", "DEMO_ATTRIBUTES", "DEMO_SIZES", "BLOCK", "make_demo", "demo_images", "demo_labels"]

BLOCK = 32
"""Images are rendered in index-aligned blocks of this many images (part of the byte contract)."""

_SHAPES = ("circle", "square", "triangle", "cross", "ring")
_TEXTURES = ("solid", "stripes", "dots", "checker")
_HUES = {"red": 0.0, "yellow": 0.14, "green": 0.33, "blue": 0.62, "magenta": 0.85}

DEMO_ATTRIBUTES: list[tuple[str, str, str]] = [
    ("circle", "stripes", "magenta"),
    ("circle", "dots", "blue"),
    ("square", "solid", "green"),
    ("square", "stripes", "blue"),
    ("triangle", "checker", "red"),
    ("triangle", "solid", "yellow"),
    ("cross", "dots", "green"),
    ("cross", "checker", "yellow"),
    ("ring", "stripes", "magenta"),
    ("ring", "solid", "red"),
]
"""(shape, texture, colour) of each class, in label order."""

DEMO_CLASSES: list[str] = [f"{c}_{t}_{s}" for s, t, c in DEMO_ATTRIBUTES]
"""Class names in label order, e.g. ``"red_stripes_circle"``."""

DEMO_SIZES: dict[str, int] = {"test": 1000, "train": 10000}
"""Number of images of the ``demo`` (test) and ``demo:train`` dataset specs."""

_NUM_CLASSES = len(DEMO_CLASSES)
_CLS_SHAPE = np.array([_SHAPES.index(s) for s, _, _ in DEMO_ATTRIBUTES])
_CLS_TEXTURE = np.array([_TEXTURES.index(t) for _, t, _ in DEMO_ATTRIBUTES])
_CLS_HUE = np.array([_HUES[c] for _, _, c in DEMO_ATTRIBUTES])

_GRID = 4  # background low-frequency field: GRID x GRID control points, bilinearly upsampled
_NPARAM = 32  # uniform draws per image (fixed count: adding a draw would change every image)

Split = Literal["test", "train"]


def demo_labels(n: int, *, seed: int = 0, split: Split = "test", start: int = 0) -> npt.NDArray[np.int64]:
    """Labels of images ``start .. start+n-1`` of the demo split (cheap; no rendering).

    Args:
        n: Number of labels.
        seed: Dataset seed.
        split: ``"test"`` or ``"train"``.
        start: First image index.

    Returns:
        int64 array ``(n,)``; each aligned group of 10 indices contains every class exactly once.
    """
    base = _label_stream(seed, split)
    idx = np.arange(start, start + n)
    out = np.empty(n, dtype=np.int64)
    for group in np.unique(idx // _NUM_CLASSES):
        perm = np.random.default_rng(image_seed(base, int(group))).permutation(_NUM_CLASSES)
        sel = idx // _NUM_CLASSES == group
        out[sel] = perm[idx[sel] % _NUM_CLASSES]
    return out


def make_demo(
    n: int, *, size: int = 64, seed: int = 0, split: Split = "test", start: int = 0
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    """Generate images ``start .. start+n-1`` of the synthetic demo dataset.

    Args:
        n: Number of images (>= 0).
        size: Side of the square images in pixels (>= 16).
        seed: Dataset seed; same ``(seed, split, size, index)`` -> same bytes.
        split: ``"test"`` (the evaluation split, spec ``demo``) or ``"train"`` (spec ``demo:train``,
            an independent seed stream).
        start: Index of the first image (for sharded generation).

    Returns:
        ``(images, labels)``: uint8 ``(n, size, size, 3)`` RGB and int64 ``(n,)`` in ``[0, 10)``.

    Raises:
        DataError: ``n``/``start`` negative, ``size`` < 16 or an unknown split.
    """
    if split not in ("test", "train"):
        raise DataError(f"unknown demo split {split!r}", "use 'test' (spec demo) or 'train' (spec demo:train)")
    if n < 0 or start < 0:
        raise DataError(f"demo: n={n} and start={start} must be >= 0")
    if size < 16:
        raise DataError(f"demo: image size {size} is too small", "use size >= 16 (default 64)")
    labels = demo_labels(n, seed=seed, split=split, start=start)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    if n == 0:
        return images, labels
    base = stream_seed(seed, f"demo:{split}")
    first_block, last_block = start // BLOCK, (start + n - 1) // BLOCK
    for b in range(first_block, last_block + 1):
        b0 = b * BLOCK
        block_labels = demo_labels(BLOCK, seed=seed, split=split, start=b0)
        block = _render_block(base, b0, block_labels, size)
        lo, hi = max(start, b0), min(start + n, b0 + BLOCK)
        images[lo - start : hi - start] = block[lo - b0 : hi - b0]
    return images, labels


def demo_images(
    indices: npt.ArrayLike, *, size: int = 64, seed: int = 0, split: Split = "test"
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    """Images and labels at arbitrary indices (any order, repeats allowed); same bytes as :func:`make_demo`.

    Each index-aligned block of :data:`BLOCK` images that contains a requested index is rendered once.
    """
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    images = np.empty((len(idx), size, size, 3), dtype=np.uint8)
    labels = np.empty(len(idx), dtype=np.int64)
    if len(idx) and idx.min() < 0:
        raise DataError(f"demo: negative image index {int(idx.min())}")
    for b in np.unique(idx // BLOCK):
        sel = np.flatnonzero(idx // BLOCK == b)
        block, block_labels = make_demo(BLOCK, size=size, seed=seed, split=split, start=int(b) * BLOCK)
        images[sel] = block[idx[sel] - int(b) * BLOCK]
        labels[sel] = block_labels[idx[sel] - int(b) * BLOCK]
    return images, labels


def _label_stream(seed: int, split: str) -> int:
    return stream_seed(seed, f"demo:{split}:labels")


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB for ``(B,)`` arrays in [0, 1]; returns ``(B, 3)`` float32."""
    k = np.stack([(5.0 + h * 6.0) % 6.0, (3.0 + h * 6.0) % 6.0, (1.0 + h * 6.0) % 6.0], axis=1)
    rgb = v[:, None] - v[:, None] * s[:, None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)
    return rgb.astype(np.float32)


def _bilinear_matrix(size: int, grid: int) -> np.ndarray:
    """``(size, grid)`` weights that bilinearly upsample ``grid`` control points to ``size`` pixels."""
    pos = (np.arange(size) + 0.5) / size * (grid - 1)
    lo = np.clip(np.floor(pos).astype(int), 0, grid - 2)
    frac = pos - lo
    w = np.zeros((size, grid), dtype=np.float32)
    w[np.arange(size), lo] = 1.0 - frac
    w[np.arange(size), lo + 1] = frac
    return w


def _sdf(shape: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Signed distance (object units, < 0 inside) of a unit-radius shape at object coords ``u, v``."""
    if shape == 0:  # circle
        return np.sqrt(u * u + v * v) - 0.95
    if shape == 1:  # square
        return np.maximum(np.abs(u), np.abs(v)) - 0.8
    if shape == 2:  # equilateral triangle, circumradius 1
        h = 0.8660254 * u
        return np.maximum(np.maximum(-v, h + 0.5 * v), -h + 0.5 * v) - 0.5
    if shape == 3:  # cross (plus sign)
        au, av = np.abs(u), np.abs(v)
        return np.minimum(np.maximum(au - 0.33, av - 1.0), np.maximum(au - 1.0, av - 0.33))
    au = np.sqrt(u * u + v * v)  # ring
    return np.abs(au - 0.68) - 0.3


def _texture(texture: int, u: np.ndarray, v: np.ndarray, freq: np.ndarray) -> np.ndarray:
    """Texture weight in [0, 1] (0 = base colour, 1 = pattern colour); ``freq`` broadcasts to u."""
    if texture == 0:  # solid
        return np.zeros_like(u)
    fu, fv = u * freq, v * freq
    if texture == 1:  # stripes
        return np.clip(np.sin(np.float32(np.pi) * fu) * 2.0 + 0.5, 0.0, 1.0)
    if texture == 2:  # dots
        du, dv = fu - np.floor(fu) - 0.5, fv - np.floor(fv) - 0.5
        return np.clip((0.1 - (du * du + dv * dv)) * 40.0, 0.0, 1.0)
    return ((np.floor(fu) + np.floor(fv)) % 2.0).astype(np.float32)  # checker


def _render_block(base_seed: int, first_index: int, labels: np.ndarray, size: int) -> np.ndarray:
    """Render images ``first_index .. first_index+len(labels)-1``; uint8 ``(B, size, size, 3)``."""
    nb = len(labels)
    s2 = size * size
    params = np.empty((nb, _NPARAM), dtype=np.float64)
    grids = np.empty((nb, 2, _GRID, _GRID), dtype=np.float32)
    noise = np.empty((nb, s2 * 3), dtype=np.uint8)
    for j in range(nb):
        rng = np.random.Generator(np.random.PCG64(image_seed(base_seed, first_index + j)))
        params[j] = rng.random(_NPARAM)
        grids[j] = rng.random((2, _GRID, _GRID), dtype=np.float32)
        noise[j] = np.frombuffer(rng.bytes(s2 * 3), dtype=np.uint8)
    p = params.T  # (NPARAM, B): one row per parameter
    f32 = np.float32
    # Layout: channel-first with flattened pixels, (B, 3, P) and (B, 1, P), P = size*size, so that
    # every broadcast has a long inner loop; transposed to (B, S, S, 3) once at the end.
    npx = size * size

    def col(a: np.ndarray) -> np.ndarray:  # (B,) -> (B, 1, 1) float32
        return np.asarray(a, dtype=f32)[:, None, None]

    xs = (np.arange(size, dtype=f32) + 0.5) / size
    gx = np.tile(xs, size)[None, None, :]  # (1, 1, P): x of each pixel
    gy = np.repeat(xs, size)[None, None, :]  # (1, 1, P): y of each pixel

    # ---- background: two random colours mixed by a smooth random field, plus faint stripes -------
    c1 = p[0:3].T.astype(f32)[:, :, None]  # (B, 3, 1)
    c2 = p[3:6].T.astype(f32)[:, :, None]
    w = _bilinear_matrix(size, _GRID)
    field = np.matmul(np.matmul(w[None], grids[:, 0]), w.T[None]).reshape(nb, 1, npx)
    bang = col(p[6] * 2 * np.pi)
    bfreq = col((4.0 + 8.0 * p[7]) * 2 * np.pi)
    bamp = col(0.25 * p[8] * (p[9] < 0.7))
    stripes = np.sin((gx * np.cos(bang) + gy * np.sin(bang)) * bfreq) * bamp
    img = field * (c2 - c1)  # (B, 3, P)
    img += c1
    img += stripes

    # ---- the object ---------------------------------------------------------------------------
    cx, cy = col(0.3 + 0.4 * p[10]), col(0.3 + 0.4 * p[11])
    radius = col(0.15 + 0.17 * p[12])
    ang = col(p[13] * 2 * np.pi)
    ca, sa = np.cos(ang) / radius, np.sin(ang) / radius
    dx, dy = gx - cx, gy - cy
    u = dx * ca + dy * sa  # (B, 1, P) object coordinates, unit = object radius
    v = dy * ca - dx * sa
    freq = col(1.6 + 1.0 * p[14])
    shapes, textures = _CLS_SHAPE[labels], _CLS_TEXTURE[labels]
    dist = np.empty((nb, 1, npx), dtype=f32)
    tex = np.empty((nb, 1, npx), dtype=f32)
    for k in range(len(_SHAPES)):
        sel = np.flatnonzero(shapes == k)
        if sel.size:
            dist[sel] = _sdf(k, u[sel], v[sel])
    for k in range(len(_TEXTURES)):
        sel = np.flatnonzero(textures == k)
        if sel.size:
            tex[sel] = _texture(k, u[sel], v[sel], freq[sel])
    alpha = np.clip(0.5 - dist * (radius * size), 0.0, 1.0)
    hue = (_CLS_HUE[labels] + 0.12 * (p[15] - 0.5)) % 1.0
    col_a = _hsv_to_rgb(hue, 0.4 + 0.6 * p[16], 0.5 + 0.5 * p[17])[:, :, None]  # (B, 3, 1)
    col_b = col_a * (0.25 + 0.3 * p[18]).astype(f32)[:, None, None]
    fg = tex * (col_b - col_a)  # (B, 3, P)
    fg += col_a
    fg -= img
    fg *= alpha
    img += fg

    # ---- occluders: up to two rectangles of random colour near the object ------------------------
    for o in range(2):
        q = 19 + 5 * o
        present = p[q] < (0.7 if o == 0 else 0.35)
        if not present.any():
            continue
        half = col(0.06 + 0.16 * p[q + 1])
        ox = cx + col((p[q + 2] - 0.5) * 2.0) * radius
        oy = cy + col((p[q + 3] - 0.5) * 2.0) * radius
        mask = (np.abs(gx - ox) < half) & (np.abs(gy - oy) < 0.5 * half) & present[:, None, None]
        occ_col = _hsv_to_rgb(p[q + 4], 0.2 + 0.8 * p[q + 2], 0.2 + 0.8 * p[q + 3])[:, :, None]
        np.copyto(img, np.broadcast_to(occ_col, img.shape), where=mask)

    # ---- lighting and noise ---------------------------------------------------------------------
    gain = col(0.75 + 0.45 * p[29])
    namp = col((0.03 + 0.12 * p[30]) / 127.5)
    img *= gain * f32(255.0)
    noise_f = noise.reshape(nb, 3, npx).astype(f32)
    noise_f -= f32(127.5)
    noise_f *= namp * f32(255.0)
    img += noise_f
    img += f32(0.5)
    np.clip(img, 0.0, 255.0, out=img)
    out = img.astype(np.uint8)
    return np.ascontiguousarray(out.transpose(0, 2, 1)).reshape(nb, size, size, 3)
