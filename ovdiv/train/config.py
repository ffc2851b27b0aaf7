"""Ensemble-training configurations (``models/ensembles/*.json``), validated on load.

Schema (keys not listed are rejected)::

    {
      "name": "gncl_average",                # run / log name
      "heuristic": "gncl",                   # see HEURISTICS
      "lambda": 0.2,                         # λ; required by gncl, gncl_masked, balanced, attribution_diversity
      "consensus": "average",                # f̄ for gncl / gncl_masked / balanced: average|median|geometric|majority
      "members": [{"name": "m0", "arch": "resnet50", "arch_args": {}, "pretrained": null}, ...],
      "num_classes": 1000,
      "input_size": [224, 224],
      "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],          # optional
      "data": {"root": null, "dataset": null, "val_dataset": null, "limit": null, "val_limit": 500},
      "optimizer": {"name": "adabelief", "lr": 0.001, "betas": [0.9, 0.999], "eps": 1e-8},
      "schedule": {"name": "step", "step_epochs": 30, "gamma": 0.1},
      "epochs": 100, "batch_size": 64,
      "transforms": {"train_crop": "random_resized_crop", ...},          # as in member recipes (optional)
      "attribution": {"target": "label", "norm": "max"},                  # attribution_diversity only
      "snapshot": {"cycles": 5},                                          # snapshot only
      "prune_and_tune": {"pairs": 1, "sparsity": 0.5, "parent": null, "parent_epochs": 30,
                         "tune_epochs": 10, "tune_optimizer": {...}, "tune_schedule": {...}},
      "seed": 0, "workers": 8, "val_every": 1, "amp": true, "channels_last": true,
      "description": "...", "source": "..."                               # free text
    }

λ ranges: ``gncl`` / ``gncl_masked`` / ``balanced`` ``[0, 1]`` (Eq. 2 and 3 are convex combinations
resp. a penalty that must not outweigh the CE); ``attribution_diversity`` ``[0, 10]`` (the paper's grid
is 10, 1, 0.1, 0.01, 0.001). Heuristics without λ reject a ``lambda`` key so a typo'd heuristic is
not silently trained without its penalty.

``snapshot`` has exactly one member entry (the architecture); it produces ``cycles`` members.
``prune_and_tune`` has exactly one member entry (the parent); it produces ``2 · pairs`` children.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ovdiv.errors import ConfigError
from ovdiv.models.recipes import TransformSpec, _parse_transforms
from ovdiv.train.data import IMAGENET_MEAN, IMAGENET_STD
from ovdiv.train.losses import GNCL_CONSENSUS
from ovdiv.train.optim import OPTIMIZERS, SCHEDULES
from ovdiv.types import AttributionNorm, AttributionTarget

__all__ = [
    "HEURISTICS",
    "LAMBDA_RANGES",
    "DataConfig",
    "EnsembleConfig",
    "MemberSpec",
    "PruneAndTuneConfig",
    "load_ensemble_config",
]

HEURISTICS: tuple[str, ...] = (
    "independent",
    "gncl",
    "gncl_masked",
    "balanced",
    "attribution_diversity",
    "snapshot",
    "prune_and_tune",
)
LAMBDA_RANGES: dict[str, tuple[float, float]] = {
    "gncl": (0.0, 1.0),
    "gncl_masked": (0.0, 1.0),
    "balanced": (0.0, 1.0),
    "attribution_diversity": (0.0, 10.0),
}
_CONSENSUS_HEURISTICS = ("gncl", "gncl_masked", "balanced")


@dataclass
class MemberSpec:
    """One member: registry architecture, its arguments, optional starting weights."""

    name: str
    arch: str
    arch_args: dict[str, Any] = field(default_factory=dict)
    pretrained: str | None = None


@dataclass
class DataConfig:
    """Where the data is: an ImageFolder ``root`` (train/ + val/) or a dataset ``spec``."""

    root: str | None = None
    dataset: str | None = None
    val_dataset: str | None = None
    limit: int | None = None
    val_limit: int | None = 500


@dataclass
class PruneAndTuneConfig:
    """Prune-and-tune (Whitaker & Whitley): anti-random mask pairs on a trained parent.

    Attributes:
        pairs: Number of anti-random pairs (``2 · pairs`` children).
        sparsity: Fraction of each prunable weight tensor zeroed in child A (``1 − sparsity`` in B);
            0.5 makes the pair exactly complementary halves.
        parent: Checkpoint of a trained parent; None trains it first for ``parent_epochs`` with the
            config's optimizer/schedule.
        parent_epochs: Epochs of parent training when ``parent`` is None.
        tune_epochs: Fine-tuning epochs of each child.
        tune_optimizer: Optimizer of the fine-tuning (default SGD momentum 0.9 at the config's lr).
        tune_schedule: Schedule of the fine-tuning (default one-cycle lr/momentum).
    """

    pairs: int = 1
    sparsity: float = 0.5
    parent: str | None = None
    parent_epochs: int = 1
    tune_epochs: int = 1
    tune_optimizer: dict[str, Any] | None = None
    tune_schedule: dict[str, Any] = field(
        default_factory=lambda: {"name": "onecycle", "pct_start": 0.3, "base_momentum": 0.85, "max_momentum": 0.95}
    )


@dataclass
class EnsembleConfig:
    """A validated ensemble-training configuration (see the module docstring)."""

    name: str
    heuristic: str
    members: list[MemberSpec]
    num_classes: int
    input_size: tuple[int, int]
    optimizer: dict[str, Any]
    schedule: dict[str, Any]
    epochs: int
    batch_size: int
    lam: float | None = None
    consensus: str = "average"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    data: DataConfig = field(default_factory=DataConfig)
    transforms: TransformSpec = field(default_factory=TransformSpec)
    attribution: dict[str, str] = field(default_factory=lambda: {"target": "label", "norm": "max"})
    snapshot: dict[str, int] = field(default_factory=lambda: {"cycles": 3})
    prune_and_tune: PruneAndTuneConfig = field(default_factory=PruneAndTuneConfig)
    seed: int = 0
    workers: int = 0
    val_every: int = 1
    amp: bool = True
    channels_last: bool = True
    description: str = ""
    source: str = ""
    file: str = "<dict>"

    def to_dict(self) -> dict[str, Any]:
        """JSON form (the ``lambda`` key; ``file`` dropped)."""
        d = asdict(self)
        d["lambda"] = d.pop("lam")
        d.pop("file")
        d["input_size"] = list(self.input_size)
        return d

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], *, source: str = "<dict>") -> EnsembleConfig:
        """Validate and build; every problem is a one-line :class:`ConfigError` naming ``source`` (the file)."""
        return _parse(raw, source)


def load_ensemble_config(path: str | Path) -> EnsembleConfig:
    """Read and validate ``models/ensembles/<name>.json``.

    Raises:
        ConfigError: Missing/unreadable file, invalid JSON, unknown key, bad heuristic or λ.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"ensemble config {p} does not exist", "see models/ensembles/*.json for examples")
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"ensemble config {p} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"ensemble config {p} must hold a JSON object")
    return _parse(raw, str(p))


def _unknown(raw: Mapping[str, Any], valid: set[str], where: str) -> None:
    bad = sorted(set(raw) - valid)
    if bad:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(bad)}", f"valid keys: {', '.join(sorted(valid))}")


def _int(raw: Mapping[str, Any], key: str, where: str, default: int | None = None, minimum: int = 1) -> int:
    v = raw.get(key, default)
    if v is None:
        raise ConfigError(f"{where}: missing {key!r}")
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ConfigError(f"{where}: {key!r} must be an integer >= {minimum}, got {v!r}")
    return v


def _parse(raw: Mapping[str, Any], src: str) -> EnsembleConfig:
    top = {
        "name",
        "heuristic",
        "lambda",
        "consensus",
        "members",
        "num_classes",
        "input_size",
        "mean",
        "std",
        "data",
        "optimizer",
        "schedule",
        "epochs",
        "batch_size",
        "attribution",
        "transforms",
        "snapshot",
        "prune_and_tune",
        "seed",
        "workers",
        "val_every",
        "amp",
        "channels_last",
        "description",
        "source",
    }
    _unknown(raw, top, src)
    heuristic = raw.get("heuristic")
    if heuristic not in HEURISTICS:
        raise ConfigError(f"{src}: unknown heuristic {heuristic!r}", f"use one of {', '.join(HEURISTICS)}")

    lam = raw.get("lambda")
    if heuristic in LAMBDA_RANGES:
        lo, hi = LAMBDA_RANGES[heuristic]
        if lam is None:
            raise ConfigError(f"{src}: heuristic {heuristic!r} needs 'lambda'", f"a value in [{lo}, {hi}], e.g. 0.2")
        if isinstance(lam, bool) or not isinstance(lam, int | float) or not lo <= float(lam) <= hi:
            raise ConfigError(f"{src}: lambda {lam!r} out of range for {heuristic!r}", f"use a value in [{lo}, {hi}]")
        lam = float(lam)
    elif lam is not None:
        raise ConfigError(f"{src}: heuristic {heuristic!r} takes no 'lambda'", "remove it or pick gncl/balanced/...")

    consensus = raw.get("consensus", "average")
    if consensus not in GNCL_CONSENSUS:
        raise ConfigError(f"{src}: unknown consensus {consensus!r}", f"use one of {', '.join(GNCL_CONSENSUS)}")
    if "consensus" in raw and heuristic not in _CONSENSUS_HEURISTICS:
        raise ConfigError(f"{src}: 'consensus' is only used by {', '.join(_CONSENSUS_HEURISTICS)}")

    members_raw = raw.get("members")
    if not isinstance(members_raw, list) or not members_raw:
        raise ConfigError(f"{src}: 'members' must be a non-empty list of {{'arch': ...}} objects")
    members: list[MemberSpec] = []
    for i, m in enumerate(members_raw):
        where = f"{src}: members[{i}]"
        if not isinstance(m, dict) or "arch" not in m:
            raise ConfigError(f"{where} must be an object with an 'arch'")
        _unknown(m, {"name", "arch", "arch_args", "pretrained"}, where)
        if not isinstance(m.get("arch_args", {}), dict):
            raise ConfigError(f"{where}: 'arch_args' must be an object")
        members.append(
            MemberSpec(
                name=str(m.get("name", f"m{i}")),
                arch=str(m["arch"]),
                arch_args=dict(m.get("arch_args", {})),
                pretrained=m.get("pretrained"),
            )
        )
    names = [m.name for m in members]
    if len(set(names)) != len(names):
        raise ConfigError(f"{src}: member names must be unique, got {names}")
    single = heuristic in ("snapshot", "prune_and_tune")
    if single and len(members) != 1:
        raise ConfigError(f"{src}: heuristic {heuristic!r} takes exactly one member entry (the architecture)")
    if not single and len(members) < 2 and heuristic != "independent":
        raise ConfigError(f"{src}: heuristic {heuristic!r} needs at least 2 members")

    size = raw.get("input_size")
    if isinstance(size, int):
        size = [size, size]
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
        raise ConfigError(f"{src}: 'input_size' must be [H, W] positive integers, got {size!r}")

    for key in ("optimizer", "schedule"):
        if not isinstance(raw.get(key), dict):
            raise ConfigError(f"{src}: '{key}' must be an object with a 'name'")
    opt_name = str(raw["optimizer"].get("name", "")).lower()
    if opt_name not in OPTIMIZERS:
        raise ConfigError(f"{src}: unknown optimizer {opt_name!r}", f"use one of {', '.join(OPTIMIZERS)}")
    sched_name = str(raw["schedule"].get("name", "")).lower()
    if sched_name not in SCHEDULES:
        raise ConfigError(f"{src}: unknown schedule {sched_name!r}", f"use one of {', '.join(SCHEDULES)}")

    data_raw = raw.get("data", {})
    if not isinstance(data_raw, dict):
        raise ConfigError(f"{src}: 'data' must be an object")
    _unknown(data_raw, {"root", "dataset", "val_dataset", "limit", "val_limit"}, f"{src}: data")
    data = DataConfig(**data_raw)

    attribution = {"target": "label", "norm": "max"}
    att_raw = raw.get("attribution", {})
    _unknown(att_raw, {"target", "norm"}, f"{src}: attribution")
    attribution.update(att_raw)
    if attribution["target"] not in {t.value for t in AttributionTarget}:
        raise ConfigError(f"{src}: attribution.target {attribution['target']!r}", "use label, ensemble or member")
    if attribution["norm"] not in {n.value for n in AttributionNorm}:
        raise ConfigError(f"{src}: attribution.norm {attribution['norm']!r}", "use max, sum or none")

    snap_raw = raw.get("snapshot", {"cycles": 3})
    _unknown(snap_raw, {"cycles"}, f"{src}: snapshot")
    snapshot = {"cycles": _int(snap_raw, "cycles", f"{src}: snapshot", 3, 1)}

    pt_raw = raw.get("prune_and_tune", {})
    _unknown(pt_raw, set(PruneAndTuneConfig.__dataclass_fields__), f"{src}: prune_and_tune")
    pt = PruneAndTuneConfig(**pt_raw)
    if not 0.0 < float(pt.sparsity) < 1.0:
        raise ConfigError(f"{src}: prune_and_tune.sparsity {pt.sparsity!r} must be in (0, 1)")
    if isinstance(pt.pairs, bool) or not isinstance(pt.pairs, int) or pt.pairs < 1:
        raise ConfigError(f"{src}: prune_and_tune.pairs must be an integer >= 1")

    mean = tuple(float(v) for v in raw.get("mean", IMAGENET_MEAN))
    std = tuple(float(v) for v in raw.get("std", IMAGENET_STD))
    if len(mean) != 3 or len(std) != 3:
        raise ConfigError(f"{src}: 'mean' and 'std' need 3 values (RGB)")
    return EnsembleConfig(
        name=str(raw.get("name", Path(src).stem)),
        heuristic=str(heuristic),
        lam=lam,
        consensus=str(consensus),
        members=members,
        num_classes=_int(raw, "num_classes", src, None, 2),
        input_size=(size[0], size[1]),
        mean=(mean[0], mean[1], mean[2]),
        std=(std[0], std[1], std[2]),
        data=data,
        transforms=_parse_transforms(raw["transforms"], src) if "transforms" in raw else TransformSpec(),
        optimizer=dict(raw["optimizer"]),
        schedule=dict(raw["schedule"]),
        epochs=_int(raw, "epochs", src, None, 1),
        batch_size=_int(raw, "batch_size", src, None, 1),
        attribution=attribution,
        snapshot=snapshot,
        prune_and_tune=pt,
        seed=_int(raw, "seed", src, 0, 0),
        workers=_int(raw, "workers", src, 0, 0),
        val_every=_int(raw, "val_every", src, 1, 0),
        amp=bool(raw.get("amp", True)),
        channels_last=bool(raw.get("channels_last", True)),
        description=str(raw.get("description", "")),
        source=str(raw.get("source", "")),
        file=src,
    )
