"""torch backend: ovdiv checkpoints run eagerly (the parity reference).

Loaded with :func:`ovdiv.models.load_checkpoint`; the card comes from the checkpoint's metadata
unless a card JSON sits next to the file. Features for CKA via forward hooks: the input of the last
``nn.Linear`` (penultimate; without one, the input of the last ``nn.Conv2d``, spatially averaged, as
in the OpenVINO backend) and the last 4-D leaf-module output per spatial resolution after the first
``nn.Conv2d``, spatially averaged.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ovdiv.cards import ModelCard, card_path_for
from ovdiv.errors import MemberError, OvdivError
from ovdiv.runtime.member import FloatArray32, Member
from ovdiv.types import Backend, Precision

if TYPE_CHECKING:
    import openvino as ov

__all__ = ["TorchMember", "feature_taps"]

HookRecord = tuple[str, nn.Module, Any, Any]


def feature_taps(records: Sequence[HookRecord]) -> dict[str, tuple[int, str]]:
    """Which leaf-module call gives each layer of :meth:`Member.features` (un-pooled).

    Args:
        records: ``(module name, module, inputs, output)`` of every leaf-module call of one forward, in
            call order (forward hooks).

    Returns:
        Layer name -> ``(record index, "input" | "output")``: ``penultimate`` = the input of the last
        ``nn.Linear`` (without one, the input of the last ``nn.Conv2d``), ``stage<k>`` = the last 4-D
        leaf output at each spatial resolution after the first ``nn.Conv2d``.
    """
    pen: tuple[int, str] | None = None
    last_conv_in: tuple[int, str] | None = None
    seen_conv = False
    stages: dict[tuple[int, int], tuple[int, str]] = {}
    for i, (_n, m, _inp, out) in enumerate(records):
        if isinstance(m, nn.Linear):
            pen = (i, "input")
        if isinstance(m, nn.Conv2d):
            seen_conv = True
            last_conv_in = (i, "input")
        if seen_conv and isinstance(out, torch.Tensor) and out.ndim == 4 and out.shape[2] * out.shape[3] > 1:
            stages[(int(out.shape[2]), int(out.shape[3]))] = (i, "output")
    taps: dict[str, tuple[int, str]] = {}
    if pen is None:  # no Linear head (e.g. SqueezeNet's conv classifier): input of the last conv
        pen = last_conv_in
    if pen is not None:
        taps["penultimate"] = pen
    for k, rec in enumerate(stages.values(), start=1):
        taps[f"stage{k}"] = rec
    return taps


class TorchMember(Member):
    """A member executed eagerly by torch (f32)."""

    backend = Backend.TORCH

    def __init__(self, path: Path, *, device: str, precision: Precision) -> None:
        if precision not in (Precision.F32, Precision.MODEL):
            raise MemberError(f"member {path}: the torch backend runs precision f32, not {precision}")
        if device not in ("CPU", "GPU"):
            raise MemberError(f"member {path}: the torch backend runs on CPU or GPU, not {device}")
        if device == "GPU" and not torch.cuda.is_available():
            raise MemberError(f"member {path}: --device GPU but torch sees no CUDA device", "use --device CPU")
        try:
            load_checkpoint = importlib.import_module("ovdiv.models").load_checkpoint
        except (ImportError, AttributeError) as exc:  # pragma: no cover - models area not installed
            raise MemberError(f"member {path}: torch checkpoints need ovdiv.models ({exc})") from exc
        try:
            module, meta = load_checkpoint(path, map_location="cpu")
        except OvdivError as exc:
            raise MemberError(f"member {path}: {exc}") from exc
        cpath = card_path_for(path)
        found = cpath.is_file()
        if found:
            card = ModelCard.load(cpath)
        else:
            card = ModelCard(
                name=path.stem,
                format="torch",
                num_classes=int(meta.num_classes),
                input_size=(int(meta.input_size[0]), int(meta.input_size[1])),
                mean=tuple(float(v) for v in meta.mean),  # type: ignore[arg-type]
                std=tuple(float(v) for v in meta.std),  # type: ignore[arg-type]
                architecture=str(meta.arch),
                arch_args=dict(meta.arch_args or {}),
                recipe=meta.recipe,
                params=sum(p.numel() for p in module.parameters()),
            )
        super().__init__(path, card, card_found=found, device=device, precision=precision)
        self.runtime_version = f"torch {torch.__version__}"
        self._device = torch.device("cuda" if device == "GPU" else "cpu")
        self.module: nn.Module = module.to(self._device).eval()

    def _infer(self, x: np.ndarray) -> FloatArray32:
        with torch.inference_mode():
            y = self.module(torch.from_numpy(x).to(self._device))
        return y.float().cpu().numpy()

    def _features(self, x: np.ndarray) -> dict[str, FloatArray32]:
        records: list[HookRecord] = []
        handles = []
        for mname, mod in self.module.named_modules():
            if next(mod.children(), None) is not None:
                continue

            def hook(m: nn.Module, inp: Any, out: Any, _n: str = mname) -> None:
                records.append((_n, m, inp, out))

            handles.append(mod.register_forward_hook(hook))
        try:
            with torch.inference_mode():
                self.module(torch.from_numpy(x).to(self._device))
        finally:
            for h in handles:
                h.remove()
        feats: dict[str, FloatArray32] = {}
        for key, (i, kind) in feature_taps(records).items():
            t = (records[i][2][0] if kind == "input" else records[i][3]).float()
            if t.ndim == 4:
                t = t.mean(dim=(2, 3))
            feats[key] = t.reshape(t.shape[0], -1).cpu().numpy()
        return feats

    def read_model(self) -> ov.Model:
        """The module converted with ``openvino.convert_model`` (dynamic batch, static C/H/W)."""
        import openvino as ov

        h, w = self.input_size
        example = torch.zeros(1, 3, h, w)
        model = ov.convert_model(self.module.cpu(), example_input=example)
        model.reshape({model.input(0): ov.PartialShape([-1, 3, h, w])})
        self.module.to(self._device)
        return model
