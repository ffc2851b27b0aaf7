"""Fixtures for attribution tests: torch -> IR/ONNX conversion and the fp32 noise-floor parity check.

Parity criterion (issue 5): the IR gradient ``g_ov`` matches torch autograd ``g32`` when

    rel_l2(g_ov, g32) <= 2 * rel_l2(g32, g64) + EPS_FLOOR

where ``g64`` is torch autograd of the same module in float64 on the same input (the fp32 noise floor).
``EPS_FLOOR = 1e-5`` is an absolute floor on the *relative* error for graphs whose fp64 difference is ~0
(one fp32 ulp is 6e-8 relative; different summation orders in oneDNN vs ATen kernels legitimately give
~1e-7..1e-6 on these graphs, while a wrong rule gives errors of order 1e-2..1).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov
import pytest
import torch

EPS_FLOOR = 1e-5


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    """``||a - b|| / ||b||`` (0 when both are 0)."""
    nb = float(np.linalg.norm(b))
    na = float(np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64)))
    return na / nb if nb > 0 else na


def torch_grad(module: torch.nn.Module, x: torch.Tensor, target: np.ndarray) -> np.ndarray:
    """``d logits[n, target[n]] / d x`` by torch autograd (dtype of ``x``)."""
    xx = x.clone().requires_grad_(True)
    y = module(xx)
    if y.ndim != 2:
        y = y.reshape(y.shape[0], -1)
    (g,) = torch.autograd.grad(y.gather(1, torch.as_tensor(target)[:, None]).sum(), xx)
    return g.detach().numpy()


def to_ir(module: torch.nn.Module, x: torch.Tensor) -> ov.Model:
    """``openvino.convert_model`` with dynamic batch and static C/H/W."""
    torch.backends.mha.set_fastpath_enabled(False)
    return ov.convert_model(module.eval(), example_input=x, input=[-1, *x.shape[1:]])


def to_onnx(module: torch.nn.Module, x: torch.Tensor, path: Path, *, dynamo: bool = False) -> ov.Model:
    """``torch.onnx.export`` read directly by OpenVINO: legacy (opset 17, dynamic batch) or dynamo
    (opset 18, static batch; :class:`VJPModel` makes the batch dynamic)."""
    if dynamo:
        torch.onnx.export(module.eval(), (x,), str(path), opset_version=18, dynamo=True, verbose=False)
        return ov.Core().read_model(str(path))
    torch.onnx.export(
        module.eval(),
        (x,),
        str(path),
        opset_version=17,
        dynamo=False,
        input_names=["x"],
        output_names=["logits"],
        dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}},
    )
    return ov.Core().read_model(str(path))


def randomize_bn(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random BN statistics/affine so folded BN is not an identity (as in the feasibility study)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=gen) * 0.4 - 0.2)
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                if m.affine:
                    m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                    m.bias.copy_(torch.rand(n, generator=gen) * 0.4 - 0.2)
    return module


def parity(
    module: torch.nn.Module,
    x: torch.Tensor,
    target: np.ndarray | None = None,
    *,
    model: ov.Model | None = None,
    reference: torch.nn.Module | None = None,
) -> dict[str, Any]:
    """Gradient of the IR (``model`` or ``to_ir(module)``) vs torch autograd of ``reference or module``."""
    from ovdiv.attribution import VJPModel

    module = module.eval()
    ref = (reference or module).eval()
    model = model if model is not None else to_ir(module, x)
    runner = VJPModel(model)
    with torch.no_grad():
        y = ref(x)
    y = y.reshape(y.shape[0], -1)
    if target is None:
        target = (np.arange(x.shape[0]) * 7) % y.shape[1]
    logits, g = runner.gradient(x.numpy(), target)
    g32 = torch_grad(ref, x, target)
    g64 = torch_grad(copy.deepcopy(ref).double(), x.double(), target)
    err, floor = rel_l2(g, g32), rel_l2(g32, g64)
    return {
        "err": err,
        "floor": floor,
        "ok": err <= 2 * floor + EPS_FLOOR,
        "logits_err": float(np.abs(logits - y.numpy()).max()),
        "grad": g,
        "g32": g32,
        "runner": runner,
        "norm": float(np.linalg.norm(g32)),
    }


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
    np.random.seed(0)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))


@pytest.fixture
def helpers() -> Any:
    """Namespace with the helpers above (pytest importlib mode cannot import conftest directly)."""

    class H:
        rel_l2 = staticmethod(rel_l2)
        torch_grad = staticmethod(torch_grad)
        to_ir = staticmethod(to_ir)
        to_onnx = staticmethod(to_onnx)
        parity = staticmethod(parity)
        randomize_bn = staticmethod(randomize_bn)
        EPS = EPS_FLOOR

    return H


ParityFn = Callable[..., dict[str, Any]]
