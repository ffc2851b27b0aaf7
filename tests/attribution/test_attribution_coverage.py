"""Slow: op coverage of the VJP rules on the full-size architectures of issue 5, in every artifact flavour.

For torchvision resnet50, resnext50_32x4d, mnasnet1_0, squeezenet1_1, mobilenet_v3_small and timm
deit_tiny_patch16_224 (random weights, 224 px): FP32 IR, FP16-compressed IR, NNCF INT8 IR, ONNX (legacy
and dynamo exporters) read directly — ``unsupported_ops`` is empty and the VJP graph builds. Gradients of
these flavours are checked on the tiny families in the default run and on resnet50/resnext50 in
``test_attribution_fullsize.py``.
"""

from __future__ import annotations

import numpy as np
import openvino as ov
import pytest
import torch

from ovdiv.attribution import build_vjp_model, unsupported_ops

ARCHS = ["resnet50", "resnext50_32x4d", "mnasnet1_0", "squeezenet1_1", "mobilenet_v3_small", "deit_tiny"]


def _model(arch: str) -> torch.nn.Module:
    if arch == "deit_tiny":
        import timm

        return timm.create_model("deit_tiny_patch16_224", pretrained=False).eval()
    import torchvision

    return getattr(torchvision.models, arch)().eval()


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_every_flavour_is_supported(arch: str, helpers, tmp_path) -> None:
    nncf = pytest.importorskip("nncf")
    torch.manual_seed(0)
    model = _model(arch)
    x = torch.randn(1, 3, 224, 224)
    ir = helpers.to_ir(model, x)
    ov.save_model(ir, tmp_path / "fp16.xml", compress_to_fp16=True)
    calib = [np.random.default_rng(i).standard_normal((1, 3, 224, 224)).astype(np.float32) for i in range(3)]
    int8 = nncf.quantize(ir, nncf.Dataset(calib), subset_size=3)
    flavours = {
        "fp32": ir,
        "fp16": ov.Core().read_model(tmp_path / "fp16.xml"),
        "int8": int8,
        "onnx": helpers.to_onnx(model, x, tmp_path / "m.onnx"),
    }
    try:
        torch.onnx.export(model, (x,), str(tmp_path / "d.onnx"), opset_version=18, dynamo=True)
        flavours["onnx_dynamo"] = ov.Core().read_model(tmp_path / "d.onnx")
    except Exception as exc:  # the dynamo exporter is optional; ovdiv.export falls back to torchscript
        print(f"{arch}: dynamo export failed ({type(exc).__name__})")
    report = {}
    for name, m in flavours.items():
        if name == "onnx_dynamo":
            m.reshape({m.input(0): ov.PartialShape([-1, 3, 224, 224])})
        report[name] = unsupported_ops(m)
        if not report[name]:
            build_vjp_model(m)
    print(arch, report)
    assert all(v == [] for v in report.values()), report
