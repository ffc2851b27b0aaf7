"""Ops whose indices/shapes are computed at run time from the dynamic batch (issue 14, item 1).

``x.shape[0]``-driven reshapes, ``expand`` of a class token, ``repeat_interleave`` along the batch (a
``Gather`` whose indices come from ``ShapeOf``) and ONNX ``Shape``-driven reshapes: :class:`VJPModel`
specialises the VJP graph to the batch it runs, so these fold to constants. Each module is exported by
``ov.convert_model`` and by ONNX (legacy exporter, dynamic batch) and checked against torch autograd at two
batch sizes (one compiled VJP model per batch size).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ovdiv.attribution import VJPModel


class BatchReshape(nn.Module):
    """``x.reshape(x.shape[0], ...)`` then a linear head (ONNX: Shape -> Gather -> Concat -> Reshape)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, 2, 1)
        self.fc = nn.Linear(4 * 3 * 3, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv(x))
        return self.fc(y.reshape(x.shape[0], 4, -1).reshape(x.shape[0], -1))


class ClassToken(nn.Module):
    """ViT-style ``cls.expand(x.shape[0], -1, -1)`` concatenated to patch tokens (Broadcast to a run-time shape)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, 8, 2, 2)
        self.cls = nn.Parameter(torch.randn(1, 1, 8))
        self.mix = nn.Linear(8, 8)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.proj(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(x.shape[0], -1, -1), t], 1)
        t = t + torch.softmax(t @ t.transpose(1, 2) * 0.3, -1) @ self.mix(t)
        return self.fc(t[:, 0])


class RepeatInterleave(nn.Module):
    """``repeat_interleave`` along the batch then a batch-driven reshape (Gather with run-time indices)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, 2, 1)
        self.fc = nn.Linear(2 * 2 * 3 * 3, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        idx = torch.arange(x.shape[0], device=x.device).repeat_interleave(2)
        z = y[idx] * torch.tensor([1.0, -0.5]).repeat(x.shape[0]).reshape(-1, 1, 1, 1)
        return self.fc(z.reshape(x.shape[0], -1))


class BatchOnes(nn.Module):
    """``x.new_ones(x.shape[0], ...)`` gate built from the batch (a constant branch through ShapeOf)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, 1, 1)
        self.fc = nn.Linear(3 * 6 * 6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = x.new_ones(x.shape[0], 3, 1, 1).cumsum(1) * 0.5
        return self.fc(torch.flatten(torch.tanh(self.conv(x)) * gate, 1))


MODULES = {"reshape": BatchReshape, "class_token": ClassToken, "repeat_interleave": RepeatInterleave, "ones": BatchOnes}


@pytest.mark.parametrize("fmt", ["ir", "onnx"])
@pytest.mark.parametrize("name", sorted(MODULES))
def test_batch_driven_ops_match_torch(name: str, fmt: str, helpers, tmp_path) -> None:
    model = MODULES[name]().eval()
    x0 = torch.randn(2, 3, 6, 6)
    ir = helpers.to_ir(model, x0) if fmt == "ir" else helpers.to_onnx(model, x0, tmp_path / f"{name}.onnx")
    runner = VJPModel(ir)
    for n in (3, 1):
        x = torch.randn(n, 3, 6, 6)
        res = helpers.parity(model, x, model=ir)
        assert res["norm"] > 0
        assert res["ok"], f"{name}/{fmt} batch {n}: rel L2 {res['err']:.3e} vs floor {res['floor']:.3e}"
        assert res["logits_err"] < 1e-4
        _, g = runner.gradient(x.numpy(), np.zeros(n, np.int64))
        assert g.shape == (n, 3, 6, 6)
    assert sorted(runner._vjp_by_batch) == [1, 3]
