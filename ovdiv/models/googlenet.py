"""GoogLeNet / Inception-v1 (torchvision layout, auxiliary heads off) and a tiny Inception twin.

``googlenet`` is torchvision's ``GoogLeNet`` with ``aux_logits=False`` (the study visualises the main
network only), so a torchvision ImageNet ``state_dict`` loads with ``--pretrained`` / ``pretrained`` in a
config (its ``aux1``/``aux2`` tensors are skipped and logged). torchvision's ImageNet weights were ported
from TensorFlow and expect ``transform_input=True`` (it maps ImageNet-normalised input to the ``[-1, 1]``
range they were trained on); the study's configs set it. ``tiny_googlenet`` keeps the family's Inception
module (parallel 1x1 / 3x3 / 5x5(3x3) / pool-projection branches, concatenated) at 32-64 px and ~60 k
parameters for CPU tests.

Layer names for ``ovdiv features``: the torch backend's ``stage<k>`` is the last *leaf module* output at
each resolution, which for Inception modules is one branch's BatchNorm (the concatenation is not a
module); visualise an Inception module's output with its module name, e.g. ``--layer inception4a``.
"""

from __future__ import annotations

import importlib

import torch
from torch import nn

from ovdiv.models._registry import register_model

__all__ = ["GoogLeNet", "TinyGoogLeNet"]

_tv = importlib.import_module("torchvision.models.googlenet")  # the module (the package re-exports a function)


class GoogLeNet(_tv.GoogLeNet):  # type: ignore[name-defined]
    """torchvision GoogLeNet without auxiliary heads; ``forward`` always returns the logits tensor.

    Args:
        num_classes: Number of logits.
        dropout: Dropout before the classifier.
        transform_input: torchvision's input re-normalisation for its ported ImageNet weights.
    """

    def __init__(self, *, num_classes: int, dropout: float = 0.2, transform_input: bool = False) -> None:
        super().__init__(
            num_classes=num_classes,
            aux_logits=False,
            transform_input=transform_input,
            init_weights=True,
            dropout=dropout,
        )
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` -> logits ``(N, num_classes)``."""
        out, _, _ = self._forward(self._transform_input(x))
        return out


@register_model(family="googlenet", description="GoogLeNet / Inception-v1 (torchvision layout, aux heads off)")
def googlenet(*, num_classes: int = 1000, dropout: float = 0.2, transform_input: bool = False) -> GoogLeNet:
    """GoogLeNet / Inception-v1 (torchvision layout, weights-compatible, no auxiliary classifiers)."""
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    return GoogLeNet(num_classes=num_classes, dropout=float(dropout), transform_input=bool(transform_input))


class TinyGoogLeNet(nn.Module):
    """Small Inception-v1 for 32-64 px inputs: stem, three Inception modules with max pooling, linear head.

    Args:
        num_classes: Number of logits.
        dropout: Dropout before the classifier.
    """

    def __init__(self, *, num_classes: int, dropout: float = 0.1) -> None:
        super().__init__()
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.num_classes = num_classes
        self.conv1 = _tv.BasicConv2d(3, 32, kernel_size=3, stride=2, padding=1)
        self.inception3a = _tv.Inception(32, 16, 16, 24, 4, 8, 8)  # -> 56
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception4a = _tv.Inception(56, 32, 24, 48, 8, 16, 16)  # -> 112
        self.maxpool4 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception5a = _tv.Inception(112, 48, 32, 64, 8, 16, 16)  # -> 144
        self.num_features = 144
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(float(dropout))
        self.fc = nn.Linear(144, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` -> ``(N, 144, H/8, W/8)``."""
        x = self.maxpool3(self.inception3a(self.conv1(x)))
        return self.inception5a(self.maxpool4(self.inception4a(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` -> logits ``(N, num_classes)``."""
        f = torch.flatten(self.avgpool(self.forward_features(x)), 1)
        return self.fc(self.dropout(f))


@register_model(family="googlenet", input_size=(64, 64), tiny=True, description="tiny GoogLeNet (Inception modules)")
def tiny_googlenet(*, num_classes: int = 10, dropout: float = 0.1) -> TinyGoogLeNet:
    """Tiny GoogLeNet: three torchvision Inception modules, CPU-sized."""
    return TinyGoogLeNet(num_classes=num_classes, dropout=dropout)
