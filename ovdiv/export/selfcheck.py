"""Export self-checks: run torch and the exported artifact on the same inputs and compare.

Error measure (over the whole ``(N, C)`` logits batch):

    rel_err = max_ij |y_ij - r_ij| / max_ij |r_ij|

with ``r`` the torch float32 reference logits and ``y`` the artifact's logits. Normalising by the largest
reference logit, not elementwise, keeps the measure meaningful for logits near zero.

Tolerances (:data:`TOLERANCES`):

* ``fp32`` (ONNX via onnxruntime, IR compiled with ``INFERENCE_PRECISION_HINT=f32``): ``rel_err <= 1e-4``.
  Observed: ~1e-7 to 1e-6.
* ``fp16`` (IR weights compressed to fp16, computed in f32): ``rel_err <= 1e-2``. Rounding every weight to
  fp16 (relative step 2^-11 ~ 4.9e-4) perturbs the logits by ~1e-3 relative (measured 3e-4 to 7e-4 on the
  tiny models); 1e-2 leaves margin while still catching wrong weights or graphs (errors of order 1).
* ``int8``: logits legitimately differ, so the check is top-1 agreement of the INT8 artifact with the torch
  FP32 model on the calibration images, ``agreement >= min_int8_agreement`` (default 0.9). ``rel_err`` is
  reported, not checked.

The IR is always compiled with ``INFERENCE_PRECISION_HINT=f32`` here: OpenVINO's CPU default on CPUs with
bf16 support is bf16, which alone gives relative errors of ~1e-2.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from ovdiv.cards import ModelCard, card_path_for
from ovdiv.errors import ExportError, ExportMismatchError
from ovdiv.export.images import preprocess, random_images, resize_images
from ovdiv.types import UInt8Images

__all__ = [
    "TOLERANCES",
    "DEFAULT_MIN_INT8_AGREEMENT",
    "RELATIVE_ERROR_DEFINITION",
    "relative_error",
    "run_artifact",
    "torch_logits",
    "check_artifact",
]

TOLERANCES: dict[str, float] = {"fp32": 1e-4, "fp16": 1e-2}
"""Maximum ``rel_err`` per precision (see the module docstring)."""
DEFAULT_MIN_INT8_AGREEMENT = 0.9
RELATIVE_ERROR_DEFINITION = "max|y - y_ref| / max|y_ref| over the (N, C) logits"
_CHECK_BATCH = 64


def relative_error(y: npt.ArrayLike, ref: npt.ArrayLike) -> float:
    """``max|y - ref| / max|ref|`` (``max|y - ref|`` when ``ref`` is all zeros)."""
    a = np.asarray(y, np.float64)
    r = np.asarray(ref, np.float64)
    if a.shape != r.shape:
        raise ExportMismatchError(f"artifact output shape {a.shape} differs from torch output shape {r.shape}")
    diff = float(np.max(np.abs(a - r))) if a.size else 0.0
    scale = float(np.max(np.abs(r))) if r.size else 0.0
    return diff / scale if scale > 0 else diff


def torch_logits(model: nn.Module, x: npt.NDArray[np.float32], batch: int = _CHECK_BATCH) -> npt.NDArray[np.float32]:
    """Eval-mode float32 logits of ``model`` on NCHW input ``x``, in batches."""
    model.eval()
    outs = []
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            outs.append(model(torch.from_numpy(np.ascontiguousarray(x[i : i + batch]))).float().numpy())
    return np.concatenate(outs)


def run_artifact(path: str | os.PathLike[str], inputs: np.ndarray, batch: int = _CHECK_BATCH) -> npt.NDArray[Any]:
    """Run an ``.onnx`` (onnxruntime, CPU) or ``.xml`` (OpenVINO CPU, f32 inference precision) artifact.

    Args:
        path: Artifact path.
        inputs: Network input: float32 NCHW, or uint8 NHWC for baked-preprocessing artifacts.
        batch: Inference batch size (the graphs have a dynamic batch dimension).

    Returns:
        Logits ``(N, C)`` as float32.
    """
    p = Path(path)
    outs = []
    if p.suffix == ".onnx":
        import onnxruntime as ort

        try:
            sess = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own non-Python-standard exception types
            raise ExportMismatchError(f"{p}: onnxruntime cannot load the artifact ({exc})") from exc
        name = sess.get_inputs()[0].name
        for i in range(0, len(inputs), batch):
            outs.append(np.asarray(sess.run(None, {name: inputs[i : i + batch]})[0]))
    elif p.suffix == ".xml":
        import openvino as ov

        try:
            compiled = ov.Core().compile_model(str(p), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        except RuntimeError as exc:
            raise ExportMismatchError(f"{p}: OpenVINO cannot load the artifact ({str(exc).splitlines()[0]})") from exc
        for i in range(0, len(inputs), batch):
            outs.append(np.asarray(compiled(inputs[i : i + batch])[0]))
    else:
        raise ExportError(f"{p}: unknown artifact type {p.suffix!r}", "expected .onnx or .xml")
    return np.concatenate(outs).astype(np.float32)


def check_artifact(
    path: str | os.PathLike[str],
    model: nn.Module,
    images: UInt8Images | None = None,
    *,
    card: ModelCard | None = None,
    tolerance: float | None = None,
    min_int8_agreement: float = DEFAULT_MIN_INT8_AGREEMENT,
    n_random: int = 16,
    seed: int = 0,
) -> dict[str, Any]:
    """Compare an exported artifact with its torch model; raise when they disagree.

    Args:
        path: ``.onnx`` or ``.xml`` artifact.
        model: The torch model it was exported from (float32).
        images: uint8 ``(N, H, W, 3)`` check images; ``None``: ``n_random`` seeded noise images.
        card: The artifact's card (default: read from ``<artifact>.json``); gives precision, layout,
            input size, mean and std.
        tolerance: Override of :data:`TOLERANCES` for fp32/fp16.
        min_int8_agreement: Minimum top-1 agreement of an INT8 artifact with torch FP32.
        n_random: Number of noise images when ``images`` is ``None``.
        seed: Seed of the noise images.

    Returns:
        The check record stored in the card's ``export_check``: ``passed``, ``metric``, ``rel_err``,
        ``max_abs_err``, ``top1_agreement``, ``n_images``, ``tolerance`` / ``min_agreement``, ``backend``,
        ``inference_precision``, ``reference``.

    Raises:
        ExportMismatchError: Error beyond tolerance (or agreement below the minimum), wrong output shape,
            or an artifact the runtime cannot load.
    """
    p = Path(path)
    card = card if card is not None else ModelCard.load(card_path_for(p))
    imgs = images if images is not None else random_images(n_random, card.input_size, seed)
    x = preprocess(imgs, card.input_size, card.mean, card.std)
    ref = torch_logits(model, x)
    feed = np.ascontiguousarray(resize_images(imgs, card.input_size)) if card.baked_preprocessing else x
    out = run_artifact(p, feed)
    if out.shape != ref.shape:
        raise ExportMismatchError(f"{p}: output shape {out.shape} differs from the torch model's {ref.shape}")
    rel = relative_error(out, ref)
    agree = float(np.mean(out.argmax(1) == ref.argmax(1)))
    record: dict[str, Any] = {
        "reference": "torch float32",
        "backend": "onnxruntime" if p.suffix == ".onnx" else "openvino",
        "inference_precision": "f32",
        "input": "uint8 NHWC" if card.baked_preprocessing else "float32 NCHW",
        "n_images": len(imgs),
        "images": "given" if images is not None else f"uniform noise, seed {seed}",
        "rel_err": rel,
        "rel_err_definition": RELATIVE_ERROR_DEFINITION,
        "max_abs_err": float(np.max(np.abs(out.astype(np.float64) - ref))),
        "top1_agreement": agree,
    }
    if card.precision == "int8":
        record.update(metric="top1_agreement", min_agreement=float(min_int8_agreement))
        record["passed"] = bool(agree >= min_int8_agreement)
        if not record["passed"]:
            raise ExportMismatchError(
                f"{p}: INT8 top-1 agreement with FP32 is {agree:.3f} on {len(imgs)} images, "
                f"below the minimum {min_int8_agreement:.3f}",
                "calibrate with more/representative images (--calib, --calib-size) or lower the minimum",
            )
        return record
    tol = float(tolerance) if tolerance is not None else TOLERANCES.get(card.precision, TOLERANCES["fp32"])
    record.update(metric="rel_err", tolerance=tol, passed=bool(rel <= tol))
    if not record["passed"]:
        raise ExportMismatchError(
            f"{p}: {card.precision} outputs differ from torch by rel_err {rel:.3g} > tolerance {tol:.3g} "
            f"(max abs {record['max_abs_err']:.3g} on {len(imgs)} images)",
            "the artifact does not match the model; re-export it",
        )
    return record
