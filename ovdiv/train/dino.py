"""DINO members: self-supervised backbone (phase a), then a linear classifier on it frozen (phase b).

The self-supervised part uses `lightly <https://github.com/lightly-ai/lightly>`_ for everything DINO
defines (Caron et al. 2021): ``DINOTransform`` (multi-crop: 2 global + N local views with colour jitter,
blur, solarization), ``DINOProjectionHead`` (3-layer MLP, l2-normalised bottleneck, weight-normalised
last layer, optional last-layer freezing), ``DINOLoss`` (cross-entropy between the sharpened, centred
teacher distribution of each global view and the student distribution of every other view; centre
EMA; linear teacher-temperature warm-up), ``update_momentum`` + ``cosine_schedule`` (EMA teacher whose
momentum rises from ``momentum_teacher`` to 1), ``deactivate_requires_grad`` (teacher) and
``get_weight_decay_parameters`` (no weight decay on biases and norms). What ovdiv adds is the loop
around them: device, AMP, ``torchrun`` DDP (lightly's centre all-reduces itself), per-step lr schedule,
resume, metrics log, and content-addressed backbone caching.

Phase (a) writes a **backbone folder** (in a cache directory, named ``<arch>-<hash16>`` by
:meth:`~ovdiv.train.dino_recipe.DinoRecipe.backbone_hash`)::

    BACKBONE/state.pt        resume state (student, teacher, centre, optimizer, ...)
    BACKBONE/metrics.jsonl   one record per epoch (loss, lr, teacher momentum and temperature)
    BACKBONE/backbone.pt     the teacher backbone's state_dict, classifier removed — the key layout of
                             the published DINO checkpoints (torchvision ResNet keys without ``fc``;
                             timm/DINO ViT keys ``cls_token``, ``pos_embed``, ``patch_embed.proj.*``,
                             ``blocks.N.*``, ``norm.*``)
    BACKBONE/backbone.json   written last: hash, key, epochs, steps, SHA-256 of backbone.pt

A second recipe with the same backbone key (e.g. ``dino_resnet2``, which differs from ``dino_resnet1``
only in the classifier seed) finds ``backbone.json`` and does not train again. ``--backbone CKPT``
(:func:`load_backbone`) skips phase (a) with a user's file in that layout (also DINO's full training
checkpoints: their ``teacher`` entry, ``module.``/``backbone.`` prefixes stripped, projection head dropped).

Phase (b) trains the architecture's own linear classifier (``fc`` / ``head``, initialised N(0, 0.01)
with the classifier seed, as DINO's linear evaluation) on the frozen backbone (eval mode: BN statistics
fixed, no gradients) with :class:`~ovdiv.train.engine.JointTrainer`; the run folder is that of
:func:`ovdiv.train.train_member` and ``last.pt`` is an ordinary classifier checkpoint of the registry
architecture — exported, carded and evaluated like any member.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler

from ovdiv.atomic import atomic_path, write_json, write_text
from ovdiv.errors import CheckpointError, ConfigError, DataError, TrainingError
from ovdiv.train.data import DataSource, build_loaders
from ovdiv.train.dino_recipe import DinoRecipe, load_dino_recipe
from ovdiv.train.engine import DistEnv, JointTrainer, RunOptions, StepOutput, init_distributed, read_metrics
from ovdiv.train.member import TrainResult, resolve_data
from ovdiv.train.optim import build_optimizer, build_scheduler
from ovdiv.types import Progress, ProgressCallback

__all__ = [
    "BACKBONE_FORMAT",
    "BackboneResult",
    "DinoNet",
    "DinoResult",
    "MultiCropDataset",
    "backbone_features",
    "backbone_state_dict",
    "classifier_name",
    "dino_loss",
    "dino_transform",
    "enable_any_input_size",
    "load_backbone",
    "teacher_temperature",
    "train_dino",
    "train_dino_backbone",
]

log = logging.getLogger("ovdiv.train")

BACKBONE_FORMAT = "ovdiv-dino-backbone/1"
_STATE = "state.pt"
_METRICS = "metrics.jsonl"


# ---------------------------------------------------------------------------------------------
# model surface
# ---------------------------------------------------------------------------------------------
def classifier_name(model: nn.Module) -> str:
    """Name of the model's final linear classifier attribute (``fc`` for ResNets, ``head`` for ViTs).

    Raises:
        ConfigError: The model has neither as an ``nn.Linear``.
    """
    for name in ("fc", "head"):
        if isinstance(getattr(model, name, None), nn.Linear):
            return name
    raise ConfigError(
        f"{type(model).__name__} has no linear classifier 'fc' or 'head'", "DINO members use resnet/resnext/deit"
    )


def backbone_features(model: nn.Module, x: Tensor) -> Tensor:
    """Pooled pre-logit features ``(N, D)`` of ``(N, 3, H, W)`` images (``forward_head(pre_logits=True)``)."""
    return model.forward_head(model.forward_features(x), pre_logits=True)  # type: ignore[operator]


def backbone_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The model's state dict without its classifier: the published DINO backbone key layout."""
    prefix = classifier_name(model) + "."
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if not k.startswith(prefix)}


def enable_any_input_size(model: nn.Module) -> nn.Module:
    """Let a timm ViT take any input size that is a multiple of its patch (local crops); no-op otherwise.

    Switches the instance to timm's ``dynamic_img_size`` mode (position embeddings bilinearly resampled
    to the token grid, as DINO's ``interpolate_pos_encoding``); parameters and keys are unchanged, so the
    backbone loads into the ordinary fixed-size model afterwards.
    """
    pe = getattr(model, "patch_embed", None)
    if pe is None or not hasattr(model, "dynamic_img_size"):
        return model
    from timm.layers import Format

    pe.strict_img_size = False
    pe.flatten = False
    pe.output_fmt = Format.NHWC
    model.dynamic_img_size = True  # type: ignore[assignment]
    return model


class DinoNet(nn.Module):
    """Backbone + DINO projection head over a list of views.

    Consecutive views of equal resolution are batched together through the backbone (DINO's
    ``MultiCropWrapper``: one pass for the global crops, one for the local crops).

    Args:
        backbone: A registry classifier (its classifier is not used; its parameters are frozen).
        head: A ``lightly`` ``DINOProjectionHead``.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        getattr(backbone, classifier_name(backbone)).requires_grad_(False)

    def forward(self, views: Sequence[Tensor]) -> list[Tensor]:
        """``V`` tensors ``(B, 3, h_v, w_v)`` -> ``V`` projections ``(B, output_dim)``."""
        outs: list[Tensor] = []
        i = 0
        while i < len(views):
            j = i + 1
            while j < len(views) and views[j].shape[-2:] == views[i].shape[-2:]:
                j += 1
            z = self.head(backbone_features(self.backbone, torch.cat(list(views[i:j]))))
            outs.extend(z.chunk(j - i))
            i = j
        return outs


def _projection_head(in_dim: int, head: dict[str, Any], freeze_last_layer: int = -1) -> nn.Module:
    from lightly.models.modules.heads import DINOProjectionHead

    return DINOProjectionHead(
        freeze_last_layer=freeze_last_layer,
        input_dim=in_dim,
        hidden_dim=int(head["hidden_dim"]),
        bottleneck_dim=int(head["bottleneck_dim"]),
        output_dim=int(head["output_dim"]),
        batch_norm=bool(head["batch_norm"]),
        norm_last_layer=bool(head["norm_last_layer"]),
    )


def dino_loss(recipe: DinoRecipe) -> nn.Module:
    """Lightly's ``DINOLoss`` with the recipe's temperatures, warm-up and centre momentum."""
    from lightly.loss import DINOLoss

    loss = recipe.backbone.loss
    warm = int(loss["warmup_teacher_temp_epochs"])
    return DINOLoss(
        output_dim=int(recipe.backbone.head["output_dim"]),
        # no warm-up: lightly's schedule would still hold the warm-up value for epoch 0
        warmup_teacher_temp=float(loss["warmup_teacher_temp"] if warm > 0 else loss["teacher_temp"]),
        teacher_temp=float(loss["teacher_temp"]),
        warmup_teacher_temp_epochs=max(1, warm),
        student_temp=float(loss["student_temp"]),
        center_momentum=float(loss["center_momentum"]),
    )


def teacher_temperature(recipe: DinoRecipe, epoch: int) -> float:
    """The teacher temperature of ``epoch`` (0-based) as DINO defines it: linear warm-up, then constant.

    Logged per epoch; the loss itself uses lightly's schedule (the tests check that both agree).
    """
    loss = recipe.backbone.loss
    n = int(loss["warmup_teacher_temp_epochs"])
    if epoch >= n:
        return float(loss["teacher_temp"])
    return float(np.linspace(loss["warmup_teacher_temp"], loss["teacher_temp"], n)[epoch])


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------
def dino_transform(recipe: DinoRecipe) -> Any:
    """Lightly's ``DINOTransform`` with the recipe's crops, augmentations and normalisation.

    Returns:
        A callable PIL image -> list of ``2 + local_number`` normalised float tensors (global first).
    """
    from lightly.transforms.dino_transform import DINOTransform

    b = recipe.backbone
    return DINOTransform(
        global_crop_size=b.global_size,
        global_crop_scale=b.global_scale,
        local_crop_size=b.local_size,
        local_crop_scale=b.local_scale,
        n_local_views=b.local_number,
        normalize={"mean": list(recipe.mean), "std": list(recipe.std)},
        **b.augment,
    )


class MultiCropDataset(Dataset[tuple[list[Tensor], int]]):
    """uint8 ``(N, H, W, 3)`` images -> ``(views, 0)`` with a multi-view transform (labels unused)."""

    def __init__(self, images: npt.NDArray[np.uint8], transform: Callable[[Any], list[Tensor]]) -> None:
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise DataError(f"training images must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
        self.images = images
        self.transform = transform

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> tuple[list[Tensor], int]:
        from PIL import Image

        return self.transform(Image.fromarray(np.ascontiguousarray(self.images[i]))), 0


def _multicrop_dataset(source: DataSource, transform: Any) -> Dataset[Any]:
    if source.root is not None:
        from torchvision.datasets import ImageFolder

        path = Path(source.root) / "train"
        if not path.is_dir():
            raise DataError(f"data folder {path} does not exist", "expected <data-root>/train/<class>/*.jpg")
        return ImageFolder(str(path), transform=transform)
    if source.arrays is not None:
        images = source.arrays[0]
    elif source.spec is not None:
        from ovdiv.data import load

        images = np.asarray(load(source.spec, limit=source.limit, seed=source.seed)[0])
    else:
        raise DataError("no training data given", "pass --data-root DIR or --dataset SPEC")
    return MultiCropDataset(images, transform)


# ---------------------------------------------------------------------------------------------
# backbone files
# ---------------------------------------------------------------------------------------------
def _backbone_entries(obj: Any, path: Path) -> dict[str, Tensor]:
    """A state dict out of a backbone file: bare, ``{"state_dict"|"model"|"teacher": ...}``, prefixes stripped."""
    if isinstance(obj, dict):
        for key in ("teacher", "state_dict", "model", "model_state_dict"):
            if isinstance(obj.get(key), dict):
                sd = _backbone_entries(obj[key], path)
                if key == "teacher":  # DINO's training checkpoint: drop its projection head
                    sd = {k: v for k, v in sd.items() if not k.startswith("head.")}
                return sd
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            out = {}
            for k, v in obj.items():
                name = str(k).removeprefix("module.").removeprefix("backbone.")
                out[name] = v
            return out
    raise CheckpointError(f"backbone {path} holds no state dict", "pass a DINO backbone checkpoint (.pth)")


def _names(keys: Sequence[str], n: int = 6) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (f", ... ({len(keys)} in all)" if len(keys) > n else "")


def load_backbone(model: nn.Module, path: str | Path) -> dict[str, Any]:
    """Load a DINO backbone file into ``model`` (in place); the classifier is left untouched.

    Accepted: the published DINO checkpoints (``dino_resnet50_pretrain.pth``: torchvision ResNet-50
    keys without ``fc``; ``dino_deitsmall16_pretrain.pth``-style ViT keys ``cls_token``, ``pos_embed``,
    ``patch_embed.proj.*``, ``blocks.N.*``, ``norm.*``), DINO training checkpoints (their ``teacher``),
    and ovdiv's ``backbone.pt``. ``num_batches_tracked`` buffers may be absent.

    Args:
        model: The recipe's classifier architecture.
        path: The backbone file.

    Returns:
        ``{"path", "sha256", "tensors"}``.

    Raises:
        CheckpointError: Missing/unreadable file, or keys that do not fit (one message naming the missing,
            unexpected and shape-mismatched keys).
    """
    from ovdiv.cards import sha256_file

    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"backbone {p} does not exist", "pass an existing --backbone file")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read backbone {p}: {exc}") from exc
    sd = _backbone_entries(obj, p)
    own = backbone_state_dict(model)
    optional = {k for k in own if k.endswith("num_batches_tracked")}
    missing = sorted(set(own) - set(sd) - optional)
    unexpected = sorted(set(sd) - set(own))
    shapes = sorted(
        f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in own if k in sd and sd[k].shape != own[k].shape
    )
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys {_names(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_names(unexpected)}")
        if shapes:
            parts.append(f"shape mismatch {_names(shapes, 3)}")
        raise CheckpointError(
            f"backbone {p} does not fit architecture {type(model).__name__} "
            f"(classifier {classifier_name(model)!r} excluded): {'; '.join(parts)}",
            "pass a DINO backbone of the recipe's architecture (torchvision ResNet keys without fc, or timm/DINO "
            "ViT keys cls_token, pos_embed, patch_embed.proj.*, blocks.N.*, norm.*)",
        )
    model.load_state_dict({k: sd[k] for k in own if k in sd}, strict=False)
    return {"path": str(p), "sha256": sha256_file(p), "tensors": len(sd)}


# ---------------------------------------------------------------------------------------------
# phase (a): self-supervised backbone
# ---------------------------------------------------------------------------------------------
@dataclass
class BackboneResult:
    """What phase (a) produced (or found).

    Attributes:
        path: ``backbone.pt``.
        hash: The backbone's content hash.
        source: ``"trained"`` (by this call), ``"cache"`` (found complete), or ``"file"`` (``--backbone``).
        metrics: Epoch records of its training (empty for a user file).
    """

    path: Path
    hash: str
    source: str
    metrics: list[dict[str, Any]]


class _DinoTrainer:
    """The self-distillation loop (see the module docstring); rank 0 writes files."""

    def __init__(self, recipe: DinoRecipe, out: Path, source: DataSource, env: DistEnv, opts: RunOptions,
                 progress: ProgressCallback | None) -> None:  # fmt: skip
        from lightly.models.utils import deactivate_requires_grad, get_weight_decay_parameters

        from ovdiv.models import create_model

        b = recipe.backbone
        self.recipe, self.out, self.env, self.opts, self.progress = recipe, out, env, opts, progress
        self.cuda = env.device.type == "cuda"
        self.use_amp = bool(opts.amp and (self.cuda or opts.cpu_amp))
        self.amp_dtype = torch.float16 if self.cuda and opts.amp_dtype == "float16" else torch.bfloat16
        torch.manual_seed(opts.seed)
        np.random.seed(opts.seed % 2**32)
        backbone = enable_any_input_size(create_model(recipe.arch, num_classes=recipe.num_classes, **recipe.arch_args))
        in_dim = getattr(backbone, classifier_name(backbone)).in_features
        student = DinoNet(backbone, _projection_head(in_dim, b.head, b.freeze_last_layer_epochs))
        if env.world_size > 1 and self.cuda:
            student = nn.SyncBatchNorm.convert_sync_batchnorm(student)
        # a fresh head, not deepcopy: weight_norm's computed weight is not a leaf tensor (not deep-copyable)
        teacher = DinoNet(copy.deepcopy(backbone), _projection_head(in_dim, b.head, b.freeze_last_layer_epochs))
        if env.world_size > 1 and self.cuda:
            teacher = nn.SyncBatchNorm.convert_sync_batchnorm(teacher)
        teacher.load_state_dict(student.state_dict())
        self.student = student.to(env.device)
        self.teacher = teacher.to(env.device)
        deactivate_requires_grad(self.teacher)
        self.loss_fn = dino_loss(recipe).to(env.device)

        ds = _multicrop_dataset(source, dino_transform(recipe))
        if len(ds) < b.batch_size * env.world_size:  # type: ignore[arg-type]
            raise DataError(
                f"DINO training set {source.describe()} has {len(ds)} images, fewer than one batch of "  # type: ignore[arg-type]
                f"{b.batch_size} x {env.world_size}",
                "lower backbone.batch_size or use more data",
            )
        self.generator = torch.Generator().manual_seed(opts.seed)
        self.sampler: DistributedSampler[Any] | None = None
        if env.world_size > 1:
            self.sampler = DistributedSampler(ds, num_replicas=env.world_size, rank=env.rank, seed=opts.seed)
            smp: Any = self.sampler
        else:
            smp = RandomSampler(ds, generator=self.generator)  # type: ignore[arg-type]
        self.loader = DataLoader(
            ds, batch_size=b.batch_size, sampler=smp, drop_last=True, num_workers=opts.workers,
            pin_memory=self.cuda, persistent_workers=opts.workers > 0,
        )  # fmt: skip
        self.spe = len(self.loader)
        self.epochs = int(opts.epochs if opts.epochs is not None else b.epochs)
        self.total_steps = self.epochs * self.spe
        if opts.max_steps is not None:
            self.total_steps = min(self.total_steps, int(opts.max_steps))
        self.epochs = min(self.epochs, math.ceil(self.total_steps / self.spe))
        decay, no_decay = get_weight_decay_parameters([self.student.backbone, self.student.head])
        groups = [
            {"params": [p for p in decay if p.requires_grad]},
            {"params": [p for p in no_decay if p.requires_grad], "weight_decay": 0.0},
        ]
        self.optimizer = build_optimizer(groups, b.optimizer, where=f"{recipe.name}: backbone.optimizer")
        self.scheduler = build_scheduler(
            self.optimizer, b.schedule, steps_per_epoch=self.spe, total_steps=self.total_steps,
            where=f"{recipe.name}: backbone.schedule",
        )  # fmt: skip
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=self.cuda and self.use_amp and self.amp_dtype == torch.float16
        )
        self.forward_student: nn.Module = self.student
        if env.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.forward_student = DDP(self.student, device_ids=[env.device] if self.cuda else None)
        self.epoch = 0
        self.step = 0

    # ---------------------------------------------------------------- state
    def _center(self) -> Tensor:
        c = self.loss_fn.center
        assert isinstance(c, Tensor)  # internal: lightly's DINOLoss buffer
        return c

    def state_dict(self) -> dict[str, Any]:
        return {
            "format": "ovdiv-dino-state/1",
            "student": {k: v.detach().cpu() for k, v in self.student.state_dict().items()},
            "teacher": {k: v.detach().cpu() for k, v in self.teacher.state_dict().items()},
            "center": self._center().detach().cpu(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "total_steps": self.total_steps,
            "rng_cpu": torch.get_rng_state(),
        }

    def save_state(self) -> None:
        if self.env.is_main:
            with atomic_path(self.out / _STATE, suffix=".pt") as tmp:
                torch.save(self.state_dict(), tmp)

    def try_resume(self) -> bool:
        path = self.out / _STATE
        if not (self.opts.resume and path.is_file()):
            return False
        try:
            st = torch.load(path, map_location="cpu", weights_only=True)
            self.student.load_state_dict(st["student"])
            self.teacher.load_state_dict(st["teacher"])
        except Exception as exc:
            raise TrainingError(f"cannot resume from {path}: {exc}", "delete the folder to start over") from exc
        self._center().copy_(st["center"])
        self.optimizer.load_state_dict(st["optimizer"])
        self.scaler.load_state_dict(st["scaler"])
        self.epoch, self.step = int(st["epoch"]), int(st["step"])
        if int(st["total_steps"]) == self.total_steps:
            self.scheduler.load_state_dict(st["scheduler"])
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                for _ in range(min(self.step, self.total_steps)):
                    self.scheduler.step()
        torch.set_rng_state(st["rng_cpu"])
        if self.env.is_main:
            recs = [r for r in read_metrics(self.out) if int(r.get("epoch", 0)) <= self.epoch]
            write_text(self.out / _METRICS, "".join(json.dumps(r) + "\n" for r in recs))
        log.info("DINO backbone: resumed %s at epoch %d, step %d", self.out, self.epoch, self.step)
        return True

    # ---------------------------------------------------------------- loop
    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if not self.use_amp:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.env.device.type, dtype=self.amp_dtype)

    def _step(self, views: list[Tensor]) -> float:
        from lightly.models.utils import update_momentum
        from lightly.utils.scheduler import cosine_schedule

        b = self.recipe.backbone
        views = [v.to(self.env.device, non_blocking=True) for v in views]
        with self._autocast():
            with torch.no_grad():
                teacher_out = [t.float() for t in self.teacher(views[:2])]
            student_out = [s.float() for s in self.forward_student(views)]
        loss = self.loss_fn(teacher_out, student_out, epoch=self.epoch)  # lightly's teacher-temperature warm-up
        if not torch.isfinite(loss.detach()):
            raise TrainingError(f"non-finite DINO loss at step {self.step + 1}", "lower the lr")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.student.head.cancel_last_layer_gradients(self.epoch)  # type: ignore[operator]
        if b.grad_clip_norm:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.student.parameters(), b.grad_clip_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        m = cosine_schedule(self.step, max(1, self.total_steps - 1), b.momentum_teacher, 1.0)
        update_momentum(self.student, self.teacher, m)
        self.step += 1
        self.momentum = m
        return float(loss.detach())

    def fit(self) -> None:
        if self.env.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        self.student.train()
        self.teacher.train()  # as DINO: the teacher's BN uses (and tracks) batch statistics
        self.momentum = self.recipe.backbone.momentum_teacher
        while self.epoch < self.epochs and self.step < self.total_steps:
            seed = (self.opts.seed * 1_000_003 + self.epoch) % 2**32
            np.random.seed(seed)  # lightly's blur / solarization draw from numpy's global RNG
            if self.sampler is not None:
                self.sampler.set_epoch(self.epoch)
            else:
                self.generator.manual_seed(seed)
            t0 = time.perf_counter()
            total, n = 0.0, 0
            for views, _ in self.loader:
                if self.step >= self.total_steps:
                    break
                total += self._step(views)
                n += 1
                if self.progress is not None and self.env.is_main:
                    detail = f"epoch {self.epoch + 1}/{self.epochs} loss {total / n:.4f}"
                    self.progress(Progress(f"dino backbone {self.recipe.name}", self.step, self.total_steps, detail))
            secs = time.perf_counter() - t0
            rec = {
                "epoch": self.epoch + 1,
                "step": self.step,
                "lr": self.optimizer.param_groups[0]["lr"],
                "train_loss": total / max(1, n),
                "teacher_momentum": self.momentum,
                "teacher_temp": teacher_temperature(self.recipe, self.epoch),
                "epoch_seconds": secs,
                "images_per_second": n * self.recipe.backbone.batch_size * self.env.world_size / max(secs, 1e-9),
            }
            if not math.isfinite(rec["train_loss"]):
                raise TrainingError(f"DINO training diverged in epoch {self.epoch + 1}", "lower the lr")
            self.epoch += 1
            if self.env.is_main:
                self.save_state()
                old = (self.out / _METRICS).read_text(encoding="utf-8") if (self.out / _METRICS).is_file() else ""
                write_text(self.out / _METRICS, old + json.dumps(rec) + "\n")
            log.info("DINO backbone epoch %d: %s", self.epoch, rec)
        if self.env.world_size > 1:
            dist.barrier()


def _done(folder: Path, digest: str) -> bool:
    meta_path = folder / "backbone.json"
    if not (meta_path.is_file() and (folder / "backbone.pt").is_file()):
        return False
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return bool(meta.get("hash") == digest)


def train_dino_backbone(
    recipe: DinoRecipe | str | Path,
    *,
    cache_dir: str | Path,
    data: DataSource | str | Path | None = None,
    device: str | None = None,
    epochs: int | None = None,
    max_steps: int | None = None,
    resume: bool = True,
    workers: int = 0,
    options: RunOptions | None = None,
    progress: ProgressCallback | None = None,
    env: DistEnv | None = None,
) -> BackboneResult:
    """Phase (a): the recipe's self-supervised backbone, trained once per content hash.

    Args:
        recipe: A :class:`DinoRecipe` or its JSON path.
        cache_dir: Backbone cache; the backbone lives in ``cache_dir/<arch>-<hash16>``.
        data: Training data (as :func:`ovdiv.train.train_member`); default the recipe's ``data``.
        device: ``cuda`` / ``cpu`` (default: CUDA when available).
        epochs: Override of ``backbone.epochs`` (part of the hash).
        max_steps: Stop after this many steps (part of the hash; smoke runs).
        resume: Continue an interrupted training in the backbone folder.
        workers: DataLoader workers.
        options: Full run options (overrides the individual arguments).
        progress: Progress callback.
        env: Distributed environment (default: initialised here).

    Returns:
        :class:`BackboneResult` (``source`` ``"cache"`` when it was complete already).
    """
    rec = recipe if isinstance(recipe, DinoRecipe) else load_dino_recipe(recipe)
    if epochs is not None:
        rec = replace(rec, backbone=replace(rec.backbone, epochs=int(epochs)))
    opts = options or RunOptions(
        device=device, amp=rec.amp, channels_last=False, workers=workers, epochs=None, max_steps=max_steps,
        seed=rec.backbone.seed, resume=resume,
    )  # fmt: skip
    opts = replace(opts, seed=rec.backbone.seed, epochs=None)
    source = resolve_data(rec.name, rec.data, data, opts.seed)
    key = rec.backbone_key(_describe_data(source))
    if opts.max_steps is not None:
        key["max_steps"] = int(opts.max_steps)
    digest = _hash(key)
    folder = Path(cache_dir) / f"{rec.arch}-{digest[:16]}"
    if _done(folder, digest):
        log.info("DINO backbone %s: found in the cache (%s)", rec.name, folder)
        return BackboneResult(folder / "backbone.pt", digest, "cache", read_metrics(folder))
    own_env = env is None
    env = env or init_distributed(opts.device)
    try:
        trainer = _DinoTrainer(rec, folder, source, env, opts, progress)
        if env.is_main:
            folder.mkdir(parents=True, exist_ok=True)
            write_json(folder / "key.json", key)
        trainer.try_resume()
        trainer.fit()
        if env.is_main:
            from ovdiv.cards import sha256_file

            weights = folder / "backbone.pt"
            with atomic_path(weights, suffix=".pt") as tmp:
                torch.save(backbone_state_dict(trainer.teacher.backbone), tmp)
            write_json(
                folder / "backbone.json",
                {
                    "format": BACKBONE_FORMAT,
                    "hash": digest,
                    "arch": rec.arch,
                    "arch_args": rec.arch_args,
                    "recipe": rec.name,
                    "epochs": trainer.epoch,
                    "steps": trainer.step,
                    "sha256": sha256_file(weights),
                    "key": key,
                },
            )
        if env.world_size > 1:
            dist.barrier()
    finally:
        if own_env:
            env.shutdown()
    return BackboneResult(folder / "backbone.pt", digest, "trained", read_metrics(folder))


def _hash(key: dict[str, Any]) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(key, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


def _describe_data(source: DataSource) -> Any:
    if source.root is not None:
        return {"root": str(Path(source.root).resolve())}
    if source.spec is not None:
        return {"train": source.spec, "limit": source.limit, "seed": source.seed}
    images = source.arrays[0] if source.arrays is not None else np.zeros(0, np.uint8)
    import hashlib

    return {"arrays_sha256": hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest()}


# ---------------------------------------------------------------------------------------------
# phase (b): linear classifier on the frozen backbone
# ---------------------------------------------------------------------------------------------
class _LinearProbe(nn.Module):
    """The classifier with its backbone frozen: always in eval mode, run without gradients."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.cls = classifier_name(model)
        model.requires_grad_(False)
        getattr(model, self.cls).requires_grad_(True)

    def train(self, mode: bool = True) -> _LinearProbe:
        super().train(mode)
        self.model.eval()
        return self

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            f = backbone_features(self.model, x)
        return getattr(self.model, self.cls)(f)


@dataclass
class DinoResult(TrainResult):
    """:class:`~ovdiv.train.TrainResult` of a DINO member plus where its backbone came from.

    Attributes:
        backbone: The backbone file used.
        backbone_source: ``"trained"``, ``"cache"`` or ``"file"``.
        backbone_hash: Content hash (empty for a user file).
        backbone_metrics: Epoch records of phase (a).
    """

    backbone: Path | None = None
    backbone_source: str = ""
    backbone_hash: str = ""
    backbone_metrics: list[dict[str, Any]] | None = None


def train_dino(
    recipe: DinoRecipe | str | Path,
    *,
    out_dir: str | Path,
    data: DataSource | str | Path | None = None,
    backbone: str | Path | None = None,
    backbone_cache: str | Path | None = None,
    device: str | None = None,
    epochs: int | None = None,
    backbone_epochs: int | None = None,
    max_steps: int | None = None,
    resume: bool = True,
    workers: int = 0,
    val_every: int = 1,
    export: bool = False,
    progress: ProgressCallback | None = None,
) -> DinoResult:
    """Train a DINO member: backbone (phase a, cached by content), then the linear classifier (phase b).

    Args:
        recipe: A :class:`DinoRecipe` or its JSON path.
        out_dir: Run folder of phase (b) (layout of :func:`ovdiv.train.train_member`).
        data: Training data; default the recipe's ``data``.
        backbone: Skip phase (a) and use this DINO backbone file (:func:`load_backbone`).
        backbone_cache: Backbone cache folder (default ``<out_dir>/../dino_backbones``).
        device: ``cuda`` / ``cpu``.
        epochs: Override of ``classifier.epochs``.
        backbone_epochs: Override of ``backbone.epochs``.
        max_steps: Stop each phase after this many steps (smoke runs).
        resume: Continue interrupted phases.
        workers: DataLoader workers.
        val_every: Validate the classifier every N epochs.
        export: Export the final classifier to ONNX + IR FP32 (``RUN/export``).
        progress: Progress callback.

    Returns:
        :class:`DinoResult` (``checkpoint`` = ``RUN/last.pt``, an ordinary classifier checkpoint).
    """
    from ovdiv.models import create_model, save_checkpoint

    rec = recipe if isinstance(recipe, DinoRecipe) else load_dino_recipe(recipe)
    out = Path(out_dir)
    cache = Path(backbone_cache) if backbone_cache is not None else out.parent / "dino_backbones"
    cls = rec.classifier
    env = init_distributed(device)
    try:
        if backbone is not None:
            bb = BackboneResult(Path(backbone), "", "file", [])
        else:
            bb = train_dino_backbone(
                rec, cache_dir=cache, data=data, device=device, epochs=backbone_epochs, max_steps=max_steps,
                resume=resume, workers=workers, progress=progress, env=env,
            )  # fmt: skip
        opts = RunOptions(
            device=device, amp=rec.amp, channels_last=rec.channels_last, workers=workers, val_every=val_every,
            epochs=epochs, max_steps=max_steps, seed=cls.seed, resume=resume,
        )  # fmt: skip
        source = resolve_data(rec.name, rec.data, data, cls.seed)
        loaders = build_loaders(
            source, input_size=rec.input_size, batch_size=cls.batch_size, workers=workers, mean=rec.mean,
            std=rec.std, seed=cls.seed, rank=env.rank, world_size=env.world_size,
            pin_memory=env.device.type == "cuda", transforms=cls.transforms,
        )  # fmt: skip
        if loaders.num_classes_seen > rec.num_classes:
            raise ConfigError(
                f"recipe {rec.name}: the data has {loaders.num_classes_seen} classes, num_classes is {rec.num_classes}",
                "set num_classes in the recipe",
            )
        torch.manual_seed(cls.seed)
        model = create_model(rec.arch, num_classes=rec.num_classes, **rec.arch_args)
        loaded = load_backbone(model, bb.path)
        head = getattr(model, classifier_name(model))
        torch.manual_seed(cls.seed)
        with torch.no_grad():  # DINO's linear evaluation: N(0, 0.01) weights, zero bias
            head.weight.normal_(0.0, 0.01)
            head.bias.zero_()
        probe = _LinearProbe(model)

        def loss_fn(fwd: Callable[[Tensor], Tensor], _m: Sequence[nn.Module], x: Tensor, y: Tensor) -> StepOutput:
            z = fwd(x)
            return StepOutput(F.cross_entropy(z[0].float(), y), z)

        last, best = out / "last.pt", out / "best.pt"
        recipe_dict = rec.to_dict()
        dino_extra = {"backbone": str(bb.path), "backbone_source": bb.source, "backbone_hash": bb.hash,
                      "backbone_sha256": loaded["sha256"]}  # fmt: skip

        def on_epoch_end(epoch: int, mods: Sequence[nn.Module], record: dict[str, Any]) -> None:
            top1 = record.get("val_member_top1", {}).get(rec.name)
            kw: dict[str, Any] = {
                "arch": rec.arch,
                "arch_args": rec.arch_args,
                "num_classes": rec.num_classes,
                "input_size": rec.input_size,
                "mean": rec.mean,
                "std": rec.std,
                "recipe": recipe_dict,
                "extra": {"epoch": epoch, "step": record["step"], "val_top1": top1, "dino": dino_extra},
            }
            inner = mods[0].model
            assert isinstance(inner, nn.Module)  # internal: the probe wraps the classifier
            save_checkpoint(last, inner, **kw)
            if top1 is not None and top1 >= trainer.best.get("val_top1", -1.0):
                trainer.best["val_top1"] = float(top1)
                save_checkpoint(best, inner, **kw)

        if env.is_main:
            write_json(out / "recipe.json", recipe_dict)
        trainer = JointTrainer(
            [probe], [rec.name], loss_fn, loaders, optimizer=cls.optimizer, schedule=cls.schedule, epochs=cls.epochs,
            out_dir=out, env=env, options=opts, progress=progress, task=f"linear classifier {rec.name}",
            on_epoch_end=on_epoch_end,
        )  # fmt: skip
        trainer.try_resume()
        trainer.fit()
    finally:
        env.shutdown()
    exported: list[Any] = []
    if export and env.is_main:
        from ovdiv.train.ensemble import export_members

        exported = export_members([last], out / "export", progress, names=[rec.name])
    return DinoResult(
        out_dir=out, checkpoint=last, best=best if best.is_file() else None, metrics=read_metrics(out),
        exported=exported, is_main=env.is_main, backbone=bb.path, backbone_source=bb.source,
        backbone_hash=bb.hash, backbone_metrics=bb.metrics,
    )  # fmt: skip
