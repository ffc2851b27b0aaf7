"""Super-network configs (``supernet_configs/*.json``): loading and strict validation.

A config is an ovdiv document whose ``bootstrapNAS`` section is nncf's, verbatim. nncf 2.19 does not
validate that section (NOTES §3 #5: typos such as ``epocs`` or ``min_out_channels`` are silently
ignored), so ovdiv validates the whole file: the top level against :data:`CONFIG_SCHEMA` and the
``bootstrapNAS`` section against nncf's own ``BOOTSTRAP_NAS_SCHEMA`` with a Draft-7 validator
(nncf's schemata are draft-7 style; plain ``jsonschema.validate`` picks the wrong meta-schema).
Unknown keys anywhere are a :class:`ConfigError` that names the key, its path and the closest valid
spelling.

Top-level keys (all but ``bootstrapNAS`` optional, defaults in brackets):

- ``name`` [file stem], ``description``
- ``model``: ``"resnet50"`` (torchvision architecture; the only one with a checked search space)
- ``num_classes`` [1000]; ``input_info.sample_size`` [1, 3, 224, 224] (nncf's field; H, W used)
- ``dataset`` ["imagenet"]: ``"imagenet"``/``"imagefolder"`` = ImageFolder under ``--data-root``
  (``train/`` and ``val/`` sub-folders), anything else is an ovdiv dataset spec (``demo:train``);
  ``val_dataset`` [same source]; ``train_limit`` / ``val_limit`` / ``search_limit`` [all]
- ``batch_size`` [64], ``batch_size_val`` [batch_size], ``workers`` [4], ``seed`` [0]
- ``steps_per_epoch`` [len(train loader)]: cap on training steps per epoch (tiny runs)
- ``optimizer``: ``{"type": "sgd"|"adam"|"adamw", "optimizer_params": {...}}``; the learning rate
  itself comes from each stage's ``init_lr`` (nncf's stage LR scheduler)
- ``amp`` [true]: mixed precision (autocast + GradScaler) when training on CUDA
- ``device`` ["auto"]: ``auto`` | ``cpu`` | ``cuda``
- ``require_pretrained`` [true]: the paper's ``init_lr`` 2.5e-6 only fine-tunes; training a
  randomly initialised ResNet-50 with it is refused unless ``--allow-random-init``
- ``expected_search_space``: ``{"width_groups": 37, "skippable_blocks": 6}`` [37 and the number of
  manual ``skipped_blocks``, 12 in nncf's auto mode]: training fails hard on any other count.
"""

from __future__ import annotations

import copy
import difflib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ovdiv.errors import ConfigError

__all__ = ["CONFIG_SCHEMA", "SupernetConfig", "load_config", "validate_config", "bootstrapnas_schema"]

CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["bootstrapNAS"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string"},
        "description": {"type": "string"},
        "model": {"type": "string", "enum": ["resnet50"]},
        "num_classes": {"type": "integer", "minimum": 2},
        "input_info": {
            "type": "object",
            "additionalProperties": False,
            "required": ["sample_size"],
            "properties": {
                "sample_size": {
                    "type": "array",
                    "items": {"type": "integer", "minimum": 1},
                    "minItems": 4,
                    "maxItems": 4,
                }
            },
        },
        "dataset": {"type": "string", "minLength": 1},
        "val_dataset": {"type": ["string", "null"]},
        "train_limit": {"type": ["integer", "null"], "minimum": 1},
        "val_limit": {"type": ["integer", "null"], "minimum": 1},
        "search_limit": {"type": ["integer", "null"], "minimum": 1},
        "batch_size": {"type": "integer", "minimum": 2},
        "batch_size_val": {"type": "integer", "minimum": 1},
        "workers": {"type": "integer", "minimum": 0},
        "seed": {"type": "integer"},
        "steps_per_epoch": {"type": ["integer", "null"], "minimum": 1},
        "optimizer": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "type": {"type": "string", "enum": ["sgd", "adam", "adamw"]},
                "optimizer_params": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "momentum": {"type": "number", "minimum": 0},
                        "weight_decay": {"type": "number", "minimum": 0},
                        "nesterov": {"type": "boolean"},
                        "betas": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2},
                        "eps": {"type": "number", "exclusiveMinimum": 0},
                    },
                },
            },
        },
        "amp": {"type": "boolean"},
        "device": {"type": "string", "enum": ["auto", "cpu", "cuda"]},
        "require_pretrained": {"type": "boolean"},
        "expected_search_space": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "width_groups": {"type": "integer", "minimum": 1},
                "skippable_blocks": {"type": "integer", "minimum": 1},
            },
        },
        "bootstrapNAS": {"type": "object"},
    },
}

_DEFAULTS: dict[str, Any] = {
    "model": "resnet50",
    "num_classes": 1000,
    "input_info": {"sample_size": [1, 3, 224, 224]},
    "dataset": "imagenet",
    "val_dataset": None,
    "train_limit": None,
    "val_limit": None,
    "search_limit": None,
    "batch_size": 64,
    "workers": 4,
    "seed": 0,
    "steps_per_epoch": None,
    "optimizer": {"type": "sgd", "optimizer_params": {"momentum": 0.9, "weight_decay": 4e-5, "nesterov": True}},
    "amp": True,
    "device": "auto",
    "require_pretrained": True,
}

IMAGEFOLDER_DATASETS = frozenset({"imagenet", "imagefolder"})


def bootstrapnas_schema() -> dict[str, Any]:
    """Nncf's JSON schema of the ``bootstrapNAS`` section (imports ``nncf`` but not ``nncf.torch``)."""
    from nncf.config.schemata.experimental_schema import BOOTSTRAP_NAS_SCHEMA

    return BOOTSTRAP_NAS_SCHEMA


def _format_path(prefix: str, path: Any) -> str:
    out = prefix
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "<top level>"


def _schema_errors(instance: Any, schema: dict[str, Any], prefix: str, source: str) -> None:
    import jsonschema

    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(instance), key=lambda e: (len(e.path), list(map(str, e.path))))
    if not errors:
        return
    err = errors[0]
    where = _format_path(prefix, err.absolute_path)
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        allowed = list(err.schema.get("properties", {}))
        bad = [k for k in err.instance if k not in allowed]
        key = bad[0] if bad else "?"
        close = difflib.get_close_matches(key, allowed, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(sorted(allowed))}"
        raise ConfigError(f"{source}: unknown key {key!r} in {where}", hint)
    raise ConfigError(f"{source}: {where}: {err.message}")


@dataclass(frozen=True)
class SupernetConfig:
    """A validated super-network config.

    Attributes:
        data: The full config with defaults filled in (JSON-serialisable).
        source: Where it came from (file path or ``"<dict>"``), for messages.
    """

    data: dict[str, Any]
    source: str = "<dict>"

    @property
    def name(self) -> str:
        """Config name."""
        return str(self.data["name"])

    @property
    def num_classes(self) -> int:
        """Number of classes of the classifier head."""
        return int(self.data["num_classes"])

    @property
    def input_size(self) -> tuple[int, int]:
        """(H, W) of the network input used for training and for nncf's graph."""
        s = self.data["input_info"]["sample_size"]
        return int(s[2]), int(s[3])

    @property
    def bnas(self) -> dict[str, Any]:
        """The ``bootstrapNAS`` section."""
        return self.data["bootstrapNAS"]

    @property
    def manual_blocks(self) -> list[list[str]] | None:
        """The manual ``skipped_blocks`` list, or None in nncf's auto mode."""
        depth = self.bnas.get("training", {}).get("elasticity", {}).get("depth", {})
        blocks = depth.get("skipped_blocks")
        return None if blocks is None else [list(b) for b in blocks]

    @property
    def expected_search_space(self) -> dict[str, int]:
        """The search-space sizes the built super-network must have (see the module docstring)."""
        exp = dict(self.data.get("expected_search_space") or {})
        exp.setdefault("width_groups", 37)
        blocks = self.manual_blocks
        exp.setdefault("skippable_blocks", 12 if blocks is None else len(blocks))
        return exp

    @property
    def stages(self) -> list[dict[str, Any]]:
        """The progressive-shrinking stage descriptions."""
        return list(self.bnas["training"]["schedule"]["list_stage_descriptions"])

    def nncf_dict(
        self, log_dir: str | os.PathLike[str], *, input_size: tuple[int, int] | None = None
    ) -> dict[str, Any]:
        """The dict handed to ``NNCFConfig.from_dict``: only keys nncf knows, ``log_dir`` set.

        Args:
            log_dir: Where nncf dumps its graphs (created by the caller; NOTES §3 #2).
            input_size: Override of the (H, W) of ``input_info`` (``supernet info`` counts MACs at 224).
        """
        h, w = input_size or self.input_size
        return {
            "model": self.data["model"],
            "num_classes": self.num_classes,
            "input_info": {"sample_size": [1, 3, int(h), int(w)]},
            "log_dir": str(log_dir),
            "bootstrapNAS": copy.deepcopy(self.bnas),
        }

    def to_dict(self) -> dict[str, Any]:
        """A deep copy of the config (with defaults)."""
        return copy.deepcopy(self.data)


def validate_config(raw: Any, *, source: str = "<dict>") -> SupernetConfig:
    """Validate a config dict and fill defaults.

    Raises:
        ConfigError: unknown or malformed key (named, with the closest valid spelling), or a
            combination nncf 2.19 cannot run (``depth_indicator`` >= 3 in auto block mode, NOTES §3 #4).
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a supernet config must be a JSON object")
    _schema_errors(raw, CONFIG_SCHEMA, "", source)
    _schema_errors(raw["bootstrapNAS"], bootstrapnas_schema(), "bootstrapNAS", source)
    data = copy.deepcopy(_DEFAULTS)
    data.update(copy.deepcopy(raw))
    data.setdefault("name", Path(source).stem if source != "<dict>" else "supernet")
    data.setdefault("batch_size_val", data["batch_size"])
    bnas = data["bootstrapNAS"]
    training = bnas.get("training")
    if not isinstance(training, dict):
        raise ConfigError(f"{source}: bootstrapNAS.training is required")
    if training.get("algorithm", "progressive_shrinking") != "progressive_shrinking":
        raise ConfigError(f"{source}: bootstrapNAS.training.algorithm must be 'progressive_shrinking'")
    stages = training.get("schedule", {}).get("list_stage_descriptions")
    if not stages:
        raise ConfigError(f"{source}: bootstrapNAS.training.schedule.list_stage_descriptions must list the stages")
    elasticity = training.get("elasticity", {})
    dims = elasticity.get("available_elasticity_dims", ["width", "depth"])
    if "kernel" in dims:
        raise ConfigError(f"{source}: elastic kernel is not supported for ResNet-50 (1x1/3x3 convs); remove 'kernel'")
    auto_blocks = elasticity.get("depth", {}).get("skipped_blocks") is None
    for i, st in enumerate(stages):
        if "epochs" not in st:
            raise ConfigError(f"{source}: bootstrapNAS.training.schedule.list_stage_descriptions[{i}].epochs missing")
        for d in st.get("train_dims", []):
            if d not in dims:
                raise ConfigError(
                    f"{source}: list_stage_descriptions[{i}].train_dims has {d!r}, not in available_elasticity_dims"
                )
        if auto_blocks and st.get("depth_indicator", 1) >= 3:
            raise ConfigError(
                f"{source}: list_stage_descriptions[{i}].depth_indicator={st['depth_indicator']} with automatic "
                "skippable blocks crashes nncf 2.19 (list.remove bug)",
                "use depth_indicator <= 2 (as the paper does) or list skipped_blocks manually",
            )
    h, w = data["input_info"]["sample_size"][2:]
    if h < 32 or w < 32:
        raise ConfigError(f"{source}: input_info.sample_size {h}x{w} is too small for ResNet-50 (use >= 32)")
    return SupernetConfig(data=data, source=source)


def load_config(path: str | os.PathLike[str]) -> SupernetConfig:
    """Load and validate a supernet config file.

    Raises:
        ConfigError: missing file, invalid JSON, or a validation error (see :func:`validate_config`).
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"supernet config {p} does not exist", "pass a file such as supernet_configs/resnet50.json")
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"supernet config {p} is not valid JSON: {exc}") from exc
    return validate_config(raw, source=str(p))
