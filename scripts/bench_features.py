"""Benchmark: feature visualisation of ResNet-50's last stage, OpenVINO VJP path vs torch autograd path.

torchvision resnet50 (random weights) saved as an ovdiv checkpoint (torch member, autograd through the
network stopped at the layer) and converted to OpenVINO IR with a card (VJP graph of the forward graph cut
at the layer). Both visualise the same ``--channels`` channels of ``--layer`` at 224 px with the
study's parameterisation and transforms for ``--steps`` Adam steps, interleaved round by round so machine
load hits both alike. Prints ONE JSON line: per path the best and median ``channel_steps_per_s`` and the
implied ``channels_per_s_at_1024_steps`` (the study's setting), and ``vjp_speedup_vs_torch`` (best rounds).

Layer names are ovdiv's (``Member.features``): at 224 px ResNet-50 has ``stage1`` (112 px stem) ...
``stage5`` (7 px); the default ``stage5`` is torchvision's ``layer4`` output (2048 x 7 x 7), i.e. ResNet's
stage 4 (conv5_x). ovdiv's ``stage4`` (14 px) is the input-resolution part of ``layer4.0`` (512 x 14 x 14).

Usage: ``python scripts/bench_features.py [--channels 8] [--steps 4] [--rounds 3] [--threads N] [--layer stage5]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import openvino as ov
import torch
import torchvision

from ovdiv.attribution.features import FeatureVisConfig, layer_objective, visualize_channels
from ovdiv.cards import ModelCard, sha256_file
from ovdiv.models import save_checkpoint
from ovdiv.runtime import load_member


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--channels", type=int, default=8)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--layer", default="stage5")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    model = torchvision.models.resnet50().eval()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        save_checkpoint(d / "r50.pt", model, arch="resnet50", arch_args={}, num_classes=1000, input_size=(224, 224))
        ir = ov.convert_model(model, example_input=torch.zeros(1, 3, 224, 224), input=[-1, 3, 224, 224])
        ov.save_model(ir, str(d / "r50_ir.xml"), compress_to_fp16=False)
        ModelCard(
            name="r50_ir", format="ir", num_classes=1000, input_size=(224, 224), sha256=sha256_file(d / "r50_ir.xml")
        ).save(d / "r50_ir.json")
        t0 = time.perf_counter()
        objectives = {
            "torch_autograd": layer_objective(load_member(d / "r50.pt"), args.layer),
            "openvino_vjp": layer_objective(load_member(d / "r50_ir.xml"), args.layer),
        }
        setup_s = time.perf_counter() - t0
        shape = objectives["openvino_vjp"].shape
        assert objectives["torch_autograd"].shape == shape, "torch and IR disagree on the layer"
        cfg = FeatureVisConfig(steps=args.steps, seed=0, batch_size=args.channels)
        chans = list(range(args.channels))
        secs: dict[str, list[float]] = {k: [] for k in objectives}
        for _ in range(args.rounds):
            for name, obj in objectives.items():
                r = visualize_channels(
                    obj, chans, cfg, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), input_size=(224, 224)
                )
                secs[name].append(r.seconds)
    out: dict[str, Any] = {
        "bench": "features",
        "model": "torchvision resnet50 (random weights)",
        "layer": args.layer,
        "layer_shape": list(shape),
        "channels": args.channels,
        "steps": args.steps,
        "rounds": args.rounds,
        "threads": args.threads,
        "setup_s": round(setup_s, 2),
        "load_avg": os.getloadavg()[0],
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "openvino": ov.get_version(),
    }
    for name, s in secs.items():
        best, med = min(s), statistics.median(s)
        work = args.channels * args.steps
        out[name] = {
            "best_s": round(best, 3),
            "median_s": round(med, 3),
            "channel_steps_per_s": round(work / best, 2),
            "channel_steps_per_s_median": round(work / med, 2),
            "channels_per_s_at_1024_steps": round(work / best / 1024, 5),
        }
    out["vjp_speedup_vs_torch"] = round(min(secs["torch_autograd"]) / min(secs["openvino_vjp"]), 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
