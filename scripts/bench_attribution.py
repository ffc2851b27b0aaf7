"""Benchmark: OpenVINO forward vs OpenVINO VJP (saliency) vs torch CPU autograd saliency.

torchvision resnet50 (random weights), 224x224, batch 8 and 32, all f32. The three contenders run
interleaved, once per round, so machine load hits them alike; per contender we report the best and the
median round in images/s. Prints ONE JSON line with the figures and the ratios

* ``vjp_over_forward`` = VJP time / forward time (target <= 2.5), and
* ``ov_vjp_speedup_vs_torch`` = torch saliency time / OV VJP time (target >= 1.5 at batch 32),

computed from the best rounds (the least disturbed; medians are reported too), and the cost of the runtime
gradient check (``ovdiv.attribution.check_gradients``, mode ``quick``) for this member:
``gradient_check_quick_s`` (best of ``min(rounds, 3)``) and ``gradient_check_over_vjp_batch`` = check time /
one VJP batch of the largest batch size (batch 32 by default).

Usage: ``python scripts/bench_attribution.py [--rounds 5] [--batches 8 32] [--threads N]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from typing import Any

import numpy as np
import openvino as ov
import torch
import torchvision

from ovdiv.attribution import VJPModel, check_gradients


def _torch_saliency(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    xx = x.clone().requires_grad_(True)
    y = model(xx)
    (g,) = torch.autograd.grad(y.gather(1, target[:, None]).sum(), xx)
    return g.numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batches", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--size", type=int, default=224)
    args = ap.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    model = torchvision.models.resnet50().eval()
    s = args.size
    t0 = time.perf_counter()
    ir = ov.convert_model(model, example_input=torch.zeros(1, 3, s, s), input=[-1, 3, s, s])
    runner = VJPModel(ir, config={"INFERENCE_NUM_THREADS": args.threads})
    build_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)

    results: dict[str, Any] = {}
    for b in args.batches:
        x = rng.standard_normal((b, 3, s, s)).astype(np.float32)
        t = rng.integers(0, 1000, b)
        u = np.zeros((b, 1000), np.float32)
        u[np.arange(b), t] = 1.0
        xt, tt = torch.from_numpy(x), torch.from_numpy(t)
        contenders = {
            "ov_forward": lambda x=x: runner.forward(x),
            "ov_vjp": lambda x=x, u=u: runner.vjp(x, u),
            "torch_saliency": lambda xt=xt, tt=tt: _torch_saliency(model, xt, tt),
        }
        for fn in contenders.values():  # warm-up
            fn()
        times: dict[str, list[float]] = {k: [] for k in contenders}
        for _ in range(args.rounds):
            for k, fn in contenders.items():
                t1 = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t1)
        best = {k: min(v) for k, v in times.items()}
        med = {k: statistics.median(v) for k, v in times.items()}
        # sanity: the two gradients agree
        _, g_ov = runner.vjp(x[:2], u[:2])
        g_t = _torch_saliency(model, xt[:2], tt[:2])
        rel = float(np.linalg.norm(g_ov - g_t) / np.linalg.norm(g_t))
        results[str(b)] = {
            "img_per_s_best": {k: round(b / v, 2) for k, v in best.items()},
            "img_per_s_median": {k: round(b / v, 2) for k, v in med.items()},
            "vjp_over_forward": round(best["ov_vjp"] / best["ov_forward"], 3),
            "vjp_over_forward_median": round(med["ov_vjp"] / med["ov_forward"], 3),
            "ov_vjp_speedup_vs_torch": round(best["torch_saliency"] / best["ov_vjp"], 3),
            "ov_vjp_speedup_vs_torch_median": round(med["torch_saliency"] / med["ov_vjp"], 3),
            "grad_rel_l2_vs_torch": float(f"{rel:.3e}"),
        }
    key = "32" if "32" in results else str(args.batches[-1])
    imgs = rng.integers(0, 256, (2, s, s, 3), dtype=np.uint8)
    check_times, check = [], None
    for _ in range(max(1, min(args.rounds, 3))):
        t1 = time.perf_counter()
        check = check_gradients(runner, imgs, "quick", name="resnet50")
        check_times.append(time.perf_counter() - t1)
    assert check is not None
    vjp_batch_s = int(key) / results[key]["img_per_s_best"]["ov_vjp"]
    out = {
        "bench": "attribution",
        "model": "torchvision resnet50 (random weights)",
        "input": [3, s, s],
        "device": "CPU",
        "inference_precision": runner.inference_precision,
        "openvino": ov.get_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "threads": args.threads,
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "rounds": args.rounds,
        "build_s": round(build_s, 2),
        "batches": results,
        "vjp_over_forward_b32": results[key]["vjp_over_forward"],
        "ov_vjp_speedup_vs_torch_b32": results[key]["ov_vjp_speedup_vs_torch"],
        "gradient_check_quick_s": round(min(check_times), 3),
        "gradient_check_over_vjp_batch": round(min(check_times) / vjp_batch_s, 3),
        "gradient_check_vjp_batch": int(key),
        "gradient_check_forward_images": check.images * check.directions * 4,
        "gradient_check_outcome": check.outcome,
        "gradient_check_error_over_tolerance": round(float(check.ratio or 0.0), 4),
        "targets": {"vjp_over_forward_max": 2.5, "ov_vjp_speedup_vs_torch_min": 1.5},
        "pass": bool(results[key]["vjp_over_forward"] <= 2.5 and results[key]["ov_vjp_speedup_vs_torch"] >= 1.5),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
