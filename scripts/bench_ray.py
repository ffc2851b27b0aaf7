"""Benchmark: ``ovdiv evaluate --executor ray`` vs the local engine on this machine, and a scale-out model.

Builds 3 ResNet-50-size IRs (torchvision resnet50, random weights, no download) and N random uint8 224x224
images (an ``ArrayDataset``), then evaluates the pool with saliency (gradient check, CKA and bootstrap off:
only the model-running units are compared) with the local engine and with ``executor="ray"`` on an
in-process Ray using this machine's CPUs, interleaved for ``--rounds`` rounds (best round reported):

* ``overhead_ratio`` = Ray units time / local units time (logits + attribution stages; goal <= 1.10), and
  ``overhead_ratio_wall`` over the whole call (actor creation and the actors' compiles included; Ray's own
  start-up is reported apart as ``ray_init_s``, paid once per run);
* measured per-unit times of the local run: forward and saliency seconds per image per member, the driver's
  fold of one batch of maps into the pool's pairwise statistics (measured for 3 and for 14 members);
* a model of the paper's study (14 members x 6 datasets x 50 000 images, saliency) vs node count
  (1..64 nodes like this machine): ``T(n) = max(W / (eff(n) * e), D) + S`` with ``W`` the measured compute,
  ``e`` the measured single-node efficiency (local / Ray units time), ``eff(n)`` the nodes the executor's
  actor layout can use (``n`` below 14 nodes; ``14 * floor(n / 14)`` from 14 on: whole actors per member),
  ``D`` the driver's serial work (sending every chunk's images to every member's actors, logits and
  attribution, at ``--driver-gbps``; folds run in Ray tasks and count in ``W``) and ``S`` the start-up;
* C-bar preparation throughput (10 corruptions x 1 severity x ``--prep-n`` images at 224 px), local
  threads vs Ray tasks, images/s.

Prints ONE JSON line. Usage: ``nice python scripts/bench_ray.py [--n 64] [--rounds 2]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_evaluate import _build_irs  # the same ResNet-50 IRs as bench_evaluate

STUDY = {"members": 14, "datasets": 6, "images": 50_000}


def _units_s(meta: dict[str, Any]) -> float:
    t = meta["timings"]
    return float(t.get("logits", 0.0) + t.get("attribution", 0.0))


def _fold_s(n_members: int, batch: int, size: int = 224, reps: int = 3) -> float:
    from ovdiv.evaluate.options import EvalOptions
    from ovdiv.evaluate.scoring import new_attribution_stats

    rng = np.random.default_rng(0)
    lg = rng.standard_normal((n_members, batch, 1000)).astype(np.float32)
    labels = rng.integers(0, 1000, batch)
    maps = rng.standard_normal((n_members, batch, 3, size, size)).astype(np.float32)
    best = math.inf
    for _ in range(reps):
        stats = new_attribution_stats([f"m{i}" for i in range(n_members)], 1000, EvalOptions())
        t0 = time.perf_counter()
        stats.update(lg, labels, maps)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=64, help="images")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--chunk", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--prep-n", type=int, default=32, help="images per C-bar corruption")
    ap.add_argument("--driver-gbps", type=float, default=10.0, help="driver network, Gbit/s (scale-out model)")
    args = ap.parse_args()

    import ray

    from ovdiv.data import expand_spec, prepare_many
    from ovdiv.evaluate import ArrayDataset, evaluate

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    tmp = Path(tempfile.mkdtemp(prefix="bench_ray_"))
    paths = _build_irs(tmp, 3)
    rng = np.random.default_rng(0)
    data = ArrayDataset(
        rng.integers(0, 256, (args.n, 224, 224, 3), dtype=np.uint8), rng.integers(0, 1000, args.n), name="random"
    )
    kw: dict[str, Any] = dict(
        attribution="saliency", gradient_check="off", cka_samples=0, bootstrap=0, batch_size=args.batch,
        chunk_size=args.chunk,
    )  # fmt: skip
    t0 = time.perf_counter()
    ray.init(address="local", include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    ray_init_s = time.perf_counter() - t0
    rows: dict[str, list[dict[str, Any]]] = {"local": [], "ray": []}
    for r in range(args.rounds):
        for name in ("local", "ray"):
            extra = {"executor": "ray"} if name == "ray" else {}
            t0 = time.perf_counter()
            res = evaluate(paths, [data], cache_dir=tmp / f"cache_{name}_{r}", **kw, **extra)
            wall = time.perf_counter() - t0
            rows[name].append({"wall_s": wall, "units_s": _units_s(res.metadata), "timings": res.metadata["timings"]})
            if name == "ray":
                executor = res.metadata["executor"]
    best = {k: min(v, key=lambda d: d["units_s"]) for k, v in rows.items()}
    loc, ray_best = best["local"], best["ray"]
    m = len(paths)
    fwd_s = loc["timings"]["logits"] / (m * args.n)  # per image per member (compile included)
    sal_s = loc["timings"]["attribution"] / (m * args.n)  # saliency + the fold, per image per member
    fold3 = _fold_s(3, args.batch)
    fold14 = _fold_s(14, args.batch)
    sal_only_s = max(sal_s - fold3 / (m * args.batch), 0.0)
    efficiency = loc["units_s"] / ray_best["units_s"]

    # scale-out model of the paper's study
    n_img = STUDY["members"] * STUDY["datasets"] * STUDY["images"]  # member-images
    work = n_img * (fwd_s + sal_only_s)  # seconds on one node like this one
    batches = STUDY["datasets"] * math.ceil(STUDY["images"] / args.batch)
    work += batches * fold14  # each chunk's fold runs in a Ray task on the cluster
    # the driver's serial part: it puts every chunk's images once; each member's actors pull them
    # (logits and attribution), in the worst case all from the driver's node
    image_bytes = 2 * n_img * 224 * 224 * 3
    driver = image_bytes / (args.driver_gbps * 1e9 / 8)
    startup = ray_init_s + (ray_best["wall_s"] - ray_best["units_s"])
    model = []
    for n in (1, 2, 4, 8, 14, 16, 28, 32, 42, 56, 64):
        eff = n if n < STUDY["members"] else STUDY["members"] * (n // STUDY["members"])
        compute = work / (eff * efficiency)
        model.append(
            {
                "nodes": n,
                "usable_nodes": eff,
                "hours": round((max(compute, driver) + startup) / 3600, 2),
                "bound": "compute" if compute >= driver else "driver",
            }
        )
    prep_specs = expand_spec("cbar@demo")[2::5]  # one severity of each of the 10 corruptions
    prep: dict[str, float] = {}
    for name in ("local", "ray"):
        t0 = time.perf_counter()
        prepare_many(
            prep_specs, limit=args.prep_n, size=224, cache_dir=tmp / f"prep_{name}", workers=os.cpu_count(),
            executor=name,
        )  # fmt: skip
        prep[name] = len(prep_specs) * args.prep_n / (time.perf_counter() - t0)
    ray.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)
    out = {
        "bench": "ray",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "ray": ray.__version__},
        "n_images": args.n,
        "members": "3x torchvision resnet50 (random weights), FP32 IR, saliency",
        "batch": args.batch,
        "chunk": args.chunk,
        "rounds": args.rounds,
        "local_units_s": round(loc["units_s"], 2),
        "ray_units_s": round(ray_best["units_s"], 2),
        "overhead_ratio": round(ray_best["units_s"] / loc["units_s"], 3),
        "goal": 1.10,
        "local_wall_s": round(loc["wall_s"], 2),
        "ray_wall_s": round(ray_best["wall_s"], 2),
        "overhead_ratio_wall": round(ray_best["wall_s"] / loc["wall_s"], 3),
        "ray_init_s": round(ray_init_s, 2),
        "all_rounds_units_s": {k: [round(d["units_s"], 2) for d in v] for k, v in rows.items()},
        "per_unit": {
            "forward_s_per_image_member": round(fwd_s, 5),
            "saliency_s_per_image_member": round(sal_only_s, 5),
            "fold_s_per_batch_3_members": round(fold3, 4),
            "fold_s_per_batch_14_members": round(fold14, 4),
        },
        "ray_executor": {
            k: executor[k]
            for k in ("nodes", "cpus", "actors_per_member", "cpus_per_actor", "threads_per_actor", "data_transport")
        },
        "study_model": {
            "study": STUDY,
            "single_node_efficiency": round(efficiency, 3),
            "compute_node_hours": round(work / efficiency / 3600, 1),
            "driver_serial_hours": round(driver / 3600, 2),
            "driver_gbps": args.driver_gbps,
            "wall_vs_nodes": model,
        },
        "cbar_prepare_images_per_s": {k: round(v, 1) for k, v in prep.items()},
        "cbar_prepare_ratio_ray_over_local": round(prep["ray"] / prep["local"], 3),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
