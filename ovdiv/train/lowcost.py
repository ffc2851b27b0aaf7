"""Low-cost ensembles (Whitaker & Whitley): snapshot ensembles and prune-and-tune anti-random pairs.

**Snapshot** (Huang et al. 2017): one network trained with a cyclic cosine lr
(``½(1 + cos(π (s mod S)/S))``, ``S = ceil(total_steps / cycles)``); at the end of every cycle, when
the lr has annealed to ~0 and the network sits in a local minimum, a copy is saved as a member.
``cycles`` members for the price of one training run. The config's schedule is replaced by the
cyclic one.

**Prune-and-tune** (anti-random pairs): a trained parent (``prune_and_tune.parent`` checkpoint, or
trained here for ``parent_epochs``) is copied twice per pair; for every prunable weight (each
``nn.Conv2d`` / ``nn.Linear`` ``weight``, classifier included) a uniformly random unstructured mask
``M`` keeping exactly ``round((1 − sparsity) · n)`` entries is drawn (seeded by ``seed + pair``); child A
keeps ``M``, child B keeps ``1 − M`` — with sparsity 0.5 the two children split every weight tensor
into complementary halves. The masks are installed with
``torch.nn.utils.prune.custom_from_mask`` (``weight = weight_orig ⊙ mask``, recomputed at every
forward, so masked weights stay exactly zero and the masks never change while tuning), the children
are fine-tuned with a one-cycle lr/momentum schedule (``tune_optimizer`` / ``tune_schedule``; all
children in one loop with the summed — i.e. per-child independent — cross-entropy), and the pruning
is made permanent (``prune.remove``) in the saved checkpoints. ``RUN/masks.pt`` keeps child A's masks
(``{"pair<k>": {"<module>.weight": bool tensor}}``) for audit.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import prune

from ovdiv.atomic import atomic_path
from ovdiv.train.config import EnsembleConfig, MemberSpec
from ovdiv.train.data import DataSource
from ovdiv.train.engine import DistEnv, JointTrainer, RunOptions, StepOutput
from ovdiv.train.ensemble import _independent, _loaders, save_member
from ovdiv.train.losses import member_ce
from ovdiv.train.weights import build_member, load_pretrained
from ovdiv.types import ProgressCallback

__all__ = [
    "anti_random_masks",
    "apply_masks",
    "make_pruning_permanent",
    "prunable_weights",
    "train_prune_and_tune",
    "train_snapshot",
]

log = logging.getLogger("ovdiv.train")

MaskSet = dict[str, Tensor]


def _summed(fwd: Callable[[Tensor], Tensor], _m: Sequence[nn.Module], x: Tensor, y: Tensor) -> StepOutput:
    z = fwd(x)
    return StepOutput(member_ce(z, y).sum(), z)


def _save(path: Path, model: nn.Module, cfg: EnsembleConfig, extra: dict[str, Any]) -> Path:
    spec = cfg.members[0]
    return save_member(path, model, cfg, spec.arch, spec.arch_args, extra)


def _single_member(
    cfg: EnsembleConfig, source: DataSource, env: DistEnv, options: RunOptions
) -> tuple[MemberSpec, Any, nn.Module]:
    """The one network a low-cost ensemble starts from: its spec, the run's loaders and the seeded model.

    Args:
        cfg: The ensemble config (its first member is the network).
        source: The training data.
        env: The distributed environment.
        options: Run-time options (the seed).

    Returns:
        ``(spec, loaders, model)``; the model is built right after ``torch.manual_seed(options.seed)``.
    """
    spec = cfg.members[0]
    loaders = _loaders(cfg, source, env, options)
    torch.manual_seed(options.seed)
    return spec, loaders, build_member(spec.arch, spec.arch_args, cfg.num_classes, spec.pretrained)


# ---------------------------------------------------------------------------------------------
# snapshot
# ---------------------------------------------------------------------------------------------
def train_snapshot(
    cfg: EnsembleConfig,
    *,
    source: DataSource,
    out_dir: Path,
    env: DistEnv,
    options: RunOptions,
    progress: ProgressCallback | None = None,
) -> list[Path]:
    """Snapshot ensemble: one run with a cyclic cosine lr, a member checkpoint per cycle.

    Returns:
        ``cycles`` member checkpoints ``RUN/members/<name>_snap<k>.pt`` (k = 1..cycles).
    """
    cycles = int(cfg.snapshot["cycles"])
    spec, loaders, model = _single_member(cfg, source, env, options)
    paths = [out_dir / "members" / f"{spec.name}_snap{k}.pt" for k in range(1, cycles + 1)]
    state: dict[str, int] = {"length": 1, "total": 1}

    def on_step_end(step: int, mods: Sequence[nn.Module]) -> None:
        if step % state["length"] == 0 or step == state["total"]:
            k = min(cycles, math.ceil(step / state["length"]))
            _save(paths[k - 1], mods[0], cfg, {"ensemble": cfg.name, "heuristic": "snapshot", "cycle": k, "step": step})

    if cfg.schedule.get("name") != "cyclic_cosine":
        log.info("snapshot: schedule %s replaced by cyclic_cosine with %d cycles", cfg.schedule.get("name"), cycles)
    trainer = JointTrainer(
        [model],
        [spec.name],
        _independent,
        loaders,
        optimizer=cfg.optimizer,
        schedule={
            "name": "cyclic_cosine",
            "cycles": cycles,
            **{k: cfg.schedule[k] for k in ("min_lr", "min_factor") if k in cfg.schedule},
        },
        epochs=cfg.epochs,
        out_dir=out_dir,
        env=env,
        options=options,
        progress=progress,
        task=f"snapshot {cfg.name}",
        on_step_end=on_step_end,
    )
    state["total"] = trainer.total_steps
    state["length"] = math.ceil(trainer.total_steps / cycles)
    trainer.try_resume()
    trainer.fit()
    return [p for p in paths if p.is_file()] if env.is_main else paths


# ---------------------------------------------------------------------------------------------
# prune and tune
# ---------------------------------------------------------------------------------------------
def prunable_weights(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(module_name, module)`` of every ``nn.Conv2d`` / ``nn.Linear`` (their ``weight`` is pruned)."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def anti_random_masks(model: nn.Module, *, sparsity: float = 0.5, seed: int = 0) -> MaskSet:
    """Child A's keep-masks: per prunable weight, exactly ``round((1 − sparsity) n)`` random entries True.

    Child B's masks are the complements ``~mask``.

    Args:
        model: The parent.
        sparsity: Fraction of entries child A drops.
        seed: Seed of the (CPU) generator.

    Returns:
        ``{"<module>.weight": bool tensor shaped like the weight}``.
    """
    g = torch.Generator().manual_seed(int(seed))
    masks: MaskSet = {}
    for name, mod in prunable_weights(model):
        w = mod.weight
        assert isinstance(w, Tensor)  # Conv2d / Linear always have a weight tensor
        n = w.numel()
        keep = round((1.0 - sparsity) * n)
        flat = torch.zeros(n, dtype=torch.bool)
        flat[torch.randperm(n, generator=g)[:keep]] = True
        masks[f"{name}.weight"] = flat.view(w.shape)
    return masks


def apply_masks(model: nn.Module, masks: MaskSet) -> nn.Module:
    """Install fixed masks with ``prune.custom_from_mask`` (in place); returns ``model``."""
    mods = dict(model.named_modules())
    for key, mask in masks.items():
        mod = mods[key.removesuffix(".weight")]
        prune.custom_from_mask(mod, "weight", mask.to(mod.weight.device))
    return model


def make_pruning_permanent(model: nn.Module) -> nn.Module:
    """``prune.remove`` on every pruned weight (in place): ``weight = weight_orig ⊙ mask`` as a plain parameter."""
    for _, mod in model.named_modules():
        if prune.is_pruned(mod) and hasattr(mod, "weight_mask"):
            prune.remove(mod, "weight")
    return model


def train_prune_and_tune(
    cfg: EnsembleConfig,
    *,
    source: DataSource,
    out_dir: Path,
    env: DistEnv,
    options: RunOptions,
    progress: ProgressCallback | None = None,
) -> list[Path]:
    """Prune-and-tune: parent → ``pairs`` anti-random pairs of masked children → one-cycle fine-tuning.

    Returns:
        The ``2 · pairs`` child checkpoints ``RUN/members/<name>_p<k>{a,b}.pt``.
    """
    pt = cfg.prune_and_tune
    spec, loaders, parent = _single_member(cfg, source, env, options)
    if pt.parent is not None:
        load_pretrained(parent, pt.parent)
    else:
        parent_dir = out_dir / "parent"
        trainer = JointTrainer(
            [parent],
            [spec.name],
            _independent,
            loaders,
            optimizer=cfg.optimizer,
            schedule=cfg.schedule,
            epochs=pt.parent_epochs,
            out_dir=parent_dir,
            env=env,
            options=replace(options, epochs=None),
            progress=progress,
            task=f"parent {cfg.name}",
        )
        trainer.try_resume()
        trainer.fit()
        parent = trainer.members[0].cpu()
        if env.is_main:
            _save(
                out_dir / "parent.pt",
                parent,
                cfg,
                {"ensemble": cfg.name, "heuristic": "prune_and_tune", "role": "parent"},
            )

    children: list[nn.Module] = []
    names: list[str] = []
    info: list[dict[str, Any]] = []
    all_masks: dict[str, MaskSet] = {}
    for k in range(pt.pairs):
        masks = anti_random_masks(parent, sparsity=pt.sparsity, seed=options.seed + k)
        all_masks[f"pair{k}"] = masks
        for side, mset in (("a", masks), ("b", {n: ~m for n, m in masks.items()})):
            children.append(apply_masks(copy.deepcopy(parent), mset))
            names.append(f"{spec.name}_p{k}{side}")
            info.append({"pair": k, "side": side, "mask_seed": options.seed + k, "sparsity": pt.sparsity})
    if env.is_main:
        with atomic_path(out_dir / "masks.pt", suffix=".pt") as tmp:
            torch.save(all_masks, tmp)
    paths = [out_dir / "members" / f"{n}.pt" for n in names]

    def on_epoch_end(epoch: int, mods: Sequence[nn.Module], rec: dict[str, Any]) -> None:
        for mod, path, meta, name in zip(mods, paths, info, names, strict=True):
            plain = make_pruning_permanent(copy.deepcopy(mod))
            extra = {"ensemble": cfg.name, "heuristic": "prune_and_tune", "epoch": epoch, "member": name, **meta}
            extra["val_top1"] = rec.get("val_member_top1", {}).get(name)
            _save(path, plain, cfg, extra)

    tune_opt = pt.tune_optimizer or {
        "name": "sgd",
        "lr": float(cfg.optimizer.get("lr", 0.01)),
        "momentum": 0.9,
        "weight_decay": float(cfg.optimizer.get("weight_decay", 0.0)),
    }
    trainer = JointTrainer(
        children,
        names,
        _summed,
        loaders,
        optimizer=tune_opt,
        schedule=pt.tune_schedule,
        epochs=pt.tune_epochs,
        out_dir=out_dir,
        env=env,
        options=options,
        progress=progress,
        task=f"tune {cfg.name}",
        on_epoch_end=on_epoch_end,
    )
    trainer.try_resume()
    trainer.fit()
    return paths
