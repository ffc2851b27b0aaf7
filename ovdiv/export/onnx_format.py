"""torch -> ONNX with a dynamic batch dimension.

The default exporter is ``torch.onnx.export(dynamo=True)`` (torch.export + onnxscript), opset 18; when it
fails for a model, the TorchScript exporter (``dynamo=False``, deprecated in torch 2.x but still shipped)
is tried, and the one used is recorded in the card. The graph has one input ``input`` of shape
``[batch, 3, H, W]`` float32 (``[batch, H, W, 3]`` uint8 with baked preprocessing) and one output
``logits`` ``[batch, C]``.
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

import torch
from torch import nn

from ovdiv.errors import ExportError

__all__ = ["DEFAULT_OPSET", "UInt8Preprocess", "export_onnx"]

log = logging.getLogger("ovdiv.export")

DEFAULT_OPSET = 18


class UInt8Preprocess(nn.Module):
    """Wrap a model so it takes uint8 NHWC RGB images: ``(u / 255 - mean) / std``, NHWC -> NCHW, then the model.

    Args:
        model: The float NCHW model.
        mean: Per-channel mean in [0, 1] units.
        std: Per-channel std in [0, 1] units.
    """

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.model = model
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, 3, 1, 1) * 255.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 ``(N, H, W, 3)`` -> logits."""
        x = x.permute(0, 3, 1, 2).to(torch.float32)
        return self.model((x - self.mean) / self.std)


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    example: torch.Tensor,
    *,
    opset: int = DEFAULT_OPSET,
    exporter: str = "auto",
) -> dict[str, Any]:
    """Export ``model`` (eval mode) to ``path`` with a dynamic batch dimension and check the graph.

    Args:
        model: Module taking one input tensor.
        path: Target ``.onnx`` file.
        example: Example input, batch >= 2 (batch 1 would be specialised by torch.export).
        opset: ONNX opset (>= 17).
        exporter: ``"dynamo"``, ``"torchscript"`` or ``"auto"`` (dynamo, falling back to torchscript).

    Returns:
        ``{"exporter": ..., "opset": ..., "ops": [sorted op types]}``.

    Raises:
        ExportError: Both exporters failed, or the graph fails ``onnx.checker``.
    """
    import onnx

    if opset < 17:
        raise ExportError(f"ONNX opset {opset} is too old", "use opset >= 17")
    p = Path(path)
    model.eval()
    tried = ["dynamo", "torchscript"] if exporter == "auto" else [exporter]
    errors = []
    used = None
    for kind in tried:
        try:
            _export(model, p, example, opset, kind)
            used = kind
            break
        except Exception as exc:  # torch.export / onnxscript raise many unrelated exception types
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            log.warning("ONNX export with the %s exporter failed: %s", kind, msg)
            errors.append(f"{kind}: {type(exc).__name__}: {msg}")
    if used is None:
        raise ExportError(f"ONNX export of {type(model).__name__} failed ({'; '.join(errors)})")
    proto = onnx.load(str(p))
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"exported ONNX graph {p} is invalid ({str(exc).splitlines()[0]})") from exc
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    if not dims or not dims[0].dim_param:
        raise ExportError(f"exported ONNX graph {p} has a static batch dimension ({dims[0] if dims else '?'})")
    return {"exporter": used, "opset": opset, "ops": sorted({n.op_type for n in proto.graph.node})}


def _export(model: nn.Module, path: Path, example: torch.Tensor, opset: int, kind: str) -> None:
    sink = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(sink), torch.inference_mode(False):
        warnings.simplefilter("ignore")
        if kind == "dynamo":
            torch.onnx.export(
                model,
                (example,),
                str(path),
                dynamo=True,
                opset_version=opset,
                input_names=["input"],
                output_names=["logits"],
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                external_data=False,
                verbose=False,
                report=False,
            )
        elif kind == "torchscript":
            torch.onnx.export(
                model,
                (example,),
                str(path),
                dynamo=False,
                opset_version=opset,
                input_names=["input"],
                output_names=["logits"],
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            )
        else:
            raise ExportError(f"unknown ONNX exporter {kind!r}", "use 'dynamo', 'torchscript' or 'auto'")
    if sink.getvalue().strip():
        log.debug("torch.onnx.export output:\n%s", sink.getvalue())
