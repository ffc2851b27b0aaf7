"""Stage-1 progressive-shrinking step rate of the ResNet-50 super-network vs plain torchvision ResNet-50.

Prints ONE JSON line. Both loops run in this process on the same random in-memory batches (no data
loading), same batch size, input size, optimiser (SGD) and AMP setting (CUDA only):

- ``supernet``: nncf's stage-1 controller step (random depth subnet, stage LR) + forward/backward/step
  of the BootstrapNAS super-network built from ``--config`` (default: supernet_configs/resnet50.json);
- ``plain``: the same loop on an unwrapped torchvision ResNet-50.

``ratio_supernet_vs_plain`` = supernet steps/s / plain steps/s (nncf's per-step overhead).

Examples::

    OMP_NUM_THREADS=2 python scripts/bench_supernet.py --size 32 --batch 4 --steps 4     # CPU tiny figure
    python scripts/bench_supernet.py --size 224 --batch 256 --steps 200 --device cuda    # GPU, AMP
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ovdiv.supernet.nncf_env import import_nncf_torch

import_nncf_torch()  # legacy tracing BEFORE torch models are wrapped; this script is its own process

import torch  # noqa: E402
from torch import nn  # noqa: E402

from ovdiv.supernet import engine  # noqa: E402
from ovdiv.supernet.config import load_config, validate_config  # noqa: E402


def _loop(model: nn.Module, step_fn, batches, steps: int, warmup: int, amp: bool, dev: torch.device) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda") if amp else None
    crit = nn.CrossEntropyLoss()
    model.train()

    def one(i: int) -> None:
        step_fn()
        x, y = batches[i % len(batches)]
        with torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=amp):
            loss = crit(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()

    for i in range(warmup):
        one(i)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(steps):
        one(i)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "supernet_configs" / "resnet50.json"))
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--no-amp", action="store_true")
    args = ap.parse_args()
    dev = engine._device(args.device)
    amp = dev.type == "cuda" and not args.no_amp
    raw = load_config(args.config).to_dict()
    raw["input_info"] = {"sample_size": [1, 3, args.size, args.size]}
    raw["num_classes"] = args.classes
    raw["bootstrapNAS"]["training"]["batchnorm_adaptation"] = {"num_bn_adaptation_samples": 2 * args.batch}
    cfg = validate_config(raw, source=args.config)
    torch.manual_seed(0)
    batches = [
        (
            torch.randn(args.batch, 3, args.size, args.size, device=dev),
            torch.randint(0, args.classes, (args.batch,), device=dev),
        )
        for _ in range(4)
    ]
    bn_loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(
            torch.randn(2 * args.batch, 3, args.size, args.size), torch.randint(0, args.classes, (2 * args.batch,))
        ),
        batch_size=args.batch,
    )
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        net, algo, space, _ = engine._build(
            cfg, Path(tmp), dev, model=engine._torchvision_resnet50(args.classes), bn_loader=bn_loader
        )
        ctrl = algo._training_ctrl
        opt_probe = torch.optim.SGD(net.parameters(), lr=1e-4)
        ctrl.set_training_lr_scheduler_args(opt_probe, args.steps + args.warmup)
        ctrl.scheduler.epoch_step()  # enter stage 1 (elastic depth, depth_indicator 1)
        sup = _loop(net, ctrl.scheduler.step, batches, args.steps, args.warmup, amp, dev)
    plain = engine._torchvision_resnet50(args.classes).to(dev)
    pl = _loop(plain, lambda: None, batches, args.steps, args.warmup, amp, dev)
    print(
        json.dumps(
            {
                "bench": "supernet_stage1_step",
                "device": dev.type if dev.type == "cpu" else torch.cuda.get_device_name(dev),
                "amp": amp,
                "input_size": args.size,
                "batch": args.batch,
                "steps": args.steps,
                "width_groups": len(space["width_groups"]),
                "skippable_blocks": len(space["blocks"]),
                "supernet_steps_per_s": round(sup, 4),
                "supernet_images_per_s": round(sup * args.batch, 2),
                "plain_steps_per_s": round(pl, 4),
                "plain_images_per_s": round(pl * args.batch, 2),
                "ratio_supernet_vs_plain": round(sup / pl, 4),
                "torch_threads": torch.get_num_threads(),
            }
        )
    )


if __name__ == "__main__":
    main()
