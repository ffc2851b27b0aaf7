"""ONNX Runtime backend (CPU execution provider): a parity reference for ``.onnx`` members.

Features for CKA are read by exposing intermediate tensors as extra graph outputs (after ONNX shape
inference): the activation input of the last ``MatMul``/``Gemm`` and the last 4-D tensor at each
spatial resolution after the first ``Conv``, spatially averaged on the host.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort

from ovdiv.errors import MemberError
from ovdiv.runtime.artifact_checks import check_onnx_file, native_error_reason, quiet_native_stderr
from ovdiv.runtime.member import FloatArray32, Member, load_card
from ovdiv.types import Backend, Precision

if TYPE_CHECKING:
    import openvino as ov

__all__ = ["OnnxRuntimeMember"]


def _dims(shape: list[object]) -> list[int]:
    return [d if isinstance(d, int) and d > 0 else -1 for d in shape]


class OnnxRuntimeMember(Member):
    """A member executed by ONNX Runtime."""

    backend = Backend.ONNXRUNTIME

    def __init__(self, path: Path, *, device: str, precision: Precision) -> None:
        if precision not in (Precision.F32, Precision.MODEL):
            raise MemberError(
                f"member {path}: the onnxruntime backend runs precision f32 or model, not {precision}",
                "use --backend openvino for bf16/f16",
            )
        if device != "CPU":
            raise MemberError(f"member {path}: the onnxruntime backend runs on CPU only", "use --device CPU")
        check_onnx_file(path)
        try:
            with quiet_native_stderr():
                self._session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise MemberError(f"member {path} is not a readable ONNX model ({native_error_reason(exc)})") from exc
        ins, outs = self._session.get_inputs(), self._session.get_outputs()
        if len(ins) != 1:
            raise MemberError(f"member {path.stem} ({path}) has {len(ins)} inputs", "ovdiv needs one image input")
        if len(outs) != 1:
            raise MemberError(
                f"member {path.stem} ({path}) has {len(outs)} outputs; ovdiv needs one [N, C] logits output",
                "detection/segmentation models are not classifiers",
            )
        if len(outs[0].shape) != 2:
            raise MemberError(f"member {path.stem} ({path}) outputs shape {outs[0].shape}, not [N, C] logits")
        if len(ins[0].shape) != 4:
            raise MemberError(f"member {path.stem} ({path}) takes input shape {ins[0].shape}, not [N, 3, H, W]")
        u8 = ins[0].type == "tensor(uint8)"
        c = outs[0].shape[1]
        card, found = load_card(
            path,
            fmt="onnx",
            static_input=_dims(list(ins[0].shape)),
            num_outputs=c if isinstance(c, int) else None,
            layout="NHWC_U8" if u8 else None,
        )
        super().__init__(path, card, card_found=found, device=device, precision=precision)
        self.runtime_version = f"onnxruntime {ort.__version__}"
        self.inference_precision = "f32" if precision is Precision.F32 else "model"
        self._input_name = ins[0].name
        b = ins[0].shape[0]
        self._static_batch = b if isinstance(b, int) and b > 0 else None
        self._feat_session: ort.InferenceSession | None = None
        self._feat_names: list[str] = []
        self._feat_tensors: list[str] = []

    def _run(self, session: ort.InferenceSession, x: np.ndarray) -> list[np.ndarray]:
        if self._static_batch is None or self._static_batch == x.shape[0]:
            return list(session.run(None, {self._input_name: x}))
        parts = [session.run(None, {self._input_name: x[i : i + 1]}) for i in range(x.shape[0])]
        return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]

    def _infer(self, x: np.ndarray) -> FloatArray32:
        return np.asarray(self._run(self._session, x)[0], dtype=np.float32)

    def _build_feature_session(self) -> None:
        import onnx

        model = onnx.load(str(self.path))
        model = onnx.shape_inference.infer_shapes(model)
        shapes: dict[str, list[int]] = {}
        for vi in list(model.graph.value_info) + list(model.graph.output) + list(model.graph.input):
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim]
            shapes[vi.name] = dims
        consts = {t.name for t in model.graph.initializer}
        consts |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
        last_mm: str | None = None
        last_conv: str | None = None
        seen_conv = False
        stages: dict[tuple[int, int], str] = {}
        for node in model.graph.node:
            if node.op_type in ("MatMul", "Gemm"):
                act = [i for i in node.input[:2] if i not in consts]
                if act:
                    last_mm = act[0]
            if node.op_type == "Conv":
                seen_conv = True
                last_conv = node.input[0]
            if not seen_conv or node.op_type in ("Constant", "Shape", "Cast") or len(node.output) != 1:
                continue
            odims = shapes.get(node.output[0])
            if odims is None or len(odims) != 4 or min(odims[1:]) < 1 or odims[2] * odims[3] <= 1:
                continue
            stages[(odims[2], odims[3])] = node.output[0]
        names, tensors = [], []
        pen = last_mm if last_mm is not None else last_conv
        if pen is not None:
            names.append("penultimate")
            tensors.append(pen)
        for k, t in enumerate(stages.values(), start=1):
            names.append(f"stage{k}")
            tensors.append(t)
        existing = {o.name for o in model.graph.output}
        for t in tensors:
            if t not in existing:
                model.graph.output.append(onnx.helper.make_empty_tensor_value_info(t))
                existing.add(t)
        self._feat_session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        self._feat_names, self._feat_tensors = names, tensors

    def _features(self, x: np.ndarray) -> dict[str, FloatArray32]:
        if self._feat_session is None:
            self._build_feature_session()
        assert self._feat_session is not None
        outs = {o.name: i for i, o in enumerate(self._feat_session.get_outputs())}
        res = self._run(self._feat_session, x)
        feats: dict[str, FloatArray32] = {}
        for name, t in zip(self._feat_names, self._feat_tensors, strict=True):
            a = np.asarray(res[outs[t]], dtype=np.float32)
            if a.ndim == 4:
                a = a.mean(axis=(2, 3))
            feats[name] = a.reshape(a.shape[0], -1)
        return feats

    def read_model(self) -> ov.Model:
        """The ONNX file read by OpenVINO (for VJP-based attribution)."""
        from ovdiv.runtime.openvino_member import core

        return core().read_model(str(self.path))
