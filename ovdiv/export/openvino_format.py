"""torch -> OpenVINO IR (dynamic batch), FP16 weight compression, NNCF INT8 and baked preprocessing.

* Conversion: ``openvino.convert_model(module, example_input=x, input=[-1, 3, H, W])`` straight from the
  torch module (BatchNorm is folded into the convolutions; attention stays one
  ``ScaledDotProductAttention`` op).
* FP16: ``openvino.save_model(..., compress_to_fp16=True)``: weights stored as fp16 and decompressed to
  f32 at load time; activations are not affected.
* INT8: ``nncf.quantize`` on the FP32 ``openvino.Model`` with an ``nncf.Dataset`` of preprocessed
  calibration images (one image per item), ``subset_size`` = number of images. Preset ``MIXED``
  (symmetric weights, asymmetric activations: safe for activations that go negative, e.g. linear
  bottlenecks and GELU) and, for transformers, ``model_type=nncf.ModelType.TRANSFORMER``.
* Baked preprocessing: ``openvino.preprocess.PrePostProcessor`` makes the input uint8 ``[N, H, W, 3]``
  RGB; inside the graph: convert to f32, subtract ``255 * mean``, divide by ``255 * std`` (equal to
  ``(u/255 - mean)/std``), NHWC -> NCHW. Applied after quantization, so the preprocessing stays f32.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import openvino as ov
import torch
from torch import nn

from ovdiv.errors import ConfigError, ExportError

__all__ = ["INT8_PRESETS", "convert_to_openvino", "bake_preprocessing", "quantize_int8", "save_ir"]

log = logging.getLogger("ovdiv.export")

INT8_PRESETS = ("mixed", "performance")


def convert_to_openvino(model: nn.Module, example: torch.Tensor) -> ov.Model:
    """Convert an eval-mode torch module to an ``openvino.Model`` with input ``[?, 3, H, W]``.

    Args:
        model: Module taking one float32 NCHW tensor.
        example: Example input ``(B, 3, H, W)``.

    Raises:
        ExportError: OpenVINO's conversion failed.
    """
    model.eval()
    shape = [-1, *example.shape[1:]]
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            ov_model = ov.convert_model(model, example_input=example, input=[shape])
    except Exception as exc:  # the PyTorch frontend raises OpConversionFailure / RuntimeError / ...
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"OpenVINO conversion of {type(model).__name__} failed ({msg})") from exc
    ov_model.inputs[0].get_tensor().set_names({"input"})
    ov_model.outputs[0].get_tensor().set_names({"logits"})
    return ov_model


def bake_preprocessing(ov_model: ov.Model, mean: Sequence[float], std: Sequence[float]) -> ov.Model:
    """Return a new model whose input is uint8 NHWC RGB (scaling, mean/std and layout inside the graph).

    ``ov_model`` is not modified (``PrePostProcessor.build`` edits its model in place, so it works on a clone).
    """
    from openvino.preprocess import PrePostProcessor

    ppp = PrePostProcessor(ov_model.clone())
    inp = ppp.input()
    inp.tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
    inp.model().set_layout(ov.Layout("NCHW"))
    inp.preprocess().convert_element_type(ov.Type.f32).mean([255.0 * float(m) for m in mean]).scale(
        [255.0 * float(s) for s in std]
    )
    baked = ppp.build()
    baked.inputs[0].get_tensor().set_names({"input"})
    return baked


def quantize_int8(
    ov_model: ov.Model,
    calib: npt.NDArray[np.float32],
    *,
    transformer: bool = False,
    preset: str = "mixed",
    fast_bias_correction: bool = True,
) -> tuple[ov.Model, dict[str, Any]]:
    """Post-training INT8 quantization with NNCF.

    Args:
        ov_model: FP32 model with float32 NCHW input.
        calib: Preprocessed calibration inputs ``(N, 3, H, W)`` float32.
        transformer: Use ``nncf.ModelType.TRANSFORMER`` (attention-aware quantization).
        preset: ``"mixed"`` or ``"performance"`` (symmetric activations too).
        fast_bias_correction: NNCF's fast bias correction (default) instead of the full one.

    Returns:
        ``(int8_model, settings)`` with the settings recorded in the card.
    """
    nncf = _import_nncf()
    if preset not in INT8_PRESETS:
        raise ConfigError(f"unknown INT8 preset {preset!r}", f"use one of {', '.join(INT8_PRESETS)}")
    items = [calib[i : i + 1] for i in range(len(calib))]
    settings: dict[str, Any] = {
        "tool": "nncf.quantize",
        "preset": preset,
        "model_type": "transformer" if transformer else None,
        "subset_size": len(items),
        "fast_bias_correction": fast_bias_correction,
    }
    kwargs: dict[str, Any] = {
        "preset": nncf.QuantizationPreset.MIXED if preset == "mixed" else nncf.QuantizationPreset.PERFORMANCE,
        "subset_size": len(items),
        "fast_bias_correction": fast_bias_correction,
    }
    if transformer:
        kwargs["model_type"] = nncf.ModelType.TRANSFORMER
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            quantized = nncf.quantize(ov_model.clone(), nncf.Dataset(items), **kwargs)
    except Exception as exc:  # nncf raises its own hierarchy and RuntimeErrors from OpenVINO
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"NNCF INT8 quantization failed ({msg})") from exc
    return quantized, settings


def _import_nncf() -> Any:
    """Import nncf without letting it print to stdout.

    nncf binds a stdout handler to its logger at import time and warns there that it prefers another torch
    version. Importing it with stdout redirected captures that warning (re-logged at DEBUG); the handler is
    then pointed at stderr and limited to warnings, so stdout stays clean for the CLI's output.
    """
    import sys

    if "nncf" in sys.modules:
        return sys.modules["nncf"]
    sink = io.StringIO()
    cpp_ext = logging.getLogger("torch.utils.cpp_extension")  # "No CUDA runtime is found" on CPU machines
    level = cpp_ext.level
    cpp_ext.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink):
            warnings.simplefilter("ignore")
            import nncf
    finally:
        cpp_ext.setLevel(level)
    nncf_log = logging.getLogger("nncf")
    nncf_log.setLevel(logging.WARNING)
    for handler in nncf_log.handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream is sink:
            handler.setStream(sys.stderr)
            handler.setLevel(logging.WARNING)
    if sink.getvalue().strip():
        log.debug("nncf import: %s", sink.getvalue().strip())
    return nncf


def save_ir(ov_model: ov.Model, xml_path: str | os.PathLike[str], *, compress_to_fp16: bool) -> Path:
    """Write ``.xml`` + ``.bin`` (the model object is not modified)."""
    p = Path(xml_path)
    ov.save_model(ov_model.clone(), str(p), compress_to_fp16=compress_to_fp16)
    return p
