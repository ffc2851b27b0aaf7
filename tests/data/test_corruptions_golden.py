"""Committed golden outputs (made by the reference-verified implementation) guard against regressions.

Unlike test_corruptions_reference.py these need no ``../shared/reference``; regenerate them with
``python scripts/make_corruption_golden.py`` only after the reference tests pass.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from ovdiv.data.corruptions import available, corrupt

GOLDEN = Path(__file__).resolve().parent / "golden" / "corruptions_golden.npz"


def golden_image(size: int) -> np.ndarray:
    """Same construction as scripts/make_corruption_golden.py."""
    y, x = np.mgrid[0:size, 0:size]
    img = np.stack([(x * 255) // (size - 1), (y * 255) // (size - 1), np.where((x // 8 + y // 8) % 2, 200, 55)], -1)
    noise = np.random.RandomState(size).randint(-25, 26, size=img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def load() -> dict[str, np.ndarray]:
    with np.load(GOLDEN) as data:
        return {k: data[k] for k in data.files}


def test_golden_file_is_small_and_covers_every_corruption() -> None:
    assert GOLDEN.stat().st_size < 1_000_000
    names = {key.split("|")[0] for key in load()}
    assert set(available()) <= names


def test_golden_outputs() -> None:
    data = load()
    problems = []
    for key, value in data.items():
        parts = key.split("|")
        if parts[-1] == "crop":
            continue
        name, sev, seed, size = parts[0], float(parts[1]), int(parts[2]), int(parts[3])
        if name not in available():
            pytest.fail(f"golden case {key} for a corruption that is no longer available")
        out = corrupt(golden_image(size), name, sev, seed)
        if parts[-1] == "sha256":
            crop = data[key[: -len("sha256")] + "crop"]
            if hashlib.sha256(out.tobytes()).hexdigest() != str(value) or not np.array_equal(
                out[100:124, 100:124], crop
            ):
                problems.append(key)
        elif not np.array_equal(out, value):
            problems.append(f"{key}: {int((out != value).sum())} values differ")
    assert not problems, "\n".join(problems)
