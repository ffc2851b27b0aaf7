r"""Gradient attribution methods with captum's definitions, on deployed members and torch models.

One class per method; the constructor binds the model, ``attribute(inputs, target=...)`` returns
float32 maps shaped like the network input ``(N, 3, H, W)``:

=======================  ==========================================================================
``Saliency``             ``a = \partial f_t / \partial x`` (``|.|`` when ``abs=True``, captum's default)
``InputXGradient``       ``a = x \odot \partial f_t / \partial x``
``IntegratedGradients``  ``a = (x - b) \odot \sum_k w_k \, \partial f_t / \partial x |_{b + \alpha_k (x - b)}``
                         with captum's ``(w_k, \alpha_k)`` for ``method`` (default ``riemann_trapezoid``
                         per DESIGN.md §5; captum's own default is ``gausslegendre``), zero baseline
``SmoothGrad``           ``a = (1/S) \sum_s |\partial f_t / \partial x|_{x + \epsilon_s}``,
                         ``\epsilon_s \sim N(0, \sigma^2)``, ``\sigma = 0.15 (\max x_n - \min x_n)`` per
                         sample — captum's ``NoiseTunnel(Saliency).attribute(nt_type="smoothgrad")``
=======================  ==========================================================================

Models accepted (``model`` argument):

* an ovdiv runtime ``Member`` (duck-typed: ``read_model()``, ``preprocess()``, ``card``, ``device``;
  torch members, which expose ``module``, use captum directly),
* an ``openvino.Model``, a path to ``.xml`` / ``.onnx`` (card next to it used if present), or a
  :class:`~ovdiv.attribution.runner.VJPModel` — gradients come from the VJP model (f32, recorded),
* a ``torch.nn.Module`` — captum's own classes compute the gradients.

``inputs``: float32 ``(N, 3, H, W)`` network input, or uint8 ``(N, H, W, 3)`` images (preprocessed
with the member's card; ImageNet mean/std for raw models). The attribution is always w.r.t. the float
NCHW input. ``target``: int, one int per sample, or None (= the model's top-1 class on ``inputs``;
captum requires an explicit target for multi-class outputs).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import openvino as ov
import torch
from torch import nn

from ovdiv.attribution.runner import VJPModel, float_input_view, read_model
from ovdiv.attribution.vjp import unsupported_ops
from ovdiv.cards import IMAGENET_MEAN, IMAGENET_STD, ModelCard, card_path_for
from ovdiv.errors import AttributionInputError, ConfigError, MemberError, UnsupportedOpError
from ovdiv.runtime.preprocessing import check_images, normalize_images, resize_images
from ovdiv.types import AttributionMethod

__all__ = [
    "GradientAttribution",
    "check_attributable",
    "Saliency",
    "InputXGradient",
    "IntegratedGradients",
    "SmoothGrad",
    "attribution_method",
]

_log = logging.getLogger("ovdiv.attribution")
F32 = npt.NDArray[np.float32]


# ---------------------------------------------------------------------------------------------- backends
class _Backend:
    """What a method needs from a model: preprocessing, logits, batched target gradients."""

    kind: str = ""
    device: str = "CPU"
    inference_precision: str = "f32"
    input_shape: tuple[int, int, int] | None = None

    def __init__(
        self,
        preprocess: Callable[[np.ndarray], F32] | None,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
    ) -> None:
        self._preprocess = preprocess
        self.mean, self.std = mean, std

    def to_input(self, inputs: Any) -> F32:
        if isinstance(inputs, torch.Tensor):
            inputs = inputs.detach().cpu().numpy()
        arr = np.asarray(inputs)
        if arr.dtype == np.uint8:
            imgs = check_images(arr, what="inputs")
            if self._preprocess is not None:
                return np.ascontiguousarray(self._preprocess(imgs), dtype=np.float32)
            if self.input_shape is not None:
                imgs = resize_images(imgs, self.input_shape[1:])
            return normalize_images(imgs, self.mean, self.std)
        if not np.issubdtype(arr.dtype, np.floating) or arr.ndim != 4:
            raise AttributionInputError(
                f"inputs: expected float32 (N, 3, H, W) or uint8 (N, H, W, 3), got dtype {arr.dtype} shape {arr.shape}"
            )
        if self.input_shape is not None and tuple(arr.shape[1:]) != self.input_shape:
            raise AttributionInputError(
                f"inputs: expected float (N, {', '.join(map(str, self.input_shape))}), got shape {arr.shape}",
                "pass uint8 images to have them resized and normalised",
            )
        return np.ascontiguousarray(arr, dtype=np.float32)

    def logits(self, x: F32) -> F32:
        raise NotImplementedError

    def gradients(self, x: F32, target: npt.NDArray[np.int64]) -> F32:
        """``d logits[n, target[n]] / d x[n]`` for every row, float32 like ``x``."""
        raise NotImplementedError


class _OVBackend(_Backend):
    kind = "openvino"

    def __init__(self, runner: VJPModel, preprocess: Callable[[np.ndarray], F32] | None, mean: Any, std: Any) -> None:
        super().__init__(preprocess, mean, std)
        self.runner = runner
        self.device = runner.device
        self.inference_precision = runner.inference_precision
        self.input_shape = runner.input_shape
        self.num_classes = runner.num_classes

    def logits(self, x: F32) -> F32:
        return self.runner.forward(x)

    def gradients(self, x: F32, target: npt.NDArray[np.int64]) -> F32:
        return self.runner.gradient(x, target)[1]


class _TorchBackend(_Backend):
    kind = "torch"

    def __init__(self, module: nn.Module, preprocess: Callable[[np.ndarray], F32] | None, mean: Any, std: Any) -> None:
        super().__init__(preprocess, mean, std)
        self.module = module.eval()
        p = next(module.parameters(), None)
        self.torch_device = p.device if p is not None else torch.device("cpu")
        self.device = "GPU" if self.torch_device.type == "cuda" else "CPU"

    def _t(self, x: F32) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x)).to(self.torch_device)

    def logits(self, x: F32) -> F32:
        with torch.no_grad():
            out: F32 = self.module(self._t(x)).float().cpu().numpy()
        return out

    # torch 2.14's CPU BatchNorm backward (eval mode) returns a wrong input gradient when the incoming
    # gradient has batch 1 and a batch stride below C*H*W -- exactly what ``flatten(2).transpose(1, 2)``
    # after a BatchNorm (LeViT, EfficientFormer stems) sends back; 1.4 rel L2 off, f32 and f64 alike.
    # Samples are independent in eval mode, so every torch gradient here runs a batch of one as two copies
    # and keeps row 0 (:meth:`gradients` and :meth:`vjp` are the only places torch members get gradients).

    def gradients(self, x: F32, target: npt.NDArray[np.int64]) -> F32:
        from captum.attr import Saliency as CaptumSaliency

        xt, tgt = (np.concatenate([x, x]), [int(target[0])] * 2) if len(x) == 1 else (x, target.tolist())
        g = CaptumSaliency(self.module).attribute(self._t(xt), target=tgt, abs=False)
        out: F32 = g[: len(x)].detach().float().cpu().numpy()
        return out

    def vjp(self, x: F32, u: F32) -> F32:
        """``u^T d logits / d x`` with torch autograd, ``x`` ``(N, 3, H, W)``, ``u`` ``(N, C)``."""
        xx, uu = (np.concatenate([x, x]), np.concatenate([u, np.zeros_like(u)])) if len(x) == 1 else (x, u)
        xt = self._t(xx).requires_grad_(True)
        (g,) = torch.autograd.grad(self.module(xt), xt, grad_outputs=self._t(np.asarray(uu, np.float32)))
        out: F32 = g[: len(x)].detach().float().cpu().numpy()
        return out


def _card_for_path(path: Path) -> ModelCard | None:
    cp = card_path_for(path)
    if cp.is_file():
        return ModelCard.load(cp)
    return None


def _resolve_backend(model: Any, *, device: str | None) -> _Backend:
    if isinstance(model, _Backend):
        return model
    if isinstance(model, nn.Module):
        return _TorchBackend(model, None, IMAGENET_MEAN, IMAGENET_STD)
    if isinstance(model, VJPModel):
        return _OVBackend(model, None, IMAGENET_MEAN, IMAGENET_STD)
    if isinstance(model, ov.Model):
        return _OVBackend(VJPModel(model, device=device or "CPU"), None, IMAGENET_MEAN, IMAGENET_STD)
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        card = _card_for_path(path) if path.is_file() else None
        mean = card.mean if card else IMAGENET_MEAN
        std = card.std if card else IMAGENET_STD
        size = card.input_size if card else None
        runner = VJPModel(path, device=device or "CPU", input_size=size, mean=mean, std=std)
        return _OVBackend(runner, None, mean, std)
    if all(hasattr(model, a) for a in ("read_model", "preprocess", "card")):
        card = model.card
        dev = str(device or getattr(model, "device", None) or "CPU")
        module = getattr(model, "module", None)
        if isinstance(module, nn.Module):
            return _TorchBackend(module, model.preprocess, card.mean, card.std)
        runner = VJPModel(model.read_model(), device=dev, input_size=card.input_size, mean=card.mean, std=card.std)
        return _OVBackend(runner, model.preprocess, card.mean, card.std)
    raise MemberError(
        f"cannot compute attributions for a {type(model).__name__}",
        "pass an ovdiv Member, an openvino.Model, a path to .xml/.onnx, or a torch nn.Module",
    )


def check_attributable(model: Any, *, name: str | None = None) -> None:
    """Fail before any inference when ``model``'s gradient path has ops without a VJP rule.

    Cheap (reads the graph, builds and compiles nothing). Torch models and torch members always pass.

    Args:
        model: Member, ``openvino.Model`` or ``.xml``/``.onnx`` path (as accepted by the methods).
        name: Name used in the message (default: the member's name or the path).

    Raises:
        UnsupportedOpError: naming the member, each offending op type with its count, and the way out
            (``--attribution none``).
    """
    if isinstance(model, (nn.Module, VJPModel, _Backend)) or isinstance(getattr(model, "module", None), nn.Module):
        return
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    if isinstance(model, ov.Model):
        graph = model
    elif isinstance(model, (str, os.PathLike)):
        graph = read_model(model)
        name = name or str(model)
        card = _card_for_path(Path(model))
        if card is not None:
            mean, std = card.mean, card.std
    elif hasattr(model, "read_model"):
        graph = model.read_model()
        name = name or str(getattr(model, "name", "member"))
        card = getattr(model, "card", None)
        if card is not None:
            mean, std = card.mean, card.std
    else:
        return
    if len(graph.get_parameters()) != 1:
        return  # VJPModel reports this itself
    bad = unsupported_ops(float_input_view(graph, mean=mean, std=std))
    if bad:
        raise UnsupportedOpError(
            f"member '{name or graph.get_friendly_name()}': no gradient (VJP) rule for op(s) on its gradient "
            f"path: {', '.join(bad)}",
            "rerun with --attribution none (attribution='none') to skip attribution, or use a torch "
            "checkpoint of this member",
        )


# ---------------------------------------------------------------------------------------------- methods
class GradientAttribution:
    """Base class: binds a model; subclasses implement :meth:`attribute`.

    Args:
        model: Member, ``openvino.Model``, ``.xml``/``.onnx`` path, :class:`VJPModel` or ``nn.Module``.
        device: OpenVINO device for the VJP model (default: the member's device, else ``CPU``).
        batch_size: Images per VJP request (IG/SmoothGrad expand the batch by their step/sample count).

    Attributes:
        backend: ``"openvino"`` or ``"torch"``.
        inference_precision: Precision the gradients were computed in (``f32``), recorded for results.
    """

    method: ClassVar[AttributionMethod]

    def __init__(self, model: Any, *, device: str | None = None, batch_size: int = 32) -> None:
        if int(batch_size) < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self._backend = _resolve_backend(model, device=device)
        self.batch_size = int(batch_size)

    @property
    def backend(self) -> str:
        """``"openvino"`` or ``"torch"``."""
        return self._backend.kind

    @property
    def inference_precision(self) -> str:
        """Precision of the gradient computation (f32 unless forced otherwise)."""
        return self._backend.inference_precision

    @property
    def runner(self) -> VJPModel | None:
        """The compiled :class:`VJPModel` (None for torch models)."""
        return self._backend.runner if isinstance(self._backend, _OVBackend) else None

    def _prepare(self, inputs: Any, target: Any) -> tuple[F32, npt.NDArray[np.int64]]:
        x = self._backend.to_input(inputs)
        n = x.shape[0]
        if target is None:
            logits = self._logits(x)
            return x, logits.argmax(axis=1).astype(np.int64)
        if isinstance(target, torch.Tensor):
            target = target.detach().cpu().numpy()
        t = np.asarray(target)
        if not np.issubdtype(t.dtype, np.integer):
            raise AttributionInputError(f"target: expected int or int array, got dtype {t.dtype}")
        if t.ndim == 0:
            t = np.full(n, int(t), dtype=np.int64)
        t = t.astype(np.int64).reshape(-1)
        if t.shape != (n,):
            raise AttributionInputError(f"target: expected {n} class indices (one per input), got shape {t.shape}")
        nc = getattr(self._backend, "num_classes", None)
        if len(t) and (t.min() < 0 or (nc is not None and t.max() >= nc)):
            raise AttributionInputError(f"target: class indices must be in [0, {nc}), got {t.min()}..{t.max()}")
        return x, t

    def _logits(self, x: F32) -> F32:
        return np.concatenate(
            [self._backend.logits(x[s : s + self.batch_size]) for s in range(0, len(x), self.batch_size)]
        )

    def _gradients(self, x: F32, target: npt.NDArray[np.int64]) -> F32:
        out = np.empty_like(x)
        for s in range(0, len(x), self.batch_size):
            sl = slice(s, s + self.batch_size)
            out[sl] = self._backend.gradients(x[sl], target[sl])
        return out

    def attribute(self, inputs: Any, target: Any = None, **kwargs: Any) -> F32:  # pragma: no cover - abstract
        """Attributions float32 ``(N, 3, H, W)``."""
        raise NotImplementedError


class Saliency(GradientAttribution):
    r"""Gradient saliency (Simonyan et al. 2013, arxiv.org/abs/1312.6034): ``a = \partial f_t/\partial x``.

    Examples::

        >>> sal = Saliency(ovdiv.load_member("ir/a.xml"))
        >>> maps = sal.attribute(images_uint8, target=labels)   # (N, 3, H, W) float32
    """

    method = AttributionMethod.SALIENCY

    def attribute(self, inputs: Any, target: Any = None, *, abs: bool = True) -> F32:  # type: ignore[override]
        r"""Gradient of the target logit w.r.t. the input.

        Args:
            inputs: float32 ``(N, 3, H, W)`` or uint8 ``(N, H, W, 3)``.
            target (int, array of N ints, optional): Class per sample. Default: None (top-1 class).
            abs (bool, optional): Return ``|gradient|`` (captum's default). Default: ``True``.

        Returns:
            float32 ``(N, 3, H, W)``.
        """
        x, t = self._prepare(inputs, target)
        g = self._gradients(x, t)
        return np.abs(g) if abs else g


class InputXGradient(GradientAttribution):
    r"""Input x gradient (Shrikumar et al. 2016): ``a = x \odot \partial f_t / \partial x``."""

    method = AttributionMethod.INPUT_X_GRADIENT

    def attribute(self, inputs: Any, target: Any = None) -> F32:  # type: ignore[override]
        """``x * gradient``, float32 ``(N, 3, H, W)`` (``x`` = the float network input)."""
        x, t = self._prepare(inputs, target)
        out: F32 = x * self._gradients(x, t)
        return out


class IntegratedGradients(GradientAttribution):
    r"""Integrated Gradients (Sundararajan et al. 2017, arxiv.org/abs/1703.01365).

    ``a = (x - b) \odot \sum_{k=1}^{K} w_k \, \nabla f_t(b + \alpha_k (x - b))`` with captum's step
    sizes ``w_k`` and points ``\alpha_k`` (``captum.attr._utils.approximation_methods``), evaluated as
    one step-major batch of ``K N`` images exactly like captum.
    """

    method = AttributionMethod.IG

    def attribute(  # type: ignore[override]
        self,
        inputs: Any,
        target: Any = None,
        *,
        baselines: float | npt.ArrayLike | None = None,
        n_steps: int = 50,
        method: str = "riemann_trapezoid",
    ) -> F32:
        r"""Integrated gradients along the straight path from ``baselines`` to ``inputs``.

        Args:
            inputs: float32 ``(N, 3, H, W)`` or uint8 ``(N, H, W, 3)``.
            target (int, array, optional): Class per sample. Default: None (top-1 class).
            baselines (float or array, optional): Baseline in network-input units (scalar or broadcastable
                to ``(N, 3, H, W)``). Default: ``None`` (zeros).
            n_steps (int, optional): Number of integration points ``K``. Default: ``50``.
            method (str, optional): ``riemann_trapezoid`` / ``riemann_left`` / ``riemann_right`` /
                ``riemann_middle`` / ``gausslegendre``. Default: ``riemann_trapezoid``.

        Returns:
            float32 ``(N, 3, H, W)``.
        """
        from captum.attr._utils.approximation_methods import approximation_parameters

        if int(n_steps) < 1:
            raise ConfigError(f"n_steps must be >= 1, got {n_steps}")
        try:
            step_fn, alpha_fn = approximation_parameters(method)
        except ValueError:
            raise ConfigError(
                f"method must be one of riemann_trapezoid, riemann_left, riemann_right, riemann_middle, "
                f"gausslegendre; got {method!r}"
            ) from None
        x, t = self._prepare(inputs, target)
        b = np.zeros_like(x) if baselines is None else np.broadcast_to(np.asarray(baselines, np.float32), x.shape)
        steps = np.asarray(step_fn(int(n_steps)), np.float32)
        alphas = np.asarray(alpha_fn(int(n_steps)), np.float32)
        diff = (x - b).astype(np.float32)
        total = np.zeros_like(x)
        n = x.shape[0]
        per_chunk = max(1, self.batch_size // max(n, 1))
        for k0 in range(0, len(alphas), per_chunk):
            # captum: scaled = baseline + alpha * (input - baseline), step-major; grads * step summed
            a = alphas[k0 : k0 + per_chunk].reshape(-1, 1, 1, 1, 1)
            xs = (b[None] + a * diff[None]).astype(np.float32).reshape(-1, *x.shape[1:])
            g = self._gradients(xs, np.tile(t, len(a))).reshape(len(a), *x.shape)
            total += (g * steps[k0 : k0 + per_chunk].reshape(-1, 1, 1, 1, 1)).sum(axis=0)
        out: F32 = (total * diff).astype(np.float32)
        return out


class SmoothGrad(GradientAttribution):
    r"""SmoothGrad (Smilkov et al. 2017, arxiv.org/abs/1706.03825), captum's ``NoiseTunnel(Saliency)``.

    ``a = (1/S) \sum_s |\nabla f_t(x + \epsilon_s)|``, ``\epsilon_s \sim N(0, \sigma_n^2)`` drawn as captum
    does (one ``(N S, 3, H, W)`` draw, samples ``repeat_interleave``-d), from a seeded generator.
    """

    method = AttributionMethod.SMOOTHGRAD

    def attribute(  # type: ignore[override]
        self,
        inputs: Any,
        target: Any = None,
        *,
        nt_samples: int = 5,
        stdevs: float | None = None,
        noise_level: float = 0.15,
        abs: bool = True,
        seed: int = 0,
    ) -> F32:
        r"""Mean saliency over noisy copies of each input.

        Args:
            inputs: float32 ``(N, 3, H, W)`` or uint8 ``(N, H, W, 3)``.
            target (int, array, optional): Class per sample. Default: None (top-1 class).
            nt_samples (int, optional): Noisy samples per input ``S``. Default: ``5`` (captum's).
            stdevs (float, optional): Absolute noise std for every sample. Default: ``None``, i.e.
                ``sigma_n = noise_level * (max(x_n) - min(x_n))`` per sample.
            noise_level (float, optional): Relative noise level. Default: ``0.15``.
            abs (bool, optional): Average ``|gradient|`` (captum Saliency's default). Default: ``True``.
            seed (int, optional): Seed of the noise generator (``torch.Generator``). Default: ``0``.

        Returns:
            float32 ``(N, 3, H, W)``.
        """
        if int(nt_samples) < 1:
            raise ConfigError(f"nt_samples must be >= 1, got {nt_samples}")
        x, t = self._prepare(inputs, target)
        n, s = x.shape[0], int(nt_samples)
        if stdevs is None:
            flat = x.reshape(n, -1)
            sigma = (float(noise_level) * (flat.max(axis=1) - flat.min(axis=1))).astype(np.float32)
        else:
            sigma = np.full(n, float(stdevs), np.float32)
        gen = torch.Generator().manual_seed(int(seed))
        z = torch.randn((n * s, *x.shape[1:]), generator=gen, dtype=torch.float32).numpy()
        noisy = np.repeat(x, s, axis=0) + z * np.repeat(sigma, s).reshape(-1, 1, 1, 1)
        g = self._gradients(noisy.astype(np.float32), np.repeat(t, s))
        if abs:
            g = np.abs(g)
        out: F32 = g.reshape(n, s, *x.shape[1:]).mean(axis=1, dtype=np.float32)
        return out


_METHODS: dict[AttributionMethod, type[GradientAttribution]] = {
    AttributionMethod.SALIENCY: Saliency,
    AttributionMethod.INPUT_X_GRADIENT: InputXGradient,
    AttributionMethod.IG: IntegratedGradients,
    AttributionMethod.SMOOTHGRAD: SmoothGrad,
}


def attribution_method(name: AttributionMethod | str) -> type[GradientAttribution]:
    """The class of method ``name`` (``saliency``, ``ig``, ``smoothgrad``, ``input_x_gradient``).

    Raises:
        ConfigError: unknown name.
    """
    try:
        key = AttributionMethod(name)
    except ValueError:
        key = None
    if key is None or key not in _METHODS:
        valid = [m.value for m in _METHODS]
        raise ConfigError(f"unknown attribution method {name!r}", f"valid methods: {valid}")
    return _METHODS[key]
