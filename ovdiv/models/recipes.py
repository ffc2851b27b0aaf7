"""Member training recipes (``models/<id>.json``): architecture + optimiser + schedule, validated on load.

A recipe says *what* to train; :mod:`ovdiv.train` says *how*. Schema (keys not listed are rejected with a
:class:`~ovdiv.errors.ConfigError` naming the file and the key)::

    {
      "name": "resnext50_32_2",                       # required; member / run name
      "description": "...", "source": "Rosales et al. 2023, Table i",      # optional free text
      "arch": "resnext50",                            # required; a registry name (ovdiv models list)
      "arch_args": {"cardinality": 32, "width_per_group": 2, "layers": [3, 4, 6, 3], "dropout": 0.2},
      "num_classes": 1000,                            # default: the architecture's default
      "input_size": [224, 224],                       # default: the architecture's default
      "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],        # default: ImageNet
      "data": {"train": "imagenet:train", "val": "imagenet", "train_limit": null, "val_limit": null},
      "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4},     # required
      "schedule": {"name": "step", "step_epochs": 30, "gamma": 0.1},                      # required
      "epochs": 100, "batch_size": 32,                # required
      "transforms": {"train_crop": "random_resized_crop", "scale": [0.08, 1.0], "ratio": [0.75, 1.3333],
                     "interpolation": "bilinear", "hflip": 0.5, "eval_crop_pct": 0.875},
      "label_smoothing": 0.0, "grad_clip_norm": null, "amp": true, "channels_last": true, "seed": 0
    }

``optimizer`` and ``schedule`` are flat dicts ``{"name": ..., **params}`` in the format of
:mod:`ovdiv.train.optim` (which builds them): optimizers ``sgd``, ``rmsprop`` (``decay`` = torch's
``alpha``), ``adamw``, ``adabelief``, with the keyword arguments of the torch/timm class; schedules
``constant``, ``step`` / ``exponential`` (``gamma ** floor(epoch / step_epochs)``, fractional
``step_epochs`` allowed, e.g. x0.97 every 2.4 epochs), ``cosine`` (``warmup_epochs``, ``min_factor`` or
``min_lr``), ``cyclic_cosine`` (``cycles``, ``min_factor`` or ``min_lr``) and ``onecycle`` (``OneCycleLR`` arguments).

``transforms.train_crop``: ``"random_resized_crop"`` (the paper: scale 0.08-1, ratio 3/4-4/3, bilinear, the
crop resized to ``input_size``) or ``"none"`` (images are only resized to ``input_size``; used by the tiny
recipes on 64 px synthetic data); ``hflip`` is the horizontal-flip probability; ``eval_crop_pct`` the centre
crop fraction of validation images read from folders (``null``: plain resize).

Example:
    >>> from ovdiv.models.recipes import load_recipe
    >>> r = load_recipe("models/resnext50_32_2.json")
    >>> r.arch, r.optimizer["lr"], r.schedule
    ('resnext50', 0.1, {'name': 'step', 'step_epochs': 30, 'gamma': 0.1})
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ovdiv.cards import IMAGENET_MEAN, IMAGENET_STD
from ovdiv.errors import ConfigError
from ovdiv.models._registry import create_model, is_registered, model_info

__all__ = [
    "Recipe",
    "TransformSpec",
    "DataSpec",
    "load_recipe",
    "optimizer_class",
    "OPTIMIZER_NAMES",
    "SCHEDULE_KEYS",
    "RECIPE_DIR",
]

RECIPE_DIR = Path(__file__).resolve().parents[1] / "_recipes"
"""The recipes: ``models/`` at the repository root, reached through the link ``ovdiv/_recipes`` (wheels hold a copy)."""

OPTIMIZER_NAMES: tuple[str, ...] = ("sgd", "rmsprop", "adamw", "adabelief")

SCHEDULE_KEYS: dict[str, frozenset[str]] = {
    "constant": frozenset(),
    "step": frozenset({"step_epochs", "every_epochs", "gamma"}),
    "exponential": frozenset({"step_epochs", "every_epochs", "gamma"}),
    "cosine": frozenset({"warmup_epochs", "min_factor", "min_lr"}),
    "cyclic_cosine": frozenset({"cycles", "min_factor", "min_lr"}),
    "onecycle": frozenset(
        {
            "max_lr",
            "pct_start",
            "div_factor",
            "final_div_factor",
            "anneal_strategy",
            "cycle_momentum",
            "base_momentum",
            "max_momentum",
            "three_phase",
        }
    ),
}
"""Valid parameter keys of each schedule (the trainer, :mod:`ovdiv.train.optim`, uses this table)."""

_TRAIN_CROPS = ("random_resized_crop", "none")
_INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


def optimizer_class(name: str) -> type[torch.optim.Optimizer]:
    """The optimizer class a recipe's ``optimizer.name`` stands for (AdaBelief is timm's).

    Raises:
        ConfigError: unknown name.
    """
    if name == "sgd":
        return torch.optim.SGD
    if name == "rmsprop":
        return torch.optim.RMSprop
    if name == "adamw":
        return torch.optim.AdamW
    if name == "adabelief":
        from timm.optim import AdaBelief

        return AdaBelief
    raise ConfigError(f"unknown optimizer {name!r}", f"use one of {', '.join(OPTIMIZER_NAMES)}")


def _optimizer_keys(name: str) -> frozenset[str]:
    cls = optimizer_class(name)
    keys = set(inspect.signature(cls.__init__).parameters) - {"self", "params"}
    if name == "rmsprop":
        keys.add("decay")  # TF name of alpha, accepted by ovdiv.train.optim
    return frozenset(keys)


@dataclass(frozen=True)
class TransformSpec:
    """Training / validation image transforms (see the module docstring).

    Attributes:
        train_crop: ``"random_resized_crop"`` or ``"none"``.
        scale: RandomResizedCrop area fraction range.
        ratio: RandomResizedCrop aspect-ratio range.
        interpolation: ``"bilinear"``, ``"bicubic"`` or ``"nearest"``.
        hflip: Horizontal-flip probability.
        eval_crop_pct: Centre-crop fraction for validation images read from folders (``None``: resize only).
    """

    train_crop: str = "random_resized_crop"
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    interpolation: str = "bilinear"
    hflip: float = 0.5
    eval_crop_pct: float | None = 0.875


@dataclass(frozen=True)
class DataSpec:
    """Where the training and validation images come from (dataset specs of :func:`ovdiv.data.load`).

    Attributes:
        train: Training spec (``"demo:train"``); ``None`` = given at run time (``--data-root``).
        val: Validation spec (``"demo"``); ``None`` = derived by the trainer.
        train_limit: Use only the first N training images.
        val_limit: Use only the first N validation images.
    """

    train: str | None = None
    val: str | None = None
    train_limit: int | None = None
    val_limit: int | None = None


@dataclass(frozen=True)
class Recipe:
    """A validated member recipe (see the module docstring for the JSON schema).

    Attributes:
        name: Member / run name.
        arch: Registry architecture name.
        arch_args: Builder arguments.
        num_classes: Number of classes.
        input_size: ``(H, W)`` training resolution.
        optimizer: ``{"name": ..., "lr": ..., **kwargs}``.
        schedule: ``{"name": ..., **params}`` (per-step, on the fractional epoch).
        epochs: Training epochs.
        batch_size: Global batch size.
        mean: Normalisation mean (RGB, [0, 1] units).
        std: Normalisation std.
        transforms: Augmentation settings.
        data: Dataset specs.
        label_smoothing: Cross-entropy label smoothing.
        grad_clip_norm: Clip the global gradient norm to this value (``None``: no clipping).
        amp: Mixed precision on CUDA.
        channels_last: Channels-last memory format on CUDA.
        seed: Seed of initialisation, shuffling and augmentation.
        description: Free text.
        source: Where the values come from (paper, table).
        path: The file it was read from (not serialised).
    """

    name: str
    arch: str
    optimizer: dict[str, Any]
    schedule: dict[str, Any]
    epochs: int
    batch_size: int
    arch_args: dict[str, Any] = field(default_factory=dict)
    num_classes: int = 1000
    input_size: tuple[int, int] = (224, 224)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    transforms: TransformSpec = field(default_factory=TransformSpec)
    data: DataSpec = field(default_factory=DataSpec)
    label_smoothing: float = 0.0
    grad_clip_norm: float | None = None
    amp: bool = True
    channels_last: bool = True
    seed: int = 0
    description: str = ""
    source: str = ""
    path: Path | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``load_recipe`` of its JSON gives an equal recipe); ``path`` is left out."""
        d = dataclasses.asdict(self)
        d.pop("path")
        return json.loads(json.dumps(d))

    def create_model(self) -> nn.Module:
        """Build the recipe's (untrained) architecture."""
        return create_model(self.arch, num_classes=self.num_classes, **self.arch_args)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "recipe") -> Recipe:
        """Validate a dict and build a recipe.

        Args:
            data: The parsed JSON object.
            source: How to name the input in errors (``"recipe models/x.json"``).

        Raises:
            ConfigError: Unknown key, missing required key, bad type or value, unknown architecture.
        """
        return _parse(data, source)


def load_recipe(path: str | os.PathLike[str]) -> Recipe:
    """Read and validate a recipe file.

    Args:
        path: A ``models/<id>.json`` file.

    Returns:
        The :class:`Recipe` (``recipe.path`` set).

    Raises:
        ConfigError: Missing file, invalid JSON, or any schema violation (message names file and key).
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"recipe {p} does not exist", "see models/*.json") from None
    except OSError as exc:
        raise ConfigError(f"recipe {p} cannot be read ({exc.strerror})") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"recipe {p} is not valid JSON (line {exc.lineno}: {exc.msg})") from exc
    recipe = _parse(data, f"recipe {p}")
    return dataclasses.replace(recipe, path=p)


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------
_TOP_KEYS = {f.name for f in dataclasses.fields(Recipe)} - {"path"}
_REQUIRED = ("name", "arch", "optimizer", "schedule", "epochs", "batch_size")


def _type_name(t: type | tuple[type, ...]) -> str:
    ts = t if isinstance(t, tuple) else (t,)
    return " or ".join(
        {int: "an integer", float: "a number", str: "a string", bool: "true/false"}.get(x, x.__name__) for x in ts
    )


def _get(d: Mapping[str, Any], key: str, typ: type | tuple[type, ...], where: str, default: Any = None) -> Any:
    if key not in d or d[key] is None:
        return default
    v = d[key]
    types = typ if isinstance(typ, tuple) else (typ,)
    bad = isinstance(v, bool) and bool not in types
    if not bad and float in types and isinstance(v, int):
        return float(v)
    if bad or not isinstance(v, types):
        raise ConfigError(f"{where}: key {key!r} must be {_type_name(typ)}, got {v!r}")
    return v


def _check_keys(d: Mapping[str, Any], valid: set[str] | frozenset[str], where: str) -> None:
    unknown = sorted(set(d) - set(valid))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {unknown[0]!r}" if len(unknown) == 1 else f"{where}: unknown keys {unknown}",
            f"valid keys: {', '.join(sorted(valid)) or 'none'}",
        )


def _positive(v: float, key: str, where: str, *, strict: bool = True) -> None:
    if (strict and v <= 0) or (not strict and v < 0):
        raise ConfigError(f"{where}: key {key!r} must be {'> 0' if strict else '>= 0'}, got {v}")


def _pair(v: Any, key: str, where: str, *, n: int = 2, cast: type = float) -> tuple[Any, ...]:
    if not isinstance(v, list | tuple) or len(v) != n or not all(isinstance(x, int | float) for x in v):
        raise ConfigError(f"{where}: key {key!r} must be a list of {n} numbers, got {v!r}")
    return tuple(cast(x) for x in v)


def _parse_optimizer(v: Any, where: str) -> dict[str, Any]:
    where = f"{where}: optimizer"
    if not isinstance(v, Mapping):
        raise ConfigError(f'{where} must be an object like {{"name": "sgd", "lr": 0.1}}, got {v!r}')
    name = v.get("name")
    if name not in OPTIMIZER_NAMES:
        raise ConfigError(f"{where}: key 'name' must be one of {list(OPTIMIZER_NAMES)}, got {name!r}")
    _check_keys(v, set(_optimizer_keys(name)) | {"name"}, f"{where} ({name})")
    if "lr" not in v:
        raise ConfigError(f"{where}: missing required key 'lr'")
    lr = _get(v, "lr", float, where)
    _positive(lr, "lr", where)
    for key in ("momentum", "weight_decay", "alpha", "decay", "eps"):
        if key in v:
            _positive(_get(v, key, float, where), key, where, strict=False)
    if "betas" in v:
        _pair(v["betas"], "betas", where)
    return dict(v)


def _parse_schedule(v: Any, where: str) -> dict[str, Any]:
    where = f"{where}: schedule"
    if not isinstance(v, Mapping):
        raise ConfigError(f'{where} must be an object like {{"name": "step", "step_epochs": 30}}, got {v!r}')
    name = v.get("name")
    if name not in SCHEDULE_KEYS:
        raise ConfigError(f"{where}: key 'name' must be one of {list(SCHEDULE_KEYS)}, got {name!r}")
    _check_keys(v, set(SCHEDULE_KEYS[name]) | {"name"}, f"{where} ({name})")
    for key in ("step_epochs", "every_epochs", "gamma", "max_lr", "div_factor", "final_div_factor"):
        if key in v:
            _positive(_get(v, key, float, where), key, where)
    for key in ("warmup_epochs", "min_factor", "min_lr"):
        if key in v:
            _positive(_get(v, key, float, where), key, where, strict=False)
    if "pct_start" in v and not 0 < _get(v, "pct_start", float, where) < 1:
        raise ConfigError(f"{where}: key 'pct_start' must be in (0, 1), got {v['pct_start']}")
    if "cycles" in v:
        cycles = _get(v, "cycles", int, where)
        if cycles < 1:
            raise ConfigError(f"{where}: key 'cycles' must be >= 1, got {cycles}")
    return dict(v)


def _parse_transforms(v: Any, where: str) -> TransformSpec:
    where = f"{where}: transforms"
    if not isinstance(v, Mapping):
        raise ConfigError(f"{where} must be an object, got {v!r}")
    _check_keys(v, {f.name for f in dataclasses.fields(TransformSpec)}, where)
    d = TransformSpec()
    crop = _get(v, "train_crop", str, where, d.train_crop)
    if crop not in _TRAIN_CROPS:
        raise ConfigError(f"{where}: key 'train_crop' must be one of {list(_TRAIN_CROPS)}, got {crop!r}")
    interp = _get(v, "interpolation", str, where, d.interpolation)
    if interp not in _INTERPOLATIONS:
        raise ConfigError(f"{where}: key 'interpolation' must be one of {list(_INTERPOLATIONS)}, got {interp!r}")
    scale = _pair(v["scale"], "scale", where) if "scale" in v else d.scale
    ratio = _pair(v["ratio"], "ratio", where) if "ratio" in v else d.ratio
    if not 0 < scale[0] <= scale[1] <= 1:
        raise ConfigError(f"{where}: key 'scale' must satisfy 0 < min <= max <= 1, got {list(scale)}")
    if not 0 < ratio[0] <= ratio[1]:
        raise ConfigError(f"{where}: key 'ratio' must satisfy 0 < min <= max, got {list(ratio)}")
    hflip = _get(v, "hflip", float, where, d.hflip)
    if not 0 <= hflip <= 1:
        raise ConfigError(f"{where}: key 'hflip' must be a probability in [0, 1], got {hflip}")
    crop_pct = _get(v, "eval_crop_pct", float, where, None) if "eval_crop_pct" in v else d.eval_crop_pct
    if crop_pct is not None and not 0 < crop_pct <= 1:
        raise ConfigError(f"{where}: key 'eval_crop_pct' must be in (0, 1], got {crop_pct}")
    return TransformSpec(
        train_crop=crop,
        scale=(scale[0], scale[1]),
        ratio=(ratio[0], ratio[1]),
        interpolation=interp,
        hflip=hflip,
        eval_crop_pct=crop_pct,
    )


def _parse_data(v: Any, where: str) -> DataSpec:
    where = f"{where}: data"
    if not isinstance(v, Mapping):
        raise ConfigError(f"{where} must be an object, got {v!r}")
    _check_keys(v, {f.name for f in dataclasses.fields(DataSpec)}, where)
    limits = {}
    for key in ("train_limit", "val_limit"):
        limits[key] = _get(v, key, int, where)
        if limits[key] is not None and limits[key] < 1:
            raise ConfigError(f"{where}: key {key!r} must be >= 1, got {limits[key]}")
    return DataSpec(train=_get(v, "train", str, where), val=_get(v, "val", str, where), **limits)


def _parse(data: Any, where: str) -> Recipe:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} must hold a JSON object, got {type(data).__name__}")
    kind = data.get("kind", "member")
    if kind != "member":  # other kinds have their own schema (DINO: ovdiv.train.dino_recipe)
        raise ConfigError(
            f"{where} is a {kind!r} recipe, not a member recipe",
            "train it with `ovdiv train` (it dispatches on the kind) or ovdiv.train.train_dino",
        )
    data = {k: v for k, v in data.items() if k != "kind"}
    _check_keys(data, _TOP_KEYS, where)
    for key in _REQUIRED:
        if data.get(key) is None:
            raise ConfigError(f"{where}: missing required key {key!r}")
    arch = _get(data, "arch", str, where)
    if not is_registered(arch):
        raise ConfigError(f"{where}: key 'arch' names unknown architecture {arch!r}", "see `ovdiv models list`")
    info = model_info(arch)
    arch_args = _get(data, "arch_args", dict, where, {})
    unknown = sorted(set(arch_args) - set(info.defaults))
    if unknown:
        raise ConfigError(
            f"{where}: arch_args: unknown key {unknown[0]!r} for architecture {arch!r}",
            f"valid keys: {', '.join(sorted(info.defaults)) or 'none'}",
        )
    num_classes = _get(data, "num_classes", int, where, info.default_num_classes)
    epochs = _get(data, "epochs", int, where)
    batch_size = _get(data, "batch_size", int, where)
    for key, val in (("num_classes", num_classes), ("epochs", epochs), ("batch_size", batch_size)):
        if val < 1:
            raise ConfigError(f"{where}: key {key!r} must be >= 1, got {val}")
    input_size = _pair(data["input_size"], "input_size", where, cast=int) if "input_size" in data else info.input_size
    if min(input_size) < 8:
        raise ConfigError(f"{where}: key 'input_size' must be at least [8, 8], got {list(input_size)}")
    if "img_size" in info.defaults:  # fixed-resolution architectures (ViT position embeddings)
        img = arch_args.get("img_size", info.defaults["img_size"])
        if tuple(input_size) != (img, img):
            raise ConfigError(
                f"{where}: key 'input_size' {list(input_size)} does not match architecture {arch!r} (img_size {img})",
                f'set "arch_args": {{"img_size": {input_size[0]}}} or "input_size": [{img}, {img}]',
            )
    mean = _pair(data["mean"], "mean", where, n=3) if "mean" in data else IMAGENET_MEAN
    std = _pair(data["std"], "std", where, n=3) if "std" in data else IMAGENET_STD
    if min(std) <= 0:
        raise ConfigError(f"{where}: key 'std' must be > 0, got {list(std)}")
    label_smoothing = _get(data, "label_smoothing", float, where, 0.0)
    if not 0 <= label_smoothing < 1:
        raise ConfigError(f"{where}: key 'label_smoothing' must be in [0, 1), got {label_smoothing}")
    clip = _get(data, "grad_clip_norm", float, where)
    if clip is not None:
        _positive(clip, "grad_clip_norm", where)
    name = _get(data, "name", str, where)
    if not name:
        raise ConfigError(f"{where}: key 'name' must not be empty")
    return Recipe(
        name=name,
        arch=arch,
        arch_args=dict(arch_args),
        num_classes=num_classes,
        input_size=(input_size[0], input_size[1]),
        mean=(mean[0], mean[1], mean[2]),
        std=(std[0], std[1], std[2]),
        optimizer=_parse_optimizer(data["optimizer"], where),
        schedule=_parse_schedule(data["schedule"], where),
        epochs=epochs,
        batch_size=batch_size,
        transforms=_parse_transforms(data["transforms"], where) if "transforms" in data else TransformSpec(),
        data=_parse_data(data["data"], where) if "data" in data else DataSpec(),
        label_smoothing=label_smoothing,
        grad_clip_norm=clip,
        amp=_get(data, "amp", bool, where, True),
        channels_last=_get(data, "channels_last", bool, where, True),
        seed=_get(data, "seed", int, where, 0),
        description=_get(data, "description", str, where, ""),
        source=_get(data, "source", str, where, ""),
    )
