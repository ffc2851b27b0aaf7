"""Train every tiny recipe (models/tiny/*.json) on the demo data on CPU; print ONE JSON line.

Per model: parameters, MACs per image, wall seconds of training, test top-1 on `demo` after each epoch.
The loop is deliberately plain (recipe optimizer + schedule via ovdiv.train.optim, horizontal flips, no
other augmentation, as the tiny recipes say); `ovdiv train models/tiny/<name>.json` is the real trainer.

    OMP_NUM_THREADS=1 python scripts/bench_tiny_models.py [--threads 1] [names...]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from ovdiv.data.synthetic import make_demo
from ovdiv.export import count_macs
from ovdiv.models.recipes import RECIPE_DIR, load_recipe
from ovdiv.train.optim import build_optimizer, build_scheduler


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "names", nargs="*", default=["tiny_resnet", "tiny_resnext", "tiny_mnasnet", "tiny_squeezenet", "tiny_deit"]
    )
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out: dict[str, object] = {"threads": args.threads}
    cache: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] = {}
    for name in args.names:
        r = load_recipe(RECIPE_DIR / "tiny" / f"{name}.json")
        mean = torch.tensor(r.mean).view(1, 3, 1, 1)
        std = torch.tensor(r.std).view(1, 3, 1, 1)
        for split, spec_limit in (("train", r.data.train_limit or 3000), ("test", r.data.val_limit or 1000)):
            if (split, spec_limit) not in cache:
                imgs, labels = make_demo(spec_limit, split=split)
                x = (torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255 - mean) / std
                cache[(split, spec_limit)] = (x, torch.from_numpy(labels))
        xtr, ytr = cache[("train", r.data.train_limit or 3000)]
        xte, yte = cache[("test", r.data.val_limit or 1000)]
        torch.manual_seed(r.seed)
        model = r.create_model()
        steps_per_epoch = len(xtr) // r.batch_size
        opt = build_optimizer(model.parameters(), r.optimizer)
        sched = build_scheduler(
            opt, r.schedule, steps_per_epoch=steps_per_epoch, total_steps=steps_per_epoch * r.epochs
        )
        accs = []
        t0 = time.perf_counter()
        for _ in range(r.epochs):
            model.train()
            perm = torch.randperm(len(xtr))
            for i in range(steps_per_epoch):
                idx = perm[i * r.batch_size : (i + 1) * r.batch_size]
                x = xtr[idx].clone()
                flip = torch.rand(len(x)) < r.transforms.hflip
                x[flip] = x[flip].flip(3)
                loss = torch.nn.functional.cross_entropy(model(x), ytr[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
            model.eval()
            with torch.no_grad():
                accs.append(round(float((model(xte).argmax(1) == yte).float().mean()), 4))
        out[name] = {
            "params": sum(p.numel() for p in model.parameters()),
            "macs": count_macs(model, r.input_size),
            "train_seconds": round(time.perf_counter() - t0, 1),
            "epochs": r.epochs,
            "train_images": len(xtr),
            "top1_per_epoch": accs,
            "top1": accs[-1],
        }
    out["top1_min"] = float(np.min([v["top1"] for k, v in out.items() if isinstance(v, dict)]))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
