r"""Feature visualisation of deployed members: images that maximise one channel of one layer (Lucid/Lucent).

For a layer ``L`` with activation ``h(X)`` of shape ``(N, C, H, W)`` (or ``(N, D)``) and channel ``z``,
the objective of image ``n`` is the mean activation of its channel,

.. math:: o_n(X) = \frac{1}{HW} \sum_{x,y} h_{n,z_n,x,y}(T_t(X)), \qquad F(X) = -\sum_n o_n(X)

(``F`` is minimised; ``--minimize`` flips the sign of ``o``), with ``T_t`` the random transforms of step
``t``. Lucid's/Lucent's settings (Olah et al. 2017; torch-lucent 0.1.8, whose defaults the study used)
are the defaults of :class:`FeatureVisConfig`:

* **Parameterisation** — lucent ``param.fft_image`` (decay_power 1): an ``rfft2``-shaped spectrum
  ``s`` (``(N, 3, h, w//2+1, 2)``, initialised ``N(0, 0.01²)``) is scaled by
  ``1 / max(|f|, 1/max(h, w))^{decay}`` (frequencies scaled to equal energy), inverse-FFT'd
  (``irfftn``, ``norm="ortho"``) and divided by Lucid's magic 4; then
* **colour decorrelation** — lucent ``_linear_decorrelate_color``: each pixel's 3-vector is multiplied
  by the square root of the ImageNet colour correlation (``color_correlation_svd_sqrt``), normalised by
  its largest column norm; then ``sigmoid`` maps to ``[0, 1]`` pixels.
* **Optimiser** — Adam, lr 0.05, 1024 steps, on the spectrum.
* **Transforms at each step** (the same draw for the whole batch, from a numpy generator seeded by
  ``seed``): jitter by cropping up to 8 px (offset uniform in ``{0..8}``, crop size ``-8``), scale by
  ``s ∈ {0.95, 0.96, …, 1.05}`` and rotate by ``θ ∈ {-5, …, 5}°`` about the centre (one bilinear
  ``grid_sample``, border padding), jitter up to 4 px, then bilinear resize to the member's input size.
  Lucent's ``random_scale`` resizes the image instead; a deployed graph has a fixed input size, so the
  scale is applied as a zoom (what a resize followed by the fixed-size resize amounts to).
* **Preprocessing** — the member's card: ``x = (p - mean) / std`` on the ``[0, 1]`` pixels, the input
  every backend's graph sees (baked uint8 IRs are differentiated through their float-input view).

The spectrum of channel ``z`` is initialised from ``numpy.random.default_rng([seed, z])``, so a channel's
image does not depend on which other channels share its batch, and siblings start from the same noise.

Gradients:

* **IR / ONNX members** (OpenVINO has no autodiff): the forward graph is cut at the layer's output
  (:func:`cut_model`) and its VJP graph built with :func:`ovdiv.attribution.vjp.build_vjp_model`; the
  cotangent ``u_n = e_{z_n} / (HW)`` is fixed in advance (the objective is linear in ``h``), so one
  request per step returns ``h`` and ``u^T \partial h / \partial x``. A ``torch.autograd.Function``
  hands that gradient to torch autograd, which chains it through the transforms and the
  parameterisation back to the spectrum.
* **torch checkpoints**: plain autograd; the forward stops at the layer (a hook raises), so both paths do
  the same work.
"""

from __future__ import annotations

import abc
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import openvino as ov
import openvino.opset15 as ops
import torch
import torch.nn.functional as F
from torch import nn

from ovdiv.attribution.runner import VJPModel, float_input_view
from ovdiv.errors import ConfigError, MemberError
from ovdiv.runtime.openvino_member import feature_taps
from ovdiv.runtime.torch_member import HookRecord
from ovdiv.runtime.torch_member import feature_taps as torch_feature_taps
from ovdiv.types import Progress, ProgressCallback

__all__ = [
    "COLOR_CORRELATION_SVD_SQRT",
    "FeatureVisConfig",
    "FeatureVisResult",
    "LayerInfo",
    "LayerObjective",
    "TorchLayerObjective",
    "VJPLayerObjective",
    "apply_transforms",
    "cut_model",
    "decorrelate_colors",
    "draw_transforms",
    "fourier_scale",
    "init_spectrum",
    "layer_objective",
    "list_layers",
    "objective_trend",
    "rfft2d_freqs",
    "spectrum_to_rgb",
    "visualize_channels",
]

_log = logging.getLogger("ovdiv.attribution")
GradientPath = Literal["auto", "vjp", "autograd"]

#: Square root of the ImageNet colour correlation matrix (Lucid / lucent ``color_correlation_svd_sqrt``).
COLOR_CORRELATION_SVD_SQRT = np.asarray(
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=np.float32
)
_COLOR_NORMALIZED = COLOR_CORRELATION_SVD_SQRT / np.max(np.linalg.norm(COLOR_CORRELATION_SVD_SQRT, axis=0))
_MAGIC = 4.0  # Lucid's constant: the inverse FFT's output is divided by it (less saturation)


# ---------------------------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class FeatureVisConfig:
    """Settings of one feature-visualisation run (defaults: Lucid/Lucent as in Whitaker & Whitley).

    Attributes:
        steps: Adam steps.
        size: Side of the (square) optimised image; None = the member's larger input side.
        lr: Adam learning rate.
        decay_power: Spectrum scaling exponent (1 = equal energy per frequency).
        decorrelate: Apply the ImageNet colour decorrelation.
        sd: Standard deviation of the spectrum initialisation.
        jitter: Crop-jitter amounts (px) applied before and after scale/rotate.
        scales: Zoom factors drawn uniformly at each step.
        angles: Rotation angles (degrees) drawn uniformly at each step.
        seed: Seed of the spectrum initialisation and the transform draws.
        minimize: Minimise the channel's mean activation instead of maximising it.
        batch_size: Channels optimised together in one batch.
    """

    steps: int = 1024
    size: int | None = None
    lr: float = 0.05
    decay_power: float = 1.0
    decorrelate: bool = True
    sd: float = 0.01
    jitter: tuple[int, ...] = (8, 4)
    scales: tuple[float, ...] = tuple(round(0.95 + 0.01 * i, 2) for i in range(11))
    angles: tuple[float, ...] = tuple(float(a) for a in range(-5, 6))
    seed: int = 0
    minimize: bool = False
    batch_size: int = 64

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ConfigError(f"steps must be >= 1, got {self.steps}")
        if self.size is not None and self.size < 16 + sum(self.jitter):
            raise ConfigError(f"size must be >= {16 + sum(self.jitter)} px, got {self.size}")
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {self.batch_size}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if not self.scales or not self.angles or any(s <= 0 for s in self.scales):
            raise ConfigError("scales must be positive and angles non-empty")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings (recorded next to the images)."""
        d = asdict(self)
        d["jitter"], d["scales"], d["angles"] = list(self.jitter), list(self.scales), list(self.angles)
        d["parameterization"] = "fft (lucent fft_image), colour decorrelation, sigmoid"
        d["optimizer"] = "adam"
        return d


# ---------------------------------------------------------------------------------------------- parameterisation
def rfft2d_freqs(h: int, w: int) -> npt.NDArray[np.float64]:
    """``|f|`` of the ``rfft2`` grid of an ``h x w`` image, ``(h, w//2 + 1)`` (odd ``w``: ``+2`` columns, as lucent)."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[: w // 2 + 2] if w % 2 == 1 else np.fft.fftfreq(w)[: w // 2 + 1]
    out: npt.NDArray[np.float64] = np.sqrt(fx * fx + fy * fy)
    return out


def fourier_scale(h: int, w: int, decay_power: float = 1.0) -> npt.NDArray[np.float32]:
    """``1 / max(|f|, 1/max(h, w))^{decay}``, ``(h, w//2 + 1)``: equal energy per frequency."""
    freqs = rfft2d_freqs(h, w)
    return (1.0 / np.maximum(freqs, 1.0 / max(w, h)) ** decay_power).astype(np.float32)


def init_spectrum(channels: Sequence[int], h: int, w: int, *, sd: float = 0.01, seed: int = 0) -> torch.Tensor:
    """Initial spectra ``(K, 3, h, w//2+1, 2)`` float32, image ``k`` from ``default_rng([seed, channels[k]])``."""
    fh, fw = rfft2d_freqs(h, w).shape
    arr = np.stack(
        [np.random.default_rng([int(seed), int(c)]).standard_normal((3, fh, fw, 2)) * sd for c in channels]
    ).astype(np.float32)
    return torch.from_numpy(arr)


def decorrelate_colors(t: torch.Tensor) -> torch.Tensor:
    """``(N, 3, H, W)`` -> each pixel's colour vector times the normalised ImageNet correlation sqrt (lucent)."""
    m = torch.as_tensor(_COLOR_NORMALIZED.T, dtype=t.dtype, device=t.device)
    return torch.matmul(t.permute(0, 2, 3, 1), m).permute(0, 3, 1, 2)


def spectrum_to_rgb(
    spectrum: torch.Tensor, h: int, w: int, *, decay_power: float = 1.0, decorrelate: bool = True
) -> torch.Tensor:
    """Spectrum ``(N, 3, h, w//2+1, 2)`` -> RGB ``(N, 3, h, w)`` in ``(0, 1)`` (lucent fft_image + to_valid_rgb)."""
    scale = torch.as_tensor(fourier_scale(h, w, decay_power), device=spectrum.device)[None, None, ..., None]
    spec = torch.view_as_complex((scale * spectrum).contiguous())
    img = torch.fft.irfftn(spec, s=(h, w), norm="ortho")[:, :, :h, :w] / _MAGIC
    if decorrelate:
        img = decorrelate_colors(img)
    return torch.sigmoid(img)


# ---------------------------------------------------------------------------------------------- transforms
@dataclass(frozen=True)
class TransformDraw:
    """One step's random transform: crop offsets ``(dy, dx)`` per jitter, zoom factor, angle (degrees)."""

    offsets: tuple[tuple[int, int], ...]
    scale: float
    angle: float


def draw_transforms(rng: np.random.Generator, cfg: FeatureVisConfig) -> TransformDraw:
    """Draw one step's transform parameters (fixed order of draws, so a seed fixes the sequence)."""
    offs = []
    for d in cfg.jitter:
        dy, dx = rng.integers(0, d + 1, size=2)
        offs.append((int(dy), int(dx)))
    scale = float(cfg.scales[int(rng.integers(len(cfg.scales)))])
    angle = float(cfg.angles[int(rng.integers(len(cfg.angles)))])
    return TransformDraw(tuple(offs), scale, angle)


def _crop(img: torch.Tensor, d: int, off: tuple[int, int]) -> torch.Tensor:
    if d <= 0:
        return img
    h, w = img.shape[-2:]
    return img[..., off[0] : off[0] + h - d, off[1] : off[1] + w - d]


def apply_transforms(
    img: torch.Tensor, draw: TransformDraw, jitter: Sequence[int], out_size: tuple[int, int]
) -> torch.Tensor:
    """Jitter, zoom+rotate, jitter, resize to ``out_size``: ``(N, 3, S, S)`` -> ``(N, 3, H, W)`` (differentiable)."""
    x = _crop(img, jitter[0], draw.offsets[0])
    if draw.scale != 1.0 or draw.angle != 0.0:
        a = np.deg2rad(draw.angle)
        c, s = np.cos(a) / draw.scale, np.sin(a) / draw.scale
        theta = torch.tensor([[c, -s, 0.0], [s, c, 0.0]], dtype=x.dtype, device=x.device).expand(x.shape[0], 2, 3)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    for d, off in zip(jitter[1:], draw.offsets[1:], strict=True):
        x = _crop(x, d, off)
    if tuple(x.shape[-2:]) != tuple(out_size):
        x = F.interpolate(x, size=out_size, mode="bilinear", align_corners=False)
    return x


# ---------------------------------------------------------------------------------------------- objectives
@dataclass(frozen=True)
class LayerInfo:
    """A visualisable layer: name, channel count and per-sample shape (``(C, H, W)`` or ``(D,)``)."""

    name: str
    channels: int
    shape: tuple[int, ...]


class LayerObjective(abc.ABC):
    """``x`` (normalised network input) -> per-image objective ``o_n = <u_n, h_n(x)>``, differentiable in ``x``.

    Attributes:
        layer: The layer name.
        shape: Per-sample activation shape.
        gradient: ``"vjp"`` (OpenVINO VJP graph) or ``"autograd"`` (torch).
    """

    layer: str
    shape: tuple[int, ...]
    gradient: str

    @property
    def channels(self) -> int:
        """Number of channels of the layer."""
        return int(self.shape[0])

    def cotangent(self, channels: Sequence[int], sign: float) -> npt.NDArray[np.float32]:
        """``u``: ``sign / (H W)`` on channel ``z_n`` of image ``n``, 0 elsewhere; ``(K, *shape)``."""
        u = np.zeros((len(channels), *self.shape), np.float32)
        spatial = int(np.prod(self.shape[1:])) if len(self.shape) > 1 else 1
        for n, z in enumerate(channels):
            u[n, int(z)] = sign / spatial
        return u

    @abc.abstractmethod
    def __call__(self, x: torch.Tensor, u: npt.NDArray[np.float32]) -> torch.Tensor:
        """Objective ``(N,)`` float32 of ``x`` float32 ``(N, 3, H, W)``."""

    def info(self) -> dict[str, Any]:
        """What the report records about the gradient path."""
        return {"layer": self.layer, "shape": list(self.shape), "gradient": self.gradient}


class _Stop(Exception):
    """Raised by the layer hook: nothing after the layer needs to run."""


class TorchLayerObjective(LayerObjective):
    """Autograd through a torch module, stopped at the layer (the ``call``-th call of leaf module ``name``).

    Args:
        module: The network (eval mode).
        layer: Layer name (for the records).
        module_name: Qualified name of the leaf module.
        call: Which call of that module (shared activations are called several times).
        kind: ``"output"`` or ``"input"`` of that call.
        shape: Per-sample activation shape.
    """

    gradient = "autograd"

    def __init__(
        self, module: nn.Module, layer: str, module_name: str, call: int, kind: str, shape: tuple[int, ...]
    ) -> None:
        self.module = module.eval()
        self.layer, self.module_name, self.call, self.kind, self.shape = layer, module_name, call, kind, shape
        self._target = dict(module.named_modules())[module_name]
        self.device = next((p.device for p in module.parameters()), torch.device("cpu"))

    def activation(self, x: torch.Tensor) -> torch.Tensor:
        """The layer's activation ``(N, *shape)`` (forward stops there)."""
        store: dict[str, Any] = {"n": 0}

        def hook(_m: nn.Module, inp: Any, out: Any) -> None:
            if store["n"] == self.call:
                store["a"] = inp[0] if self.kind == "input" else out
                raise _Stop
            store["n"] += 1

        handle = self._target.register_forward_hook(hook)
        try:
            self.module(x.to(self.device))
        except _Stop:
            pass
        finally:
            handle.remove()
        if "a" not in store:
            raise MemberError(f"layer {self.layer}: module {self.module_name} was not called {self.call + 1} times")
        act: torch.Tensor = store["a"]
        return act

    def __call__(self, x: torch.Tensor, u: npt.NDArray[np.float32]) -> torch.Tensor:
        """Objective ``(N,)`` by autograd."""
        a = self.activation(x)
        uu = torch.from_numpy(u).to(a.device, a.dtype)
        return (a * uu).reshape(a.shape[0], -1).sum(1).to(x.device, torch.float32)


class _VJPObjectiveFn(torch.autograd.Function):
    """forward: one VJP request gives ``h`` and ``g = u^T dh/dx``; ``o = <u, h>``; backward: ``grad_o * g``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, runner: VJPModel, u: npt.NDArray[np.float32]) -> torch.Tensor:
        act, g = runner.vjp(x.detach().cpu().numpy(), u)
        ctx.save_for_backward(torch.from_numpy(g))
        obj = (act.astype(np.float64) * u).reshape(act.shape[0], -1).sum(1)
        return torch.from_numpy(obj.astype(np.float32)).to(x.device)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (g,) = ctx.saved_tensors
        return grad_out.reshape(-1, 1, 1, 1).to(g.dtype) * g, None, None


class VJPLayerObjective(LayerObjective):
    """Gradient from the VJP graph of the forward graph cut at the layer (OpenVINO, f32).

    Args:
        runner: :class:`VJPModel` of the cut model (its output is the layer's activation).
        layer: Layer name.
    """

    gradient = "vjp"

    def __init__(self, runner: VJPModel, layer: str) -> None:
        self.runner, self.layer = runner, layer
        self.shape = tuple(runner.output_shape)

    def __call__(self, x: torch.Tensor, u: npt.NDArray[np.float32]) -> torch.Tensor:
        """Objective ``(N,)``; its gradient comes from the VJP request made in the forward."""
        out: torch.Tensor = _VJPObjectiveFn.apply(x, self.runner, u)
        return out

    def info(self) -> dict[str, Any]:
        """Gradient path plus the VJP model's compile settings."""
        return {
            **super().info(),
            "inference_precision": self.runner.inference_precision,
            "fake_quantized": self.runner.fake_quantized,
            "vjp_ops": sum(self.runner.graph.op_counts.values()),
        }


# ---------------------------------------------------------------------------------------------- layers
def _ir_float_model(member: Any) -> ov.Model:
    """The member's graph on float normalised NCHW input, C/H/W made static (the card's size), batch dynamic."""
    model = float_input_view(member.read_model(), mean=tuple(member.card.mean), std=tuple(member.card.std))
    model.reshape({model.input(0): ov.PartialShape([-1, 3, *member.input_size])})
    return model


def _ir_taps(model: ov.Model) -> dict[str, ov.Output]:
    return feature_taps(model)


def _node_output(model: ov.Model, name: str) -> ov.Output | None:
    for node in model.get_ordered_ops():
        if node.get_friendly_name() == name and node.get_output_size() >= 1:
            return node.output(0)
    return None


def cut_model(model: ov.Model, output: ov.Output) -> ov.Model:
    """``ov.Model`` computing ``output`` (an output of a node of ``model``) from ``model``'s image input."""
    return ov.Model([ops.result(output)], [model.get_parameters()[0]], "ovdiv_cut")


def _torch_records(module: nn.Module, input_size: tuple[int, int]) -> list[HookRecord]:
    records: list[HookRecord] = []
    handles = []
    for mname, mod in module.named_modules():
        if next(mod.children(), None) is not None:
            continue

        def hook(m: nn.Module, inp: Any, out: Any, _n: str = mname) -> None:
            records.append((_n, m, inp, out))

        handles.append(mod.register_forward_hook(hook))
    dev = next((p.device for p in module.parameters()), torch.device("cpu"))
    try:
        with torch.inference_mode():
            module.eval()(torch.zeros(1, 3, *input_size, device=dev))
    finally:
        for h in handles:
            h.remove()
    return records


def _torch_taps(module: nn.Module, input_size: tuple[int, int]) -> dict[str, tuple[str, int, str, tuple[int, ...]]]:
    """Layer -> (module name, call index, kind, per-sample shape) for the named layers and every leaf module."""
    records = _torch_records(module, input_size)
    out: dict[str, tuple[str, int, str, tuple[int, ...]]] = {}

    def entry(i: int, kind: str) -> tuple[str, int, str, tuple[int, ...]]:
        name = records[i][0]
        call = sum(1 for r in records[:i] if r[0] == name)
        t = records[i][2][0] if kind == "input" else records[i][3]
        return (name, call, kind, tuple(int(d) for d in t.shape[1:]))

    for layer, (i, kind) in torch_feature_taps(records).items():
        out[layer] = entry(i, kind)
    for i, rec in enumerate(records):
        if rec[0] not in out and isinstance(rec[3], torch.Tensor) and rec[3].ndim in (2, 4):
            out[rec[0]] = entry(i, "output")
    return out


def _module_output_shape(module: nn.Module, name: str, input_size: tuple[int, int]) -> tuple[int, ...] | None:
    """Per-sample output shape of (any, also non-leaf) submodule ``name`` on its first call; None if not 2-D/4-D."""
    store: dict[str, Any] = {}

    def hook(_m: nn.Module, _inp: Any, out: Any) -> None:
        store.setdefault("shape", tuple(out.shape) if isinstance(out, torch.Tensor) else None)

    handle = dict(module.named_modules())[name].register_forward_hook(hook)
    dev = next((p.device for p in module.parameters()), torch.device("cpu"))
    try:
        with torch.inference_mode():
            module.eval()(torch.zeros(1, 3, *input_size, device=dev))
    finally:
        handle.remove()
    shape = store.get("shape")
    return tuple(int(d) for d in shape[1:]) if shape is not None and len(shape) in (2, 4) else None


def _is_named(layer: str) -> bool:
    return layer == "penultimate" or (layer.startswith("stage") and layer[5:].isdigit())


def _use_torch(member: Any, gradient: GradientPath) -> bool:
    module = getattr(member, "module", None)
    if gradient == "autograd":
        if not isinstance(module, nn.Module):
            raise MemberError(
                f"member {member.name}: --gradient autograd needs a torch checkpoint",
                "use the VJP path (default) for IR/ONNX members",
            )
        return True
    return gradient == "auto" and isinstance(module, nn.Module)


def list_layers(member: Any, *, gradient: GradientPath = "auto") -> list[LayerInfo]:
    """The layers ``Member.features`` names (``penultimate``, ``stage1..K``) with their channel counts.

    Args:
        member: An ovdiv ``Member``.
        gradient: Which graph to inspect: ``auto`` (torch module for checkpoints, else the IR), ``vjp``
            or ``autograd``.
    """
    if _use_torch(member, gradient):
        taps = _torch_taps(member.module, member.input_size)
        named = [k for k in taps if _is_named(k)]
        return [LayerInfo(k, taps[k][3][0], taps[k][3]) for k in named]
    model = _ir_float_model(member)
    infos = []
    for k, o in _ir_taps(model).items():
        shape = tuple(d.get_length() for d in list(o.get_partial_shape())[1:])
        infos.append(LayerInfo(k, shape[0], shape))
    return infos


def layer_objective(
    member: Any, layer: str, *, gradient: GradientPath = "auto", device: str | None = None
) -> LayerObjective:
    """The objective of ``layer`` of ``member`` (a ``Member.features`` name, or a graph node / module name).

    Args:
        member: An ovdiv ``Member`` (torch checkpoints default to autograd, IR/ONNX to the VJP graph).
        layer: ``penultimate``, ``stage<k>``, an OpenVINO node friendly name, or a torch module name.
        gradient: ``auto``, ``vjp`` (also for torch members: their ``read_model()`` conversion) or ``autograd``.
        device: OpenVINO device of the VJP model (default: the member's).

    Raises:
        MemberError: unknown layer (the known ones are listed).
    """
    if _use_torch(member, gradient):
        taps = _torch_taps(member.module, member.input_size)
        if layer not in taps and layer and layer in dict(member.module.named_modules()):
            shape = _module_output_shape(member.module, layer, member.input_size)
            if shape is not None:
                taps[layer] = (layer, 0, "output", shape)
        if layer not in taps:
            named = [k for k in taps if _is_named(k)]
            raise MemberError(f"member {member.name} has no layer {layer!r}", f"known layers: {named} or a module name")
        mname, call, kind, shape = taps[layer]
        return TorchLayerObjective(member.module, layer, mname, call, kind, shape)
    model = _ir_float_model(member)
    taps_ir = _ir_taps(model)
    out = taps_ir.get(layer) or _node_output(model, layer)
    if out is None:
        raise MemberError(
            f"member {member.name} has no layer {layer!r}", f"known layers: {list(taps_ir)} or a graph node name"
        )
    rank = out.get_partial_shape().rank
    if rank.is_dynamic or rank.get_length() not in (2, 4):
        raise MemberError(f"member {member.name}: layer {layer!r} has shape {out.get_partial_shape()}, not 2-D/4-D")
    dev = device or (member.device if member.device in ("CPU", "GPU", "AUTO") else "CPU")
    runner = VJPModel(
        cut_model(model, out),
        device=dev,
        input_size=member.input_size,
        mean=tuple(member.card.mean),
        std=tuple(member.card.std),
    )
    return VJPLayerObjective(runner, layer)


# ---------------------------------------------------------------------------------------------- optimisation
@dataclass
class FeatureVisResult:
    """Images and objective trace of one member's channels.

    Attributes:
        channels: Channel indices, in order.
        images: uint8 ``(K, S, S, 3)`` final images (no transform).
        rgb: float32 ``(K, 3, S, S)`` final images in ``[0, 1]``.
        objective: float64 ``(steps, K)``: ``o_n`` at each step (sign included: always maximised).
        seconds: Wall time of the optimisation.
        info: Gradient path and layer details.
    """

    channels: list[int]
    images: npt.NDArray[np.uint8]
    rgb: npt.NDArray[np.float32]
    objective: npt.NDArray[np.float64]
    seconds: float
    info: dict[str, Any] = field(default_factory=dict)


def visualize_channels(
    objective: LayerObjective,
    channels: Sequence[int],
    cfg: FeatureVisConfig,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    input_size: tuple[int, int],
    progress: ProgressCallback | None = None,
    task: str = "features",
) -> FeatureVisResult:
    """Optimise one image per channel (batches of ``cfg.batch_size``) and return the final images.

    Args:
        objective: From :func:`layer_objective`.
        channels: Channel indices (each ``< objective.channels``).
        cfg: Settings.
        mean: Card mean (pixels in ``[0, 1]`` are normalised with it).
        std: Card std.
        input_size: The member's ``(H, W)``.
        progress: Optional progress callback (steps over all batches).
        task: Task name of the progress events.

    Raises:
        ConfigError: a channel index outside the layer.
    """
    chans = [int(c) for c in channels]
    bad = [c for c in chans if not 0 <= c < objective.channels]
    if bad or not chans:
        raise ConfigError(
            f"layer {objective.layer} has {objective.channels} channels; invalid channel(s) {bad or '(none given)'}",
            f"pick channels in 0..{objective.channels - 1}",
        )
    size = cfg.size or max(input_size)
    m = torch.tensor(list(mean), dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(list(std), dtype=torch.float32).view(1, 3, 1, 1)
    sign = -1.0 if cfg.minimize else 1.0
    nb = (len(chans) + cfg.batch_size - 1) // cfg.batch_size
    imgs, rgbs, hist = [], [], []
    t0 = time.perf_counter()
    for b in range(nb):
        part = chans[b * cfg.batch_size : (b + 1) * cfg.batch_size]
        spectrum = init_spectrum(part, size, size, sd=cfg.sd, seed=cfg.seed).requires_grad_(True)
        opt = torch.optim.Adam([spectrum], lr=cfg.lr)
        u = objective.cotangent(part, sign)
        rng = np.random.default_rng(cfg.seed)  # same transform sequence for every batch
        trace = np.zeros((cfg.steps, len(part)), np.float64)
        for step in range(cfg.steps):
            rgb = spectrum_to_rgb(spectrum, size, size, decay_power=cfg.decay_power, decorrelate=cfg.decorrelate)
            x = (apply_transforms(rgb, draw_transforms(rng, cfg), cfg.jitter, input_size) - m) / s
            obj = objective(x, u)
            (grad,) = torch.autograd.grad(-obj.sum(), [spectrum])
            opt.zero_grad(set_to_none=True)
            spectrum.grad = grad
            opt.step()
            trace[step] = obj.detach().double().cpu().numpy()
            if progress is not None:
                progress(
                    Progress(task, b * cfg.steps + step + 1, nb * cfg.steps, f"{objective.layer} batch {b + 1}/{nb}")
                )
        with torch.no_grad():
            rgb = spectrum_to_rgb(spectrum, size, size, decay_power=cfg.decay_power, decorrelate=cfg.decorrelate)
        arr = rgb.float().cpu().numpy()
        rgbs.append(arr)
        imgs.append(np.clip(np.round(arr.transpose(0, 2, 3, 1) * 255.0), 0, 255).astype(np.uint8))
        hist.append(trace)
    return FeatureVisResult(
        channels=chans,
        images=np.concatenate(imgs),
        rgb=np.concatenate(rgbs),
        objective=np.concatenate(hist, axis=1),
        seconds=time.perf_counter() - t0,
        info=objective.info(),
    )


def objective_trend(objective: npt.NDArray[np.float64], windows: int = 8) -> npt.NDArray[np.float64]:
    """Mean objective over channels in ``windows`` equal step windows, ``(windows,)`` (for the report)."""
    parts = np.array_split(objective, max(1, min(windows, objective.shape[0])), axis=0)
    return np.asarray([float(p.mean()) for p in parts])
