"""GoogLeNet / Inception-v1 in the registry: torchvision's architecture (aux heads off), weights-compatible."""

from __future__ import annotations

import torch
import torchvision

from ovdiv.models import count_params, create_model, model_info
from ovdiv.train.weights import load_pretrained


def test_googlenet_is_torchvision_googlenet_without_aux_heads(tmp_path):
    ref = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=True, num_classes=7)
    ref.eval()
    path = tmp_path / "tv.pth"
    torch.save(ref.state_dict(), path)
    ours = create_model("googlenet", num_classes=7).eval()
    report = load_pretrained(ours, path)
    assert report["missing"] == [] and all(k.startswith(("aux1.", "aux2.")) for k in report["skipped"])
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x))
    ours.train()
    assert ours(x).shape == (2, 7)  # a tensor in training mode too (no GoogLeNetOutputs)
    assert count_params("googlenet", 7) == sum(p.numel() for n, p in ref.named_parameters() if not n.startswith("aux"))


def test_transform_input_matches_torchvision():
    ref = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True, transform_input=True).eval()
    ours = create_model("googlenet", transform_input=True).eval()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x))


def test_tiny_googlenet():
    info = model_info("tiny_googlenet")
    assert info.is_tiny and info.family == "googlenet" and info.input_size == (64, 64)
    m = create_model("tiny_googlenet").eval()
    assert m(torch.zeros(2, 3, 64, 64)).shape == (2, 10)
    assert 20_000 < count_params("tiny_googlenet") < 200_000
    assert sum(type(mod).__name__ == "Inception" for mod in m.modules()) == 3
