"""Slow: full-size torchvision resnet50 / resnext50_32x4d IR saliency vs torch autograd (issue 5).

Random weights with random BN statistics (chaotic nets), batch 4 at 224 px. Acceptance: the Spearman
correlation of the channel-max ``|grad|`` maps, IR vs torch fp32, is >= 0.999 for every image and no more
than 1e-4 below the torch-fp32-vs-fp64 Spearman (the noise floor) on the same input.
Run: ``pytest tests/attribution/test_attribution_fullsize.py -m slow -s``.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from ovdiv.attribution import VJPModel


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["resnet50", "resnext50_32x4d"])
def test_fullsize_ir_saliency_spearman(arch: str, helpers) -> None:
    import torchvision

    torch.manual_seed(0)
    model = helpers.randomize_bn(getattr(torchvision.models, arch)()).eval()
    x = torch.randn(4, 3, 224, 224)
    t = np.array([1, 10, 100, 999])
    ir = helpers.to_ir(model, x)
    _, g_ov = VJPModel(ir).gradient(x.numpy(), t)
    g32 = helpers.torch_grad(model, x, t)
    g64 = helpers.torch_grad(copy.deepcopy(model).double(), x.double(), t)

    def cmax(g: np.ndarray) -> np.ndarray:
        return np.abs(g).max(1).reshape(len(g), -1)

    s_ov = [spearmanr(a, b)[0] for a, b in zip(cmax(g_ov), cmax(g32), strict=True)]
    s_floor = [spearmanr(a, b)[0] for a, b in zip(cmax(g32), cmax(g64), strict=True)]
    s_ov64 = [spearmanr(a, b)[0] for a, b in zip(cmax(g_ov), cmax(g64), strict=True)]
    record = {
        "arch": arch,
        "spearman_ov_vs_torch32": [round(v, 7) for v in s_ov],
        "spearman_torch32_vs_64": [round(v, 7) for v in s_floor],
        "spearman_ov_vs_torch64": [round(v, 7) for v in s_ov64],
        "rel_l2_ov_vs_torch32": helpers.rel_l2(g_ov, g32),
        "rel_l2_torch32_vs_64": helpers.rel_l2(g32, g64),
    }
    print(json.dumps(record))
    assert min(s_ov) >= 0.999, record
    assert all(o >= f - 1e-4 for o, f in zip(s_ov, s_floor, strict=True)), record
