"""MNASNet: torchvision's MNASNet 1.0 plus a tiny inverted-residual variant.

``mnasnet1_0`` subclasses :class:`torchvision.models.MNASNet` (weights-compatible; dropout 0.2 before the
classifier as in the paper) and adds ``forward_features`` / ``forward_head``. ``tiny_mnasnet`` keeps the
family's building blocks (depthwise-separable stem block, inverted residuals with 3x3 and 5x5 depthwise
convolutions, linear bottlenecks, ReLU) at a size that trains on 32-64 px images in seconds.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchvision.models import mnasnet as tv_mnasnet

from ovdiv.models._registry import register_model

__all__ = ["MNASNet", "TinyMnasNet"]


class _PooledHead(nn.Module):
    """The head both MNASNets share: global average pooling of ``forward_features``, then ``classifier``.

    Subclasses provide ``forward_features`` and a ``classifier`` module; listed before a base class that
    defines its own ``forward`` (torchvision's), this ``forward`` takes precedence.
    """

    classifier: nn.Module

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` -> feature map ``(N, C, h, w)``."""
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Feature map -> pooled ``(N, C)`` (``pre_logits``) or logits."""
        x = x.mean([2, 3])
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` -> logits ``(N, num_classes)``."""
        return self.forward_head(self.forward_features(x))


class MNASNet(_PooledHead, tv_mnasnet.MNASNet):
    """torchvision MNASNet with the uniform ovdiv model surface.

    Args:
        alpha: Depth multiplier (1.0 = MNASNet 1.0).
        num_classes: Number of logits.
        dropout: Dropout before the classifier.
    """

    layers: nn.Sequential  # set by torchvision's __init__ (declared here: the mixin's nn.Module base comes first)

    def __init__(self, alpha: float, *, num_classes: int, dropout: float = 0.2) -> None:
        super().__init__(alpha, num_classes=num_classes, dropout=dropout)
        self.num_classes = num_classes

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` -> ``(N, 1280, H/32, W/32)``."""
        return self.layers(x)


@register_model(family="mnasnet", description="MNASNet 1.0 (torchvision layout), dropout 0.2")
def mnasnet1_0(*, num_classes: int = 1000, dropout: float = 0.2) -> MNASNet:
    """MNASNet 1.0 (torchvision layout, weights-compatible), dropout 0.2 before the classifier."""
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    return MNASNet(1.0, num_classes=num_classes, dropout=float(dropout))


class _InvertedResidual(nn.Module):
    """1x1 expand + BN + ReLU, kxk depthwise + BN + ReLU, 1x1 linear projection + BN; skip if shapes match."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expansion: int) -> None:
        super().__init__()
        mid = cin * expansion
        self.use_skip = stride == 1 and cin == cout
        self.block = nn.Sequential(
            nn.Conv2d(cin, mid, 1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, kernel, stride=stride, padding=kernel // 2, groups=mid, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Inverted residual."""
        out = self.block(x)
        return out + x if self.use_skip else out


# (expansion, out channels, repeats, first stride, kernel) -- MNASNet-A's pattern of 3x3/5x5 stages, shrunk.
_TINY_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (3, 16, 1, 2, 3),
    (3, 24, 2, 2, 5),
    (4, 40, 2, 2, 3),
    (4, 48, 1, 1, 5),
)


class TinyMnasNet(_PooledHead):
    """Small MNASNet-style network for 32-64 px inputs.

    Stem 3x3 stride-2 conv, a depthwise-separable block, inverted-residual stages (depthwise 3x3/5x5),
    a 1x1 head convolution, global average pooling, dropout, linear classifier. Output stride 16.

    Args:
        num_classes: Number of logits.
        stages: ``(expansion, out_channels, repeats, first_stride, kernel)`` per stage.
        head_width: Channels of the final 1x1 convolution.
        dropout: Dropout before the classifier.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        stages: Sequence[Sequence[int]] = _TINY_STAGES,
        head_width: int = 128,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        layers: list[nn.Module] = [
            nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(inplace=True),
            # depthwise separable block, as in MNASNet's first stage
            nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(inplace=True),
            nn.Conv2d(16, 8, 1, bias=False),
            nn.BatchNorm2d(8),
        ]
        cin = 8
        for stage in stages:
            expansion, cout, repeats, stride, kernel = (int(v) for v in stage)
            for r in range(repeats):
                layers.append(_InvertedResidual(cin, cout, kernel, stride if r == 0 else 1, expansion))
                cin = cout
        layers += [nn.Conv2d(cin, head_width, 1, bias=False), nn.BatchNorm2d(head_width), nn.ReLU(inplace=True)]
        self.layers = nn.Sequential(*layers)
        self.num_features = head_width
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.classifier = nn.Sequential(nn.Dropout(float(dropout)), nn.Linear(head_width, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` -> ``(N, head_width, H/16, W/16)``."""
        return self.layers(x)


@register_model(family="mnasnet", input_size=(64, 64), tiny=True, description="tiny MNASNet (inverted residuals)")
def tiny_mnasnet(*, num_classes: int = 10, head_width: int = 128, dropout: float = 0.2) -> TinyMnasNet:
    """Tiny MNASNet: inverted residuals with depthwise 3x3/5x5 convolutions, ReLU, dropout 0.2."""
    return TinyMnasNet(num_classes=num_classes, head_width=int(head_width), dropout=dropout)
