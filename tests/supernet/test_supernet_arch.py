"""SubnetResNet / arch specs / MAC counting (no nncf): checked against torchvision and forward hooks."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torchvision.models import resnet50

from ovdiv.errors import ConfigError
from ovdiv.supernet.arch import (
    BUILDER,
    SubnetResNet,
    build_subnet,
    count_macs_and_weights,
    resnet50_spec,
    validate_arch_spec,
)

pytestmark = pytest.mark.nas


def _hook_count(model: nn.Module, size: tuple[int, int]) -> tuple[int, int]:
    """Independent MAC / weight count: forward hooks on every Conv2d / Linear that actually runs."""
    macs = 0
    weights = 0

    def conv_hook(m: nn.Conv2d, _inp: tuple[torch.Tensor], out: torch.Tensor) -> None:
        nonlocal macs, weights
        k = m.weight[0].numel()  # C_in/groups * kh * kw
        macs += out.shape[1] * out.shape[2] * out.shape[3] * k
        weights += m.weight.numel()

    def fc_hook(m: nn.Linear, _inp: tuple[torch.Tensor], _out: torch.Tensor) -> None:
        nonlocal macs, weights
        macs += m.weight.numel()
        weights += m.weight.numel()

    hs = []
    for mod in model.modules():
        if isinstance(mod, nn.Conv2d):
            hs.append(mod.register_forward_hook(conv_hook))
        elif isinstance(mod, nn.Linear):
            hs.append(mod.register_forward_hook(fc_hook))
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, *size))
    for h in hs:
        h.remove()
    return macs, weights


def _narrow_spec() -> dict:
    spec = resnet50_spec(7)
    spec["stem"] = 32
    for s, st in enumerate(spec["stages"]):
        st["out"] = [152, 304, 608, 1224][s]
        for b, blk in enumerate(st["blocks"]):
            blk["mid"] = [[32, 48], [72, 96], [152, 200], [304, 408]][s]
            blk["skip"] = b == len(st["blocks"]) - 1 and s != 2
    spec["stages"][1]["blocks"][0]["final_relu"] = False
    return spec


def test_full_spec_is_torchvision_resnet50() -> None:
    torch.manual_seed(0)
    ref = resnet50(num_classes=10).eval()
    net = SubnetResNet(resnet50_spec(10)).eval()
    missing, unexpected = net.load_state_dict(ref.state_dict(), strict=True)
    assert not missing and not unexpected
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(net(x), ref(x))


@pytest.mark.parametrize("size", [(224, 224), (32, 32), (64, 48)])
def test_macs_match_hooks(size: tuple[int, int]) -> None:
    for spec in (resnet50_spec(1000), _narrow_spec()):
        assert count_macs_and_weights(spec, size) == _hook_count(SubnetResNet(spec), size)


def test_resnet50_known_count() -> None:
    # torchvision publishes 4.09 GFLOPS (= GMACs) and 25,557,032 parameters for ResNet-50
    macs, weights = count_macs_and_weights(resnet50_spec(1000), (224, 224))
    assert 4.085e9 < macs < 4.095e9
    ref = resnet50()
    assert sum(p.numel() for p in ref.parameters()) == 25_557_032
    conv_fc = sum(p.numel() for n, p in ref.named_parameters() if p.ndim == 4 or n == "fc.weight")
    assert weights == conv_fc


def test_skipped_blocks_are_identity_and_final_relu() -> None:
    spec = _narrow_spec()
    net = SubnetResNet(spec).eval()
    assert isinstance(net.layer1[2], nn.Identity) and not isinstance(net.layer3[5], nn.Identity)
    assert not any(k.startswith("layer1.2.") for k in net.state_dict())
    # without the final ReLU the block output can be negative
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        h = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        h = net.layer1(h)
        out = net.layer2[0](h)
    assert (out < 0).any()
    spec2 = copy.deepcopy(spec)
    spec2["stages"][1]["blocks"][0]["final_relu"] = True
    net2 = SubnetResNet(spec2).eval()
    net2.load_state_dict(net.state_dict())
    with torch.no_grad():
        assert (net2.layer2[0](h) >= 0).all()


@pytest.mark.parametrize(
    ("mutate", "msg"),
    [
        (lambda s: s.update(family="vgg"), "family"),
        (lambda s: s.update(stem=0), "stem"),
        (lambda s: s["stages"][0]["blocks"][0].update(skip=True), "cannot be skipped"),
        (lambda s: s["stages"][1]["blocks"][1].update(mid=[3]), "mid"),
        (lambda s: s.update(extra=1), "unknown key"),
    ],
)
def test_bad_specs(mutate, msg: str) -> None:
    spec = resnet50_spec(10)
    mutate(spec)
    with pytest.raises(ConfigError, match=msg):
        validate_arch_spec(spec)


def test_checkpoint_roundtrip_without_nncf(tmp_path) -> None:
    from ovdiv.models import load_checkpoint, save_checkpoint

    spec = _narrow_spec()
    net = build_subnet(num_classes=7, spec=spec).eval()
    p = save_checkpoint(
        tmp_path / "sub.pt", net, arch=BUILDER, arch_args={"spec": spec}, num_classes=7, input_size=(32, 32)
    )
    net2, meta = load_checkpoint(p)
    assert meta.arch == BUILDER
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(net(x), net2.eval()(x))
