"""Parent-side half of ``supernet extract``: model card, ONNX / IR export and numeric checks (no nncf).

The child process (:func:`ovdiv.supernet.engine.extract_in_process`) has written an ovdiv checkpoint
``<name>.pt`` (``arch="module:ovdiv.supernet.arch:build_subnet"``, ``arch_args={"spec": ...}``) and
``<name>.reference.npz`` (probe input, super-network logits, plain-module logits). Here the checkpoint
is reloaded *without nncf*, its outputs are compared with the super-network's, and it is exported with
:func:`ovdiv.export.export_model`; each exported artifact is run (ONNX Runtime / OpenVINO with
``INFERENCE_PRECISION_HINT=f32``) on the probe and compared with the super-network's logits too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ovdiv.cards import ModelCard, card_path_for
from ovdiv.types import ProgressCallback
from ovdiv.versions import tool_versions

__all__ = ["load_subnet_file", "export_extracted", "run_artifact"]


def load_subnet_file(path: str | os.PathLike[str]) -> Any:
    """``(module, CheckpointMeta)`` of an extracted subnet checkpoint, rebuilt without nncf."""
    from ovdiv.models import load_checkpoint

    return load_checkpoint(path)


def run_artifact(path: Path, x: np.ndarray) -> np.ndarray:
    """Logits of an exported ONNX / IR file on float32 NCHW ``x`` (OpenVINO in f32, ONNX Runtime on CPU)."""
    if path.suffix == ".onnx":
        import onnxruntime as ort

        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return np.asarray(sess.run(None, {sess.get_inputs()[0].name: x.astype(np.float32)})[0])
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return np.asarray(compiled(x.astype(np.float32))[compiled.output(0)])


def export_extracted(
    info: dict[str, Any], *, out_dir: Path, formats: list[str], progress: ProgressCallback | None = None
) -> dict[str, Any]:
    """Check the extracted checkpoint without nncf, write its model card and export ONNX / IR.

    Returns:
        ``info`` plus ``torch_reload_max_abs_diff``, ``card`` and ``artifacts`` (one dict per exported
        file: path, format, precision, card, check, max_abs_diff_vs_supernet).
    """
    import torch

    ckpt = Path(info["checkpoint"])
    model, meta = load_subnet_file(ckpt)
    ref = np.load(info["reference_file"])
    x = ref["input"].astype(np.float32)
    model.eval()
    with torch.no_grad():
        out = model(torch.from_numpy(x)).float().numpy()
    info = dict(info)
    info["torch_reload_max_abs_diff"] = float(np.abs(out - ref["supernet"]).max())
    extra = {
        "supernet": {
            "run": info["run"],
            "subnet": info["subnet"],
            "nncf_config": info["nncf"],
            "summary": info["summary"],
            "macs_224": info["macs_224"],
            "weights_224": info["weights_224"],
            "nncf_macs_at_input_size": info["nncf_macs"],
            "max_abs_diff_vs_supernet": info["max_abs_diff_vs_supernet"],
            "bn_adapted": info["bn_adapted"],
        }
    }
    card = ModelCard(
        name=info["name"],
        format="torch",
        precision="fp32",
        num_classes=int(info["num_classes"]),
        input_size=(int(info["input_size"][0]), int(info["input_size"][1])),
        architecture=meta.arch,
        arch_args=dict(meta.arch_args),
        params=int(info["params"]),
        macs=int(info["macs"]),
        versions=tool_versions(),
        export_check={
            "max_abs_diff_vs_supernet": info["max_abs_diff_vs_supernet"],
            "torch_reload_max_abs_diff": info["torch_reload_max_abs_diff"],
        },
        extra=extra,
    )
    info["card"] = str(card.save(card_path_for(ckpt)))
    artifacts: list[dict[str, Any]] = []
    wanted = tuple(f for f in formats if f in ("onnx", "ir"))
    if wanted:
        from ovdiv.export import export_model

        exported = export_model(
            ckpt,
            out_dir,
            name=info["name"],
            formats=wanted,
            precisions=("fp32",),
            input_size=tuple(info["input_size"]),
            num_classes=int(info["num_classes"]),
            extra_card=extra,
            progress=progress,
        )
        for art in exported:
            path = Path(art.path)
            diff = float(np.abs(run_artifact(path, x) - ref["supernet"]).max())
            artifacts.append(
                {
                    "path": str(path),
                    "format": str(art.format),
                    "precision": str(art.precision),
                    "card": str(card_path_for(path)),
                    "check": dict(art.check),
                    "max_abs_diff_vs_supernet": diff,
                }
            )
    info["artifacts"] = artifacts
    return info
