"""CKA feature taps of quantized IRs stay on the data path (never on weight FakeQuantize subgraphs)."""

from __future__ import annotations

import numpy as np
import torch

from ovdiv.data import load
from ovdiv.export import export_model
from ovdiv.metrics import linear_cka
from ovdiv.models import create_model
from ovdiv.runtime import load_member


def test_int8_features_are_batch_shaped_and_match_fp32(tmp_path) -> None:
    torch.manual_seed(0)
    model = create_model("tiny_resnet", num_classes=10).eval()
    images = load("demo", limit=64)[0]
    export_model(
        model,
        tmp_path,
        name="m",
        formats=("ir",),
        precisions=("fp32", "int8"),
        input_size=(64, 64),
        calib=images,
        min_int8_agreement=0.0,
    )
    fp32 = load_member(tmp_path / "m_fp32.xml")
    int8 = load_member(tmp_path / "m_int8.xml")
    f32 = fp32.features(images, batch_size=64)
    # two batch sizes: a weight-subgraph tap would change its apparent width with the batch size
    q_a = int8.features(images, batch_size=64)
    q_b = int8.features(images, batch_size=24)
    assert set(q_a) == set(f32)
    for key in f32:
        assert q_a[key].shape == q_b[key].shape == f32[key].shape, key
        assert linear_cka(f32[key].astype(np.float64), q_a[key].astype(np.float64)) > 0.8, key
