"""Are OpenVINO CPU f32 logits and saliency maps byte-identical whatever the thread count? (one JSON line)

Compiles the same IR (a micro CNN and a torchvision ResNet-18 with random weights, exported here) in fresh
processes with ``INFERENCE_NUM_THREADS`` = 1, 2 and the plugin default (``NUM_STREAMS=1`` when set, as the
Ray actors do), computes logits and VJP saliency maps of the same images, and compares the bytes
(``np.array_equal``) with the default. This is the evidence behind the Ray actors' thread setting
(docs/guide/scale-out.md).

Usage: ``python scripts/check_ov_threads.py [--n 16] [--out DIR]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def _export(root: Path) -> dict[str, Path]:
    import openvino as ov
    import torch
    import torchvision

    from ovdiv.cards import ModelCard, sha256_file

    torch.manual_seed(0)
    models = {
        "micro": (
            torch.nn.Sequential(
                torch.nn.Conv2d(3, 8, 3, padding=1),
                torch.nn.ReLU(),
                torch.nn.Conv2d(8, 8, 3, stride=2),
                torch.nn.ReLU(),
                torch.nn.AdaptiveAvgPool2d(1),
                torch.nn.Flatten(),
                torch.nn.Linear(8, 10),
            ),
            32,
            10,
        ),
        "resnet18": (torchvision.models.resnet18(weights=None, num_classes=1000), 224, 1000),
    }
    out = {}
    for name, (model, size, classes) in models.items():
        path = root / f"{name}.xml"
        ovm = ov.convert_model(model.eval(), example_input=torch.zeros(1, 3, size, size))
        ovm.reshape([-1, 3, size, size])
        ov.save_model(ovm, str(path), compress_to_fp16=False)
        ModelCard(
            name=name, format="ir", num_classes=classes, input_size=(size, size), mean=(0.485, 0.456, 0.406),
            std=(0.229, 0.224, 0.225), sha256=sha256_file(path), params=1, macs=1, architecture=name,
        ).save(path.with_suffix(".json"))  # fmt: skip
        out[name] = path
    return out


def _run(path: Path, threads: int | None, n: int, out: Path) -> None:
    """One process: compile with ``threads`` (None: plugin default), save logits and saliency maps."""
    from ovdiv.attribution import Saliency
    from ovdiv.runtime import load_member
    from ovdiv.runtime.openvino_member import set_cpu_threads

    if threads is not None:
        set_cpu_threads(threads)
    m = load_member(path, device="CPU", precision="f32")
    size = m.input_size[0]
    images = np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    logits = m.predict(images, batch_size=8)
    target = np.argmax(logits, axis=1)
    maps = np.asarray(Saliency(m, batch_size=8).attribute(images, target=target))
    np.savez(out, logits=logits, maps=maps, threads=np.asarray(m.compiled.get_property("INFERENCE_NUM_THREADS")))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--child", nargs=3, metavar=("PATH", "THREADS", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        path, threads, out = args.child
        _run(Path(path), None if threads == "default" else int(threads), args.n, Path(out))
        return
    result: dict[str, object] = {"bench": "ov_threads", "n": args.n}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, path in _export(root).items():
            runs = {}
            for t in ("default", "1", "2"):
                out = root / f"{name}-{t}.npz"
                subprocess.run(
                    [sys.executable, __file__, "--n", str(args.n), "--child", str(path), t, str(out)], check=True
                )
                with np.load(out) as z:
                    runs[t] = {k: z[k] for k in z.files}
            ref = runs["default"]
            result[name] = {
                t: {
                    "threads_used": int(r["threads"]),
                    "logits_equal": bool(np.array_equal(r["logits"], ref["logits"])),
                    "maps_equal": bool(np.array_equal(r["maps"], ref["maps"])),
                    "logits_max_abs_diff": float(np.max(np.abs(r["logits"] - ref["logits"]))),
                    "maps_max_abs_diff": float(np.max(np.abs(r["maps"] - ref["maps"]))),
                }
                for t, r in runs.items()
            }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
