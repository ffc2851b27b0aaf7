"""ResNet and ResNeXt: torchvision's implementation (state-dict compatible) plus tiny CPU variants.

Full-size models subclass :class:`torchvision.models.ResNet`, so torchvision weights load unchanged
(dropout has no parameters), and add the uniform ovdiv surface ``forward_features`` /
``forward_head(pre_logits=False)`` and an optional dropout before the classifier.

The paper's ResNeXt50 members (Rosales et al. 2023, Table i) are ``resnext50_32_2`` (cardinality 32,
2 channels per group, layers [3,4,6,3]), ``resnext50_32_4l`` (32x4d with the shallower layers [2,2,3,2]) and
``resnext50_16_4`` (16x4d), all with dropout 0.2 before the fully-connected layer.

Tiny variants (``tiny_resnet``: basic residual blocks; ``tiny_resnext``: grouped-convolution bottlenecks) are
CIFAR-style networks for 32-64 px inputs: a 3x3 stride-2 stem, three stages, global average pooling.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchvision.models import resnet as tv_resnet

from ovdiv.models._registry import register_model

__all__ = ["ResNet", "TinyResNet"]


class ResNet(tv_resnet.ResNet):
    """torchvision ResNet/ResNeXt with a dropout before ``fc`` and the uniform ovdiv model surface.

    Args:
        block: ``Bottleneck`` or ``BasicBlock``.
        layers: Blocks per stage, e.g. ``[3, 4, 6, 3]``.
        num_classes: Number of logits.
        groups: Cardinality of the grouped 3x3 convolutions (1 = ResNet).
        width_per_group: Channels per group at the first stage (64 = ResNet, 4 = ResNeXt ``32x4d``).
        dropout: Dropout probability applied to the pooled features before ``fc``.
    """

    def __init__(
        self,
        block: type[tv_resnet.BasicBlock | tv_resnet.Bottleneck],
        layers: Sequence[int],
        *,
        num_classes: int,
        groups: int = 1,
        width_per_group: int = 64,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(block, list(layers), num_classes=num_classes, groups=groups, width_per_group=width_per_group)
        self.num_classes = num_classes
        self.dropout = nn.Dropout(dropout)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` -> last feature map ``(N, C, H/32, W/32)``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Feature map -> pooled features ``(N, C)`` (``pre_logits``) or logits ``(N, num_classes)``."""
        x = torch.flatten(self.avgpool(x), 1)
        return x if pre_logits else self.fc(self.dropout(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` float, normalised -> logits ``(N, num_classes)``."""
        return self.forward_head(self.forward_features(x))


def _check_layers(layers: Sequence[int], n: int = 4) -> list[int]:
    out = [int(v) for v in layers]
    if len(out) != n or any(v < 1 for v in out):
        raise ValueError(f"layers must be {n} positive ints, got {list(layers)}")
    return out


def _check_dropout(dropout: float) -> float:
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    return float(dropout)


@register_model(family="resnet", description="ResNet-50 (torchvision layout, weights-compatible)")
def resnet50(*, num_classes: int = 1000, dropout: float = 0.0) -> ResNet:
    """ResNet-50 (torchvision layout, weights-compatible)."""
    return ResNet(tv_resnet.Bottleneck, [3, 4, 6, 3], num_classes=num_classes, dropout=_check_dropout(dropout))


@register_model(family="resnext", description="ResNeXt-50, configurable cardinality/width/layers/dropout")
def resnext50(
    *,
    num_classes: int = 1000,
    cardinality: int = 32,
    width_per_group: int = 4,
    layers: Sequence[int] = (3, 4, 6, 3),
    dropout: float = 0.0,
) -> ResNet:
    """ResNeXt-50 with configurable cardinality, width per group, blocks per stage and dropout.

    Args:
        num_classes: Number of logits.
        cardinality: Number of groups in each 3x3 convolution.
        width_per_group: Channels per group at the first stage (doubles every stage).
        layers: Bottleneck blocks per stage.
        dropout: Dropout before the classifier.
    """
    if int(cardinality) < 1 or int(width_per_group) < 1:
        raise ValueError(f"cardinality and width_per_group must be >= 1, got {cardinality}, {width_per_group}")
    return ResNet(
        tv_resnet.Bottleneck,
        _check_layers(layers),
        num_classes=num_classes,
        groups=int(cardinality),
        width_per_group=int(width_per_group),
        dropout=_check_dropout(dropout),
    )


@register_model(family="resnext", description="paper's ResNext50_32_2: 32x2d, layers [3,4,6,3], dropout 0.2")
def resnext50_32_2(*, num_classes: int = 1000, dropout: float = 0.2) -> ResNet:
    """The paper's ResNext50_32_2: cardinality 32, 2 channels per group, layers [3,4,6,3]."""
    return resnext50(num_classes=num_classes, cardinality=32, width_per_group=2, dropout=dropout)


@register_model(family="resnext", description="paper's ResNext50_32_4l: 32x4d, layers [2,2,3,2], dropout 0.2")
def resnext50_32_4l(*, num_classes: int = 1000, dropout: float = 0.2) -> ResNet:
    """The paper's ResNext50_32_4l: cardinality 32, 4 channels per group, shallow layers [2,2,3,2]."""
    return resnext50(num_classes=num_classes, cardinality=32, width_per_group=4, layers=(2, 2, 3, 2), dropout=dropout)


@register_model(family="resnext", description="paper's ResNext50_16_4: 16x4d, layers [3,4,6,3], dropout 0.2")
def resnext50_16_4(*, num_classes: int = 1000, dropout: float = 0.2) -> ResNet:
    """The paper's ResNext50_16_4: cardinality 16, 4 channels per group, layers [3,4,6,3]."""
    return resnext50(num_classes=num_classes, cardinality=16, width_per_group=4, dropout=dropout)


# ---------------------------------------------------------------------------------------------
# tiny CPU variants
# ---------------------------------------------------------------------------------------------
def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)
    )


class _BasicBlock(nn.Module):
    """Two 3x3 conv-BN, identity (or 1x1 projection) shortcut, ReLU after the sum."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = _conv_bn(cin, cout, 3, stride)
        self.conv2 = _conv_bn(cout, cout, 3)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _conv_bn(cin, cout, 1, stride) if (stride != 1 or cin != cout) else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual block."""
        out = self.conv2(self.relu(self.conv1(x)))
        return self.relu(out + self.shortcut(x))


class _GroupedBottleneck(nn.Module):
    """ResNeXt block: 1x1 reduce to ``cardinality * group_width``, grouped 3x3, 1x1 expand, shortcut."""

    def __init__(self, cin: int, cout: int, stride: int, cardinality: int, group_width: int) -> None:
        super().__init__()
        width = cardinality * group_width
        self.conv1 = _conv_bn(cin, width, 1)
        self.conv2 = _conv_bn(width, width, 3, stride, groups=cardinality)
        self.conv3 = _conv_bn(width, cout, 1)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _conv_bn(cin, cout, 1, stride) if (stride != 1 or cin != cout) else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual block."""
        out = self.relu(self.conv1(x))
        out = self.relu(self.conv2(out))
        out = self.conv3(out)
        return self.relu(out + self.shortcut(x))


class TinyResNet(nn.Module):
    """CIFAR-style residual network for 32-64 px inputs.

    Stem: 3x3 conv stride 2 + BN + ReLU. Three stages (strides 1, 2, 2) of basic blocks or grouped
    bottlenecks, global average pooling, dropout, linear classifier. At 64 px the last feature map is 8x8.

    Args:
        num_classes: Number of logits.
        widths: Output channels per stage.
        depths: Blocks per stage.
        stem_width: Channels of the stem convolution.
        cardinality: Groups of the 3x3 convolution; ``> 1`` selects grouped (ResNeXt) bottlenecks.
        group_width: Channels per group at the first stage (doubles every stage), bottlenecks only.
        dropout: Dropout before the classifier.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        widths: Sequence[int] = (16, 32, 64),
        depths: Sequence[int] = (1, 1, 1),
        stem_width: int = 16,
        cardinality: int = 1,
        group_width: int = 4,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if len(widths) != len(depths) or not widths:
            raise ValueError(f"widths and depths must be non-empty and equally long, got {widths}, {depths}")
        self.num_classes = num_classes
        self.stem = nn.Sequential(_conv_bn(3, stem_width, 3, 2), nn.ReLU(inplace=True))
        stages: list[nn.Module] = []
        cin = stem_width
        for i, (w, d) in enumerate(zip(widths, depths, strict=True)):
            blocks: list[nn.Module] = []
            for j in range(int(d)):
                stride = 2 if (i > 0 and j == 0) else 1
                if cardinality > 1:
                    blocks.append(_GroupedBottleneck(cin, int(w), stride, cardinality, group_width * 2**i))
                else:
                    blocks.append(_BasicBlock(cin, int(w), stride))
                cin = int(w)
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.num_features = cin
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(_check_dropout(dropout))
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` -> ``(N, C, H/8, W/8)``."""
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Feature map -> pooled ``(N, C)`` (``pre_logits``) or logits ``(N, num_classes)``."""
        x = torch.flatten(self.pool(x), 1)
        return x if pre_logits else self.fc(self.dropout(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` -> logits ``(N, num_classes)``."""
        return self.forward_head(self.forward_features(x))


@register_model(family="resnet", input_size=(64, 64), tiny=True, description="tiny residual net (basic blocks)")
def tiny_resnet(
    *,
    num_classes: int = 10,
    widths: Sequence[int] = (16, 32, 64),
    depths: Sequence[int] = (1, 1, 1),
    dropout: float = 0.0,
) -> TinyResNet:
    """Tiny residual network with basic blocks (~0.08 M parameters at 10 classes)."""
    return TinyResNet(num_classes=num_classes, widths=widths, depths=depths, dropout=dropout)


@register_model(family="resnext", input_size=(64, 64), tiny=True, description="tiny ResNeXt (grouped bottlenecks)")
def tiny_resnext(
    *,
    num_classes: int = 10,
    cardinality: int = 8,
    width_per_group: int = 2,
    widths: Sequence[int] = (32, 64, 128),
    depths: Sequence[int] = (1, 1, 1),
    dropout: float = 0.0,
) -> TinyResNet:
    """Tiny ResNeXt: grouped-convolution bottlenecks (cardinality 8, 2 channels per group at stage 1)."""
    if int(cardinality) < 2:
        raise ValueError(f"tiny_resnext needs cardinality >= 2, got {cardinality}")
    return TinyResNet(
        num_classes=num_classes,
        widths=widths,
        depths=depths,
        stem_width=16,
        cardinality=int(cardinality),
        group_width=int(width_per_group),
        dropout=dropout,
    )
