"""The vectorised kernels against plain per-pixel Python transliterations of the reference algorithms.

These oracles follow the reference's scalar code path (Python floats, ``math`` = glibc, one pixel at a
time) on small images of several sizes and random parameters, so they also cover sizes and parameter
values the shared reference records do not.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from ovdiv.data.corruptions import apply_parameters, sample_parameters
from ovdiv.data.corruptions.checkerboard import _int_mod2
from ovdiv.data.corruptions.interpolation import BilinearZero
from ovdiv.data.corruptions.lines import line_pixels


def zingl_line_aa(r0: int, c0: int, r1: int, c1: int) -> list[tuple[int, int, float]]:
    """Scalar port of skimage.draw.line_aa (float64 error terms), in emission order."""
    out = []
    dc, dr = abs(c0 - c1), abs(r0 - r1)
    sc = 1 if c0 < c1 else -1
    sr = 1 if r0 < r1 else -1
    err = float(dc - dr)
    ed = 1.0 if dc + dr == 0 else math.sqrt(dc * dc + dr * dr)
    c, r = c0, r0
    while True:
        out.append((r, c, abs(err - dc + dr) / ed))
        e2, c_prev = err, c
        if 2 * e2 >= -dc:
            if c == c1:
                break
            if e2 + dr < ed:
                out.append((r + sr, c, abs(e2 + dr) / ed))
            err -= dr
            c += sc
        if 2 * e2 <= dr:
            if r == r1:
                break
            if dc - e2 < ed:
                out.append((r, c_prev + sc, abs(dc - e2) / ed))
            err += dc
            r += sr
    return [(rr, cc, 1.0 - e) for rr, cc, e in out]


def test_line_pixels_equals_zingl_loop() -> None:
    rs = np.random.RandomState(0)
    size = 40
    ends = rs.randint(-60, 100, size=(400, 4))
    ends[:20, 2:] = ends[:20, :2]  # single points
    ends[20:40, 2] = ends[20:40, 0]  # vertical
    ends[40:60, 3] = ends[40:60, 1]  # horizontal
    ends[60:80, 2] = ends[60:80, 0] + (ends[60:80, 3] - ends[60:80, 1])  # diagonal
    flat, vals, line = line_pixels(ends[:, 0], ends[:, 1], ends[:, 2], ends[:, 3], size, return_line=True)
    for k, (r0, c0, r1, c1) in enumerate(ends.tolist()):
        expected = sorted(
            (r * size + c, v) for r, c, v in zingl_line_aa(r0, c0, r1, c1) if 0 <= r < size and 0 <= c < size
        )
        got = sorted(zip(flat[line == k].tolist(), vals[line == k].tolist(), strict=True))
        assert got == expected, (r0, c0, r1, c1)


def lines_oracle(image: np.ndarray, p: dict) -> np.ndarray:
    s = image.shape[0]
    out = image.copy()
    rs = np.random.RandomState(p["seed"])
    for _ in range(int(p["density"] * s)):
        x = s * rs.uniform()
        y = s * rs.uniform()
        a = p["angle"] + 2 * np.pi * p["angle_variation"] * (rs.uniform() - 0.5)
        sn, cs = math.sin(a) * (p["length"] * s), math.cos(a) * (p["length"] * s)
        px = [
            t
            for t in zingl_line_aa(int(x - cs), int(y - sn), int(x + cs), int(y + sn))
            if 0 <= t[0] < s and 0 <= t[1] < s
        ]
        if not px:
            continue
        rr = np.array([t[0] for t in px])
        cc = np.array([t[1] for t in px])
        val = np.array([t[2] for t in px])[:, None]
        out[rr, cc, :] = (1.0 - val) * out[rr, cc, :].astype(np.float32) + val * 128
    return out


def plasma_oracle(image: np.ndarray, p: dict) -> np.ndarray:
    s = image.shape[0]
    noise = np.zeros((s, s, 3))
    t, sharp, scale = p["time"], p["sharpness"], p["scale"]
    for yi in range(s):
        for xi in range(s):
            x, y = xi / scale, yi / scale
            f = g = h = 1.0
            for _ in range(p["iterations"]):
                a = math.cos(y * f - 0.0 + t / g) / h
                b = math.sin(x * f - 0.0 + t / g) / h
                a, b = a + (-b) * 0.3, b + a * 0.3
                x += a
                y += b
                f *= 1.93
                g *= 1.15
                h *= 2.25 - sharp
            noise[yi, xi] = (math.sin(x - t), math.sin((x + y + math.sin(t)) * 0.5), math.sin(y + t))
    i = p["intensity"]
    return np.clip((1 - i / 255) * image + i * noise, 0, 255).astype(np.uint8)


def checkerboard_oracle(image: np.ndarray, p: dict) -> np.ndarray:
    s = image.shape[0]
    sc = p["scales"][0]
    grid = np.random.RandomState(p["seed"]).uniform(size=(int(4 * s // sc), int(4 * s // sc))) < p["fraction"]
    out = image.copy()
    ca, sa = math.cos(p["angle"]), math.sin(p["angle"])
    for y in range(s):
        for x in range(s):
            nx = (ca * y + sa * x) / sc
            ny = (-sa * y + ca * x) / sc
            if not (int(nx % 2) != int(ny % 2) or not grid[int(nx), int(ny)]):
                out[y, x] = 128
    return out


def bilinear_oracle(image: np.ndarray, p0: float, p1: float) -> np.ndarray:
    h, w = image.shape[:2]
    lo, u = math.floor(p0), math.floor(p1)
    r, d = lo + 1, u + 1

    def px(a: int, b: int) -> np.ndarray:
        return image[a, b, :] if 0 <= a < h and 0 <= b < w else np.array([0, 0, 0])

    al = px(lo, u) * (1.0 - p1 + u) + px(lo, d) * (1.0 - d + p1)
    ar = px(r, u) * (1.0 - p1 + u) + px(r, d) * (1.0 - d + p1)
    return al * (1.0 - p0 + lo) + ar * (1.0 - r + p0)


def water_drop_oracle(image: np.ndarray, p: dict) -> np.ndarray:
    s = image.shape[0]
    out = np.zeros(image.shape)
    c = np.asarray(p["center"], dtype=np.float64)
    for y in range(s):
        for x in range(s):
            point = np.array([y, x])
            dist = float(np.linalg.norm(point - c))
            q = point.astype(np.float64)
            if dist <= p["radius"]:
                amount = p["amplitude"] * math.sin(dist / p["wavelength"] * np.pi * 2 - p["phase"])
                if dist != 0.0:
                    amount *= p["wavelength"] / dist
                q = point + amount * (point - c)
            out[y, x] = bilinear_oracle(image, q[0], q[1])
    return np.clip(out, 0, 255).astype(np.uint8)


ORACLES = {
    "lines": lines_oracle,
    "plasma_noise": plasma_oracle,
    "checkerboard_cutout": checkerboard_oracle,
    "water_drop": water_drop_oracle,
}


@pytest.mark.parametrize("size", [17, 40])
@pytest.mark.parametrize("name", sorted(ORACLES))
def test_paper_four_equal_scalar_oracles(name: str, size: int) -> None:
    rs = np.random.RandomState(size)
    image = rs.randint(0, 256, size=(size, size, 3)).astype(np.uint8)
    for seed in range(3):
        sev = [4.0, 7.0, 10.0][seed] if name != "lines" else [1.6, 4.0, 8.0][seed]
        params = sample_parameters(name, sev, seed, im_size=size)
        expected = ORACLES[name](image, params)
        assert np.array_equal(apply_parameters(image, name, params), expected), (name, size, seed)


def test_bilinear_equals_scalar_oracle_including_far_points() -> None:
    rs = np.random.RandomState(1)
    image = rs.randint(0, 256, size=(12, 12, 3)).astype(np.uint8)
    near = rs.uniform(-3, 15, size=(2, 300))
    far = rs.uniform(-200, 200, size=(2, 50))
    exact = np.array([[0.0, 11.0, 5.0, -1.0], [0.0, 11.0, -1.0, 5.0]])
    for p0, p1 in (near, far, exact):
        got = BilinearZero(image, margin=4)(p0, p1)
        want = np.array([bilinear_oracle(image, a, b) for a, b in zip(p0, p1, strict=True)]).T
        assert np.array_equal(got, want)


def test_int_mod2_equals_numpy_floor_mod() -> None:
    rs = np.random.RandomState(2)
    tiny = np.ldexp(1.0, -np.arange(40, 70))
    ints = np.arange(-6.0, 7.0)
    v = np.concatenate(
        [rs.standard_normal(20000) * 40, tiny, -tiny, ints, np.nextafter(ints, -np.inf), np.nextafter(ints, np.inf)]
    )
    assert np.array_equal(_int_mod2(v), np.remainder(v, 2).astype(np.int64))


@pytest.mark.parametrize("angle", [0.0, np.pi / 2, np.pi, 3 * np.pi / 2, 2 * np.pi - 1e-12])
def test_checkerboard_axis_aligned_angles(angle: float) -> None:
    """Angles whose sin/cos are ~1e-16 put pixels at tiny negative u or v (the int(v % 2) == 2 corner case)."""
    image = np.random.RandomState(3).randint(0, 256, size=(48, 48, 3)).astype(np.uint8)
    params = sample_parameters("checkerboard_cutout", 5.0, 4, im_size=48)
    params["angle"] = angle
    assert np.array_equal(apply_parameters(image, "checkerboard_cutout", params), checkerboard_oracle(image, params))
