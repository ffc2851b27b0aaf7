"""Joint M-member training step vs M single-member steps; prints ONE JSON line.

Both sides run the real training engine (:class:`ovdiv.train.engine.JointTrainer`: AMP + channels-last
on CUDA, the heuristic's joint loss, one optimizer step) on the same in-memory random batches:

- joint: ONE trainer over M members (stacked forward, joint loss, one backward, one optimizer step);
- single: ONE trainer over 1 member (CE), whose step time is multiplied by M (training M members
  separately).

``ratio = joint_step / (M x single_step)``; the goal of issue 8 is ``<= 1.1``. Timings alternate
between the two sides (``--repeats`` rounds, the best round each) so background load hits both alike;
wall-clock and process-CPU figures are both reported (CPU time is the robust one on a shared machine).

Examples::

    OMP_NUM_THREADS=1 python scripts/bench_joint_training.py                       # CPU, 3 tiny_resnet, 32 px
    python scripts/bench_joint_training.py --arch resnet50 --size 224 --batch 64 --members 3 --device cuda
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset

from ovdiv.train.config import EnsembleConfig
from ovdiv.train.data import Loaders
from ovdiv.train.engine import JointTrainer, RunOptions, init_distributed
from ovdiv.train.ensemble import heuristic_loss
from ovdiv.train.weights import build_member


def _trainer(arch: str, m: int, heuristic: str, lam: float, args: argparse.Namespace, out: Path) -> JointTrainer:
    raw: dict[str, Any] = {
        "name": "bench",
        "heuristic": heuristic if m > 1 else "independent",
        "members": [{"name": f"m{i}", "arch": arch} for i in range(m)],
        "num_classes": args.classes,
        "input_size": [args.size, args.size],
        "optimizer": {"name": "adabelief", "lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8},
        "schedule": {"name": "constant"},
        "epochs": 1,
        "batch_size": args.batch,
    }
    if m > 1 and heuristic != "independent":
        raw["lambda"] = lam
    cfg = EnsembleConfig.from_dict(raw)
    g = torch.Generator().manual_seed(0)
    n = args.batch * 4
    x = torch.randn(n, 3, args.size, args.size, generator=g)
    y = torch.randint(0, args.classes, (n,), generator=g)
    loader = DataLoader(TensorDataset(x, y), batch_size=args.batch, shuffle=False, drop_last=True)
    loaders = Loaders(train=loader, val=None, train_size=n, val_size=0, num_classes_seen=args.classes, sampler=None)
    env = init_distributed(args.device)
    torch.manual_seed(0)
    members = [build_member(arch, {}, args.classes) for _ in range(m)]
    loss_fn, double = heuristic_loss(cfg)
    opts = RunOptions(device=args.device, amp=not args.no_amp, channels_last=not args.no_channels_last)
    return JointTrainer(
        members,
        [s.name for s in cfg.members],
        loss_fn,
        loaders,
        optimizer=cfg.optimizer,
        schedule=cfg.schedule,
        epochs=1,
        out_dir=out,
        env=env,
        options=opts,
        double_backward=double,
    )


def _time(tr: JointTrainer, steps: int) -> tuple[float, float]:
    w, c = time.perf_counter(), time.process_time()
    tr.train_steps(steps)
    return (time.perf_counter() - w) / steps, (time.process_time() - c) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="tiny_resnet")
    ap.add_argument("--members", type=int, default=3)
    ap.add_argument("--heuristic", default="gncl", help="gncl, gncl_masked, balanced, attribution_diversity, ...")
    ap.add_argument("--lam", type=float, default=0.2)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per round")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default=None, help="cuda / cpu (default: CUDA when available)")
    ap.add_argument("--no-amp", action="store_true")
    ap.add_argument("--no-channels-last", action="store_true")
    args = ap.parse_args()
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        joint = _trainer(args.arch, args.members, args.heuristic, args.lam, args, Path(tmp) / "j")
        single = _trainer(args.arch, 1, "independent", 0.0, args, Path(tmp) / "s")
        joint.train_steps(args.warmup)
        single.train_steps(args.warmup)
        jw, jc, sw, sc = [], [], [], []
        for _ in range(args.repeats):
            w, c = _time(joint, args.steps)
            jw.append(w)
            jc.append(c)
            w, c = _time(single, args.steps)
            sw.append(w)
            sc.append(c)
    j_wall, s_wall, j_cpu, s_cpu = min(jw), min(sw), min(jc), min(sc)
    m = args.members
    result = {
        "bench": "joint_training",
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "torch_threads": torch.get_num_threads(),
        "arch": args.arch,
        "members": m,
        "heuristic": args.heuristic,
        "lambda": args.lam,
        "batch": args.batch,
        "size": args.size,
        "amp": joint.use_amp,
        "channels_last": joint.channels_last,
        "joint_step_s": round(j_wall, 5),
        "single_step_s": round(s_wall, 5),
        "ratio_joint_vs_M_single": round(j_wall / (m * s_wall), 4),
        "joint_step_cpu_s": round(j_cpu, 5),
        "single_step_cpu_s": round(s_cpu, 5),
        "ratio_cpu_time": round(j_cpu / (m * s_cpu), 4),
        "joint_images_per_s": round(args.batch / j_wall, 1),
        "single_images_per_s": round(args.batch / s_wall, 1),
        "goal_ratio_max": 1.1,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
