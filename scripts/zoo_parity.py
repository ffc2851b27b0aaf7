r"""Saliency parity of ovdiv's VJP graphs on the torchvision and timm zoos (issue 14, item 4).

Every model gets random weights (``pretrained=False`` / ``weights=None``; zero-initialised heads and
layer scales re-initialised, BatchNorm statistics randomised so folded BN is not an identity) and is
converted to each format; the gradient of the top-1 logit of one random image through ovdiv
(:class:`ovdiv.attribution.VJPModel`) is compared with torch autograd:

========  ========================================================================================
format    what is differentiated, and the reference
========  ========================================================================================
fp32      ``ov.convert_model`` IR saved in f32. Reference: torch autograd of the model in float64.
fp16      the same IR saved with ``compress_to_fp16=True`` (f16 weights, f32 compute). Reference:
          float64 torch autograd of the model rounded as the IR is (:func:`fp16_reference`): every
          BatchNorm that solely consumes a conv's output folded into it first, found by data flow on
          any module tree (:func:`fold_batchnorms`; timm ``BatchNormAct2d`` included), in float32 in
          OpenVINO's order (the IR's f16 constants bit for bit), other BatchNorms as an f16 scale and
          shift, then every parameter rounded to f16 except those OpenVINO keeps in f32 (asked of it:
          e.g. LayerScales of 1e-5, below f16's range). Not mirrored: parameter-only subgraphs the
          converter folds in f32 before rounding (SwinV2's continuous position bias MLP; flagged by
          ``logits_rel``). ``logits_rel`` (IR logits vs the reference's
          float64 logits, relative to their scale) shows the match; above ``LOGITS_MATCH`` the row's
          ``detail`` says the reference is not the IR's function.
onnx      ``torch.onnx.export`` (opset 17, dynamic batch) read directly by OpenVINO. Reference: fp32's.
int8      ``nncf.quantize`` of the *torch* model (3 random calibration images, no bias correction, overflow
          fix off so the IR's weights keep the torch model's 8-bit grid) then ``ov.convert_model``: an IR of
          FakeQuantize ops with NNCF's own ranges. ovdiv differentiates it with the straight-through estimator
          (STE: ``dFQ/dx = 1`` inside the input range, 0 outside).
          NNCF's torch quantizers have exactly that backward (``grad_input = grad_output * mask_in``),
          so the STE reference is torch autograd of the NNCF-quantized torch model itself (float64 and
          float32 runs give the floor). NNCF's pure-torch reference quantize functions are used
          instead of its C++ extension (same formulas; the extension build does not fit this machine).
========  ========================================================================================

Status per model and format:

* ``ok``;
* ``wrong``: Spearman of the channel-max ``|grad|`` maps (ovdiv vs reference) < 0.999 **and** relative L2
  vs the float64 reference > 10x the torch float32-vs-float64 floor on the same input -- against the raw
  reference **and**, where it can be built, against the kink-aligned one (below);
* ``unsupported``: ovdiv refused the graph (the op types without a rule are listed);
* ``convert-failed``: the converter (``ov.convert_model``, ``torch.onnx.export``, NNCF) failed, not ovdiv;
* ``error`` / ``timeout``: anything else (torch forward failed, worker crashed or ran out of time).

Kink-aligned reference (fp32, fp16 and onnx rows whose rel L2 is > 10x the floor or > ``ALIGN_ABOVE``): the gradient
of a ReLU / max-pool network is discontinuous at its kinks, and the converted model's f32 forward (BatchNorm
folded into the convolutions, its own summation order) can put a unit on the other side of a kink than torch
float64 does: a ReLU input of -1e-8 in float64 and +2e-6 in f32, a max-pool window whose two largest inputs
differ by 1e-6 relative. ovdiv's gradient is then the gradient of the deployed function, and torch's that of a
neighbouring linear piece. :func:`aligned_reference` builds the deployed piece's gradient without any of ovdiv's
VJP rules: the graph's ``Relu`` outputs and ``MaxPool`` inputs are added as results of the read model, compiled
on CPU at ``INFERENCE_PRECISION_HINT: f32`` and run at batch 1 on the same input; each is matched to a torch
ReLU / 2-D max-pool *call* (a ``TorchFunctionMode`` sees ``nn.ReLU``, ``F.relu``, ``Tensor.relu``,
``nn.MaxPool2d``, ``F.max_pool2d``; a module called twice is two calls) by kind, shape and values (relative max
difference < ``KINK_MATCH_TOL``, one to one, all of them); then torch autograd runs the model in float64 (and
float32, for ``floor_aligned``) with every ``relu(z)`` replaced by ``z * (relu_out_f32 > 0)`` and every
``max_pool2d(a)`` by ``a`` gathered at the argmax (first maximum, the module's own kernel, stride, padding,
dilation and ceil mode) of OpenVINO's f32 values of that pool's input. The row records ``rel_l2_aligned``,
``floor_aligned`` (float32 vs float64 of the aligned function: no kink crossed), ``spearman_aligned``, the kinks
on which the two forwards disagree (``aligned_relu_flips`` units, ``aligned_pool_flips`` windows, of
``aligned_relu_units`` / ``aligned_pool_windows``), exact positive ties in the f32 pool inputs
(``aligned_pool_ties``), other kinked op types left unaligned (``aligned_other_kinks``), ``status_raw`` and
``kinks_aligned`` (rel L2 vs the aligned reference <= 10x ``floor_aligned``: the whole difference from torch
float64 is the counted kinks). A row ``wrong`` against the raw reference but not against the aligned one (same
criterion, with ``floor_aligned``) is ``ok`` with ``status_raw: wrong``.
If the alignment cannot be built (a graph node or torch call left unmatched), the raw status stands and
``aligned_detail`` says why. No row is relabelled by hand.

Usage::

    python scripts/zoo_parity.py --family ghostnet,vit --formats fp32,onnx --out zoo.json
    python scripts/zoo_parity.py --models tv:resnet18,timm:ghostnet_100 --size 96 --jobs 2

Each model+format runs in its own worker process (``--timeout`` seconds); results are appended to
``--out`` as they arrive and entries already there are skipped (resumable). A table is printed, then ONE
JSON line with the counts per format and status.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

FORMATS = ("fp32", "fp16", "onnx", "int8")
SPEARMAN_OK = 0.999
FLOOR_FACTOR = 10.0
# fp32/fp16/onnx rows whose rel L2 exceeds this get the kink-aligned reference even when the floor is as large: torch's
# own float32 forward can cross the same kinks (tv:wide_resnet101_2: floor 2.5e-3 = rel L2), and such a floor says
# nothing about ovdiv's rules; kink-free f32-vs-f64 floors of the sweep are 4e-7 to 3e-5.
ALIGN_ABOVE = 1e-4
LOGITS_MATCH = 1e-4  # fp16: reference logits (float64) vs the IR's (f32 compute), relative to their scale

# family -> smallest timm variant of it (issue 14's list first, then other families people deploy).
TIMM_FAMILIES: dict[str, str] = {
    "vit": "vit_tiny_patch16_224",
    "deit": "deit_tiny_patch16_224",
    "beit": "beit_base_patch16_224",
    "eva": "eva02_tiny_patch14_224",
    "swin": "swin_tiny_patch4_window7_224",
    "swinv2": "swinv2_tiny_window8_256",
    "maxvit": "maxvit_pico_rw_256",
    "convnext": "convnext_atto",
    "convnextv2": "convnextv2_atto",
    "efficientnet": "efficientnet_b0",
    "efficientnetv2": "tf_efficientnetv2_b0",
    "mobilenetv3": "mobilenetv3_small_050",
    "mobilenetv4": "mobilenetv4_conv_small",
    "mobilevit": "mobilevit_xxs",
    "mobilevitv2": "mobilevitv2_050",
    "regnet": "regnetx_002",
    "resnest": "resnest14d",
    "hrnet": "hrnet_w18_small",
    "poolformer": "poolformer_s12",
    "poolformerv2": "poolformerv2_s12",
    "ghostnet": "ghostnet_100",
    "repvgg": "repvgg_a0",
    "levit": "levit_128s",
    "cait": "cait_xxs24_224",
    "coat": "coat_lite_tiny",
    "resmlp": "resmlp_12_224",
    "mixer": "mixer_s16_224",
    "fastvit": "fastvit_t8",
    "efficientformer": "efficientformer_l1",
    "efficientformerv2": "efficientformerv2_s0",
    "inception": "inception_v3",
    "xception": "xception41",
    "densenet": "densenet121",
    "dla": "dla34",
    "resnet": "resnet18",
    "mobilenetv2": "mobilenetv2_050",
    "edgenext": "edgenext_xx_small",
    "mobileone": "mobileone_s0",
    "tinyvit": "tiny_vit_5m_224",
    "pvtv2": "pvt_v2_b0",
    "xcit": "xcit_nano_12_p16_224",
    "rexnet": "rexnet_100",
    "lcnet": "lcnet_050",
    "repvit": "repvit_m1",
    "efficientvit": "efficientvit_b0",
    "caformer": "caformer_s18",
}


# ---------------------------------------------------------------------------------------------- models
def torchvision_names() -> list[str]:
    import torchvision

    return [f"tv:{n}" for n in torchvision.models.list_models(module=torchvision.models)]


def all_models() -> list[str]:
    return [f"timm:{n}" for n in TIMM_FAMILIES.values()] + torchvision_names()


def _reinit(model: Any) -> Any:
    """Random, non-degenerate weights: zero-initialised weights/gammas re-drawn, BN statistics randomised."""
    import torch

    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm) and mod.running_mean is not None:
                n = mod.num_features
                mod.running_mean.copy_(torch.rand(n, generator=gen) * 0.4 - 0.2)
                mod.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                if mod.affine:
                    mod.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                    mod.bias.copy_(torch.rand(n, generator=gen) * 0.4 - 0.2)
        for name, p in model.named_parameters():
            if p.numel() > 0 and bool(torch.all(p == 0)) and not name.endswith("bias"):
                if p.ndim >= 2:
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
                else:  # layer scale / gamma
                    p.copy_(torch.rand(p.shape, generator=gen) * 0.5 + 0.5)
    return model


def build_model(spec: str) -> tuple[Any, int]:
    """Torch model (eval, random weights) and its default input size."""
    import torch

    torch.manual_seed(0)
    src, name = spec.split(":", 1)
    if src == "tv":
        import torchvision

        kwargs: dict[str, Any] = {"weights": None}
        if name in ("inception_v3", "googlenet"):
            kwargs.update(aux_logits=False, init_weights=False)
        model = torchvision.models.get_model(name, **kwargs)
        size = 299 if name == "inception_v3" else 224
    else:
        import timm

        model = timm.create_model(name, pretrained=False)
        size = int(model.pretrained_cfg.get("input_size", (3, 224, 224))[1])
    return _reinit(model.eval()), size


def _input_for(model: Any, size: int, default: int) -> Any:
    """A random (1, 3, S, S) input the model accepts: ``size`` if it runs, else the model's own size."""
    import torch

    for s in dict.fromkeys([size, default]):
        x = torch.randn(1, 3, s, s, generator=torch.Generator().manual_seed(1))
        try:
            with torch.no_grad():
                model(x)
            return x
        except Exception:
            continue
    raise RuntimeError(f"torch forward fails at sizes {size} and {default}")


# ---------------------------------------------------------------------------------------------- one case
def _release_memory() -> None:
    """Collect cycles and return freed heap pages to the OS (glibc ``malloc_trim``; a no-op elsewhere)."""
    import contextlib
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _grad(model: Any, x: Any, target: int) -> Any:
    """``d model(x)[0, target] / dx`` for a batch-1 ``x`` by torch autograd (the reference), run at batch 2.

    torch 2.14's CPU BatchNorm backward (eval mode; float32 and float64, with or without oneDNN) returns a
    wrong input gradient when ``grad_output`` has batch 1 and a batch stride below ``C*H*W`` -- e.g. strides
    ``(C, 1, W*C, C)``, exactly what ``flatten(2).transpose(1, 2)`` after a BatchNorm2d sends back (LeViT's
    and EfficientFormer's stem-to-token step). float32 and float64 are then wrong in the same way, so the
    f32-vs-f64 floor does not show it, and ovdiv's (correct) gradient was reported ``wrong`` (rel L2 1.4,
    issue 14). With two copies of ``x`` in the batch no tensor has batch 1 (the samples of an eval-mode
    classifier are independent, so row 0 of the gradient is the batch-1 gradient). A backward hook making
    ``grad_output`` contiguous would also do, but module backward hooks break in-place activations.
    ``tests/attribution/test_zoo_parity.py`` reproduces the torch bug.
    """
    import torch

    xx = torch.cat([x, x]).requires_grad_(True)
    y = model(xx)
    (g,) = torch.autograd.grad(y[:, target].sum(), xx)
    return g[:1].detach().numpy()


def _rel(a: Any, b: Any) -> float:
    import numpy as np

    nb = float(np.linalg.norm(b))
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / nb) if nb > 0 else float("inf")


def _logits_rel(a: Any, b: Any) -> float:
    """``max |a - b| / max |b|``: the converted model's logits vs the float64 reference's, relative to their scale."""
    import numpy as np

    scale = float(np.abs(b).max())
    return float(np.abs(np.asarray(a, np.float64) - b).max() / scale) if scale > 0 else float("inf")


def _spearman(a: Any, b: Any) -> float:
    import numpy as np
    from scipy.stats import spearmanr

    ma = np.abs(a).max(axis=1).reshape(-1)
    mb = np.abs(b).max(axis=1).reshape(-1)
    return float(spearmanr(ma, mb).statistic)


def _nncf_reference_functions() -> None:
    """Route NNCF's torch quantizers to its pure-torch reference functions (no C++ extension build)."""
    import nncf.torch.quantization.quantize_functions as qf
    from nncf.torch.quantization.reference import torch_executor

    # The eager functions, not NNCF's ``torch.compile`` wrappers of them: dynamo recompiles per tensor type
    # and dtype (20-30 s per model on 2 cores, most of an INT8 case's time) for no change in the values.
    table = {"Quantize_forward": torch_executor.forward, "Quantize_backward": torch_executor.backward}

    class _Ref:
        @staticmethod
        def get(name: str) -> Any:
            return table[name]

    qf.QuantizedFunctionsCPU = _Ref  # type: ignore[assignment]


def _nncf_tuple_parameters() -> None:
    """Let NNCF's torch tracer see parameters passed in a *tuple* (``torch.cat((q_bias, k_bias, v_bias))``).

    NNCF 2.19 registers parameters/buffers given to an op directly or in a list, not in a tuple; the graph builder
    then fails with ``ValueError: None cannot be a node`` (timm BEiT, EVA-02, SwinV2 attention). A tuple of tensors
    is passed on as a list, which every torch op taking a tensor sequence accepts: the function is unchanged.
    """
    import torch
    from nncf.torch.function_hook.hook_executor_mode import FunctionHookMode

    orig = FunctionHookMode.process_parameters
    if getattr(orig, "_ovdiv_tuples", False):
        return

    def process_parameters(self: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
        seqs = [isinstance(a, tuple) and len(a) > 0 and all(isinstance(t, torch.Tensor) for t in a) for a in args]
        return orig(self, [list(a) if s else a for a, s in zip(args, seqs, strict=True)], kwargs)

    process_parameters._ovdiv_tuples = True  # type: ignore[attr-defined]
    FunctionHookMode.process_parameters = process_parameters  # type: ignore[method-assign]


def quantize_int8(model: Any, x: Any) -> Any:
    """The NNCF-quantized torch model (3 random calibration images like ``x``): the int8 IR's source and reference.

    ``overflow_fix`` is off: NNCF's default halves the first layers' weight range (7 bit) in the *exported* IR
    only, so the torch model would not be the IR's function (measured on a small CNN: 45 % of the first layer's
    output one or two levels apart, saliency 0.29 relative L2 from the IR's where the f32 floor is 4e-3; with
    it off, 3e-7). Bias correction is off: it tunes biases for accuracy on real data (meaningless with random
    weights and images), costs time, and NNCF's fast bias correction crashes on torchvision ``maxvit_t``
    (``IndexError`` in ``_get_bias_shift``). The quantizers run NNCF's eager reference functions
    (:func:`_nncf_reference_functions`); parameters in tuples are traced (:func:`_nncf_tuple_parameters`).
    """
    import nncf
    import torch

    _nncf_reference_functions()
    _nncf_tuple_parameters()
    gen = torch.Generator().manual_seed(2)
    calib = [torch.randn(1, *x.shape[1:], generator=gen) for _ in range(3)]
    adv = nncf.AdvancedQuantizationParameters(overflow_fix=nncf.OverflowFix.DISABLE, disable_bias_correction=True)
    return nncf.quantize(model, nncf.Dataset(calib), subset_size=3, advanced_parameters=adv)


def _ov_convert(model: Any, x: Any) -> Any:
    """``ov.convert_model`` with a dynamic batch; retried on a ``torch.jit.trace(check_trace=False)`` module.

    OpenVINO traces the model with TorchScript's sanity check on; torchvision's ViTs fail it ("Graphs differed
    across invocations": ``nn.MultiheadAttention``'s fast path is taken on one of the check's invocations and
    not the other). The same trace without the check converts, and the IR's logits are compared with torch's
    (``logits_diff``), so a bad trace cannot pass unnoticed.
    """
    import openvino as ov
    import torch

    shape = [-1, *x.shape[1:]]
    try:
        return ov.convert_model(model, example_input=x, input=shape)
    except Exception as exc:
        if "sanity checks" not in str(exc):
            raise
    with torch.no_grad():
        traced = torch.jit.trace(model, x, check_trace=False)
    return ov.convert_model(traced, example_input=x, input=shape)


class ReferenceBuildError(RuntimeError):
    """The torch reference of a format could not be built (status ``error``, not ``convert-failed``)."""


def fold_batchnorms(model: Any, x: Any) -> dict[str, int]:
    """Fold every BatchNorm that directly and solely consumes a convolution's output into it, in place.

    Data-flow based, so any module tree works (no ``torch.fx`` trace, no module-pair pattern): the model runs
    once on ``x`` in float64 with forward hooks; a ``_BatchNorm`` (subclasses included, e.g. timm's
    ``BatchNormAct2d``, whose activation keeps applying) is folded into a non-transposed ``nn.Conv1d/2d/3d``
    when its input *is* that conv's output tensor (identity, not modified in place since), the conv output has
    no other consumer in the autograd graph, and both modules ran exactly once (a shared module cannot be
    folded for one of its uses). This is what OpenVINO's converter can fold (``BatchNorm`` -> ``Multiply`` +
    ``Add``, the ``Multiply`` fused into the convolution's weights, the ``Add`` merged with its bias).
    The conv gets ``W * s`` and bias ``b * s + (beta - mean * s)`` (``s = gamma / sqrt(var + eps)``, computed in
    float32 as OpenVINO does, then held in float64); the BatchNorm becomes an exact identity (weight 1, bias 0,
    mean 0, var 1, eps 0). Every other BatchNorm (not after a conv, or not foldable) becomes the same affine map
    written as weight ``s``, bias ``beta - mean * s`` on mean 0, var 1, eps 0 (how the IR keeps it: a
    ``Multiply`` and an ``Add`` constant, each rounded to f16).
    The model is converted to float64 (the caller rounds and casts). Returns counts ``bn_folded``,
    ``bn_unfolded`` and ``bn_unused`` (BatchNorms that did not run on ``x``).
    """
    import torch
    from torch.nn.modules.batchnorm import _BatchNorm
    from torch.nn.modules.conv import _ConvNd

    model.double()
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    calls: dict[int, int] = {}
    conv_out: dict[int, tuple[Any, Any, Any]] = {}  # id(output) -> (conv, output, output.grad_fn)
    bn_in: dict[Any, tuple[Any, Any]] = {}  # bn -> (conv, its output's grad_fn) when fed a conv output directly

    def conv_hook(mod: Any, inp: Any, out: Any) -> None:
        calls[id(mod)] = calls.get(id(mod), 0) + 1
        if isinstance(out, torch.Tensor) and out.grad_fn is not None:
            conv_out[id(out)] = (mod, out, out.grad_fn)  # the reference keeps the id unique

    def bn_pre_hook(mod: Any, args: Any) -> None:
        calls[id(mod)] = calls.get(id(mod), 0) + 1
        a = args[0] if args else None
        hit = conv_out.get(id(a)) if isinstance(a, torch.Tensor) else None
        if hit is not None and hit[1] is a and a.grad_fn is hit[2]:
            bn_in[mod] = (hit[0], hit[2])

    handles = [
        m.register_forward_hook(conv_hook)
        for m in model.modules()
        if isinstance(m, _ConvNd) and not m.transposed and m.groups >= 1
    ]
    handles += [m.register_forward_pre_hook(bn_pre_hook) for m in bns]
    try:
        with torch.enable_grad():
            y = model(x.double().requires_grad_(True))
    finally:
        for h in handles:
            h.remove()
    # consumers of each autograd node, counted over the whole backward graph of the output
    uses: dict[Any, int] = {}
    seen: set[Any] = set()
    stack = [t.grad_fn for t in (y if isinstance(y, (tuple, list)) else [y]) if t.grad_fn is not None]
    while stack:
        fn = stack.pop()
        if fn in seen:
            continue
        seen.add(fn)
        for nxt, _ in fn.next_functions:
            if nxt is not None:
                uses[nxt] = uses.get(nxt, 0) + 1
                stack.append(nxt)
    conv_out.clear()
    del y
    folded = unfolded = unused = 0
    with torch.no_grad():
        for bn in bns:
            if id(bn) not in calls:
                unused += 1
                continue
            # float32 arithmetic in OpenVINO's order (BatchNormDecomposition, then constant folding): measured to
            # give the IR's f16 constants bit for bit (folding in float64 flips ~5e-5 of them by one f16 ulp)
            mean = bn.running_mean.float()
            one = torch.ones_like(mean)
            gamma = bn.weight.float() if bn.affine else one
            beta = bn.bias.float() if bn.affine else torch.zeros_like(mean)
            s = gamma / torch.sqrt(bn.running_var.float() + torch.tensor(bn.eps, dtype=torch.float32))
            hit = bn_in.get(bn)
            conv = hit[0] if hit else None
            if (
                conv is not None
                and calls.get(id(bn)) == 1
                and calls.get(id(conv)) == 1
                and uses.get(hit[1], 0) == 1
                and conv.out_channels == bn.num_features
            ):
                conv.weight.copy_(conv.weight.float() * s.reshape(-1, *([1] * (conv.weight.ndim - 1))))
                new_b = beta - mean * s
                if conv.bias is None:
                    conv.bias = torch.nn.Parameter(new_b.double(), requires_grad=conv.weight.requires_grad)
                else:
                    conv.bias.copy_(conv.bias.float() * s + new_b)
                scale, shift = one, torch.zeros_like(mean)
                folded += 1
            else:
                scale, shift = s, beta - mean * s
                unfolded += 1
            if not bn.affine:
                bn.affine = True
                bn.weight = torch.nn.Parameter(scale.clone())
                bn.bias = torch.nn.Parameter(shift.clone())
            else:
                bn.weight.copy_(scale)
                bn.bias.copy_(shift)
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0)
            bn.eps = 0.0
    return {"bn_folded": folded, "bn_unfolded": unfolded, "bn_unused": unused}


def fp16_reference(model: Any, x: Any) -> Any:
    """The float32 torch model computing what the ``compress_to_fp16`` IR computes (its parameters in f16).

    OpenVINO folds BatchNorm into the preceding convolution (:func:`fold_batchnorms`) *before* the weights
    are compressed, so the reference folds in float64 first and then rounds every floating-point parameter
    and buffer to f16. The fold's counts are kept in ``ref_model.zoo_fold``.
    """
    import torch

    ref_model = copy.deepcopy(model)
    info = fold_batchnorms(ref_model, x)
    tensors = [t for t in list(ref_model.parameters()) + list(ref_model.buffers()) if t.is_floating_point()]
    keep = _ov_keeps_f32([t.detach().float().numpy() for t in tensors])
    with torch.no_grad():
        for t, kept in zip(tensors, keep, strict=True):
            t.data = t.data.float() if kept else t.data.half().float()
    ref_model.float()
    ref_model.zoo_fold = {**info, "f32_kept": sum(keep)}
    return ref_model


def _ov_keeps_f32(arrays: list[Any]) -> list[bool]:
    """Which of these f32 constants OpenVINO's fp16 compression keeps in f32 (asked of OpenVINO itself).

    ``CompressFloatConstants`` keeps a constant in f32 when most of its values do not survive f16 (out of
    range, e.g. timm CaiT's LayerScale 1e-5, below f16's normal range; a scalar scale whose relative rounding
    error is large); the rule changed between releases, so each constant is put in a one-constant-per-output
    model and the installed OpenVINO's own ``compress_model_transformation`` decides.
    """
    import numpy as np
    import openvino as ov
    import openvino.opset15 as ops
    from openvino._offline_transformations import compress_model_transformation

    if not arrays:
        return []
    model = ov.Model(
        [ops.result(ops.constant(np.ascontiguousarray(a, np.float32))) for a in arrays],
        [ops.parameter([1], np.float32)],
    )
    compress_model_transformation(model)
    return [r.input_value(0).get_node().get_type_name() == "Constant" for r in model.get_results()]


def _convert(model: Any, x: Any, fmt: str, tmp: str) -> tuple[Any, Any]:
    """``(what VJPModel reads, the torch model of the reference)`` for one format (converter errors propagate)."""
    import openvino as ov
    import torch

    ref_model = model
    if fmt in ("fp32", "fp16"):
        ir = _ov_convert(model, x)
        path = Path(tmp) / f"m_{fmt}.xml"
        ov.save_model(ir, path, compress_to_fp16=fmt == "fp16")
        del ir
        if fmt == "fp16":
            try:
                ref_model = fp16_reference(model, x)
            except Exception as exc:  # not the converter's failure: the row says the reference could not be built
                raise ReferenceBuildError(f"fp16 reference (BatchNorm fold): {type(exc).__name__}: {exc}") from exc
        return str(path), ref_model
    if fmt == "onnx":
        path = Path(tmp) / "m.onnx"
        torch.onnx.export(
            model,
            (x,),
            str(path),
            opset_version=17,
            dynamo=False,
            input_names=["x"],
            output_names=["logits"],
            dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}},
        )
        return str(path), ref_model
    if fmt == "int8":
        ref_model = quantize_int8(model, x)
        ir = _ov_convert(ref_model, x)
        path = Path(tmp) / "m_int8.xml"
        ov.save_model(ir, path, compress_to_fp16=False)
        return str(path), ref_model
    raise ValueError(fmt)


def _kinks(model: Any, x: Any, ov_model: Any) -> dict[str, int]:
    """Kinks crossed between torch float64 and the converted model's own f32 forward (explains rel L2 >> floor).

    ``relu_sign_flips``: ReLU inputs (``nn.ReLU`` modules, matched to the graph's ``Relu`` nodes by shape and
    value) whose sign differs; ``clamp_kink_flips``: the same for ``nn.ReLU6`` / ``nn.Hardtanh`` inputs vs the
    graph's ``Clamp`` nodes, on either bound; ``maxpool_near_ties``: max-pool windows (``nn.MaxPool2d``) whose
    two largest positive inputs differ by < 1e-5 relative in float64 (an f32 forward may rank them either
    way). Each makes the deployed model's gradient differ from torch's by that unit's contribution, correctly.
    """
    import numpy as np
    import openvino as ov
    import openvino.opset15 as ops
    import torch

    m64 = copy.deepcopy(model).double()
    relu_in: list[Any] = []
    clamp_in: list[Any] = []
    ties = 0

    def pool_hook(mod: Any, inp: Any, out: Any) -> None:
        nonlocal ties
        a = inp[0]
        k, s, p = (v if isinstance(v, int) else v[0] for v in (mod.kernel_size, mod.stride, mod.padding))
        u = torch.nn.functional.unfold(torch.nn.functional.pad(a, [p] * 4, value=-1e30), k, stride=s)
        top2 = u.reshape(a.shape[0], a.shape[1], k * k, -1).topk(2, dim=2).values
        gap = (top2[:, :, 0] - top2[:, :, 1]) / top2[:, :, 0].abs().clamp_min(1e-30)
        ties += int(((gap < 1e-5) & (gap > 0) & (top2[:, :, 0] > 0)).sum())

    for mod in m64.modules():
        if isinstance(mod, (torch.nn.ReLU, torch.nn.Hardtanh)):
            mod.inplace = False
            seen = relu_in if isinstance(mod, torch.nn.ReLU) else clamp_in
            mod.register_forward_hook(lambda mod, i, o, seen=seen: seen.append(i[0].detach().numpy().copy()))
        elif isinstance(mod, torch.nn.MaxPool2d):
            mod.register_forward_hook(pool_hook)
    with torch.no_grad():
        m64(x.double())
    core = ov.Core()
    om = core.read_model(ov_model)
    om.reshape({om.input(0): ov.PartialShape([1, *x.shape[1:]])})
    nodes = [n for n in om.get_ordered_ops() if n.get_type_name() in ("Relu", "Clamp")]
    nodes = [n for n in nodes if (relu_in if n.get_type_name() == "Relu" else clamp_in)]
    flips = {"Relu": 0, "Clamp": 0}
    if nodes:
        probe = ov.Model([ops.result(n.input_value(0)) for n in nodes], om.get_parameters())
        res = core.compile_model(probe, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})({0: x.numpy()})
        for i, node in enumerate(nodes):
            a = np.asarray(res[i])
            kind = node.get_type_name()
            cands = [b for b in (relu_in if kind == "Relu" else clamp_in) if b.shape == a.shape]
            if not cands:
                continue
            b = min(cands, key=lambda b: float(np.abs(a - b).max()))
            if kind == "Relu":
                flips[kind] += int(np.sum((a > 0) != (b > 0)))
            else:
                lo, hi = float(node.get_attributes()["min"]), float(node.get_attributes()["max"])
                flips[kind] += int(np.sum(((a > lo) != (b > lo)) | ((a < hi) != (b < hi))))
    return {"relu_sign_flips": flips["Relu"], "clamp_kink_flips": flips["Clamp"], "maxpool_near_ties": ties}


# ------------------------------------------------------------------------------- kink-aligned reference
KINK_MATCH_TOL = 1e-3  # max |OV f32 - torch f64| / max |torch f64| for a graph node to match a torch call


class AlignError(RuntimeError):
    """The kink-aligned reference cannot be built for this model (unmatched nodes or calls)."""


def _pool_args(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """``F.max_pool2d``'s arguments by name (stride ``None``/``[]`` means the kernel size)."""
    names = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
    got = dict(zip(names, args, strict=False))
    got.update(kwargs)
    k = got["kernel_size"]
    stride = got.get("stride")
    return {
        "kernel_size": k,
        "stride": k if stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0) else stride,
        "padding": got.get("padding", 0),
        "dilation": got.get("dilation", 1),
        "ceil_mode": bool(got.get("ceil_mode", False)),
        "return_indices": bool(got.get("return_indices", False)),
    }


def _kink_kind(func: Any) -> str | None:
    name = getattr(func, "__name__", "")
    if name in ("relu", "relu_"):
        return "relu"
    if name in ("max_pool2d", "max_pool2d_with_indices"):
        return "maxpool"
    return None


def _kink_mode(handler: Any) -> Any:
    """A ``TorchFunctionMode`` routing every ReLU / 2-D max-pool call (module, functional or method) to ``handler``.

    Catching the calls, not the modules, sees functional ``F.relu`` (torchvision DenseNet, Inception) and a
    module called several times (torchvision ResNet blocks reuse one ``nn.ReLU``) as the separate kinks they are.
    """
    from torch.overrides import TorchFunctionMode

    class _Mode(TorchFunctionMode):
        def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            kwargs = kwargs or {}
            kind = _kink_kind(func)
            if kind is None:
                return func(*args, **kwargs)
            return handler(kind, func, args, kwargs)

    return _Mode()


def _torch_kink_values(model64: Any, x64: Any) -> list[tuple[str, Any, dict[str, Any] | None]]:
    """``(kind, value, pool arguments)`` of every ReLU call (its output) and max-pool call (its input) of the
    float64 torch forward at ``x64``, in execution order."""
    import torch

    calls: list[tuple[str, Any, dict[str, Any] | None]] = []

    def handler(kind: str, func: Any, args: Any, kwargs: Any) -> Any:
        if kind == "maxpool":
            calls.append((kind, args[0].detach().numpy().copy(), _pool_args(args, kwargs)))
            return func(*args, **kwargs)
        out = func(*args, **kwargs)
        calls.append((kind, out.detach().numpy().copy(), None))
        return out

    with torch.no_grad(), _kink_mode(handler):
        model64(x64)
    return calls


def _ov_kink_values(ov_model: Any, x: Any) -> tuple[list[tuple[str, Any]], Any]:
    """The converted model's own f32 forward (batch 1, CPU, ``INFERENCE_PRECISION_HINT: f32``) at ``x``.

    Returns ``[(kind, value)]`` for every ``Relu`` output and every ``MaxPool`` input in the graph's
    topological order, and the logits.
    """
    import numpy as np
    import openvino as ov

    core = ov.Core()
    om = core.read_model(ov_model)
    om.reshape({om.input(0): ov.PartialShape([1, *x.shape[1:]])})
    wanted: list[tuple[str, Any]] = []
    for n in om.get_ordered_ops():
        t = n.get_type_name()
        if t == "Relu":
            wanted.append(("relu", n.output(0)))
        elif t == "MaxPool":
            wanted.append(("maxpool", n.input_value(0)))
    if not wanted:
        return [], None

    def key(o: Any) -> tuple[str, int]:
        return (o.get_node().get_friendly_name(), o.get_index())

    om.add_outputs([o for _, o in wanted])  # one Result per port (a Relu output feeding a MaxPool: one)
    pos = {key(r.get_node().input_value(0)): i for i, r in enumerate(om.outputs)}
    cfg = {"INFERENCE_PRECISION_HINT": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": 0}
    req = core.compile_model(om, "CPU", cfg).create_infer_request()
    req.infer({0: x.numpy()})
    vals = [(kind, np.array(req.get_output_tensor(pos[key(o)]).data, copy=True)) for kind, o in wanted]
    return vals, np.array(req.get_output_tensor(0).data, copy=True)


def _match_kinks(torch_calls: list[tuple[str, Any, Any]], ov_vals: list[tuple[str, Any]]) -> tuple[list[Any], float]:
    """For each torch call, the OV f32 value of the same node: same kind and shape, closest values, one to one.

    Graph nodes are taken in topological order, each matched to the unused torch call of its kind and shape
    whose values are closest; the match is accepted only if the relative max difference is below
    ``KINK_MATCH_TOL``. Every node and every call must be matched, else :class:`AlignError`.
    Returns the OV values in torch call order and the worst relative difference.
    """
    import numpy as np

    if len(torch_calls) != len(ov_vals):
        kinds = {k: (sum(c[0] == k for c in torch_calls), sum(v[0] == k for v in ov_vals)) for k in ("relu", "maxpool")}
        raise AlignError(f"torch calls vs graph nodes (relu, maxpool): {kinds}")
    out: list[Any] = [None] * len(torch_calls)
    worst = 0.0
    for kind, a in ov_vals:
        best, best_err = -1, float("inf")
        for i, (k, b, _) in enumerate(torch_calls):
            if out[i] is not None or k != kind or b.shape != a.shape:
                continue
            err = float(np.abs(a - b).max() / max(float(np.abs(b).max()), 1e-30))
            if err < best_err:
                best, best_err = i, err
        if best < 0 or best_err > KINK_MATCH_TOL:
            raise AlignError(
                f"graph {kind} node of shape {a.shape} matches no torch call (best rel diff {best_err:.1e})"
            )
        out[best] = a
        worst = max(worst, best_err)
    return out, worst


def _pool_indices(v: Any, p: dict[str, Any]) -> Any:
    """Argmax (flat ``H*W`` index, first maximum in row-major window order) of each window of ``v``."""
    import torch

    _, idx = torch.nn.functional.max_pool2d(
        torch.as_tensor(v),
        p["kernel_size"],
        p["stride"],
        p["padding"],
        p["dilation"],
        ceil_mode=p["ceil_mode"],
        return_indices=True,
    )
    return idx


def _aligned_grad(model: Any, x: Any, target: int, values: list[Any]) -> tuple[Any, Any]:
    """``(logits, gradient)`` of ``model`` (run in ``x``'s dtype) with its kinks taken from ``values``.

    ``values[i]`` belongs to the i-th ReLU / max-pool call of the forward: a ReLU call returns ``z * (v > 0)``,
    a max-pool call the gather of its input at the argmax of ``v`` (``v``: the converted model's f32 values of
    that ReLU's output / that pool's input). Everything else is plain torch autograd; the function is linear
    on the piece ``x`` lies on, so its gradient is that piece's. Run at batch 2 like :func:`_grad`.
    """
    import torch

    calls = [0]

    def handler(kind: str, func: Any, args: Any, kwargs: Any) -> Any:
        i = calls[0]
        calls[0] += 1
        if i >= len(values):
            raise AlignError(f"the aligned forward makes more than {len(values)} ReLU/max-pool calls")
        a = args[0]
        v = values[i]
        if tuple(v.shape[1:]) != tuple(a.shape[1:]):
            raise AlignError(f"call {i} ({kind}): shape {tuple(a.shape)} vs value {v.shape}")
        if kind == "relu":
            return a * torch.as_tensor(v > 0).to(a.dtype)
        p = _pool_args(args, kwargs)
        idx = _pool_indices(v, p).expand(a.shape[0], -1, -1, -1)
        out = a.flatten(2).gather(2, idx.flatten(2)).view(idx.shape)
        return (out, idx) if p["return_indices"] or getattr(func, "__name__", "") == "max_pool2d_with_indices" else out

    xx = torch.cat([x, x]).requires_grad_(True)
    with _kink_mode(handler):
        y = model(xx)
    if calls[0] != len(values):
        raise AlignError(f"the aligned forward made {calls[0]} ReLU/max-pool calls, {len(values)} expected")
    (g,) = torch.autograd.grad(y[:, target].sum(), xx)
    return y[:1].detach().numpy(), g[:1].detach().numpy()


def _kink_flips(torch_calls: list[tuple[str, Any, Any]], values: list[Any]) -> dict[str, int]:
    """Kinks on which torch float64 (``torch_calls``) and the converted f32 forward (``values``) disagree.

    ``aligned_relu_flips``: ReLU units active in one and not the other; ``aligned_pool_flips``: max-pool windows
    whose argmax differs. ``aligned_pool_ties``: windows whose largest OV f32 value is positive and attained
    more than once (the first in row-major order is taken, as torch and ovdiv's MaxPool rule do);
    ``aligned_pool_zero_ties``: windows whose maximum 0 is attained more than once in a pool whose input is
    not a ReLU output (in one that is, every element of such a window has a zero ReLU mask, so the index taken
    does not matter).
    """
    import numpy as np

    relu_out = [v for (k, _, _), v in zip(torch_calls, values, strict=True) if k == "relu"]
    out = dict.fromkeys(("aligned_relu_flips", "aligned_relu_units", "aligned_pool_flips", "aligned_pool_windows"), 0)
    out.update(aligned_pool_ties=0, aligned_pool_zero_ties=0)
    for (kind, b, p), a in zip(torch_calls, values, strict=True):
        if kind == "relu":
            out["aligned_relu_units"] += int(a.size)
            out["aligned_relu_flips"] += int(np.sum((a > 0) != (b > 0)))
            continue
        ia, ib = _pool_indices(a, p), _pool_indices(b, p)
        out["aligned_pool_windows"] += int(ia.numel())
        out["aligned_pool_flips"] += int((ia != ib).sum())
        pos, zero = _ties(a, p)
        out["aligned_pool_ties"] += pos
        if zero and not any(r.shape == a.shape and np.array_equal(r, a) for r in relu_out):
            out["aligned_pool_zero_ties"] += zero
    return out


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[-1]))


def _ties(v: Any, p: dict[str, Any]) -> tuple[int, int]:
    """Windows of ``v`` (max-pool geometry ``p``) whose maximum is attained more than once: ``(> 0, == 0)``."""
    import torch

    a = torch.as_tensor(v)
    m = torch.nn.functional.max_pool2d(
        a, p["kernel_size"], p["stride"], p["padding"], p["dilation"], ceil_mode=p["ceil_mode"]
    )
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (_pair(p[n]) for n in ("kernel_size", "stride", "padding", "dilation"))
    (h, w), (ho, wo) = a.shape[2:], m.shape[2:]
    hp, wp = (ho - 1) * sh + (kh - 1) * dh + 1, (wo - 1) * sw + (kw - 1) * dw + 1
    xp = torch.nn.functional.pad(a, [pw, max(wp - w - pw, 0), ph, max(hp - h - ph, 0)], value=float("-inf"))
    count = torch.zeros_like(m)
    for i in range(kh):
        for j in range(kw):
            view = xp[:, :, i * dh : i * dh + (ho - 1) * sh + 1 : sh, j * dw : j * dw + (wo - 1) * sw + 1 : sw]
            count += (view == m).to(m.dtype)
    return int(((count > 1) & (m > 0)).sum()), int(((count > 1) & (m == 0)).sum())


OTHER_KINK_OPS = ("Clamp", "Maximum", "Minimum", "Abs", "ReduceMax", "ReduceMin", "PRelu", "Sign", "Floor", "TopK")


def aligned_reference(model: Any, x: Any, ov_model: Any, target: int) -> dict[str, Any]:
    """The kink-aligned reference: torch autograd of ``model`` with the converted model's own kinks.

    Every ReLU mask and max-pool argmax is taken from the converted model's f32 forward at ``x``
    (:func:`_ov_kink_values`: the graph's ``Relu`` outputs and ``MaxPool`` inputs as extra results, batch 1,
    ``INFERENCE_PRECISION_HINT: f32``), matched to torch's ReLU / max-pool calls by kind, shape and values
    (:func:`_match_kinks`); the rest of the model is torch's own float64 (and float32, for the floor)
    autograd (:func:`_aligned_grad`). Nothing of ovdiv's VJP rules is used. Its gradient is the gradient of
    the piece of the piecewise-linear (in its ReLU/max-pool kinks) function the deployed model is on at ``x``.

    Returns ``g64`` and ``g32`` (aligned gradients), ``logits`` (aligned float64 logits), ``ov_logits``, the
    flip counts (:func:`_kink_flips`), ``aligned_nodes`` (matched nodes), ``aligned_match_err`` (worst relative
    difference of a match) and ``aligned_other_kinks`` (other kinked op types in the graph, not aligned).
    Raises :class:`AlignError` if a node or call is unmatched.
    """
    import openvino as ov

    m64 = copy.deepcopy(model).double()
    x64 = x.double()
    calls = _torch_kink_values(m64, x64)
    if not calls:
        raise AlignError("no ReLU / max-pool call in the torch forward")
    ov_vals, ov_logits = _ov_kink_values(ov_model, x)
    values, match_err = _match_kinks(calls, ov_vals)
    logits, g64 = _aligned_grad(m64, x64, target, values)
    _, g32 = _aligned_grad(copy.deepcopy(model).float(), x.float(), target, values)
    other: dict[str, int] = {}
    for n in ov.Core().read_model(ov_model).get_ordered_ops():
        if n.get_type_name() in OTHER_KINK_OPS:
            other[n.get_type_name()] = other.get(n.get_type_name(), 0) + 1
    return {
        "g64": g64,
        "g32": g32,
        "logits": logits,
        "ov_logits": ov_logits,
        "aligned_nodes": len(values),
        "aligned_match_err": match_err,
        "aligned_other_kinks": other,
        **_kink_flips(calls, values),
    }


def _aligned_fields(model: Any, x: Any, ov_model: Any, target: int, g: Any, raw_wrong: bool) -> dict[str, Any]:
    """The row's kink-aligned figures and, for a row ``wrong`` against the raw reference, its status.

    ``wrong`` stands only if ovdiv's gradient is also wrong against the aligned reference (same criterion:
    Spearman < 0.999 and rel L2 > 10x the aligned reference's own float32-vs-float64 floor); otherwise the row
    is ``ok`` with ``status_raw: wrong``. ``kinks_aligned``: rel L2 vs the aligned reference is within 10x its
    floor, i.e. the difference from torch float64 is entirely the kinks counted. If the alignment cannot be
    built, the raw status stands and ``aligned_detail`` says why.
    """
    import numpy as np

    t0 = time.perf_counter()
    try:
        al = aligned_reference(model, x, ov_model, target)
    except Exception as exc:
        return {"aligned_detail": f"alignment not built: {type(exc).__name__}: {str(exc)[:200]}"}

    err_a, floor_a, rho_a = _rel(g, al["g64"]), _rel(al["g32"], al["g64"]), _spearman(g, al["g64"])
    out = {k: v for k, v in al.items() if k.startswith("aligned_")}
    out.update(
        rel_l2_aligned=err_a,
        floor_aligned=floor_a,
        spearman_aligned=rho_a,
        aligned_logits_diff=float(np.abs(al["logits"] - al["ov_logits"]).max()),
        aligned_s=round(time.perf_counter() - t0, 1),
    )
    wrong_a = rho_a < SPEARMAN_OK and err_a > FLOOR_FACTOR * floor_a
    out["status_raw"] = "wrong" if raw_wrong else "ok"
    out["kinks_aligned"] = err_a <= FLOOR_FACTOR * floor_a  # the whole difference from torch f64 is the kinks
    if raw_wrong and not wrong_a:
        out["status"] = "ok"
    return out


def _gradient_check(runner: Any, x: Any) -> dict[str, Any]:
    """ovdiv's own ``--gradient-check quick`` on the converted model (two images: ``x`` and another)."""
    import numpy as np

    from ovdiv.attribution.gradcheck import check_gradients

    x2 = np.random.default_rng(3).standard_normal(x.shape).astype(np.float32)
    imgs = np.concatenate([x.numpy(), x2])
    try:
        # batch of the perturbed forwards: 16 (ovdiv's default) unless ZOO_CHECK_BATCH says less (memory of the
        # largest models; the check's figures do not depend on it)
        batch = int(os.environ.get("ZOO_CHECK_BATCH", "16"))
        rep = check_gradients(runner, imgs, "quick", name="zoo", batch_size=batch)
    except Exception as exc:
        return {"gc_outcome": "error", "gc_detail": f"{type(exc).__name__}: {str(exc)[:200]}"}
    return {
        "gc_outcome": rep.outcome,
        "gc_ratio": rep.ratio,
        "gc_error": rep.error,
        "gc_tolerance": rep.tolerance,
        "gc_worst_ratio": rep.worst_ratio,
        "gc_step": rep.step,
        "gc_step_ratios": rep.step_ratios,
        "gc_s": round(rep.seconds, 2),
    }


def run_model(
    spec: str, formats: list[str], size: int, gradcheck: bool = False, emit: Any = None
) -> list[dict[str, Any]]:
    """Convert ``spec`` to each of ``formats`` and compare ovdiv's gradient with the torch reference.

    The model is built and its float32/float64 reference gradients computed once (fp32 and onnx share them;
    fp16 and int8 have their own reference models). ``emit(result)`` is called as each format finishes.
    """
    import warnings

    warnings.filterwarnings("ignore")
    import numpy as np
    import openvino as ov
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    from ovdiv.attribution import VJPModel, unsupported_ops
    from ovdiv.errors import UnsupportedOpError

    t_build = time.perf_counter()
    try:
        model, default = build_model(spec)
        x = _input_for(model, size, default)
    except Exception as exc:
        return [
            {"model": spec, "format": f, "status": "error", "detail": f"torch: {type(exc).__name__}: {str(exc)[:200]}"}
            for f in formats
        ]
    build_s = time.perf_counter() - t_build
    refs: dict[int, tuple[int, Any, Any, Any]] = {}  # id(ref_model) -> (target, g32, g64, float64 logits)

    def reference(ref_model: Any) -> tuple[int, Any, Any, Any]:
        if id(ref_model) not in refs:
            with torch.no_grad():
                target = int(ref_model(x)[0].argmax())
            g32 = _grad(ref_model, x, target)
            m64 = copy.deepcopy(ref_model).double()
            g64 = _grad(m64, x.double(), target)
            with torch.no_grad():
                logits64 = m64(x.double()).numpy()
            del m64
            _release_memory()  # the float64 copy's pages back to the OS before the VJP model is compiled
            refs[id(ref_model)] = (target, g32, g64, logits64)
        return refs[id(ref_model)]

    results: list[dict[str, Any]] = []
    for fmt in formats:
        if results and emit is not None:
            emit(results[-1])
        res: dict[str, Any] = {"model": spec, "format": fmt, "size": int(x.shape[-1])}
        t0 = time.perf_counter() - build_s
        results.append(res)
        with tempfile.TemporaryDirectory() as tmp:
            try:
                ov_model, ref_model = _convert(model, x, fmt, tmp)
            except ReferenceBuildError as exc:
                res.update(status="error", detail=str(exc)[:300])
                continue
            except Exception as exc:
                res.update(status="convert-failed", detail=f"{type(exc).__name__}: {str(exc)[:300]}")
                continue
            res["convert_s"] = round(time.perf_counter() - t0, 1)
            res.update(getattr(ref_model, "zoo_fold", {}))
            try:  # the torch reference first: its float64 copy is freed before the VJP model is compiled (peak memory
                # of the largest models: tv:vit_h_14 needs 12.8 GB for forward + VJP alone, 5 GB for the float64 copy)
                target, g32, g64, logits64 = reference(ref_model)
                with torch.no_grad():
                    logits32 = ref_model(x).numpy()
            except Exception as exc:
                res.update(status="error", detail=f"torch reference: {type(exc).__name__}: {str(exc)[:300]}")
                continue
            try:
                runner = VJPModel(ov_model)
            except UnsupportedOpError as exc:
                try:
                    ops = unsupported_ops(ov.Core().read_model(ov_model))
                except Exception:
                    ops = []
                res.update(status="unsupported", ops=ops, detail=str(exc)[:300])
                continue
            except Exception as exc:
                res.update(status="error", detail=f"ovdiv: {type(exc).__name__}: {str(exc)[:300]}")
                continue
            try:
                t1 = time.perf_counter()
                logits, g = runner.gradient(x.numpy(), [target])
                res["vjp_s"] = round(time.perf_counter() - t1, 2)
            except Exception as exc:
                res.update(status="error", detail=f"{type(exc).__name__}: {str(exc)[:300]}")
                continue
            if not (np.isfinite(logits32).all() and np.isfinite(g64).all() and np.linalg.norm(g64) > 0):
                # NaN comparisons are False: without this a NaN reference read as "ok" (timm efficientvit_b0 int8:
                # NNCF's torch quantizer divides by a zero calibration range, the IR's FakeQuantize does not).
                bad = not np.isfinite(g64).all() or not np.isfinite(logits32).all()
                ours = "finite" if np.isfinite(g).all() else "not finite"
                res.update(
                    status="error",
                    detail=f"torch reference gradient is {'NaN/inf' if bad else 'all-zero'}; ovdiv's is {ours}",
                )
                continue
            err, floor = _rel(g, g64), _rel(g32, g64)
            rho = _spearman(g, g64)
            wrong = rho < SPEARMAN_OK and err > FLOOR_FACTOR * floor
            res.update(
                status="wrong" if wrong else "ok",
                rel_l2=err,
                floor=floor,
                spearman=rho,
                logits_diff=float(np.abs(logits - logits32).max()),
                logits_rel=_logits_rel(logits, logits64),
                grad_norm=float(np.linalg.norm(g64)),
            )
            if fmt == "fp16" and res["logits_rel"] > LOGITS_MATCH:
                # the reference is not the IR's function (a fold or rounding it does not mirror): say so
                res["detail"] = (
                    f"fp16 reference does not match the IR: logits differ by {res['logits_rel']:.1e} of their "
                    f"scale (> {LOGITS_MATCH:g}; {res.get('bn_folded', 0)} BatchNorm(s) folded, "
                    f"{res.get('bn_unfolded', 0)} kept)"
                )
            if (err > FLOOR_FACTOR * floor or err > ALIGN_ABOVE) and fmt in ("fp32", "onnx", "fp16"):
                try:
                    res.update(_kinks(ref_model, x, ov_model))
                except Exception as exc:
                    res["kinks_detail"] = f"{type(exc).__name__}: {str(exc)[:120]}"
                res.update(_aligned_fields(ref_model, x, ov_model, target, g, wrong))
            del runner  # its compiled batch-1 VJP model too: the check compiles its own (batch 2)
            _release_memory()
            if gradcheck:
                res.update(_gradient_check(VJPModel(ov_model), x))
            res["total_s"] = round(time.perf_counter() - t0, 1)
    if results and emit is not None:
        emit(results[-1])
    return results


def run_case(spec: str, fmt: str, size: int, gradcheck: bool = False) -> dict[str, Any]:
    """One model in one format (see :func:`run_model`)."""
    return run_model(spec, [fmt], size, gradcheck)[0]


# ---------------------------------------------------------------------------------------------- driver
def _worker_cmd(spec: str, formats: list[str], size: int, gradcheck: bool) -> list[str]:
    cmd = [sys.executable, __file__, "--worker", spec, ",".join(formats), str(size)]
    return [*cmd, "--gradient-check"] if gradcheck else cmd


def _parse(stdout: str) -> list[dict[str, Any]]:
    rows = []
    for line in (stdout or "").splitlines():
        if line.startswith("{"):
            try:
                rows.append(dict(json.loads(line)))
            except json.JSONDecodeError:
                continue
    return rows


def _run_model(spec: str, formats: list[str], size: int, timeout: float, gradcheck: bool) -> list[dict[str, Any]]:
    """All ``formats`` of one model in one worker process (``timeout`` seconds per format)."""
    limit = timeout * len(formats)
    try:
        proc = subprocess.run(
            _worker_cmd(spec, formats, size, gradcheck), capture_output=True, text=True, timeout=limit
        )
        rows, miss = _parse(proc.stdout), "error"
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
        detail = f"worker: {tail[0][:300]}"
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout
        rows, miss, detail = _parse(out or ""), "timeout", f"> {limit:.0f} s for {','.join(formats)}"
    got = {r["format"] for r in rows}
    return rows + [{"model": spec, "format": f, "status": miss, "detail": detail} for f in formats if f not in got]


def _load(out: Path) -> list[dict[str, Any]]:
    if not out.is_file():
        return []
    rows: dict[tuple[str, str], dict[str, Any]] = {}  # the last result of a model+format wins (re-runs)
    for line in out.read_text().splitlines():
        if line.strip().startswith("{"):
            r = json.loads(line)
            rows[(r["model"], r["format"])] = r
    return list(rows.values())


def _fmt_row(r: dict[str, Any]) -> str:
    if r["status"] in ("ok", "wrong"):
        info = f"relL2 {r['rel_l2']:.1e} floor {r['floor']:.1e} rho {r['spearman']:.5f}"
        if r.get("rel_l2_aligned") is not None:
            info += f" | aligned relL2 {r['rel_l2_aligned']:.1e} floor {r['floor_aligned']:.1e}"
            info += f" rho {r['spearman_aligned']:.5f}"
    elif r["status"] == "unsupported":
        info = ", ".join(r.get("ops") or []) or r.get("detail", "")
    else:
        info = r.get("detail", "")
    return f"{r['model']:<42} {r['format']:<5} {r['status']:<14} {info[:110]}"


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    counts: dict[str, dict[str, int]] = {}
    for r in rows:
        c = counts.setdefault(r["format"], {})
        c[r["status"]] = c.get(r["status"], 0) + 1
    return {
        "bench": "zoo_parity",
        "n": len(rows),
        "counts": counts,
        "wrong": sorted(f"{r['model']}/{r['format']}" for r in rows if r["status"] == "wrong"),
        "wrong_raw_explained_by_kinks": sorted(
            f"{r['model']}/{r['format']}" for r in rows if r.get("status_raw") == "wrong" and r["status"] == "ok"
        ),
        "unsupported_ops": sorted({op.split(" x")[0] for r in rows for op in r.get("ops") or []}),
        "worst_rel_l2_over_floor": _worst_ratio(rows),
        "worst_rel_l2_over_floor_aligned": _worst_ratio(rows, "_aligned"),
        **_gc_summary(rows),
    }


def _worst_ratio(rows: list[dict[str, Any]], suffix: str = "") -> dict[str, Any] | None:
    """The row with the largest rel L2 / floor (``suffix="_aligned"``: against the kink-aligned reference)."""
    rel, floor, rho = f"rel_l2{suffix}", f"floor{suffix}", f"spearman{suffix}"
    scored = [r for r in rows if r.get(floor) and r.get(rel) is not None]
    if not scored:
        return None
    w = max(scored, key=lambda r: r[rel] / r[floor])
    return {"case": f"{w['model']}/{w['format']}", "ratio": round(w[rel] / w[floor], 2), "spearman": w[rho]}


def _gc_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Gradient-check outcomes; a ``failed`` check on a model whose gradient is ``ok`` is a false alarm."""
    checked = [r for r in rows if r.get("gc_outcome")]
    if not checked:
        return {}
    out: dict[str, int] = {}
    for r in checked:
        out[r["gc_outcome"]] = out.get(r["gc_outcome"], 0) + 1
    ratios = [r for r in checked if r.get("gc_ratio") is not None]
    worst = max(ratios, key=lambda r: r["gc_ratio"]) if ratios else None
    return {
        "gradient_check": out,
        "gradient_check_false_alarms": sorted(
            f"{r['model']}/{r['format']}" for r in checked if r["gc_outcome"] == "failed" and r["status"] == "ok"
        ),
        "gradient_check_inconclusive": sorted(
            f"{r['model']}/{r['format']}" for r in checked if r["gc_outcome"] == "inconclusive"
        ),
        "gradient_check_worst_ratio": (
            {"case": f"{worst['model']}/{worst['format']}", "ratio": worst["gc_ratio"]} if worst else None
        ),
    }


def _g(v: Any, spec: str) -> str:
    return format(v, spec) if isinstance(v, (int, float)) else ""


_PAGE_INTRO = """# Zoo parity: ovdiv's gradients on the torchvision and timm zoos

Generated by `scripts/zoo_parity.py` (issue 14): every torchvision classification model and one model per
timm family, random weights (zero-initialised heads and layer scales re-drawn, BatchNorm statistics
randomised), converted to each format; ovdiv's gradient of the top-1 logit of one random image
(`VJPModel.gradient`) is compared with torch autograd in float64 (two copies of the image: torch's CPU
BatchNorm backward is wrong at batch 1 after `flatten(2).transpose(1, 2)`).

* **fp32**: `ov.convert_model` IR in f32; **onnx**: `torch.onnx.export` (opset 17, dynamic batch) read
  directly; reference for both: torch float64. **fp16**: the IR saved with `compress_to_fp16=True`;
  reference: torch float64 of the model rounded as the IR is (conv+BatchNorm folded by data flow in
  OpenVINO's f32 order, then every parameter rounded to f16; its logits match the IR's to f32 precision).
  **int8**: `nncf.quantize` of the torch model (3 random calibration images) converted to an IR of
  FakeQuantize ops, differentiated with the straight-through estimator; reference: torch autograd of the
  NNCF-quantized torch model (whose quantizers have the same STE backward) in float64, at 128 px. Measured
  on 64 of the models (every timm family, 18 torchvision models); the others are `not-run` for int8.
* **status**: `ok`; `wrong` = Spearman of the channel-max maps < 0.999 **and** rel L2 > 10x the torch
  float32-vs-float64 floor on the same input, against torch float64 and, where it can be built, against the
  kink-aligned reference too; `unsupported` (op types without a rule);
  `convert-failed` (the converter, not ovdiv); `not-run` (not measured in this sweep; the reason is in
  the note below the table).
* **grad. check**: ovdiv's own `--gradient-check quick` (`check_gradients`: VJP vs finite differences of
  the converted model's own forward, 2 images x 3 directions) on the same converted model; *check ratio*
  is its verdict statistic (median error / tolerance, fails above 1). A `failed` check on an `ok` model
  would be a false alarm.
* **rel L2 aligned** (fp32/fp16/onnx rows above 10x the floor or above 1e-4): rel L2 vs the *kink-aligned*
  reference, torch float64 autograd of the model with every ReLU mask and max-pool argmax taken from the
  converted model's own f32 forward (no ovdiv rule involved); the details give its own f32-vs-f64 floor,
  Spearman and the ReLU units / max-pool windows on which OpenVINO's f32 forward and torch float64 disagree.
* **size**: the smallest input size tried that the model accepts (`--size`, else the model's own).

"""


def markdown(rows: list[dict[str, Any]], summ: dict[str, Any], command: str = "", note: str = "") -> str:
    """The sweep as a markdown page: counts, one table row per model and format, the JSON summary line."""
    lines = [
        "| model | format | size | status | rel L2 | floor | rel L2 / floor | Spearman | rel L2 aligned | "
        "grad. check | check ratio | details |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = r["rel_l2"] / r["floor"] if r.get("floor") and r.get("rel_l2") is not None else None
        detail = ", ".join(r.get("ops") or []) if r["status"] == "unsupported" else r.get("detail", "")
        if r.get("gc_detail"):
            detail = (detail + "; " if detail else "") + f"gradient check: {r['gc_detail']}"
        if r.get("rel_l2_aligned") is not None:
            kinks = f"kink-aligned: floor {r['floor_aligned']:.1e}, Spearman {r['spearman_aligned']:.6f}, "
            kinks += f"{r.get('aligned_relu_flips', 0)} ReLU / {r.get('aligned_pool_flips', 0)} max-pool flip(s)"
            if r.get("status_raw") == "wrong" and r["status"] == "ok":
                kinks += " (wrong vs raw f64: explained by the kinks)"
            detail = (detail + "; " if detail else "") + kinks
        elif r.get("relu_sign_flips") or r.get("maxpool_near_ties") or r.get("clamp_kink_flips"):
            kinks = f"kinks vs torch f64: {r.get('relu_sign_flips', 0)} ReLU sign flip(s), "
            if r.get("clamp_kink_flips"):
                kinks += f"{r['clamp_kink_flips']} ReLU6/clamp kink flip(s), "
            kinks += f"{r.get('maxpool_near_ties', 0)} max-pool near-tie(s)"
            detail = (detail + "; " if detail else "") + kinks
        if r.get("aligned_detail"):
            detail = (detail + "; " if detail else "") + r["aligned_detail"]
        if r.get("gc_step") and r["gc_step"] != 1e-3:
            detail = (detail + "; " if detail else "") + f"check step {r['gc_step']:g}"
        detail = str(detail).replace("|", "\\|").replace("\n", " ")[:200]
        lines.append(
            f"| `{r['model']}` | {r['format']} | {r.get('size', '')} | {r['status']} | {_g(r.get('rel_l2'), '.2e')} | "
            f"{_g(r.get('floor'), '.2e')} | {_g(ratio, '.2f')} | {_g(r.get('spearman'), '.6f')} | "
            f"{_g(r.get('rel_l2_aligned'), '.2e')} | {r.get('gc_outcome', '')} | {_g(r.get('gc_ratio'), '.3f')} | "
            f"{detail} |"
        )
    counts = "\n".join(
        f"| {fmt} | " + ", ".join(f"{k}: {v}" for k, v in sorted(c.items())) + " |" for fmt, c in summ["counts"].items()
    )
    head = _PAGE_INTRO + (f"Command: `{command}`\n\n" if command else "")
    return (
        head
        + "| format | results |\n|---|---|\n"
        + counts
        + "\n\n"
        + (note.strip() + "\n\n" if note.strip() else "")
        + "\n".join(lines)
        + "\n\nSummary (the script's JSON line):\n\n"
        "```json\n" + json.dumps(summ) + "\n```\n"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--models", help="comma list: tv:NAME, timm:NAME (default: all)")
    ap.add_argument("--family", help="comma list of timm families (" + ", ".join(TIMM_FAMILIES) + ")")
    ap.add_argument("--torchvision", action="store_true", help="only the torchvision classifiers")
    ap.add_argument("--formats", default=",".join(FORMATS), help="comma list of " + ", ".join(FORMATS))
    ap.add_argument("--size", type=int, default=224, help="input size where the model allows it")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per model and format")
    ap.add_argument("--out", type=Path, default=Path("zoo_parity.jsonl"), help="results, one JSON per line")
    ap.add_argument("--list", action="store_true", help="print the models and exit")
    ap.add_argument(
        "--gradient-check",
        action="store_true",
        help="also run ovdiv's quick gradient check (check_gradients) on each converted model",
    )
    ap.add_argument("--retry", help="comma list of statuses to measure again (e.g. timeout,error)")
    ap.add_argument("--markdown", type=Path, help="write the table of --out's results for the models asked as markdown")
    ap.add_argument("--markdown-note", type=Path, help="markdown file whose text goes above the table")
    ap.add_argument("--markdown-command", help="the sweep's command line, quoted on the page")
    ap.add_argument("--no-run", action="store_true", help="measure nothing: only report what --out holds")
    ap.add_argument("--worker", nargs=3, metavar=("MODEL", "FORMATS", "SIZE"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        spec, fmts, size = a.worker
        try:
            run_model(
                spec, fmts.split(","), int(size), a.gradient_check, emit=lambda r: print(json.dumps(r), flush=True)
            )
        except Exception:
            traceback.print_exc()
        return 0
    if a.models:
        models = [m if ":" in m else f"timm:{m}" for m in a.models.split(",")]
    elif a.family:
        models = [f"timm:{TIMM_FAMILIES[f]}" for f in a.family.split(",")]
    elif a.torchvision:
        models = torchvision_names()
    else:
        models = all_models()
    if a.list:
        print("\n".join(models))
        return 0
    formats = [f for f in a.formats.split(",") if f]
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        ap.error(f"unknown format(s) {bad}; choose from {FORMATS}")
    retry = set((a.retry or "").split(","))
    done = {(r["model"], r["format"]) for r in _load(a.out) if r["status"] not in retry}
    todo = [(m, [f for f in formats if (m, f) not in done]) for m in models]
    todo = [(m, fs) for m, fs in todo if fs and not a.no_run]

    def task(mf: tuple[str, list[str]]) -> list[dict[str, Any]]:
        # Another sweep may share --out: skip what it measured since this one started.
        now = {(r["model"], r["format"]) for r in _load(a.out) if r["status"] not in retry}
        fmts = [f for f in mf[1] if (mf[0], f) not in now]
        if not fmts:
            return []
        rows = _run_model(mf[0], fmts, a.size, a.timeout, a.gradient_check)
        with open(a.out, "a") as fh:  # one line per result: a crash loses nothing already measured
            fh.write("".join(json.dumps(r) + "\n" for r in rows))
        for r in rows:
            print(_fmt_row(r), file=sys.stderr, flush=True)
        return rows

    with ThreadPoolExecutor(max_workers=max(1, a.jobs)) as pool:
        list(pool.map(task, todo))
    wanted = {(m, f) for m in models for f in formats}
    rows = [r for r in _load(a.out) if (r["model"], r["format"]) in wanted]
    have = {(r["model"], r["format"]) for r in rows}
    rows += [{"model": m, "format": f, "status": "not-run"} for m, f in sorted(wanted - have)]
    rows.sort(key=lambda r: (r["model"], FORMATS.index(r["format"])))
    print(f"{'model':<42} {'fmt':<5} {'status':<14} details")
    for r in rows:
        print(_fmt_row(r))
    summ = summary(rows)
    if a.markdown:
        tmp = a.markdown.with_suffix(a.markdown.suffix + ".tmp")
        note = a.markdown_note.read_text() if a.markdown_note else ""
        tmp.write_text(markdown(rows, summ, a.markdown_command or "", note))
        tmp.replace(a.markdown)
    print(json.dumps(summ))
    return 0


if __name__ == "__main__":
    sys.exit(main())
