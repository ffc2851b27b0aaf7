"""Plain ResNet-bottleneck networks with per-block widths and depths (no nncf needed).

An extracted BootstrapNAS subnet is an ordinary torchvision-style ResNet-50 whose convolutions are
narrower and some of whose Bottlenecks are skipped. :class:`SubnetResNet` rebuilds it from a small
JSON *arch spec*; its ``state_dict`` keys are torchvision's (``layer2.3.conv1.weight`` ...), skipped
blocks are :class:`torch.nn.Identity` (no parameters), so a spec + state_dict is the whole model.

Arch spec (``dict``, JSON-serialisable)::

    {"family": "resnet_bottleneck", "num_classes": 10, "stem": 64,
     "stages": [{"out": 256, "stride": 1,
                 "blocks": [{"mid": [64, 64], "skip": false, "final_relu": true}, ...]},   # 3, 4, 6, 3 blocks
                ...]}

``mid`` are the output channels of the block's 1x1 ``conv1`` and 3x3 ``conv2``; ``out`` the output of
every ``conv3`` (and the first block's ``downsample``) of the stage, tied by the residual adds.
``final_relu: false`` reproduces nncf's *auto* skippable blocks, which start at the previous block's
residual add and therefore also drop that block's final ReLU.

MACs (multiply-accumulates) are counted the way nncf's ``count_flops_and_weights`` does: for every
convolution ``H_out * W_out * C_out * C_in * k_h * k_w / groups`` and for the classifier
``C_in * C_out``; weights are the conv and fc weight elements (biases and BN excluded).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

from ovdiv.errors import ConfigError

__all__ = [
    "RESNET50_DEPTHS",
    "RESNET50_STAGE_OUT",
    "RESNET50_MID",
    "SubnetResNet",
    "resnet50_spec",
    "validate_arch_spec",
    "count_macs_and_weights",
    "block_names",
    "build_subnet",
    "param_count",
    "BUILDER",
]

BUILDER = "module:ovdiv.supernet.arch:build_subnet"
"""The ``arch`` string of ovdiv checkpoints holding an extracted subnet."""

FAMILY = "resnet_bottleneck"
RESNET50_DEPTHS = (3, 4, 6, 3)
RESNET50_STAGE_OUT = (256, 512, 1024, 2048)
RESNET50_MID = (64, 128, 256, 512)
STAGE_STRIDES = (1, 2, 2, 2)


def resnet50_spec(num_classes: int = 1000) -> dict[str, Any]:
    """The arch spec of the full torchvision ResNet-50 (the super-network's maximum subnet)."""
    stages = []
    for depth, out, mid, stride in zip(RESNET50_DEPTHS, RESNET50_STAGE_OUT, RESNET50_MID, STAGE_STRIDES, strict=True):
        blocks = [{"mid": [mid, mid], "skip": False, "final_relu": True} for _ in range(depth)]
        stages.append({"out": out, "stride": stride, "blocks": blocks})
    return {"family": FAMILY, "num_classes": int(num_classes), "stem": 64, "stages": stages}


def block_names(spec: dict[str, Any]) -> list[str]:
    """Block names ``layer{s}.{b}`` in network order (``layer1.0`` ... ``layer4.2``)."""
    return [f"layer{s + 1}.{b}" for s, st in enumerate(spec["stages"]) for b in range(len(st["blocks"]))]


def _positive_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"arch spec: {where} must be a positive integer, got {value!r}")
    return value


def validate_arch_spec(spec: Any) -> dict[str, Any]:
    """Check an arch spec's structure; return a normalised deep copy.

    Raises:
        ConfigError: naming the first malformed field.
    """
    if not isinstance(spec, dict):
        raise ConfigError(f"arch spec must be a JSON object, got {type(spec).__name__}")
    unknown = set(spec) - {"family", "num_classes", "stem", "stages"}
    if unknown:
        raise ConfigError(f"arch spec: unknown key(s) {sorted(unknown)}")
    if spec.get("family") != FAMILY:
        raise ConfigError(f"arch spec: family must be {FAMILY!r}, got {spec.get('family')!r}")
    out = {"family": FAMILY, "num_classes": _positive_int(spec.get("num_classes"), "num_classes")}
    out["stem"] = _positive_int(spec.get("stem"), "stem")
    stages = spec.get("stages")
    if not isinstance(stages, list) or not stages:
        raise ConfigError("arch spec: stages must be a non-empty list")
    norm_stages = []
    for s, st in enumerate(stages):
        if not isinstance(st, dict) or set(st) - {"out", "stride", "blocks"}:
            raise ConfigError(f"arch spec: stages[{s}] must have exactly out, stride, blocks")
        blocks = st.get("blocks")
        if not isinstance(blocks, list) or not blocks:
            raise ConfigError(f"arch spec: stages[{s}].blocks must be a non-empty list")
        norm_blocks = []
        for b, blk in enumerate(blocks):
            where = f"stages[{s}].blocks[{b}]"
            if not isinstance(blk, dict) or set(blk) - {"mid", "skip", "final_relu"}:
                raise ConfigError(f"arch spec: {where} must have keys mid, skip, final_relu")
            mid = blk.get("mid")
            if not isinstance(mid, list) or len(mid) != 2:
                raise ConfigError(f"arch spec: {where}.mid must be a list of two channel counts")
            skip = bool(blk.get("skip", False))
            if b == 0 and skip:
                raise ConfigError(f"arch spec: {where} is the first block of a stage and cannot be skipped")
            norm_blocks.append(
                {
                    "mid": [_positive_int(mid[0], where + ".mid[0]"), _positive_int(mid[1], where + ".mid[1]")],
                    "skip": skip,
                    "final_relu": bool(blk.get("final_relu", True)),
                }
            )
        norm_stages.append(
            {
                "out": _positive_int(st.get("out"), f"stages[{s}].out"),
                "stride": _positive_int(st.get("stride"), f"stages[{s}].stride"),
                "blocks": norm_blocks,
            }
        )
    out["stages"] = norm_stages
    return out


class Bottleneck(nn.Module):
    """torchvision's ResNet v1.5 Bottleneck (stride on the 3x3) with free widths.

    ``y = relu(bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x)))))))) + shortcut(x))``; the outer relu is
    dropped when ``final_relu`` is False.
    """

    def __init__(self, c_in: int, mid: tuple[int, int], c_out: int, stride: int, final_relu: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, mid[0], 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid[0])
        self.conv2 = nn.Conv2d(mid[0], mid[1], 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid[1])
        self.conv3 = nn.Conv2d(mid[1], c_out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.final_relu = final_relu
        self.downsample: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, H, W) -> (N, C_out, H/stride, W/stride)."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out = out + identity
        return self.relu(out) if self.final_relu else out


class SubnetResNet(nn.Module):
    """A ResNet built from an arch spec (see the module docstring); forward (N,3,H,W) -> logits (N,C).

    Attributes:
        arch_spec: The normalised spec it was built from (JSON-serialisable).
    """

    def __init__(self, arch_spec: dict[str, Any]) -> None:
        super().__init__()
        spec = validate_arch_spec(arch_spec)
        self.arch_spec = spec
        stem = spec["stem"]
        self.conv1 = nn.Conv2d(3, stem, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        c_in = stem
        for s, st in enumerate(spec["stages"]):
            blocks: list[nn.Module] = []
            for b, blk in enumerate(st["blocks"]):
                if blk["skip"]:
                    blocks.append(nn.Identity())
                    continue
                stride = st["stride"] if b == 0 else 1
                blocks.append(Bottleneck(c_in, tuple(blk["mid"]), st["out"], stride, blk["final_relu"]))
                c_in = st["out"]
            self.add_module(f"layer{s + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(c_in, spec["num_classes"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) float32 -> logits (N, num_classes)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for s in range(len(self.arch_spec["stages"])):
            x = getattr(self, f"layer{s + 1}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def build_subnet(*, num_classes: int = 1000, spec: dict[str, Any] | None = None) -> SubnetResNet:
    """Checkpoint / registry builder: the network of ``spec`` (default: full ResNet-50) with ``num_classes``.

    ovdiv checkpoints of extracted subnets use ``arch="module:ovdiv.supernet.arch:build_subnet"`` and
    ``arch_args={"spec": spec}``, so :func:`ovdiv.models.load_checkpoint` rebuilds them without nncf.
    """
    spec = copy.deepcopy(spec) if spec is not None else resnet50_spec(num_classes)
    spec["num_classes"] = int(num_classes)
    return SubnetResNet(spec)


def _conv_out(size: int, k: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - k) // stride + 1


def count_macs_and_weights(spec: dict[str, Any], input_size: tuple[int, int] = (224, 224)) -> tuple[int, int]:
    """MACs and conv+fc weight count of the network an arch spec describes, at ``input_size`` (H, W).

    Per conv: ``MACs = H_out * W_out * C_out * C_in * k * k``; fc: ``C_in * C_out``; skipped blocks cost 0.

    Returns:
        ``(macs, weights)`` as ints.
    """
    spec = validate_arch_spec(spec)
    h, w = input_size
    macs = 0
    weights = 0

    def conv(c_in: int, c_out: int, k: int, stride: int, pad: int, hw: tuple[int, int]) -> tuple[int, int]:
        nonlocal macs, weights
        ho, wo = _conv_out(hw[0], k, stride, pad), _conv_out(hw[1], k, stride, pad)
        macs += ho * wo * c_out * c_in * k * k
        weights += c_out * c_in * k * k
        return ho, wo

    hw = conv(3, spec["stem"], 7, 2, 3, (h, w))
    hw = (_conv_out(hw[0], 3, 2, 1), _conv_out(hw[1], 3, 2, 1))  # maxpool
    c_in = spec["stem"]
    for st in spec["stages"]:
        for b, blk in enumerate(st["blocks"]):
            if blk["skip"]:
                continue
            stride = st["stride"] if b == 0 else 1
            m0, m1 = blk["mid"]
            conv(c_in, m0, 1, 1, 0, hw)
            hw2 = conv(m0, m1, 3, stride, 1, hw)
            conv(m1, st["out"], 1, 1, 0, hw2)
            if stride != 1 or c_in != st["out"]:
                conv(c_in, st["out"], 1, stride, 0, hw)
            hw = hw2
            c_in = st["out"]
    macs += c_in * spec["num_classes"]
    weights += c_in * spec["num_classes"]
    return int(macs), int(weights)


def param_count(model: nn.Module) -> int:
    """Number of parameter elements of a module (all parameters, incl. BN and biases)."""
    return int(sum(math.prod(p.shape) for p in model.parameters()))
