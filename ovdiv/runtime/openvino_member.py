"""OpenVINO backend: IR (``.xml`` + ``.bin``) and ``.onnx`` read by OpenVINO.

Compiled with ``PERFORMANCE_HINT=THROUGHPUT`` and a dynamic batch dimension; batches run through an
:class:`openvino.AsyncInferQueue` with the plugin's optimal number of requests. The card's
preprocessing (uint8 NHWC -> float NCHW, mean/std) is compiled into the graph with OpenVINO's
``PrePostProcessor``, so the host only resizes (when sizes differ) and feeds uint8.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov
from openvino import opset13 as ops
from openvino.preprocess import PrePostProcessor

from ovdiv.errors import MemberError
from ovdiv.runtime.artifact_checks import check_ir_files, check_onnx_file, native_error_reason, quiet_native_stderr
from ovdiv.runtime.member import FloatArray32, Member, PendingBatches, load_card
from ovdiv.runtime.preprocessing import check_images, resize_images
from ovdiv.types import Backend, Precision, UInt8Images

__all__ = [
    "OpenVINOMember",
    "add_feature_outputs",
    "core",
    "dynamic_quantization_setting",
    "feature_taps",
    "is_cpu",
    "precision_config",
    "set_cpu_threads",
]

log = logging.getLogger("ovdiv.runtime")
_CORE: ov.Core | None = None
_CORE_LOCK = threading.Lock()


def core() -> ov.Core:
    """The process-wide :class:`openvino.Core`."""
    global _CORE
    with _CORE_LOCK:
        if _CORE is None:
            _CORE = ov.Core()
        return _CORE


def set_cpu_threads(threads: int) -> None:
    """Size this process's OpenVINO CPU plugin to ``threads`` threads in one stream (every later compile).

    Set on the process-wide :func:`core`, so member models and their VJP graphs compiled afterwards in this
    process all use ``INFERENCE_NUM_THREADS=threads`` and ``NUM_STREAMS=1`` instead of the whole machine
    (a Ray actor that declared ``threads`` CPUs uses that many; ``scripts/check_ov_threads.py`` measures
    that f32 bytes do not depend on it on a given CPU).
    """
    core().set_property("CPU", {"INFERENCE_NUM_THREADS": int(threads), "NUM_STREAMS": 1})


def is_cpu(device: str) -> bool:
    """``device`` is the CPU plugin itself (not AUTO/MULTI/HETERO, which take no CPU-only properties)."""
    return device.strip().upper().split(".")[0] == "CPU"


def precision_config(precision: Precision, device: str = "CPU") -> dict[str, Any]:
    """Compile properties for ``precision`` (``model`` sets nothing: the plugin default applies).

    An explicit precision (``f32``, ``bf16``, ``f16``) also switches the CPU plugin's dynamic activation
    quantization off (``DYNAMIC_QUANTIZATION_GROUP_SIZE=0``): by default the plugin quantizes the activations
    of layers with int8/int4 weight constants on the fly, a function the graph does not contain. With it off,
    the member computes its graph's own function (FakeQuantize semantics for an INT8 IR), the one its
    attributions differentiate (:class:`ovdiv.attribution.VJPModel` compiles the same way). No effect on
    float weights; NNCF INT8 IRs run by the plugin's int8 kernels are unaffected (measured: identical logits).
    """
    if precision is Precision.MODEL:
        return {}
    cfg: dict[str, Any] = {"INFERENCE_PRECISION_HINT": str(precision)}
    if is_cpu(device):
        cfg["DYNAMIC_QUANTIZATION_GROUP_SIZE"] = 0
    return cfg


def dynamic_quantization_setting(config: dict[str, Any], device: str) -> str:
    """What a compile ``config`` does with the CPU plugin's dynamic activation quantization (recorded).

    Returns:
        ``"off"`` (group size 0 on CPU), ``"group <n>"`` (set to ``n``) or ``"plugin default"`` (not set; always on
        devices other than CPU, whose plugins may quantize dynamically too: ovdiv does not set it there).
    """
    if not is_cpu(device) or "DYNAMIC_QUANTIZATION_GROUP_SIZE" not in config:
        return "plugin default"
    n = int(config["DYNAMIC_QUANTIZATION_GROUP_SIZE"])
    return "off" if n == 0 else f"group {n}"


def _static_dims(pshape: ov.PartialShape) -> list[int]:
    return [d.get_length() if d.is_static else -1 for d in pshape]


def feature_taps(model: ov.Model) -> dict[str, ov.Output]:
    """The un-pooled outputs behind :meth:`Member.features`' layers, in place in ``model`` (not copied).

    ``penultimate`` = the activation input of the last MatMul (when the graph has none, the input of the
    last Convolution), and ``stage<k>`` = the last op output at each spatial resolution ``(H, W)``,
    ``H*W > 1``, after the first convolution, in order of first appearance (decreasing resolution).

    Returns:
        Layer name -> ``ov.Output`` (``[N, D]`` or ``[N, C, H, W]``), ``penultimate`` first when present.
    """
    ordered = model.get_ordered_ops()
    last_matmul: ov.Output | None = None
    last_conv: ov.Output | None = None
    seen_conv = False
    stages: dict[tuple[int, int], ov.Output] = {}
    skip = {"Constant", "Parameter", "Result", "ShapeOf", "Convert"}
    # Nodes computed from the image input. Weight subgraphs (e.g. INT8 FakeQuantize on a [O, I, kh, kw]
    # kernel, FP16 decompression) are not, and must never become a "feature" tap.
    on_data: set[str] = set()
    for node in ordered:
        t = node.get_type_name()
        inputs = (node.input_value(i).get_node().get_friendly_name() for i in range(node.get_input_size()))
        if t != "ShapeOf" and (t == "Parameter" or any(name in on_data for name in inputs)):
            on_data.add(node.get_friendly_name())
        if t == "MatMul":
            ins = [node.input_value(i) for i in range(node.get_input_size())]
            act = [o for o in ins if o.get_node().get_friendly_name() in on_data]
            if act:
                last_matmul = act[0]
        if t in ("Convolution", "GroupConvolution"):
            seen_conv = True
            last_conv = node.input_value(0)
        if not seen_conv or t in skip or node.get_output_size() != 1 or node.get_friendly_name() not in on_data:
            continue
        ps = node.get_output_partial_shape(0)
        if ps.rank.is_dynamic or ps.rank.get_length() != 4:
            continue
        dims = _static_dims(ps)
        if min(dims[1:]) < 1 or dims[2] * dims[3] <= 1:
            continue
        stages[(dims[2], dims[3])] = node.output(0)
    taps: dict[str, ov.Output] = {}
    pen = last_matmul if last_matmul is not None else last_conv
    if pen is not None:
        taps["penultimate"] = pen
    for k, out in enumerate(stages.values(), start=1):
        taps[f"stage{k}"] = out
    return taps


def add_feature_outputs(model: ov.Model) -> tuple[ov.Model, list[str]]:
    """A copy of ``model`` with extra outputs for CKA: penultimate features and pooled stage outputs.

    Output 0 stays the logits. Then the layers of :func:`feature_taps`, ``stage<k>`` averaged over H and
    W (``ReduceMean`` over axes 2, 3 of an NCHW activation; a 4-D penultimate too). Every extra output
    is ``[N, D]``.

    Returns:
        ``(model_with_outputs, feature_names)``; ``feature_names[i]`` is output ``i + 1``.
    """
    m = model.clone()

    def pooled(out: ov.Output) -> ov.Output:
        rank = out.get_partial_shape().rank.get_length()
        if rank == 4:
            return ops.reduce_mean(out, ops.constant(np.array([2, 3], dtype=np.int64)), keep_dims=False).output(0)
        if rank == 2:
            return out
        flat = ops.reshape(out, ops.constant(np.array([0, -1], dtype=np.int64)), special_zero=True)
        return flat.output(0)

    taps = feature_taps(m)
    m.add_results([ops.result(pooled(o)) for o in taps.values()])
    return m, list(taps)


class _QueueWait(PendingBatches):
    def __init__(self, queue: ov.AsyncInferQueue, errors: list[BaseException]) -> None:
        self._queue = queue
        self._errors = errors

    def wait(self) -> None:
        self._queue.wait_all()
        if self._errors:
            raise self._errors[0]


class OpenVINOMember(Member):
    """A member executed by OpenVINO (see module docstring)."""

    backend = Backend.OPENVINO

    def __init__(self, path: Path, *, device: str, precision: Precision) -> None:
        weights: Path | None = None
        # check the files first: OpenVINO's messages hide the cause and its frontends print to fd 2
        if path.suffix.lower() == ".xml":
            weights = check_ir_files(path)
        elif path.suffix.lower() == ".onnx":
            check_onnx_file(path)
        try:
            with quiet_native_stderr():
                model = core().read_model(str(path))
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses with multi-line messages
            kind = "an OpenVINO IR" if path.suffix.lower() == ".xml" else "a readable ONNX model"
            raise MemberError(
                f"member {path} is not {kind} ({native_error_reason(exc)})", "re-export it with ovdiv export"
            ) from exc
        self._raw = model
        if len(model.inputs) != 1:
            raise MemberError(
                f"member {path.stem} ({path}) has {len(model.inputs)} inputs", "ovdiv needs one image input"
            )
        if len(model.outputs) != 1:
            raise MemberError(
                f"member {path.stem} ({path}) has {len(model.outputs)} outputs; ovdiv needs one [N, C] logits output",
                "detection/segmentation models are not classifiers",
            )
        out_ps = model.output(0).get_partial_shape()
        in_ps = model.input(0).get_partial_shape()
        if out_ps.rank.is_dynamic or out_ps.rank.get_length() != 2:
            raise MemberError(
                f"member {path.stem} ({path}) outputs shape {out_ps}, not [N, C] logits",
                "ovdiv evaluates image classifiers",
            )
        if in_ps.rank.is_dynamic or in_ps.rank.get_length() != 4:
            raise MemberError(
                f"member {path.stem} ({path}) takes input shape {in_ps}, not an image batch [N, 3, H, W]",
                "ovdiv evaluates image classifiers",
            )
        u8 = model.input(0).get_element_type() == ov.Type.u8
        c_dim = out_ps[1]
        card, found = load_card(
            path,
            fmt="ir" if path.suffix.lower() == ".xml" else "onnx",
            static_input=_static_dims(in_ps),
            num_outputs=c_dim.get_length() if c_dim.is_static else None,
            layout="NHWC_U8" if u8 else None,
        )
        super().__init__(path, card, card_found=found, device=device, precision=precision, weights_path=weights)
        self.runtime_version = f"openvino {ov.get_version()}"
        self.dynamic_quantization = dynamic_quantization_setting(precision_config(precision, device), device)
        self._compiled: ov.CompiledModel | None = None
        self._queue: ov.AsyncInferQueue | None = None
        self._feat_compiled: ov.CompiledModel | None = None
        self._feat_names: list[str] = []
        self._lock = threading.Lock()

    # ---- model building -----------------------------------------------------------------------
    def read_model(self) -> ov.Model:
        """A fresh copy of the uncompiled model (float NCHW input unless the card says baked)."""
        return self._raw.clone()

    def _prepared(self, model: ov.Model) -> ov.Model:
        """Dynamic batch + the card's preprocessing compiled in (uint8 NHWC input)."""
        h, w = self.input_size
        if self.baked:
            model.reshape({model.input(0): ov.PartialShape([-1, h, w, 3])})
            return model
        model.reshape({model.input(0): ov.PartialShape([-1, 3, h, w])})
        ppp = PrePostProcessor(model)
        ppp.input(0).tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
        ppp.input(0).model().set_layout(ov.Layout("NCHW"))
        ppp.input(0).preprocess().convert_element_type(ov.Type.f32).mean(
            [255.0 * float(v) for v in self.card.mean]
        ).scale([255.0 * float(v) for v in self.card.std])
        return ppp.build()

    def _compile(self, model: ov.Model) -> ov.CompiledModel:
        config: dict[str, Any] = {"PERFORMANCE_HINT": "THROUGHPUT", **precision_config(self.precision, self.device)}
        try:
            compiled = core().compile_model(model, self.device, config)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise MemberError(
                f"member {self.name}: cannot compile on {self.device} with precision {self.precision} ({first[:200]})",
                "try --device CPU or --precision f32",
            ) from exc
        try:
            eff = compiled.get_property("INFERENCE_PRECISION_HINT")
            self.inference_precision = eff.to_string() if hasattr(eff, "to_string") else str(eff)
        except Exception:  # some plugins (AUTO) do not report it
            self.inference_precision = str(self.precision)
        return compiled

    @property
    def compiled(self) -> ov.CompiledModel:
        """The compiled logits-only model (compiled on first use)."""
        with self._lock:
            if self._compiled is None:
                self._compiled = self._compile(self._prepared(self._raw.clone()))
                log.debug("member %s compiled on %s (%s)", self.name, self.device, self.inference_precision)
            return self._compiled

    def _ensure_compiled(self) -> None:
        _ = self.compiled

    @property
    def num_requests(self) -> int:
        """The plugin's optimal number of parallel infer requests."""
        try:
            return max(1, int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        except Exception:
            return 2

    # ---- inference ----------------------------------------------------------------------------
    def model_input(self, images: UInt8Images) -> np.ndarray:
        """uint8 NHWC resized to the card's size (normalisation runs inside the compiled graph)."""
        return np.ascontiguousarray(resize_images(check_images(images), self.input_size))

    def _infer(self, x: np.ndarray) -> FloatArray32:
        req = self.compiled.create_infer_request()
        res = req.infer({0: x})
        return np.asarray(res[0], dtype=np.float32).copy()

    def submit_batches(self, batches: Iterable[tuple[int, UInt8Images]], out: Any) -> PendingBatches:
        """Stream batches into an AsyncInferQueue; logits land in ``out[start:start+B]`` from its callbacks.

        Returns once every batch has been started (requests may still be running); ``.wait()`` on the
        result waits for them and re-raises a callback error. On an error while submitting, the requests
        already started are waited for before the error propagates.
        """
        self._ensure_compiled()
        if self._queue is None:
            self._queue = ov.AsyncInferQueue(self.compiled, self.num_requests)
        queue = self._queue
        errors: list[BaseException] = []

        def on_done(request: ov.InferRequest, start: int) -> None:
            try:
                logits = request.get_output_tensor(0).data
                out[start : start + logits.shape[0]] = logits
            except BaseException as exc:  # surfaced by wait()
                errors.append(exc)

        queue.wait_all()  # a previous submission must not land in this callback
        queue.set_callback(on_done)
        try:
            for start, images in batches:
                queue.start_async({0: self.model_input(images)}, userdata=start)
                if errors:
                    break
        except BaseException:
            queue.wait_all()
            raise
        return _QueueWait(queue, errors)

    def _features(self, x: np.ndarray) -> dict[str, FloatArray32]:
        with self._lock:
            if self._feat_compiled is None:
                model, self._feat_names = add_feature_outputs(self._raw)
                self._feat_compiled = self._compile(self._prepared(model))
        req = self._feat_compiled.create_infer_request()
        res = req.infer({0: x})
        return {
            name: np.asarray(res[i + 1], dtype=np.float32).reshape(x.shape[0], -1).copy()
            for i, name in enumerate(self._feat_names)
        }

    def close(self) -> None:
        """Drop the compiled models and the request queue."""
        with self._lock:
            self._queue = None
            self._compiled = None
            self._feat_compiled = None
