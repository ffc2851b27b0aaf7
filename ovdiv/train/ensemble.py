"""Joint, diversity-enforcing ensemble training (``ovdiv ensemble train CONFIG``).

M members are trained together: each iteration runs every member on the same batch, evaluates the
heuristic's joint loss over the stacked ``(M, B, C)`` logits (:mod:`ovdiv.train.losses`) and takes
ONE optimizer step over all members' parameters. ``snapshot`` and ``prune_and_tune`` are delegated to
:mod:`ovdiv.train.lowcost`.

Run folder::

    RUN/config.json           the validated config
    RUN/metrics.jsonl         one record per epoch: train/val loss and top-1 per member, ensemble
                              top-1, disagreement, heuristic terms (gncl_penalty, d_att)
    RUN/state.pt              resume state (``ovdiv ensemble train`` again continues from it)
    RUN/members/<name>.pt     each member as an ovdiv checkpoint (rewritten every epoch)
    RUN/export/...            ONNX / IR of every member when ``export=True``
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ovdiv.atomic import write_json
from ovdiv.errors import ConfigError
from ovdiv.train.config import EnsembleConfig, load_ensemble_config
from ovdiv.train.data import DataSource, build_loaders
from ovdiv.train.engine import DistEnv, JointTrainer, LossFn, RunOptions, StepOutput, init_distributed, read_metrics
from ovdiv.train.losses import (
    attribution_diversity_loss,
    balanced_loss,
    consensus_logits,
    gncl_loss,
    gncl_masked_loss,
    gncl_penalty,
    independent_loss,
)
from ovdiv.train.weights import build_member
from ovdiv.types import ProgressCallback

__all__ = ["EnsembleResult", "heuristic_loss", "resolve_data", "save_member", "train_ensemble"]

log = logging.getLogger("ovdiv.train")


@dataclass
class EnsembleResult:
    """What :func:`train_ensemble` produced.

    Attributes:
        out_dir: The run folder.
        heuristic: The heuristic trained.
        members: Member checkpoint paths (pool order).
        metrics: All epoch records of ``metrics.jsonl`` (including earlier, resumed runs).
        exported: Export artifacts (``ovdiv.export.ExportedArtifact``) when exporting.
        is_main: False on ranks other than 0 of a ``torchrun`` run (they write nothing).
    """

    out_dir: Path
    heuristic: str
    members: list[Path]
    metrics: list[dict[str, Any]]
    exported: list[Any] = field(default_factory=list)
    is_main: bool = True


def _independent(fwd: Callable[[Tensor], Tensor], _m: Sequence[nn.Module], x: Tensor, y: Tensor) -> StepOutput:
    """The ``independent`` joint loss: every member's own cross-entropy, no diversity term."""
    z = fwd(x)
    return StepOutput(independent_loss(z, y), z)


def _loaders(cfg: EnsembleConfig, source: DataSource, env: DistEnv, options: RunOptions) -> Any:
    """Train / validation loaders of an ensemble run (``cfg``'s input pipeline, sharded over ``env``'s ranks).

    Args:
        cfg: The ensemble config (input size, batch size, normalisation, transforms).
        source: The training data.
        env: The distributed environment (rank, world size, device).
        options: Run-time options (workers, seed).

    Returns:
        What :func:`ovdiv.train.data.build_loaders` returns.
    """
    return build_loaders(
        source,
        input_size=cfg.input_size,
        batch_size=cfg.batch_size,
        workers=options.workers,
        mean=cfg.mean,
        std=cfg.std,
        seed=options.seed,
        rank=env.rank,
        world_size=env.world_size,
        pin_memory=env.device.type == "cuda",
        transforms=cfg.transforms,
    )


def heuristic_loss(cfg: EnsembleConfig) -> tuple[LossFn, bool]:
    """The joint loss of ``cfg.heuristic`` and whether it needs double backprop.

    Returns:
        ``(loss_fn, double_backward)``; ``loss_fn(forward, members, x, y) -> StepOutput``.
    """
    h, lam, rule = cfg.heuristic, cfg.lam or 0.0, cfg.consensus

    def penalty_extra(z: Tensor) -> dict[str, Tensor]:
        zd = z.detach()
        return {"gncl_penalty": gncl_penalty(zd, consensus_logits(zd, rule)).mean()}

    if h == "independent":
        return _independent, False
    if h in ("gncl", "gncl_masked"):
        fn = gncl_loss if h == "gncl" else gncl_masked_loss

        def gncl(fwd: Callable[[Tensor], Tensor], _m: Sequence[nn.Module], x: Tensor, y: Tensor) -> StepOutput:
            z = fwd(x)
            return StepOutput(fn(z, y, lam, rule), z, penalty_extra(z))

        return gncl, False
    if h == "balanced":

        def balanced(fwd: Callable[[Tensor], Tensor], _m: Sequence[nn.Module], x: Tensor, y: Tensor) -> StepOutput:
            z = fwd(x)
            return StepOutput(balanced_loss(z, y, lam, rule), z)

        return balanced, False
    if h == "attribution_diversity":
        target, norm = cfg.attribution["target"], cfg.attribution["norm"]

        def attribution(
            _fwd: Callable[[Tensor], Tensor], members: Sequence[nn.Module], x: Tensor, y: Tensor
        ) -> StepOutput:
            out = attribution_diversity_loss(members, x, y, lam, target=target, norm=norm)
            return StepOutput(out.loss, out.logits, {"d_att": out.d_att})

        return attribution, True
    raise ConfigError(f"heuristic {h!r} is not a joint-loss heuristic")


def resolve_data(cfg: EnsembleConfig, data: DataSource | str | Path | None = None) -> DataSource:
    """The data source: ``data`` (CLI ``--data-root`` / ``--dataset`` / arrays) overrides the config's.

    Raises:
        ConfigError: Neither given.
    """
    d = cfg.data
    if data is not None:
        src = DataSource.coerce(data)
        if src.spec is not None and src.spec == d.dataset and not isinstance(data, DataSource):
            # the config's own dataset named on the command line: keep its validation split and limits
            src = replace(src, val_spec=d.val_dataset, limit=d.limit, val_limit=d.val_limit, seed=cfg.seed)
        return src
    if d.root:
        return DataSource(root=Path(d.root))
    if d.dataset:
        return DataSource(spec=d.dataset, val_spec=d.val_dataset, limit=d.limit, val_limit=d.val_limit, seed=cfg.seed)
    raise ConfigError(
        f"{cfg.file}: no training data", "set data.root / data.dataset in the config or pass --data-root / --dataset"
    )


def save_member(
    path: Path, model: nn.Module, cfg: EnsembleConfig, arch: str, arch_args: dict[str, Any], extra: dict[str, Any]
) -> Path:
    """Write one member as an ovdiv checkpoint (the config as its recipe)."""
    from ovdiv.models import save_checkpoint

    return save_checkpoint(
        path,
        model,
        arch=arch,
        arch_args=arch_args,
        num_classes=cfg.num_classes,
        input_size=cfg.input_size,
        mean=cfg.mean,
        std=cfg.std,
        recipe=cfg.to_dict(),
        extra=extra,
    )


def export_members(
    paths: Sequence[Path],
    out_dir: Path,
    progress: ProgressCallback | None = None,
    names: Sequence[str] | None = None,
) -> list[Any]:
    """Export each member checkpoint to ONNX + IR FP32 under ``out_dir`` (:func:`ovdiv.export.export_model`).

    Args:
        paths: Member checkpoints.
        out_dir: Export folder.
        progress: Progress callback.
        names: Artifact names (default: the checkpoint stems).

    Returns:
        The ``ExportedArtifact`` list of all members.
    """
    from ovdiv.export import export_model

    arts: list[Any] = []
    for i, p in enumerate(paths):
        name = names[i] if names is not None else p.stem
        arts.extend(export_model(p, out_dir, name=name, progress=progress))
    return arts


def run_options(cfg: EnsembleConfig, options: RunOptions | None = None, **overrides: Any) -> RunOptions:
    """Run-time options: ``options`` if given, else the config's settings; then non-None ``overrides``."""
    base = options or RunOptions(
        amp=cfg.amp, channels_last=cfg.channels_last, workers=cfg.workers, val_every=cfg.val_every, seed=cfg.seed
    )
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})


def train_ensemble(
    config: EnsembleConfig | str | Path,
    *,
    out_dir: str | Path,
    data: DataSource | str | Path | None = None,
    options: RunOptions | None = None,
    device: str | None = None,
    epochs: int | None = None,
    max_steps: int | None = None,
    resume: bool | None = None,
    export: bool = False,
    progress: ProgressCallback | None = None,
) -> EnsembleResult:
    """Train an ensemble per its config (joint heuristics, snapshot or prune-and-tune).

    Args:
        config: :class:`EnsembleConfig` or the path of its JSON.
        out_dir: Run folder (created; an existing ``state.pt`` there is resumed).
        data: Data override (ImageFolder root, dataset spec or :class:`DataSource`).
        options: Run-time options (AMP, workers, ...). None = the config's settings.
        device: ``cuda`` / ``cpu`` override (default: CUDA when available).
        epochs: Override of the config's epochs.
        max_steps: Stop after this many optimizer steps (smoke runs).
        resume: Continue from ``out_dir/state.pt`` (default True).
        export: Export every member to ONNX + IR FP32 at the end.
        progress: Progress callback.

    Returns:
        :class:`EnsembleResult`.

    Raises:
        ConfigError, DataError, TrainingError: one-line user errors.
    """
    cfg = config if isinstance(config, EnsembleConfig) else load_ensemble_config(config)
    out = Path(out_dir)
    opts = run_options(cfg, options, device=device, epochs=epochs, max_steps=max_steps, resume=resume)
    source = resolve_data(cfg, data)
    env = init_distributed(opts.device)
    if env.is_main:
        write_json(out / "config.json", cfg.to_dict())
    try:
        if cfg.heuristic in ("snapshot", "prune_and_tune"):
            from ovdiv.train.lowcost import train_prune_and_tune, train_snapshot

            fn = train_snapshot if cfg.heuristic == "snapshot" else train_prune_and_tune
            paths = fn(cfg, source=source, out_dir=out, env=env, options=opts, progress=progress)
        else:
            paths = _train_joint(cfg, source=source, out_dir=out, env=env, options=opts, progress=progress)
    finally:
        env.shutdown()
    exported = export_members(paths, out / "export", progress) if export and env.is_main else []
    return EnsembleResult(
        out_dir=out,
        heuristic=cfg.heuristic,
        members=paths,
        metrics=read_metrics(out),
        exported=exported,
        is_main=env.is_main,
    )


def _train_joint(
    cfg: EnsembleConfig,
    *,
    source: DataSource,
    out_dir: Path,
    env: DistEnv,
    options: RunOptions,
    progress: ProgressCallback | None,
) -> list[Path]:
    loaders = _loaders(cfg, source, env, options)
    _check_classes(cfg, loaders.num_classes_seen)
    torch.manual_seed(options.seed)
    members = [build_member(m.arch, m.arch_args, cfg.num_classes, m.pretrained) for m in cfg.members]
    names = [m.name for m in cfg.members]
    loss_fn, double_backward = heuristic_loss(cfg)
    paths = [out_dir / "members" / f"{n}.pt" for n in names]

    def on_epoch_end(epoch: int, mods: Sequence[nn.Module], rec: dict[str, Any]) -> None:
        for spec, mod, path in zip(cfg.members, mods, paths, strict=True):
            extra = {
                "epoch": epoch,
                "ensemble": cfg.name,
                "heuristic": cfg.heuristic,
                "lambda": cfg.lam,
                "consensus": cfg.consensus,
                "member": spec.name,
                "val_top1": rec.get("val_member_top1", {}).get(spec.name),
            }
            save_member(path, mod, cfg, spec.arch, spec.arch_args, extra)

    trainer = JointTrainer(
        members,
        names,
        loss_fn,
        loaders,
        optimizer=cfg.optimizer,
        schedule=cfg.schedule,
        epochs=cfg.epochs,
        out_dir=out_dir,
        env=env,
        options=options,
        double_backward=double_backward,
        progress=progress,
        task=f"ensemble {cfg.name}",
        on_epoch_end=on_epoch_end,
    )
    trainer.try_resume()
    trainer.fit()
    return paths


def _check_classes(cfg: EnsembleConfig, seen: int) -> None:
    if seen > cfg.num_classes:
        raise ConfigError(
            f"{cfg.file}: the data has {seen} classes but num_classes is {cfg.num_classes}",
            f"set num_classes to {seen}",
        )
