"""DINO recipes (``"kind": "dino"`` in ``models/<id>.json``): a self-supervised backbone, then a linear classifier.

A DINO member is trained in two phases (Caron et al. 2021, *Emerging Properties in Self-Supervised
Vision Transformers*; the paper's Table i members ``dino_deit_tiny1/2``, ``dino_resnet1/2``):

(a) **backbone**: student/teacher self-distillation on multi-crop views (2 global + ``number`` local
    crops), EMA teacher, centred and sharpened teacher outputs (:mod:`ovdiv.train.dino`);
(b) **classifier**: a linear layer on the frozen backbone's pooled features, trained with labels.

Schema (keys not listed are rejected with a :class:`~ovdiv.errors.ConfigError` naming file and key)::

    {
      "kind": "dino",                                  # required: selects this schema
      "name": "dino_resnet1", "description": "...", "source": "...",
      "arch": "resnet50", "arch_args": {},             # registry name; families resnet/resnext/deit
      "num_classes": 1000, "input_size": [224, 224], "mean": [...], "std": [...],
      "data": {"train": null, "val": null, "train_limit": null, "val_limit": null},
      "amp": true, "channels_last": true,
      "backbone": {                                    # phase (a)
        "seed": 7, "epochs": 300, "batch_size": 256,
        "optimizer": {"name": "sgd", "lr": 0.03, "momentum": 0.9, "weight_decay": 1e-4},
        "schedule": {"name": "cosine", "warmup_epochs": 10, "min_lr": 1e-6},
        "global_crops": {"size": 224, "scale": [0.14, 1.0]},
        "local_crops": {"number": 6, "size": 96, "scale": [0.05, 0.14]},
        "augment": {"cj_prob": 0.8, ...},              # any DINOTransform argument (lightly)
        "head": {"output_dim": 65536, "hidden_dim": 2048, "bottleneck_dim": 256,
                 "batch_norm": false, "norm_last_layer": true},
        "loss": {"warmup_teacher_temp": 0.04, "teacher_temp": 0.04, "warmup_teacher_temp_epochs": 0,
                 "student_temp": 0.1, "center_momentum": 0.9},
        "momentum_teacher": 0.996,                     # cosine schedule to 1.0 over training
        "freeze_last_layer_epochs": 1, "grad_clip_norm": 3.0
      },
      "classifier": {                                  # phase (b)
        "seed": 5, "epochs": 100, "batch_size": 256,
        "optimizer": {"name": "sgd", "lr": 0.001, "momentum": 0.9, "weight_decay": 0.0},
        "schedule": {"name": "cosine"},
        "transforms": {"train_crop": "random_resized_crop", ...}     # as member recipes
      }
    }

The **backbone identity** (:meth:`DinoRecipe.backbone_key`) is everything phase (a) depends on: arch,
arch_args, input size, normalisation, training data and the whole ``backbone`` section (seed included)
— not the name, the classifier or AMP. Two recipes with the same key share one trained backbone
(``dino_resnet1`` and ``dino_resnet2`` differ only in the classifier seed).
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ovdiv.cards import IMAGENET_MEAN, IMAGENET_STD
from ovdiv.errors import ConfigError
from ovdiv.models._registry import is_registered, model_info
from ovdiv.models.recipes import (
    DataSpec,
    TransformSpec,
    _check_keys,
    _get,
    _pair,
    _parse_data,
    _parse_optimizer,
    _parse_schedule,
    _parse_transforms,
    _positive,
)

__all__ = [
    "DINO_FAMILIES",
    "BackboneSpec",
    "ClassifierSpec",
    "DinoRecipe",
    "load_dino_recipe",
    "recipe_kind",
]

DINO_FAMILIES = ("resnet", "resnext", "deit")
"""Architecture families with a linear ``fc`` / ``head`` classifier on pooled features (what DINO needs)."""

_LOSS_DEFAULTS: dict[str, float] = {
    "warmup_teacher_temp": 0.04,
    "teacher_temp": 0.04,
    "warmup_teacher_temp_epochs": 0,
    "student_temp": 0.1,
    "center_momentum": 0.9,
}
_HEAD_DEFAULTS: dict[str, Any] = {
    "output_dim": 65536,
    "hidden_dim": 2048,
    "bottleneck_dim": 256,
    "batch_norm": False,
    "norm_last_layer": True,
}
# DINOTransform arguments a recipe may set under "augment" (crop sizes/scales have their own keys)
_AUGMENT_EXCLUDED = {
    "self",
    "global_crop_size",
    "global_crop_scale",
    "local_crop_size",
    "local_crop_scale",
    "n_local_views",
    "normalize",
}


def _augment_keys() -> frozenset[str]:
    from lightly.transforms.dino_transform import DINOTransform

    return frozenset(set(inspect.signature(DINOTransform.__init__).parameters) - _AUGMENT_EXCLUDED)


@dataclass(frozen=True)
class BackboneSpec:
    """Phase (a): self-supervised DINO training of the backbone (see the module docstring).

    Attributes:
        seed: Seed of initialisation, shuffling and augmentation.
        epochs: Training epochs.
        batch_size: Images per step (each gives ``2 + local_number`` views).
        optimizer: Optimizer spec (:mod:`ovdiv.train.optim`); weight decay spares biases and norms.
        schedule: Per-step lr schedule spec.
        global_size: Side of the two global crops (default: the recipe's input size).
        global_scale: RandomResizedCrop area range of global crops.
        local_number: Number of local crops (0: global crops only).
        local_size: Side of the local crops.
        local_scale: RandomResizedCrop area range of local crops.
        augment: Extra ``DINOTransform`` arguments (colour jitter, blur, solarization probabilities...).
        head: ``DINOProjectionHead`` dimensions (``output_dim``, ``hidden_dim``, ``bottleneck_dim``,
            ``batch_norm``, ``norm_last_layer``).
        loss: ``DINOLoss`` temperatures and centre momentum.
        momentum_teacher: Base EMA momentum of the teacher (cosine-increased to 1 over training).
        freeze_last_layer_epochs: Epochs during which the head's last layer gets no gradient.
        grad_clip_norm: Clip the student's global gradient norm to this value (None: off).
    """

    seed: int
    epochs: int
    batch_size: int
    optimizer: dict[str, Any]
    schedule: dict[str, Any]
    global_size: int
    global_scale: tuple[float, float] = (0.4, 1.0)
    local_number: int = 6
    local_size: int = 96
    local_scale: tuple[float, float] = (0.05, 0.4)
    augment: dict[str, Any] = field(default_factory=dict)
    head: dict[str, Any] = field(default_factory=lambda: dict(_HEAD_DEFAULTS))
    loss: dict[str, float] = field(default_factory=lambda: dict(_LOSS_DEFAULTS))
    momentum_teacher: float = 0.996
    freeze_last_layer_epochs: int = 1
    grad_clip_norm: float | None = 3.0


@dataclass(frozen=True)
class ClassifierSpec:
    """Phase (b): the linear classifier on the frozen backbone.

    Attributes:
        seed: Seed of the classifier's initialisation, shuffling and augmentation.
        epochs: Training epochs.
        batch_size: Images per step.
        optimizer: Optimizer spec.
        schedule: Schedule spec.
        transforms: Training/validation transforms (as member recipes).
    """

    seed: int
    epochs: int
    batch_size: int
    optimizer: dict[str, Any]
    schedule: dict[str, Any]
    transforms: TransformSpec = field(default_factory=TransformSpec)


@dataclass(frozen=True)
class DinoRecipe:
    """A validated DINO recipe (module docstring).

    Attributes:
        name: Member / run name.
        arch: Registry architecture (families :data:`DINO_FAMILIES`).
        backbone: Phase (a) settings.
        classifier: Phase (b) settings.
        arch_args: Builder arguments.
        num_classes: Number of classes of the linear classifier.
        input_size: ``(H, W)`` of the deployed classifier.
        mean: Normalisation mean.
        std: Normalisation std.
        data: Dataset specs.
        amp: Mixed precision on CUDA.
        channels_last: Channels-last on CUDA.
        description: Free text.
        source: Where the values come from.
        path: The file it was read from (not serialised).
    """

    name: str
    arch: str
    backbone: BackboneSpec
    classifier: ClassifierSpec
    arch_args: dict[str, Any] = field(default_factory=dict)
    num_classes: int = 1000
    input_size: tuple[int, int] = (224, 224)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    data: DataSpec = field(default_factory=DataSpec)
    amp: bool = True
    channels_last: bool = True
    description: str = ""
    source: str = ""
    path: Path | None = field(default=None, compare=False)

    kind = "dino"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``DinoRecipe.from_dict`` of it gives an equal recipe); ``path`` left out."""
        d = dataclasses.asdict(self)
        d.pop("path")
        b = d.pop("backbone")
        d["backbone"] = {
            "seed": b["seed"],
            "epochs": b["epochs"],
            "batch_size": b["batch_size"],
            "optimizer": b["optimizer"],
            "schedule": b["schedule"],
            "global_crops": {"size": b["global_size"], "scale": list(b["global_scale"])},
            "local_crops": {"number": b["local_number"], "size": b["local_size"], "scale": list(b["local_scale"])},
            "augment": b["augment"],
            "head": b["head"],
            "loss": b["loss"],
            "momentum_teacher": b["momentum_teacher"],
            "freeze_last_layer_epochs": b["freeze_last_layer_epochs"],
            "grad_clip_norm": b["grad_clip_norm"],
        }
        out: dict[str, Any] = json.loads(json.dumps({"kind": "dino", **d}))
        return out

    def backbone_key(self, data: str | None = None) -> dict[str, Any]:
        """Everything phase (a) depends on (see the module docstring).

        Args:
            data: Description of the training data actually used (overrides the recipe's ``data``).
        """
        d = self.to_dict()
        return {
            "arch": d["arch"],
            "arch_args": d["arch_args"],
            "input_size": d["input_size"],
            "mean": d["mean"],
            "std": d["std"],
            "data": data if data is not None else {"train": d["data"]["train"], "limit": d["data"]["train_limit"]},
            "backbone": d["backbone"],
        }

    def backbone_hash(self, data: str | None = None) -> str:
        """SHA-256 (hex) of :meth:`backbone_key` as canonical JSON: the backbone's content address."""
        text = json.dumps(self.backbone_key(data), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "recipe") -> DinoRecipe:
        """Validate a dict and build a recipe (``ConfigError`` naming ``source`` and the key)."""
        return _parse(data, source)


def recipe_kind(path: str | os.PathLike[str]) -> str:
    """``"dino"`` or ``"member"``: which trainer a recipe file is for (``ConfigError`` if unreadable)."""
    p = Path(path)
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"recipe {p} does not exist", "see models/*.json") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"recipe {p} is not readable JSON: {exc}") from exc
    kind = raw.get("kind", "member") if isinstance(raw, dict) else "member"
    if kind not in ("member", "dino"):
        raise ConfigError(f"recipe {p}: unknown kind {kind!r}", "use 'member' (default) or 'dino'")
    return str(kind)


def load_dino_recipe(path: str | os.PathLike[str]) -> DinoRecipe:
    """Read and validate a DINO recipe file.

    Raises:
        ConfigError: Missing file, invalid JSON, not ``"kind": "dino"``, or any schema violation.
    """
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"recipe {p} does not exist", "see models/dino_*.json") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"recipe {p} is not readable JSON: {exc}") from exc
    return dataclasses.replace(_parse(data, f"recipe {p}"), path=p)


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------
_TOP = {
    "kind",
    "name",
    "description",
    "source",
    "arch",
    "arch_args",
    "num_classes",
    "input_size",
    "mean",
    "std",
    "data",
    "amp",
    "channels_last",
    "backbone",
    "classifier",
}
_BACKBONE = {
    "seed",
    "epochs",
    "batch_size",
    "optimizer",
    "schedule",
    "global_crops",
    "local_crops",
    "augment",
    "head",
    "loss",
    "momentum_teacher",
    "freeze_last_layer_epochs",
    "grad_clip_norm",
}
_CLASSIFIER = {"seed", "epochs", "batch_size", "optimizer", "schedule", "transforms"}


def _int(d: Mapping[str, Any], key: str, where: str, default: int | None = None, minimum: int = 1) -> int:
    v = _get(d, key, int, where, default)
    if v is None:
        raise ConfigError(f"{where}: missing required key {key!r}")
    if v < minimum:
        raise ConfigError(f"{where}: key {key!r} must be >= {minimum}, got {v}")
    return int(v)


def _scale(v: Any, key: str, where: str) -> tuple[float, float]:
    s = _pair(v, key, where)
    if not 0 < s[0] <= s[1] <= 1:
        raise ConfigError(f"{where}: key {key!r} must satisfy 0 < min <= max <= 1, got {list(s)}")
    return (s[0], s[1])


def _parse_backbone(v: Any, where: str, input_size: tuple[int, int]) -> BackboneSpec:
    where = f"{where}: backbone"
    if not isinstance(v, Mapping):
        raise ConfigError(f"{where} must be an object with seed, epochs, batch_size, optimizer, schedule")
    _check_keys(v, _BACKBONE, where)
    for key in ("optimizer", "schedule"):
        if key not in v:
            raise ConfigError(f"{where}: missing required key {key!r}")
    g = v.get("global_crops", {})
    loc = v.get("local_crops", {})
    if not isinstance(g, Mapping) or not isinstance(loc, Mapping):
        raise ConfigError(f"{where}: global_crops / local_crops must be objects like {{'size': 96, 'scale': [..]}}")
    _check_keys(g, {"size", "scale"}, f"{where}: global_crops")
    _check_keys(loc, {"number", "size", "scale"}, f"{where}: local_crops")
    global_size = _int(g, "size", f"{where}: global_crops", min(input_size), 8)
    local_size = _int(loc, "size", f"{where}: local_crops", 96, 8)
    number = _int(loc, "number", f"{where}: local_crops", 6, 0)
    augment = v.get("augment", {})
    if not isinstance(augment, Mapping):
        raise ConfigError(f"{where}: augment must be an object of DINOTransform arguments")
    _check_keys(augment, _augment_keys(), f"{where}: augment")
    head = dict(_HEAD_DEFAULTS)
    head_raw = v.get("head", {})
    if not isinstance(head_raw, Mapping):
        raise ConfigError(f"{where}: head must be an object")
    _check_keys(head_raw, set(_HEAD_DEFAULTS), f"{where}: head")
    head.update(head_raw)
    for key in ("output_dim", "hidden_dim", "bottleneck_dim"):
        _int(head, key, f"{where}: head")
    loss = dict(_LOSS_DEFAULTS)
    loss_raw = v.get("loss", {})
    if not isinstance(loss_raw, Mapping):
        raise ConfigError(f"{where}: loss must be an object")
    _check_keys(loss_raw, set(_LOSS_DEFAULTS), f"{where}: loss")
    loss.update(loss_raw)
    for key in ("warmup_teacher_temp", "teacher_temp", "student_temp"):
        _positive(float(_get(loss, key, float, f"{where}: loss")), key, f"{where}: loss")
    _int(loss, "warmup_teacher_temp_epochs", f"{where}: loss", 0, 0)
    cm = float(_get(loss, "center_momentum", float, f"{where}: loss"))
    if not 0 <= cm < 1:
        raise ConfigError(f"{where}: loss: key 'center_momentum' must be in [0, 1), got {cm}")
    mt = float(_get(v, "momentum_teacher", float, where, 0.996))
    if not 0 <= mt <= 1:
        raise ConfigError(f"{where}: key 'momentum_teacher' must be in [0, 1], got {mt}")
    clip = _get(v, "grad_clip_norm", float, where, 3.0) if "grad_clip_norm" in v else 3.0
    if v.get("grad_clip_norm", 0) is None:
        clip = None
    if clip is not None:
        _positive(clip, "grad_clip_norm", where)
    return BackboneSpec(
        seed=_int(v, "seed", where, None, 0),
        epochs=_int(v, "epochs", where),
        batch_size=_int(v, "batch_size", where, None, 2),
        optimizer=_parse_optimizer(v["optimizer"], where),
        schedule=_parse_schedule(v["schedule"], where),
        global_size=global_size,
        global_scale=_scale(g["scale"], "scale", f"{where}: global_crops") if "scale" in g else (0.4, 1.0),
        local_number=number,
        local_size=local_size,
        local_scale=_scale(loc["scale"], "scale", f"{where}: local_crops") if "scale" in loc else (0.05, 0.4),
        augment=dict(augment),
        head=head,
        loss={k: float(x) if k != "warmup_teacher_temp_epochs" else int(x) for k, x in loss.items()},
        momentum_teacher=mt,
        freeze_last_layer_epochs=_int(v, "freeze_last_layer_epochs", where, 1, 0),
        grad_clip_norm=clip,
    )


def _parse_classifier(v: Any, where: str) -> ClassifierSpec:
    where = f"{where}: classifier"
    if not isinstance(v, Mapping):
        raise ConfigError(f"{where} must be an object with seed, epochs, batch_size, optimizer, schedule")
    _check_keys(v, _CLASSIFIER, where)
    for key in ("optimizer", "schedule"):
        if key not in v:
            raise ConfigError(f"{where}: missing required key {key!r}")
    return ClassifierSpec(
        seed=_int(v, "seed", where, None, 0),
        epochs=_int(v, "epochs", where),
        batch_size=_int(v, "batch_size", where),
        optimizer=_parse_optimizer(v["optimizer"], where),
        schedule=_parse_schedule(v["schedule"], where),
        transforms=_parse_transforms(v["transforms"], where) if "transforms" in v else TransformSpec(),
    )


def _parse(data: Any, where: str) -> DinoRecipe:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} must hold a JSON object, got {type(data).__name__}")
    if data.get("kind") != "dino":
        raise ConfigError(f"{where} is not a DINO recipe (kind {data.get('kind', 'member')!r})", 'set "kind": "dino"')
    _check_keys(data, _TOP, where)
    for key in ("name", "arch", "backbone", "classifier"):
        if data.get(key) is None:
            raise ConfigError(f"{where}: missing required key {key!r}")
    arch = _get(data, "arch", str, where)
    if not is_registered(arch):
        raise ConfigError(f"{where}: key 'arch' names unknown architecture {arch!r}", "see `ovdiv models list`")
    info = model_info(arch)
    if info.family not in DINO_FAMILIES:
        raise ConfigError(
            f"{where}: architecture {arch!r} (family {info.family}) has no linear classifier on pooled features",
            f"DINO members use the families {', '.join(DINO_FAMILIES)}",
        )
    arch_args = _get(data, "arch_args", dict, where, {})
    unknown = sorted(set(arch_args) - set(info.defaults))
    if unknown:
        raise ConfigError(
            f"{where}: arch_args: unknown key {unknown[0]!r} for architecture {arch!r}",
            f"valid keys: {', '.join(sorted(info.defaults)) or 'none'}",
        )
    input_size = _pair(data["input_size"], "input_size", where, cast=int) if "input_size" in data else info.input_size
    mean = _pair(data["mean"], "mean", where, n=3) if "mean" in data else IMAGENET_MEAN
    std = _pair(data["std"], "std", where, n=3) if "std" in data else IMAGENET_STD
    if min(std) <= 0:
        raise ConfigError(f"{where}: key 'std' must be > 0, got {list(std)}")
    name = _get(data, "name", str, where)
    if not name:
        raise ConfigError(f"{where}: key 'name' must not be empty")
    size = (int(input_size[0]), int(input_size[1]))
    return DinoRecipe(
        name=name,
        arch=arch,
        arch_args=dict(arch_args),
        num_classes=_int(data, "num_classes", where, info.default_num_classes, 2),
        input_size=size,
        mean=(mean[0], mean[1], mean[2]),
        std=(std[0], std[1], std[2]),
        data=_parse_data(data["data"], where) if "data" in data else DataSpec(),
        amp=_get(data, "amp", bool, where, True),
        channels_last=_get(data, "channels_last", bool, where, True),
        backbone=_parse_backbone(data["backbone"], where, size),
        classifier=_parse_classifier(data["classifier"], where),
        description=_get(data, "description", str, where, ""),
        source=_get(data, "source", str, where, ""),
    )
