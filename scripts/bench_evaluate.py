"""Benchmark: ovdiv's evaluator forward throughput vs OpenVINO benchmark_app, and peak RSS at N and 4N.

Builds 3 ResNet50-size IRs (torchvision resnet50, random weights, openvino.convert_model, FP32 weights,
dynamic batch) and a prepared dataset of random uint8 224x224 images (a .npy memmap wrapped as an
``ArrayDataset``). Then, side by side in one run, on the same IRs / device / f32 / batch:

* evaluator: ``ovdiv.evaluate`` logits phase over N images x 3 members (members compiled and run once
  beforehand, as benchmark_app excludes compile time and its first inference), images*members per second;
* benchmark_app: ``-hint throughput -api async -infer_precision f32 -b B -shape [B,3,224,224] -t T``
  per IR; combined rate = 3 / sum_i(1 / fps_i) (same work as the evaluator: each image through 3 members);
* peak RSS (VmHWM) and peak anonymous RSS (RssAnon sampled every 20 ms) of a fresh child process
  evaluating N and 4N images (attribution and CKA off), plus the size of the logits it stores.
  Working memory is bounded by the cache chunk (``--chunk``, default 128 here; 512 in ``ovdiv
  evaluate``), so N >= chunk shows whether anything else grows with N. VmHWM also counts the
  memory-mapped image pages read (file-backed, reclaimable); RssAnon does not.

Prints ONE JSON line. Usage: ``python scripts/bench_evaluate.py [--n 128] [--batch 8] [--time 10]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def _build_irs(root: Path, n_members: int) -> list[Path]:
    import openvino as ov
    import torch
    import torchvision

    from ovdiv.cards import ModelCard, sha256_file

    paths = []
    for i in range(n_members):
        torch.manual_seed(i)
        model = torchvision.models.resnet50(weights=None).eval()
        ovm = ov.convert_model(model, example_input=torch.zeros(1, 3, 224, 224))
        ovm.reshape([-1, 3, 224, 224])
        p = root / f"resnet50_{i}.xml"
        ov.save_model(ovm, str(p), compress_to_fp16=False)
        ModelCard(
            name=p.stem,
            format="ir",
            num_classes=1000,
            input_size=(224, 224),
            sha256=sha256_file(p),
            architecture="resnet50",
            params=sum(q.numel() for q in model.parameters()),
        ).save(p.with_suffix(".json"))
        paths.append(p)
    return paths


def _benchmark_app(xml: Path, batch: int, seconds: int, device: str) -> float:
    exe = shutil.which("benchmark_app")
    cmd = [exe] if exe else [sys.executable, "-m", "openvino.tools.benchmark.main"]
    cmd += [
        "-m",
        str(xml),
        "-d",
        device,
        "-hint",
        "throughput",
        "-api",
        "async",
        "-infer_precision",
        "f32",
        "-b",
        str(batch),
        "-shape",
        f"[{batch},3,224,224]",
        "-t",
        str(seconds),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    m = re.search(r"Throughput:\s*([0-9.]+)\s*FPS", out)
    if not m:
        raise RuntimeError(f"benchmark_app output has no throughput:\n{out[-2000:]}")
    return float(m.group(1))


def _evaluator(paths: list[Path], images: Path, n: int, batch: int, device: str, cache: Path, chunk: int) -> dict:
    import numpy as np

    from ovdiv.evaluate import ArrayDataset, Ensemble, evaluate

    ens = Ensemble.from_paths(paths, device=device, precision="f32")
    for m in ens:  # compile + one first inference outside the timed phase, as benchmark_app does
        m.predict(np.zeros((batch, 224, 224, 3), np.uint8), batch_size=batch)
    data = ArrayDataset(np.load(images, mmap_mode="r")[:n], np.zeros(n, dtype=np.int64), name=f"random{n}")
    res = evaluate(ens, [data], attribution="none", cka_samples=0, batch_size=batch, cache_dir=cache, chunk_size=chunk)
    t = res.metadata["timings"]["logits"]
    return {
        "seconds": t,
        "images_members_per_s": len(ens) * n / t,
        "nireq": ens[0].num_requests,
        "inference_precision": ens[0].inference_precision,
    }


def _rss_child(args: argparse.Namespace) -> None:
    """Child mode: evaluate N images and print peak RSS figures (MiB)."""
    peak_anon = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("RssAnon:"):
                    peak_anon[0] = max(peak_anon[0], int(line.split()[1]))
            time.sleep(0.02)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    paths = [Path(p) for p in args.paths.split(",")]
    r = _evaluator(paths, Path(args.images), args.n, args.batch, args.device, Path(args.cache), args.chunk)
    stop.set()
    th.join()
    hwm = next(int(x.split()[1]) for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmHWM:"))
    print(json.dumps({"n": args.n, "peak_rss_mib": hwm / 1024, "peak_anon_mib": peak_anon[0] / 1024, **r}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=128, help="images for throughput and the small RSS run")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--time", type=int, default=10, help="benchmark_app seconds per IR")
    ap.add_argument("--members", type=int, default=3)
    ap.add_argument("--device", default="CPU")
    ap.add_argument("--chunk", type=int, default=128, help="evaluator cache chunk (memory is flat for N >= chunk)")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--paths", help=argparse.SUPPRESS)
    ap.add_argument("--images", help=argparse.SUPPRESS)
    ap.add_argument("--cache", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _rss_child(args)
        return
    import numpy as np

    root = args.workdir or Path(tempfile.mkdtemp(prefix="ovdiv_bench_"))
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    paths = _build_irs(root, args.members)
    images = root / "images.npy"
    arr = np.lib.format.open_memmap(images, mode="w+", dtype=np.uint8, shape=(4 * args.n, 224, 224, 3))
    rng = np.random.default_rng(0)
    for s in range(0, len(arr), 256):
        arr[s : s + 256] = rng.integers(0, 256, size=arr[s : s + 256].shape, dtype=np.uint8)
    arr.flush()
    del arr
    build_s = time.perf_counter() - t0

    ev = _evaluator(paths, images, args.n, args.batch, args.device, root / "cache_tp", args.chunk)
    ba = [_benchmark_app(p, args.batch, args.time, args.device) for p in paths]
    ba_combined = len(ba) / sum(1.0 / f for f in ba)
    ev2 = _evaluator(paths, images, args.n, args.batch, args.device, root / "cache_tp2", args.chunk)  # again after BA

    rss = {}
    for n in (args.n, 4 * args.n):
        cmd = [sys.executable, __file__, "--child", "--paths", ",".join(map(str, paths)), "--images", str(images)]
        cmd += ["--n", str(n), "--batch", str(args.batch), "--device", args.device, "--chunk", str(args.chunk)]
        cmd += ["--cache", str(root / f"cache_rss{n}")]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ}).stdout
        rss[n] = json.loads(out.strip().splitlines()[-1])
    small, big = rss[args.n], rss[4 * args.n]
    logits_mib = lambda n: args.members * n * 1000 * 4 / 2**20  # noqa: E731
    evaluator_fps = (ev["images_members_per_s"] + ev2["images_members_per_s"]) / 2
    result = {
        "bench": "evaluate",
        "device": args.device,
        "precision": "f32",
        "batch": args.batch,
        "members": args.members,
        "model": "resnet50 (random weights, FP32 IR, dynamic batch)",
        "n": args.n,
        "chunk_size": args.chunk,
        "nireq": ev["nireq"],
        "inference_precision": ev["inference_precision"],
        "evaluator_images_members_per_s": round(evaluator_fps, 2),
        "evaluator_runs": [round(ev["images_members_per_s"], 2), round(ev2["images_members_per_s"], 2)],
        "benchmark_app_fps_per_ir": [round(f, 2) for f in ba],
        "benchmark_app_combined_fps": round(ba_combined, 2),
        "ratio_vs_benchmark_app": round(evaluator_fps / ba_combined, 3),
        "peak_rss_mib": {str(args.n): round(small["peak_rss_mib"], 1), str(4 * args.n): round(big["peak_rss_mib"], 1)},
        "peak_anon_rss_mib": {
            str(args.n): round(small["peak_anon_mib"], 1),
            str(4 * args.n): round(big["peak_anon_mib"], 1),
        },
        "anon_rss_growth_mib": round(big["peak_anon_mib"] - small["peak_anon_mib"], 1),
        "stored_logits_growth_mib": round(logits_mib(4 * args.n) - logits_mib(args.n), 1),
        "build_seconds": round(build_s, 1),
        "workdir": str(root),
    }
    print(json.dumps(result))
    if args.workdir is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
