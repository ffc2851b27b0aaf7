r"""Compile and run the VJP model of a deployed member; bridge it to torch autograd (and so to captum).

:class:`VJPModel` compiles two models on the member's device, both with
``INFERENCE_PRECISION_HINT=f32`` (the CPU default, bf16 on AVX512-BF16/AMX machines, gives 20-33 %
gradient error — feasibility study §6.2):

* ``forward(x) -> logits`` (the plain forward, dynamic batch), and
* ``vjp(x, u) -> (logits, u^T d logits / d x)`` (one request gives both; the fast path), specialised to
  the batch size actually run (built and compiled once per batch size, a few kept): shapes and indices the
  graph computes from the batch at run time fold to constants for the rules.

:func:`as_torch_module` wraps them in an ``nn.Module`` whose ``torch.autograd.Function`` runs the
compiled forward and, in ``backward``, the VJP model with ``grad_output`` as ``u``: captum's gradient
methods run unchanged on the deployed model (costing one extra forward inside the VJP request).
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import openvino as ov
import openvino.opset15 as ops
import torch
from torch import nn

from ovdiv.attribution.vjp import VJPGraph, build_vjp_model
from ovdiv.cards import IMAGENET_MEAN, IMAGENET_STD
from ovdiv.errors import AttributionInputError, MemberError
from ovdiv.runtime.openvino_member import core, dynamic_quantization_setting, is_cpu

__all__ = ["VJPModel", "as_torch_module", "float_input_view", "read_model"]

_log = logging.getLogger("ovdiv.attribution")
F32 = npt.NDArray[np.float32]


def read_model(path: str | os.PathLike[str]) -> ov.Model:
    """Read an ``.xml`` IR or ``.onnx`` file with ``openvino.Core().read_model``.

    Raises:
        MemberError: missing or unreadable file.
    """
    p = Path(path)
    if not p.is_file():
        raise MemberError(f"model file {p} does not exist", "pass the path of an .xml IR or .onnx file")
    if p.suffix.lower() not in (".xml", ".onnx"):
        raise MemberError(f"model file {p}: expected an .xml IR or .onnx file, got '{p.suffix}'")
    try:
        return core().read_model(str(p))
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MemberError(f"model file {p} cannot be read by OpenVINO ({first[:200]})") from exc


def float_input_view(
    model: ov.Model, *, mean: tuple[float, float, float] = IMAGENET_MEAN, std: tuple[float, float, float] = IMAGENET_STD
) -> ov.Model:
    r"""The float-input view of a model with preprocessing baked in (uint8 NHWC input).

    It is the same function of the float normalised NCHW input ``x``: a new f32 ``[N, 3, H, W]`` Parameter feeds
    ``p = transpose(255 (x \cdot std + mean), NCHW -> NHWC)`` where the graph converted its uint8 input to
    float. Gradients of this view are w.r.t. ``x``, as for a float member. Float models are returned as is.

    Raises:
        MemberError: the uint8 input is not consumed only by ``Convert`` ops.
    """
    param = model.get_parameters()[0]
    if param.get_element_type().is_real():
        return model
    m = model.clone()
    param = m.get_parameters()[0]
    ps = param.get_partial_shape()
    if ps.rank.is_dynamic or ps.rank.get_length() != 4 or not ps[3].is_static or ps[3].get_length() != 3:
        raise MemberError(f"baked model input has shape {ps}, expected uint8 [N, H, W, 3]")
    h = ps[1].get_length() if ps[1].is_static else -1
    w = ps[2].get_length() if ps[2].is_static else -1
    x = ops.parameter(ov.PartialShape([ps[0], 3, h, w]), ov.Type.f32, name="ovdiv_float_input")
    sc = (255.0 * np.asarray(std, np.float32)).reshape(1, 3, 1, 1)
    off = (255.0 * np.asarray(mean, np.float32)).reshape(1, 3, 1, 1)
    pix = ops.add(ops.multiply(x, ops.constant(sc)), ops.constant(off))
    nhwc = ops.transpose(pix, ops.constant(np.array([0, 2, 3, 1], np.int64))).output(0)
    consumers = list(param.output(0).get_target_inputs())
    for inp in consumers:
        node = inp.get_node()
        if node.get_type_name() != "Convert" or not node.get_output_element_type(0).is_real():
            raise MemberError(
                f"baked model: uint8 input feeds {node.get_type_name()} '{node.get_friendly_name()}', not a Convert",
                "export the member without baked preprocessing for attribution",
            )
        src = nhwc
        if node.get_output_element_type(0) != ov.Type.f32:
            src = ops.convert(nhwc, node.get_output_element_type(0)).output(0)
        for target in list(node.output(0).get_target_inputs()):
            target.replace_source_output(src)
    return ov.Model(m.get_results(), [x], m.get_friendly_name())


class VJPModel:
    r"""Compiled forward and VJP model of one deployed classifier.

    Args:
        model: ``openvino.Model`` or path to ``.xml`` / ``.onnx``.
        device: OpenVINO device (``CPU``, ``GPU``, ``AUTO``).
        input_size: ``(H, W)`` used to make C/H/W static when the model's input shape is dynamic.
        mean: Card mean (only used for baked uint8 models, see :func:`float_input_view`).
        std: Card std (idem).
        inference_precision: ``INFERENCE_PRECISION_HINT`` for both compiled models. ``"f32"`` (default)
            is the only setting that gives correct gradients on bf16-capable CPUs; anything else is
            logged as a warning.
        dynamic_quantization: Let the CPU plugin quantize activations on the fly for layers with int8/int4
            weight constants (its default, ``DYNAMIC_QUANTIZATION_GROUP_SIZE`` > 0). ``False`` (default) compiles
            both models with ``DYNAMIC_QUANTIZATION_GROUP_SIZE=0``: forward and VJP then compute the graph's own
            function (FakeQuantize semantics for an NNCF INT8 IR), the one its gradient is the gradient of and
            the gradient check verifies. With it on, the plugin also quantizes the *gradient* flowing through
            the transposed weight products (measured on an NNCF INT8 deit_tiny: saliency 0.113 relative L2 from
            the NNCF STE reference instead of 0.046). No effect on float models or on other devices.
        config: Extra compile properties (applied last).
        specialize_batch: Build and compile the VJP model per batch size run (default). ``False`` keeps one
            dynamic-batch VJP model (the pre-issue-14 behaviour; batch-driven indices then cannot fold, and
            the CPU plugin's dynamic-shape path is used — kept for diagnosis and the gradient check's tests).

    Attributes:
        graph: The :class:`~ovdiv.attribution.vjp.VJPGraph`.
        fake_quantized: The model holds FakeQuantize ops (INT8); on CPU both models are then compiled with
            ``LP_TRANSFORMS_MODE=NO`` (fp32 fake-quant semantics, STE gradient).
        compile_config: The properties both models were compiled with.
        inference_precision: The precision the plugin reports for the VJP model (recorded).
        dynamic_quantization: ``"off"`` (``DYNAMIC_QUANTIZATION_GROUP_SIZE=0`` compiled in) or ``"plugin
            default"`` (asked for, or a device other than CPU); recorded with the gradient check's evidence.
        device: Device both models run on.

    Shapes: ``x`` float32 ``(N, 3, H, W)``, ``u`` float32 ``(N, C)``, logits ``(N, C)``, grad like ``x``.
    """

    def __init__(
        self,
        model: ov.Model | str | os.PathLike[str],
        *,
        device: str = "CPU",
        input_size: tuple[int, int] | None = None,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        inference_precision: str = "f32",
        config: dict[str, Any] | None = None,
        specialize_batch: bool = True,
        dynamic_quantization: bool = False,
    ) -> None:
        self.specialize_batch = specialize_batch
        m = read_model(model) if isinstance(model, (str, os.PathLike)) else model.clone()
        if len(m.get_parameters()) != 1:
            raise MemberError(f"model has {len(m.get_parameters())} inputs; attribution needs one image input")
        m = float_input_view(m, mean=mean, std=std)
        ps = m.get_parameters()[0].get_partial_shape()
        if ps.rank.is_dynamic or ps.rank.get_length() != 4:
            if input_size is None:
                raise MemberError(
                    f"model input shape {ps} is not [N, 3, H, W]", "pass input_size=(H, W) or export a static C/H/W"
                )
            ps = ov.PartialShape([-1, 3, *input_size])
        dims = [d.get_length() if d.is_static else -1 for d in ps]
        if -1 in dims[1:]:
            if input_size is None:
                raise MemberError(
                    f"model input shape {ps} has dynamic C/H/W", "pass input_size=(H, W) (e.g. from the model card)"
                )
            dims[1:] = [3 if dims[1] == -1 else dims[1], int(input_size[0]), int(input_size[1])]
        dims[0] = -1
        m.reshape({m.input(0): ov.PartialShape(dims)})
        self.input_shape: tuple[int, int, int] = (dims[1], dims[2], dims[3])
        self._model = m
        self._dynamic_graph: VJPGraph | None = None
        # Built (not compiled) for batch 1 now: unsupported ops and rules that need a value the graph
        # cannot provide fail here, before any inference.
        self.graph: VJPGraph = self._graph_for(1)
        self._built: dict[int, VJPGraph] = {1: self.graph}
        self.device = device
        if inference_precision != "f32":
            _log.warning("VJP model compiled with inference precision %s: inaccurate gradients", inference_precision)
        cfg: dict[str, Any] = {"INFERENCE_PRECISION_HINT": inference_precision}
        self.fake_quantized = any(op.get_type_name() == "FakeQuantize" for op in self.graph.forward.get_ordered_ops())
        if self.fake_quantized and "CPU" in device.upper():
            # The CPU plugin's int8 low-precision transformations (LPT) rewrite FakeQuantize subgraphs;
            # in the VJP model they break the equality masks of the MaxPool rule (zero gradients observed
            # on an NNCF INT8 ResNet) and fuse the forward differently from the plain model. With LPT
            # off, forward and VJP both run FakeQuantize with fp32 fake-quant semantics, so the gradient
            # is the STE gradient of the quantized function the forward computes.
            cfg["LP_TRANSFORMS_MODE"] = "NO"
        if not dynamic_quantization and is_cpu(device):
            cfg["DYNAMIC_QUANTIZATION_GROUP_SIZE"] = 0
        cfg.update(config or {})
        self.compile_config: dict[str, Any] = dict(cfg)
        self.dynamic_quantization = dynamic_quantization_setting(cfg, device)
        self._lock = threading.Lock()
        self._vjp_by_batch: OrderedDict[int, ov.CompiledModel] = OrderedDict()
        try:
            self._fwd = core().compile_model(m, device, cfg)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise MemberError(f"cannot compile the model on {device} ({first[:200]})", "try device='CPU'") from exc
        try:
            eff = self._fwd.get_property("INFERENCE_PRECISION_HINT")
            self.inference_precision = eff.to_string() if hasattr(eff, "to_string") else str(eff)
        except Exception:  # AUTO and some plugins do not report it
            self.inference_precision = inference_precision
        out_ps = self.graph.model.output(0).get_partial_shape()
        # Shape of one sample's output: (C,) for a classifier, (C, H, W) for a graph cut at a feature map.
        self.output_shape: tuple[int, ...] = tuple(d.get_length() for d in list(out_ps)[1:])
        self.num_classes = self.output_shape[0]
        self._local = threading.local()

    # ------------------------------------------------------------------ batch specialisation
    MAX_BATCH_SIZES = 4
    """Compiled VJP models kept (one per batch size, least recently used dropped)."""

    def _graph_for(self, n: int) -> VJPGraph:
        """The VJP graph of the forward model with its batch fixed to ``n`` (C/H/W as the member's).

        A model that cannot be reshaped to batch ``n`` (e.g. an ONNX export with the batch baked into its
        Reshape constants) keeps the dynamic-batch graph, built once.
        """
        m = self._model.clone()
        try:
            if not self.specialize_batch:
                raise ValueError("batch specialisation off")
            m.reshape({m.input(0): ov.PartialShape([n, *self.input_shape])})
        except Exception:
            if self._dynamic_graph is None:
                _log.debug("model cannot be reshaped to batch %d: dynamic-batch VJP graph", n)
                self._dynamic_graph = build_vjp_model(self._model)
            return self._dynamic_graph
        return build_vjp_model(m)

    def _compiled_vjp(self, n: int) -> ov.CompiledModel:
        """The VJP model specialised to batch ``n``, built and compiled once per batch size.

        Specialising (instead of one dynamic-batch VJP model) lets every shape that the graph computes from
        the batch at run time (``ShapeOf -> Reshape/Broadcast``, a ``Gather`` fed by ``repeat_interleave``,
        ONNX ``Shape``-driven pads) fold to a constant the rules can use, and keeps the CPU plugin on its
        static-shape kernels (its dynamic-shape path mislaid a channels-last layout, issue 14).
        """
        with self._lock:
            c = self._vjp_by_batch.get(n)
            if c is not None:
                self._vjp_by_batch.move_to_end(n)
                return c
            graph = self._built.pop(n, None) or self._graph_for(n)
            try:
                c = core().compile_model(graph.model, self.device, self.compile_config)
            except Exception as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise MemberError(
                    f"cannot compile the VJP model on {self.device} ({first[:200]})", "try device='CPU'"
                ) from exc
            self._vjp_by_batch[n] = c
            while len(self._vjp_by_batch) > self.MAX_BATCH_SIZES:
                self._vjp_by_batch.popitem(last=False)
            return c

    # ------------------------------------------------------------------ requests
    def _forward_request(self) -> ov.InferRequest:
        req = getattr(self._local, "fwd", None)
        if req is None:
            req = self._fwd.create_infer_request()
            self._local.fwd = req
        return req

    def _vjp_request(self, n: int) -> ov.InferRequest:
        compiled = self._compiled_vjp(n)
        reqs: dict[int, tuple[ov.CompiledModel, ov.InferRequest]] = getattr(self._local, "vjp", None) or {}
        self._local.vjp = reqs
        held = reqs.get(n)
        if held is None or held[0] is not compiled:
            held = (compiled, compiled.create_infer_request())
            reqs[n] = held
            for k in [k for k in reqs if k not in self._vjp_by_batch]:
                del reqs[k]
        return held[1]

    def _check_x(self, x: npt.ArrayLike) -> F32:
        arr = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
        if arr.ndim != 4 or tuple(arr.shape[1:]) != self.input_shape:
            raise AttributionInputError(
                f"x: expected float32 (N, {', '.join(map(str, self.input_shape))}), got shape {arr.shape}",
                "pass the model's normalised NCHW input or uint8 (N, H, W, 3) images",
            )
        return arr

    def forward(self, x: npt.ArrayLike) -> F32:
        """Logits float32 ``(N, C)`` of ``x`` float32 ``(N, 3, H, W)``."""
        arr = self._check_x(x)
        req = self._forward_request()
        res = req.infer({0: arr})
        return np.array(res[0], dtype=np.float32, copy=True)

    def vjp(self, x: npt.ArrayLike, u: npt.ArrayLike) -> tuple[F32, F32]:
        r"""``(logits, u^T \partial logits / \partial x)`` from one inference request.

        Args:
            x: float32 ``(N, 3, H, W)`` network input.
            u: float32 ``(N, C)`` cotangent (e.g. one-hot targets); ``(N, *output_shape)`` for a model whose
                output is not ``(N, C)`` (e.g. a graph cut at a ``(N, C, H, W)`` feature map).

        Returns:
            logits float32 ``(N, C)`` (the model's output) and the input gradient float32 ``(N, 3, H, W)``.
        """
        arr = self._check_x(x)
        uu = np.ascontiguousarray(np.asarray(u, dtype=np.float32))
        if uu.shape != (arr.shape[0], *self.output_shape):
            raise AttributionInputError(f"u: expected shape {(arr.shape[0], *self.output_shape)}, got {uu.shape}")
        req = self._vjp_request(arr.shape[0])
        res = req.infer({0: arr, 1: uu})
        return np.array(res[0], dtype=np.float32, copy=True), np.array(res[1], dtype=np.float32, copy=True)

    def gradient(self, x: npt.ArrayLike, target: npt.ArrayLike) -> tuple[F32, F32]:
        """``(logits, d logits[n, target[n]] / d x[n])`` — saliency's gradient, one request."""
        arr = self._check_x(x)
        t = np.asarray(target, dtype=np.int64).reshape(-1)
        u = np.zeros((arr.shape[0], self.num_classes), np.float32)
        u[np.arange(arr.shape[0]), t] = 1.0
        return self.vjp(arr, u)


class _OVGradFunction(torch.autograd.Function):
    """forward = compiled IR, backward = VJP model with ``grad_output`` as the cotangent."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, runner: VJPModel) -> torch.Tensor:
        ctx.runner = runner
        ctx.save_for_backward(x)
        logits = runner.forward(x.detach().cpu().numpy())
        return torch.from_numpy(logits).to(device=x.device, dtype=x.dtype)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor, None]:
        (x,) = ctx.saved_tensors
        _, g = ctx.runner.vjp(x.detach().cpu().numpy(), grad_out.detach().cpu().numpy())
        return torch.from_numpy(g).to(device=x.device, dtype=x.dtype), None


class OVTorchModule(nn.Module):
    """``nn.Module`` view of a :class:`VJPModel` (no parameters; differentiable w.r.t. its input)."""

    def __init__(self, runner: VJPModel) -> None:
        super().__init__()
        self.runner = runner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, C)`` of ``x (N, 3, H, W)``; gradients flow through the VJP model."""
        out: torch.Tensor = _OVGradFunction.apply(x, self.runner)
        return out


def as_torch_module(runner: VJPModel) -> OVTorchModule:
    """Wrap ``runner`` for captum / torch autograd: ``captum.attr.Saliency(as_torch_module(r))``."""
    return OVTorchModule(runner)
