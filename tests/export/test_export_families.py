"""Every tiny family (and the full-size paper architectures) exports and passes its self-check (slow)."""

from __future__ import annotations

import pytest
import torch

from ovdiv.data.synthetic import make_demo
from ovdiv.export import export_model
from ovdiv.models import create_model, list_models


@pytest.mark.slow
@pytest.mark.parametrize("name", list_models(tiny=True))
def test_tiny_family_exports_all_precisions(name: str, tmp_path) -> None:
    torch.manual_seed(0)
    calib = make_demo(96, split="test")
    arts = export_model(
        create_model(name, num_classes=10),
        tmp_path,
        name=name,
        input_size=(64, 64),
        formats=("onnx", "ir"),
        precisions=("fp32", "fp16", "int8"),
        calib=calib,
        min_int8_agreement=0.5,
    )
    assert len(arts) == 4 and all(a.check["passed"] for a in arts)
    assert arts[0].card.extra["onnx"]["exporter"] == "dynamo" and arts[0].card.extra["onnx"]["opset"] >= 17
    assert arts[3].card.extra["int8"]["model_type"] == ("transformer" if name == "tiny_deit" else None)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in list_models(tiny=False) if n != "resnext50"])
def test_full_size_exports_fp32(name: str, tmp_path) -> None:
    torch.manual_seed(0)
    arts = export_model(
        create_model(name, num_classes=1000),
        tmp_path,
        name=name,
        input_size=(224, 224),
        formats=("onnx", "ir"),
        precisions=("fp32", "fp16"),
        onnx_exporter="torchscript",
    )
    assert [a.check["passed"] for a in arts] == [True, True, True]
    assert arts[1].check["rel_err"] <= 1e-4 and arts[1].card.macs > 1e8
