"""Optimizers and learning-rate schedules built from recipe dictionaries.

Optimizer spec (``recipe.optimizer``): ``{"name": "sgd" | "rmsprop" | "adamw" | "adabelief", "lr": ...,
<keyword arguments of the optimizer class>}``. ``sgd`` = ``torch.optim.SGD``, ``rmsprop`` =
``torch.optim.RMSprop`` (``decay`` is accepted as an alias of ``alpha``, the TF name used by the
MNASNet recipe), ``adamw`` = ``torch.optim.AdamW``, ``adabelief`` = ``timm.optim.AdaBelief``.

Schedule spec (``recipe.schedule``), all evaluated per optimizer step on the fractional epoch
``e = step / steps_per_epoch`` and multiplying the optimizer's base lr:

- ``constant``: ``1``.
- ``step``: ``gamma ** floor(e / step_epochs)`` (``step_epochs`` may be fractional; ``every_epochs``
  is an alias) — e.g. ×0.1 every 30 epochs. ``exponential`` is the same rule under the name used
  for "×0.97 every 2.4 epochs" (MNASNet).
- ``cosine``: linear warm-up over ``warmup_epochs`` then ``min_factor + (1 − min_factor) ·
  ½(1 + cos(π · t))`` with ``t`` the post-warm-up progress in [0, 1].
- ``cyclic_cosine`` (snapshot ensembles, Huang et al. 2017): ``min_factor + (1 − min_factor) ·
  ½(1 + cos(π · (s mod S) / S))`` with ``S = ceil(total_steps / cycles)`` — the lr restarts at its base
  value every cycle and anneals towards ``min_lr`` (``min_factor = min_lr / lr``; default 0).
- ``onecycle``: ``torch.optim.lr_scheduler.OneCycleLR`` (``max_lr`` defaults to the optimizer lr;
  ``pct_start``, ``div_factor``, ``final_div_factor``, ``anneal_strategy``, ``cycle_momentum``,
  ``base_momentum``, ``max_momentum``) — it also cycles momentum (or Adam's β1) inversely to the lr.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR

from ovdiv.errors import ConfigError
from ovdiv.models.recipes import OPTIMIZER_NAMES, SCHEDULE_KEYS, optimizer_class

__all__ = ["OPTIMIZERS", "SCHEDULES", "build_optimizer", "build_scheduler", "schedule_factor"]

# One schema for recipes and trainer: the recipe module owns the names and keys.
OPTIMIZERS: tuple[str, ...] = OPTIMIZER_NAMES
SCHEDULES: tuple[str, ...] = tuple(SCHEDULE_KEYS)
_SCHEDULE_KEYS = SCHEDULE_KEYS


def build_optimizer(params: Iterable[Any], spec: Mapping[str, Any], *, where: str = "optimizer") -> Optimizer:
    """Build an optimizer from a spec dictionary.

    Args:
        params: Parameters or parameter groups.
        spec: ``{"name": ..., "lr": ..., **kwargs}`` (see the module docstring).
        where: Name of the config field, for error messages.

    Returns:
        The optimizer.

    Raises:
        ConfigError: Unknown optimizer name or keyword argument, missing ``lr``.
    """
    kwargs = dict(spec)
    name = str(kwargs.pop("name", kwargs.pop("type", ""))).lower()
    cls = optimizer_class(name)
    if "lr" not in kwargs:
        raise ConfigError(f"{where}: missing 'lr' for optimizer {name!r}", 'add e.g. "lr": 0.1')
    if name == "rmsprop" and "decay" in kwargs:
        kwargs["alpha"] = kwargs.pop("decay")
    if "betas" in kwargs:
        kwargs["betas"] = tuple(kwargs["betas"])
    valid = set(inspect.signature(cls.__init__).parameters) - {"self", "params"}
    unknown = sorted(set(kwargs) - valid)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)} for optimizer {name!r}",
            f"valid keys: {', '.join(sorted(valid))}",
        )
    try:
        return cls(params, **kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: invalid optimizer settings {dict(spec)}: {exc}") from exc


def _check_schedule(spec: Mapping[str, Any], where: str) -> str:
    name = str(spec.get("name", spec.get("type", "constant"))).lower()
    if name not in _SCHEDULE_KEYS:
        raise ConfigError(f"{where}: unknown schedule {name!r}", f"use one of {', '.join(SCHEDULES)}")
    unknown = sorted(set(spec) - {"name", "type"} - _SCHEDULE_KEYS[name])
    if unknown:
        valid = ", ".join(sorted(_SCHEDULE_KEYS[name])) or "none"
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} for schedule {name!r}", f"valid: {valid}")
    return name


def schedule_factor(
    spec: Mapping[str, Any], *, steps_per_epoch: int, total_steps: int, base_lr: float = 1.0, where: str = "schedule"
) -> Callable[[int], float]:
    """The lr multiplier ``f(step)`` of a non-onecycle schedule (see the module docstring).

    Args:
        spec: Schedule dictionary.
        steps_per_epoch: Optimizer steps per epoch (> 0).
        total_steps: Total optimizer steps of the run (> 0).
        base_lr: The optimizer's lr (used to turn ``min_lr`` into a factor).
        where: Config field name for errors.

    Returns:
        ``f(step) -> float``.
    """
    name = _check_schedule(spec, where)
    spe = max(1, int(steps_per_epoch))
    total = max(1, int(total_steps))
    if name == "constant":
        return lambda s: 1.0
    if name in ("step", "exponential"):
        every = float(spec.get("step_epochs", spec.get("every_epochs", 30)))
        gamma = float(spec.get("gamma", 0.1))
        if every <= 0:
            raise ConfigError(f"{where}: step_epochs must be > 0, got {every}")
        return lambda s: gamma ** math.floor(s / spe / every + 1e-9)
    if name == "cosine":
        warm = round(float(spec.get("warmup_epochs", 0)) * spe)
        floor = float(spec.get("min_factor", float(spec.get("min_lr", 0.0)) / base_lr if base_lr else 0.0))

        def cosine(s: int) -> float:
            if s < warm:
                return (s + 1) / warm
            t = min(1.0, (s - warm) / max(1, total - warm))
            return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))

        return cosine
    if name == "cyclic_cosine":
        cycles = int(spec.get("cycles", 1))
        if cycles < 1:
            raise ConfigError(f"{where}: cycles must be >= 1, got {cycles}")
        length = math.ceil(total / cycles)
        low = float(spec.get("min_factor", float(spec.get("min_lr", 0.0)) / base_lr if base_lr else 0.0))
        return lambda s: low + (1.0 - low) * 0.5 * (1.0 + math.cos(math.pi * (s % length) / length))
    raise ConfigError(f"{where}: schedule {name!r} is not a multiplier schedule")


def build_scheduler(
    optimizer: Optimizer,
    spec: Mapping[str, Any],
    *,
    steps_per_epoch: int,
    total_steps: int,
    where: str = "schedule",
) -> LRScheduler:
    """A per-step lr scheduler (call ``.step()`` after every optimizer step).

    Args:
        optimizer: The optimizer (its current lr is the base lr).
        spec: Schedule dictionary (module docstring).
        steps_per_epoch: Optimizer steps per epoch.
        total_steps: Total optimizer steps of the run.
        where: Config field name for errors.

    Returns:
        A ``LambdaLR`` or ``OneCycleLR``.
    """
    name = _check_schedule(spec, where)
    if name == "onecycle":
        kw = {k: v for k, v in spec.items() if k not in ("name", "type")}
        kw.setdefault("max_lr", [g["lr"] for g in optimizer.param_groups])
        try:
            return OneCycleLR(optimizer, total_steps=max(2, int(total_steps)), **kw)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: invalid onecycle settings: {exc}") from exc
    base_lr = float(optimizer.param_groups[0]["lr"])
    fn = schedule_factor(spec, steps_per_epoch=steps_per_epoch, total_steps=total_steps, base_lr=base_lr, where=where)
    return LambdaLR(optimizer, fn)
