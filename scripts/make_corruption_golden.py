"""Regenerate tests/data/golden/corruptions_golden.npz from the (reference-verified) implementation.

Run only after the reference tests pass (``pytest tests/data/test_corruptions_reference.py``): the golden
file then guards against regressions on machines without ``../shared/reference``. Prints one JSON line.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from ovdiv.data.corruptions import OFFICIAL_CBAR, PAPER_SETTINGS, available, corrupt, pool_levels, severity_table

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "golden" / "corruptions_golden.npz"


def golden_image(size: int) -> np.ndarray:
    """Gradient + 8-px checker + fixed noise (the same construction the golden test uses)."""
    y, x = np.mgrid[0:size, 0:size]
    img = np.stack([(x * 255) // (size - 1), (y * 255) // (size - 1), np.where((x // 8 + y // 8) % 2, 200, 55)], -1)
    noise = np.random.RandomState(size).randint(-25, 26, size=img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def cases() -> list[tuple[str, float, int, int]]:
    out = []
    for name in available():
        sevs = {PAPER_SETTINGS.get(name, pool_levels(name)[4])}
        if name in OFFICIAL_CBAR:
            sevs.add(severity_table(name)[2])
        for sev in sorted(sevs):
            for seed in (0, 1):
                out.append((name, sev, seed, 32))
        if name in PAPER_SETTINGS:
            out.append((name, PAPER_SETTINGS[name], 0, 224))
    return out


def main() -> int:
    arrays: dict[str, np.ndarray] = {}
    for name, sev, seed, size in cases():
        key = f"{name}|{sev!r}|{seed}|{size}"
        result = corrupt(golden_image(size), name, sev, seed)
        if size <= 32:
            arrays[key] = result
        else:  # large outputs: hash + a 24x24 crop
            arrays[key + "|sha256"] = np.array(hashlib.sha256(result.tobytes()).hexdigest())
            arrays[key + "|crop"] = result[100:124, 100:124]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, **arrays)
    print(json.dumps({"file": str(OUT), "cases": len(arrays), "bytes": OUT.stat().st_size}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
