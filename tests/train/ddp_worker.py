"""torchrun worker of test_train_ddp.py: joint training under DDP (gloo, CPU); dumps each rank's weights.

Usage: python -m torch.distributed.run --standalone --nproc_per_node 2 ddp_worker.py OUT HEURISTIC
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from ovdiv.data import make_demo
from ovdiv.train import DataSource, EnsembleConfig
from ovdiv.train.data import build_loaders
from ovdiv.train.engine import JointTrainer, RunOptions, init_distributed
from ovdiv.train.ensemble import heuristic_loss
from ovdiv.train.weights import build_member


def main(out: Path, heuristic: str) -> None:
    raw = {
        "name": "ddp",
        "heuristic": heuristic,
        "lambda": 0.2 if heuristic != "attribution_diversity" else 1.0,
        "members": [{"name": "a", "arch": "tiny_resnet"}, {"name": "b", "arch": "tiny_resnet"}],
        "num_classes": 10,
        "input_size": [32, 32],
        "optimizer": {"name": "adabelief", "lr": 3e-3},
        "schedule": {"name": "constant"},
        "epochs": 1,
        "batch_size": 16,
        "transforms": {"train_crop": "none", "hflip": 0.5, "eval_crop_pct": None},
    }
    cfg = EnsembleConfig.from_dict(raw)
    env = init_distributed("cpu")
    assert env.world_size == 2 and dist.is_initialized()
    data = DataSource(arrays=make_demo(128, size=32, seed=0, split="train"), val_arrays=make_demo(32, size=32))
    loaders = build_loaders(
        data, input_size=(32, 32), batch_size=16, seed=0, rank=env.rank, world_size=2, transforms=cfg.transforms
    )
    torch.manual_seed(env.rank)  # different init per rank: DDP (or the explicit broadcast) must equalise them
    members = [build_member(m.arch, {}, 10) for m in cfg.members]
    loss_fn, double = heuristic_loss(cfg)
    trainer = JointTrainer(
        members,
        ["a", "b"],
        loss_fn,
        loaders,
        optimizer=cfg.optimizer,
        schedule=cfg.schedule,
        epochs=1,
        out_dir=out,
        env=env,
        options=RunOptions(device="cpu", max_steps=3),
        double_backward=double,
    )
    assert (trainer.ddp is None) == double
    trainer.fit()
    torch.save({k: v.detach().clone() for k, v in trainer.stack.state_dict().items()}, out / f"rank{env.rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
