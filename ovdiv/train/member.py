"""Training one member from a recipe (``ovdiv train models/<id>.json``).

Run folder::

    RUN/recipe.json       the resolved recipe
    RUN/metrics.jsonl     one record per epoch (train loss/top-1, val loss/top-1, lr, images/s)
    RUN/state.pt          resume state (running the same command again continues from it)
    RUN/last.pt           the latest weights as an ovdiv checkpoint (recipe embedded)
    RUN/best.pt           the weights with the best validation top-1 so far
    RUN/export/...        ONNX + IR FP32 of the final weights (``export=True``)

Single-process or ``torchrun --nproc_per_node N -m ovdiv train ...`` (the recipe's ``batch_size`` is
the per-process batch).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ovdiv.atomic import write_json
from ovdiv.errors import ConfigError
from ovdiv.models.recipes import DataSpec, Recipe, load_recipe
from ovdiv.train.data import DataSource, build_loaders
from ovdiv.train.engine import JointTrainer, RunOptions, StepOutput, init_distributed, read_metrics
from ovdiv.train.weights import build_member
from ovdiv.types import ProgressCallback

__all__ = ["TrainResult", "resolve_data", "train_member"]

log = logging.getLogger("ovdiv.train")


@dataclass
class TrainResult:
    """What :func:`train_member` produced.

    Attributes:
        out_dir: The run folder.
        checkpoint: ``RUN/last.pt`` (final weights).
        best: ``RUN/best.pt`` (best validation top-1), None without validation.
        metrics: All epoch records of ``metrics.jsonl``.
        exported: Export artifacts when exporting.
        is_main: False on ranks other than 0 of a ``torchrun`` run (they write nothing).
    """

    out_dir: Path
    checkpoint: Path
    best: Path | None
    metrics: list[dict[str, Any]]
    exported: list[Any] = field(default_factory=list)
    is_main: bool = True


def resolve_data(name: str, spec: DataSpec, data: DataSource | str | Path | None, seed: int) -> DataSource:
    """The training data of a recipe run: ``data`` when given, else the recipe's ``data``.

    ``data`` naming the recipe's own ``data.train`` spec keeps the recipe's validation split and limits.

    Args:
        name: Recipe name (for errors).
        spec: The recipe's ``data`` section.
        data: Command-line / caller data (ImageFolder root, dataset spec or :class:`DataSource`).
        seed: Dataset seed.

    Raises:
        ConfigError: Neither given.
    """
    if data is not None:
        src = DataSource.coerce(data)
        if src.spec is not None and src.spec == spec.train and not isinstance(data, DataSource):
            # the recipe's own dataset named on the command line: keep its validation split and limits
            src = replace(src, val_spec=spec.val, limit=spec.train_limit, val_limit=spec.val_limit, seed=seed)
        return src
    if spec.train:
        return DataSource(
            spec=spec.train, val_spec=spec.val, limit=spec.train_limit, val_limit=spec.val_limit, seed=seed
        )
    raise ConfigError(f"recipe {name} names no training data (data.train)", "pass --data-root DIR or --dataset SPEC")


def train_member(
    recipe: Recipe | str | Path,
    *,
    out_dir: str | Path,
    data: DataSource | str | Path | None = None,
    pretrained: str | Path | None = None,
    device: str | None = None,
    epochs: int | None = None,
    max_steps: int | None = None,
    resume: bool = True,
    workers: int = 0,
    val_every: int = 1,
    export: bool = False,
    options: RunOptions | None = None,
    progress: ProgressCallback | None = None,
) -> TrainResult:
    """Train one member per its recipe.

    Args:
        recipe: A :class:`~ovdiv.models.recipes.Recipe` or the path of its JSON.
        out_dir: Run folder (an existing ``state.pt`` there is resumed when ``resume``).
        data: ImageFolder root (``train/`` + ``val/``), dataset spec (``demo:train``) or
            :class:`~ovdiv.train.data.DataSource`; default: the recipe's ``data``.
        pretrained: Starting weights (ovdiv checkpoint or state-dict file; mismatched tensors, e.g. a
            classifier for another class count, stay at their initialisation).
        device: ``cuda`` / ``cpu`` (default: CUDA when available).
        epochs: Override of the recipe's epochs.
        max_steps: Stop after this many optimizer steps (smoke runs).
        resume: Continue from ``out_dir/state.pt``.
        workers: DataLoader workers.
        val_every: Validate every N epochs (always after the last).
        export: Export the final weights to ONNX + IR FP32 (``RUN/export``).
        options: Full :class:`RunOptions` (overrides the individual arguments above).
        progress: Progress callback.

    Returns:
        :class:`TrainResult`.
    """
    rec = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    out = Path(out_dir)
    opts = options or RunOptions(
        device=device,
        amp=rec.amp,
        channels_last=rec.channels_last,
        workers=workers,
        val_every=val_every,
        epochs=epochs,
        max_steps=max_steps,
        seed=rec.seed,
        resume=resume,
    )
    source = resolve_data(rec.name, rec.data, data, opts.seed)
    env = init_distributed(opts.device)
    loaders = build_loaders(
        source,
        input_size=rec.input_size,
        batch_size=rec.batch_size,
        workers=opts.workers,
        mean=rec.mean,
        std=rec.std,
        seed=opts.seed,
        rank=env.rank,
        world_size=env.world_size,
        pin_memory=env.device.type == "cuda",
        transforms=rec.transforms,
    )
    if loaders.num_classes_seen > rec.num_classes:
        raise ConfigError(
            f"recipe {rec.name}: the data has {loaders.num_classes_seen} classes, num_classes is {rec.num_classes}",
            "set num_classes in the recipe",
        )
    torch.manual_seed(opts.seed)
    model = build_member(rec.arch, rec.arch_args, rec.num_classes, pretrained)
    smoothing = rec.label_smoothing

    def loss_fn(fwd: Callable[[Tensor], Tensor], _m: Sequence[nn.Module], x: Tensor, y: Tensor) -> StepOutput:
        z = fwd(x)
        return StepOutput(F.cross_entropy(z[0].float(), y, label_smoothing=smoothing), z)

    last, best = out / "last.pt", out / "best.pt"
    recipe_dict = rec.to_dict()

    def on_epoch_end(epoch: int, mods: Sequence[nn.Module], record: dict[str, Any]) -> None:
        from ovdiv.models import save_checkpoint

        top1 = record.get("val_member_top1", {}).get(rec.name)
        extra = {"epoch": epoch, "step": record["step"], "val_top1": top1, "pretrained": str(pretrained or "")}
        kw: dict[str, Any] = {
            "arch": rec.arch,
            "arch_args": rec.arch_args,
            "num_classes": rec.num_classes,
            "input_size": rec.input_size,
            "mean": rec.mean,
            "std": rec.std,
            "recipe": recipe_dict,
            "extra": extra,
        }
        save_checkpoint(last, mods[0], **kw)
        if top1 is not None and top1 >= trainer.best.get("val_top1", -1.0):
            trainer.best["val_top1"] = float(top1)
            save_checkpoint(best, mods[0], **kw)

    if env.is_main:
        write_json(out / "recipe.json", recipe_dict)
    trainer = JointTrainer(
        [model],
        [rec.name],
        loss_fn,
        loaders,
        optimizer=rec.optimizer,
        schedule=rec.schedule,
        epochs=rec.epochs,
        out_dir=out,
        env=env,
        options=opts,
        progress=progress,
        task=f"train {rec.name}",
        on_epoch_end=on_epoch_end,
        grad_clip_norm=rec.grad_clip_norm,
    )
    try:
        trainer.try_resume()
        trainer.fit()
    finally:
        env.shutdown()
    exported: list[Any] = []
    if export and env.is_main:
        from ovdiv.train.ensemble import export_members

        exported = export_members([last], out / "export", progress, names=[rec.name])
    return TrainResult(
        out_dir=out,
        checkpoint=last,
        best=best if best.is_file() else None,
        metrics=read_metrics(out),
        exported=exported,
        is_main=env.is_main,
    )
