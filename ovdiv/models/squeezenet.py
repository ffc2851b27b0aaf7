"""SqueezeNet: torchvision's SqueezeNet 1.1 plus a tiny fire-module variant.

``tiny_squeezenet`` keeps the family's fire modules (1x1 squeeze, parallel 1x1 / 3x3 expand, concatenation)
and its convolutional classifier (1x1 conv to ``num_classes`` + global average pooling), with two
deviations that make it train in seconds from scratch: batch normalisation after every convolution and
no ReLU on the logits.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import squeezenet as tv_squeezenet

from ovdiv.models._registry import register_model

__all__ = ["SqueezeNet", "TinySqueezeNet"]


class SqueezeNet(tv_squeezenet.SqueezeNet):
    """torchvision SqueezeNet with the uniform ovdiv model surface.

    Args:
        version: ``"1_0"`` or ``"1_1"``.
        num_classes: Number of logits.
        dropout: Dropout before the final 1x1 convolution.
    """

    def __init__(self, version: str = "1_1", *, num_classes: int, dropout: float = 0.5) -> None:
        super().__init__(version, num_classes=num_classes, dropout=dropout)
        self.num_classes = num_classes

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` -> ``(N, 512, h, w)``."""
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Feature map -> pooled ``(N, 512)`` (``pre_logits``) or logits ``(N, num_classes)``."""
        if pre_logits:
            return x.mean([2, 3])
        return torch.flatten(self.classifier(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` -> logits ``(N, num_classes)``."""
        return self.forward_head(self.forward_features(x))


@register_model(family="squeezenet", description="SqueezeNet 1.1 (torchvision layout)")
def squeezenet1_1(*, num_classes: int = 1000, dropout: float = 0.5) -> SqueezeNet:
    """SqueezeNet 1.1 (torchvision layout, weights-compatible)."""
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    return SqueezeNet("1_1", num_classes=num_classes, dropout=float(dropout))


class _Fire(nn.Module):
    """Fire module: 1x1 squeeze -> (1x1 expand || 3x3 expand) -> channel concatenation."""

    def __init__(self, cin: int, squeeze: int, expand: int) -> None:
        super().__init__()
        self.squeeze = nn.Sequential(nn.Conv2d(cin, squeeze, 1, bias=False), nn.BatchNorm2d(squeeze), nn.ReLU())
        self.expand1x1 = nn.Sequential(nn.Conv2d(squeeze, expand, 1, bias=False), nn.BatchNorm2d(expand), nn.ReLU())
        self.expand3x3 = nn.Sequential(
            nn.Conv2d(squeeze, expand, 3, padding=1, bias=False), nn.BatchNorm2d(expand), nn.ReLU()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, cin, H, W)`` -> ``(N, 2 * expand, H, W)``."""
        s = self.squeeze(x)
        return torch.cat([self.expand1x1(s), self.expand3x3(s)], 1)


class TinySqueezeNet(nn.Module):
    """Small SqueezeNet for 32-64 px inputs: stem, 4 fire modules with max pooling, conv classifier.

    Args:
        num_classes: Number of logits.
        dropout: Dropout before the classifier convolution.
    """

    def __init__(self, *, num_classes: int, dropout: float = 0.1) -> None:
        super().__init__()
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.num_classes = num_classes
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            _Fire(32, 8, 24),
            _Fire(48, 8, 24),
            nn.MaxPool2d(2, 2),
            _Fire(48, 16, 48),
            _Fire(96, 16, 48),
            nn.MaxPool2d(2, 2),
            _Fire(96, 24, 64),
        )
        self.num_features = 128
        self.classifier = nn.Sequential(nn.Dropout(float(dropout)), nn.Conv2d(128, num_classes, 1))
        self.pool = nn.AdaptiveAvgPool2d(1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` -> ``(N, 128, H/8, W/8)``."""
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Feature map -> pooled ``(N, 128)`` (``pre_logits``) or logits ``(N, num_classes)``."""
        if pre_logits:
            return x.mean([2, 3])
        return torch.flatten(self.pool(self.classifier(x)), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` -> logits ``(N, num_classes)``."""
        return self.forward_head(self.forward_features(x))


@register_model(family="squeezenet", input_size=(64, 64), tiny=True, description="tiny SqueezeNet (fire modules)")
def tiny_squeezenet(*, num_classes: int = 10, dropout: float = 0.1) -> TinySqueezeNet:
    """Tiny SqueezeNet: fire modules with batch norm and a 1x1-conv classifier."""
    return TinySqueezeNet(num_classes=num_classes, dropout=dropout)
