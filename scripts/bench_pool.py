"""Benchmark: ``ovdiv pool build`` of a pool file (default ``models/pools/paper14_tiny.json``), per member and stage.

Builds the pool into a fresh folder and records, per member, wall seconds and process CPU seconds
(``time.process_time``: all threads of this process, independent of how busy the machine is), and per
stage the CPU seconds summed over members: training (``train_member`` / DINO classifier ``fit``), DINO
backbones, ONNX export, OpenVINO conversion, artifact checks. With ``--threads 1`` the CPU total is a
load-independent estimate of the wall time on a quiet machine with one free core (an upper bound on two
cores). The load average (1 min) is sampled at the start and after every member.

Prints ONE JSON line: ``{"pool", "threads", "wall_s", "cpu_s", "load_start", "load_max", "members":
{name: {"wall_s", "cpu_s"}}, "stages_cpu_s": {...}}``.

Usage: ``python scripts/bench_pool.py [--pool FILE] [--out DIR] [--threads N]`` (``--out`` default: a
temporary folder, removed afterwards; an existing pool folder would skip complete members).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from ovdiv import pool as pool_mod

ROOT = Path(__file__).resolve().parents[1]
_STAGES = {  # (function name, file suffix) -> stage
    ("train_member", "ovdiv/train/member.py"): "train_member",
    ("train_dino_backbone", "ovdiv/train/dino.py"): "dino_backbone",
    ("train_dino", "ovdiv/train/dino.py"): "dino_total",
    ("export_onnx", "ovdiv/export/onnx_format.py"): "onnx_export",
    ("convert_to_openvino", "ovdiv/export/openvino_format.py"): "ir_convert",
    ("check_artifact", "ovdiv/export/selfcheck.py"): "artifact_checks",
    ("export_model", "ovdiv/export/exporter.py"): "export_total",
    ("extract", "ovdiv/supernet/__init__.py"): "subnet_extract",
    ("_supernet_run", "ovdiv/pool.py"): "supernet_train",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pool", default=str(ROOT / "models" / "pools" / "paper14_tiny.json"))
    ap.add_argument("--out", default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench_pool-"))
    members: dict[str, dict[str, float]] = {}
    loads = [os.getloadavg()[0]]
    for kind, fn in list(pool_mod._BUILDERS.items()):

        def timed(ctx: Any, m: Any, digest: str, _fn: Any = fn) -> Any:
            w0, c0 = time.perf_counter(), time.process_time()
            res = _fn(ctx, m, digest)
            members[m.name] = {"wall_s": time.perf_counter() - w0, "cpu_s": time.process_time() - c0}
            loads.append(os.getloadavg()[0])
            return res

        pool_mod._BUILDERS[kind] = timed
    prof = cProfile.Profile(time.process_time)
    w0, c0 = time.perf_counter(), time.process_time()
    try:
        prof.enable()
        pool_mod.build_pool(args.pool, out_dir=out, device="cpu")
        prof.disable()
    finally:
        if args.out is None:
            shutil.rmtree(out, ignore_errors=True)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    stages: dict[str, float] = {}
    for (path, _line, name), (_cc, _nc, _tt, cum, _callers) in pstats.Stats(prof).stats.items():  # type: ignore[attr-defined]
        stage = next((s for (f, suffix), s in _STAGES.items() if f == name and path.endswith(suffix)), None)
        if stage is not None:
            stages[stage] = round(stages.get(stage, 0.0) + cum, 1)
    print(
        json.dumps(
            {
                "pool": Path(args.pool).name,
                "threads": torch.get_num_threads(),
                "wall_s": round(wall, 1),
                "cpu_s": round(cpu, 1),
                "load_start": round(loads[0], 1),
                "load_max": round(max(loads), 1),
                "members": {k: {a: round(b, 1) for a, b in v.items()} for k, v in members.items()},
                "stages_cpu_s": stages,
            }
        )
    )


if __name__ == "__main__":
    main()
