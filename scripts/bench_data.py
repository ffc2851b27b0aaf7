"""Benchmark the data layer on one core; prints ONE JSON line.

Figures: demo generation (images/s at 64 px, target >= 2000; wall clock and per CPU-second of this
single-threaded process, which is the one-core rate even on a busy machine), ImageNet-style decode + resize 256 +
center crop 224 of 500x375 JPEGs (images/s with 1 and 2 worker threads, and their ratio), and the
prepared-cache read speed (images/s through ``PreparedDataset.batches``).

Run: ``OMP_NUM_THREADS=1 python scripts/bench_data.py [--n 4096]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from ovdiv.data import load, make_demo, prepare


def _best_rate(fn, n: int, repeats: int = 3, clock=time.perf_counter) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(repeats):
        t = clock()
        fn()
        best = min(best, clock() - t)
    return n / best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=4096, help="demo images per timing")
    ap.add_argument("--files", type=int, default=96, help="JPEG files for the decode timing")
    args = ap.parse_args()
    make_demo(64)  # warm-up
    demo_rate = _best_rate(lambda: make_demo(args.n), args.n)
    # CPU time of this (single-threaded) process: the one-core rate even on a busy machine
    demo_rate_cpu = _best_rate(lambda: make_demo(args.n), args.n, clock=time.process_time)
    demo_rate_224 = _best_rate(lambda: make_demo(256, size=224), 256, repeats=2)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "tree"
        rng = np.random.default_rng(0)
        for i in range(args.files):
            p = root / f"c{i % 4}" / f"{i}.JPEG"
            p.parent.mkdir(parents=True, exist_ok=True)
            small = rng.integers(0, 256, (47, 63, 3), dtype=np.uint8)
            Image.fromarray(small).resize((500, 375), Image.Resampling.BICUBIC).save(p, quality=90)
        spec = f"imagefolder:{root}"
        dec1 = _best_rate(lambda: load(spec, workers=1), args.files, repeats=2)
        dec2 = _best_rate(lambda: load(spec, workers=2), args.files, repeats=2)
        ds = prepare("demo", cache_dir=Path(tmp) / "cache")
        read = _best_rate(lambda: [np.array(b[1]) for b in ds.batches(256)], len(ds))
    print(
        json.dumps(
            {
                "bench": "data",
                "demo_64px_images_per_s": round(demo_rate, 1),
                "demo_64px_images_per_cpu_s": round(demo_rate_cpu, 1),
                "demo_64px_cpu_vs_target_2000": round(demo_rate_cpu / 2000, 2),
                "demo_224px_images_per_s": round(demo_rate_224, 1),
                "decode_resize_crop_500x375_images_per_s_1worker": round(dec1, 1),
                "decode_resize_crop_500x375_images_per_s_2workers": round(dec2, 1),
                "workers_2_vs_1": round(dec2 / dec1, 2),
                "prepared_cache_read_images_per_s": round(read, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
