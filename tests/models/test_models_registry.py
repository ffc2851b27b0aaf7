from __future__ import annotations

import pytest
import timm
import torch
import torchvision
from torch import nn

from ovdiv.errors import ModelError
from ovdiv.models import count_params, create_model, list_models, model_info, register_model

FULL = [
    "resnet50",
    "resnext50",
    "resnext50_32_2",
    "resnext50_32_4l",
    "resnext50_16_4",
    "mnasnet1_0",
    "squeezenet1_1",
    "deit_tiny_patch16_224",
]
TINY = ["tiny_resnet", "tiny_resnext", "tiny_mnasnet", "tiny_squeezenet", "tiny_deit"]


def _nparams(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_registry_lists_required_names() -> None:
    names = list_models()
    for n in FULL + TINY:
        assert n in names
    assert list_models("resnext50_*") == ["resnext50_16_4", "resnext50_32_2", "resnext50_32_4l"]
    assert set(list_models(tiny=True)) >= set(TINY)
    assert not set(list_models(tiny=False)) & set(TINY)


def test_model_info_fields() -> None:
    info = model_info("tiny_deit")
    assert info.is_tiny and info.family == "deit" and info.input_size == (64, 64)
    assert info.default_num_classes == 10 and info.defaults["patch_size"] == 8
    info = model_info("resnext50")
    assert not info.is_tiny and info.input_size == (224, 224)
    assert info.defaults["layers"] == (3, 4, 6, 3)
    families = {model_info(n).family for n in TINY}
    assert families == {"resnet", "resnext", "mnasnet", "squeezenet", "deit"}


@pytest.mark.parametrize(
    ("name", "reference"),
    [
        ("resnet50", lambda: torchvision.models.resnet50(num_classes=7)),
        ("resnext50", lambda: torchvision.models.resnext50_32x4d(num_classes=7)),
        ("mnasnet1_0", lambda: torchvision.models.mnasnet1_0(num_classes=7)),
        ("squeezenet1_1", lambda: torchvision.models.squeezenet1_1(num_classes=7)),
        ("deit_tiny_patch16_224", lambda: timm.create_model("deit_tiny_patch16_224", num_classes=7)),
    ],
)
def test_full_models_match_reference_implementation(name, reference) -> None:
    ours = create_model(name, num_classes=7)
    ref = reference()
    # same parameter names and shapes -> reference (e.g. torchvision) weights load unchanged
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    ours.load_state_dict(ref.state_dict())
    ours.eval()
    ref.eval()
    size = 224 if name.startswith("deit") else 64
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x))
        feats = ours.forward_features(x)
        torch.testing.assert_close(ours.forward_head(feats), ref(x))
        assert ours.forward_head(feats, pre_logits=True).ndim == 2


def _bottleneck_geometry(m: nn.Module) -> tuple[list[int], int, int]:
    layers = [len(getattr(m, f"layer{i}")) for i in range(1, 5)]
    conv2 = m.layer1[0].conv2
    return layers, conv2.groups, conv2.in_channels


@pytest.mark.parametrize(
    ("name", "layers", "groups", "width"),
    [
        ("resnext50_32_2", [3, 4, 6, 3], 32, 64),  # 32 groups x 2 channels
        ("resnext50_32_4l", [2, 2, 3, 2], 32, 128),  # 32 x 4, shallow
        ("resnext50_16_4", [3, 4, 6, 3], 16, 64),  # 16 x 4
    ],
)
def test_paper_resnext_variants(name, layers, groups, width) -> None:
    with torch.device("meta"):
        m = create_model(name, num_classes=1000)
    assert _bottleneck_geometry(m) == (layers, groups, width)
    assert m.dropout.p == pytest.approx(0.2)
    # the generic builder with the same arguments gives the same network
    with torch.device("meta"):
        g = create_model(
            "resnext50",
            num_classes=1000,
            cardinality=groups,
            width_per_group=width // groups,
            layers=layers,
            dropout=0.2,
        )
    assert _nparams(g) == _nparams(m) == count_params(name)


def test_mnasnet_dropout_default() -> None:
    with torch.device("meta"):
        m = create_model("mnasnet1_0", num_classes=10)
    assert m.classifier[0].p == pytest.approx(0.2)


def test_dropout_acts_before_fc_in_train_mode() -> None:
    torch.manual_seed(0)
    m = create_model("resnext50", num_classes=5, layers=[1, 1, 1, 1], cardinality=4, width_per_group=4, dropout=0.5)
    x = torch.randn(2, 3, 32, 32)
    m.train()
    feats = m.forward_features(x)
    with torch.no_grad():
        a, b = m.forward_head(feats), m.forward_head(feats)
    assert not torch.allclose(a, b)  # dropout is active on the pooled features
    m.eval()
    with torch.no_grad():
        torch.testing.assert_close(m.forward_head(feats), m.forward_head(feats))


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("size", [32, 64])
def test_tiny_models_forward(name: str, size: int) -> None:
    kwargs = {"img_size": size} if name == "tiny_deit" else {}
    m = create_model(name, num_classes=10, **kwargs).eval()
    assert _nparams(m) < 500_000
    x = torch.randn(3, 3, size, size)
    with torch.no_grad():
        y = m(x)
        torch.testing.assert_close(m.forward_head(m.forward_features(x)), y)
        assert m.forward_head(m.forward_features(x), pre_logits=True).shape[0] == 3
    assert y.shape == (3, 10) and torch.isfinite(y).all()


@pytest.mark.parametrize("name", TINY)
def test_tiny_models_train_loss_decreases(name: str) -> None:
    torch.manual_seed(0)
    m = create_model(name, num_classes=4)
    x = torch.randn(16, 3, 64, 64)
    y = torch.arange(16) % 4
    x = x + y.view(-1, 1, 1, 1).float()  # a learnable signal
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        loss = nn.functional.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_tiny_models_are_distinct_families() -> None:
    mods = {n: {type(mod).__name__ for mod in create_model(n).modules()} for n in TINY}
    assert "_BasicBlock" in mods["tiny_resnet"] and "_GroupedBottleneck" in mods["tiny_resnext"]
    assert "_InvertedResidual" in mods["tiny_mnasnet"] and "_Fire" in mods["tiny_squeezenet"]
    assert "Attention" in mods["tiny_deit"] and "LayerNorm" in mods["tiny_deit"]
    groups = {m.groups for m in create_model("tiny_mnasnet").modules() if isinstance(m, nn.Conv2d)}
    assert max(groups) > 8  # depthwise


def test_create_model_errors() -> None:
    with pytest.raises(ModelError, match=r"unknown architecture 'resnet5'.*resnet50"):
        create_model("resnet5", num_classes=3)
    with pytest.raises(ModelError, match=r"no argument\(s\) \['depth'\]"):
        create_model("tiny_resnet", num_classes=3, depth=3)
    with pytest.raises(ModelError, match="num_classes"):
        create_model("tiny_resnet", num_classes=0)
    with pytest.raises(ModelError, match="dropout"):
        create_model("tiny_resnet", num_classes=3, dropout=1.5)
    with pytest.raises(ModelError, match="layers"):
        create_model("resnext50", num_classes=3, layers=[1, 2])
    with pytest.raises(ModelError):
        model_info("nope")
    # None kwargs are dropped (CLI pass-through)
    assert create_model("tiny_resnet", num_classes=3, dropout=None).fc.out_features == 3
    assert create_model("tiny_resnet").fc.out_features == 10


def test_register_model_rejects_duplicates_and_missing_num_classes() -> None:
    with pytest.raises(ModelError, match="already registered"):

        @register_model(family="x", name="tiny_resnet")
        def other(*, num_classes: int = 2) -> nn.Module:
            return nn.Linear(2, num_classes)

    with pytest.raises(ModelError, match="num_classes"):

        @register_model(family="x", name="_test_no_nc")
        def bad() -> nn.Module:
            return nn.Identity()


@pytest.mark.parametrize("name", ["resnext50_32_2", "resnext50_32_4l", "resnext50_16_4"])
def test_paper_variants_forward_at_reduced_resolution(name: str) -> None:
    m = create_model(name, num_classes=6).eval()
    with torch.no_grad():
        y = m(torch.randn(1, 3, 64, 64))
    assert y.shape == (1, 6) and torch.isfinite(y).all()
