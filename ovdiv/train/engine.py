"""The training loop shared by single members, joint ensembles and low-cost ensembles.

One :class:`JointTrainer` trains ``M >= 1`` networks on the same batches with ONE optimizer over all
their parameters and ONE backward pass of a joint loss per iteration (``M = 1`` is ordinary
training). It owns the device, AMP (``torch.autocast`` + ``GradScaler`` on CUDA; a no-op on CPU),
channels-last (CUDA only), ``torchrun`` data parallelism, per-step lr schedules, resume, periodic
validation, a JSONL metrics log and progress events.

Data parallelism (``WORLD_SIZE > 1`` in the environment, as ``torchrun`` sets it): the process group
is initialised from the ``env://`` variables (NCCL on CUDA, Gloo on CPU), the training loader uses
a ``DistributedSampler``, and the members are wrapped together in one ``DistributedDataParallel``
container whose forward returns the stacked ``(M, B, C)`` logits. Losses that differentiate through
input gradients (the attribution-diversity loss, ``double_backward=True``) cannot go through DDP's
reducer, so for them gradients are all-reduced (averaged) explicitly after the backward pass — the
same arithmetic without overlap. Only rank 0 writes files.

Files in ``out_dir``: ``state.pt`` (everything needed to resume: model/optimizer/scheduler/scaler
state, epoch, step, RNG — rewritten atomically at the end of every epoch and at ``max_steps``) and
``metrics.jsonl`` (one JSON object per epoch). Deployable member checkpoints are written by the
caller through the ``on_epoch_end`` hook.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from ovdiv.atomic import atomic_path, write_text
from ovdiv.errors import TrainingError
from ovdiv.train.data import Loaders
from ovdiv.train.optim import build_optimizer, build_scheduler
from ovdiv.types import Progress, ProgressCallback

__all__ = [
    "DistEnv",
    "EpochHook",
    "JointTrainer",
    "LossFn",
    "RunOptions",
    "StepOutput",
    "init_distributed",
    "pairwise_disagreement",
    "read_metrics",
]

log = logging.getLogger("ovdiv.train")

STATE_FILE = "state.pt"
METRICS_FILE = "metrics.jsonl"


@dataclass
class RunOptions:
    """Run-time knobs that are not part of a recipe.

    Attributes:
        device: ``"cuda"``, ``"cpu"`` or None (CUDA when available).
        amp: Mixed precision on CUDA (ignored on CPU).
        amp_dtype: ``"float16"`` (with GradScaler) or ``"bfloat16"``; losses with input gradients
            (attribution diversity) use bfloat16 where the GPU supports it, as GradScaler does not
            protect the inner saliency gradients from fp16 underflow.
        channels_last: Channels-last memory format on CUDA (ignored on CPU).
        workers: DataLoader workers.
        val_every: Validate every this many epochs (0 = only at the end).
        epochs: Override of the recipe's epochs.
        max_steps: Stop after this many optimizer steps in total (smoke runs).
        seed: Seed of initialisation, shuffling and augmentation.
        resume: Continue from ``out_dir/state.pt`` when present.
        compile: ``torch.compile`` the members (CUDA).
        cpu_amp: Also autocast on CPU (bfloat16) — exercises the AMP code path without a GPU.
        cpu_channels_last: Also use channels-last on CPU — exercises that code path without a GPU.
    """

    device: str | None = None
    amp: bool = True
    amp_dtype: str = "float16"
    channels_last: bool = True
    workers: int = 0
    val_every: int = 1
    epochs: int | None = None
    max_steps: int | None = None
    seed: int = 0
    resume: bool = True
    compile: bool = False
    cpu_amp: bool = False
    cpu_channels_last: bool = False


@dataclass
class DistEnv:
    """This process's place in a (possibly single-process) run."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False

    def shutdown(self) -> None:
        """Destroy the process group if :func:`init_distributed` created it."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False

    @property
    def is_main(self) -> bool:
        """True on rank 0 (the only writer)."""
        return self.rank == 0


def init_distributed(device: str | None = None) -> DistEnv:
    """Read ``torchrun``'s env vars; initialise the process group when ``WORLD_SIZE > 1``.

    Args:
        device: ``"cuda"``, ``"cpu"`` or None (CUDA when available).

    Returns:
        :class:`DistEnv` with the device this process uses (``cuda:LOCAL_RANK`` on CUDA).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    want_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    if want_cuda and not torch.cuda.is_available():
        raise TrainingError("device 'cuda' requested but no CUDA GPU is available", "use --device cpu")
    dev = torch.device(f"cuda:{local}") if want_cuda else torch.device("cpu")
    if want_cuda:
        torch.cuda.set_device(dev)
    owns = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if want_cuda else "gloo", init_method="env://")
        owns = True
        log.info("process group: rank %d/%d on %s", rank, world, dev)
    return DistEnv(rank=rank, local_rank=local, world_size=world, device=dev, owns_group=owns)


@dataclass
class StepOutput:
    """What a loss function returns for one batch.

    Attributes:
        loss: Scalar joint loss (graph attached).
        logits: ``(M, B, C)`` member logits.
        extras: Extra scalars to average into the epoch log (e.g. ``gncl_penalty``, ``d_att``).
    """

    loss: Tensor
    logits: Tensor
    extras: dict[str, Tensor] = field(default_factory=dict)


LossFn = Callable[[Callable[[Tensor], Tensor], Sequence[nn.Module], Tensor, Tensor], StepOutput]
"""``loss_fn(forward, members, x, y)``: ``forward(x) -> (M, B, C)`` runs all members (through DDP
when active); ``members`` are the bare modules (for losses that need per-member access)."""

EpochHook = Callable[[int, Sequence[nn.Module], dict[str, Any]], None]
"""``hook(epoch, members, record)`` after each epoch on rank 0 (members are bare, in eval mode)."""


class _Stack(nn.Module):
    """All members as one module whose forward returns ``(M, B, C)`` logits."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: Tensor) -> Tensor:
        return torch.stack([m(x) for m in self.members])


def pairwise_disagreement(correct: Tensor) -> float:
    """Mean over member pairs ``i < k`` of ``(N01 + N10) / N`` (paper Eq. 4).

    Args:
        correct: ``(M, N)`` bool, member ``i`` right on sample ``n``.

    Returns:
        The ensemble disagreement (0.0 for ``M < 2``).
    """
    m = correct.shape[0]
    if m < 2:
        return 0.0
    vals = [(correct[i] != correct[k]).float().mean().item() for i, k in itertools.combinations(range(m), 2)]
    return float(sum(vals) / len(vals))


def read_metrics(out_dir: str | Path) -> list[dict[str, Any]]:
    """The epoch records of ``out_dir/metrics.jsonl`` (empty list when absent)."""
    path = Path(out_dir) / METRICS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


class _Meter:
    """Sums of per-batch statistics of one epoch (on this rank), kept on the device (no per-step sync).

    Layout of ``acc``: ``[n, Σ loss·b, Σ ens_correct, Σ disagreement·b, Σ CE_i (M), Σ correct_i (M), Σ extra·b (K)]``.
    """

    def __init__(self, m: int) -> None:
        self.m = m
        self.keys: list[str] | None = None
        self.acc: Tensor | None = None
        self.n = 0

    def update(self, out: StepOutput, y: Tensor) -> None:
        with torch.no_grad():
            z = out.logits.detach().float()
            mm, b, c = z.shape
            if self.keys is None:
                self.keys = sorted(out.extras)
            correct = z.argmax(-1) == y.unsqueeze(0)  # (M, B)
            cf = correct.float()
            if mm > 1:
                pair = (cf.unsqueeze(1) != cf.unsqueeze(0)).float().mean(-1)  # (M, M)
                disagree = pair.sum() / (mm * (mm - 1))  # mean over i<k (the matrix is symmetric)
            else:
                disagree = z.new_zeros(())
            head = torch.stack(
                [
                    z.new_tensor(float(b)),
                    out.loss.detach().float() * b,
                    (z.mean(0).argmax(-1) == y).sum().float(),
                    disagree * b,
                ]
            )
            ce = F.cross_entropy(z.reshape(-1, c), y.repeat(mm), reduction="none").view(mm, b).sum(1)
            extras = [out.extras[k].detach().float().reshape(()) * b for k in self.keys]
            vec = torch.cat([head, ce, cf.sum(1), torch.stack(extras) if extras else z.new_zeros(0)]).double()
            self.acc = vec if self.acc is None else self.acc + vec
            self.n += b

    def reduce(self, env: DistEnv) -> None:
        if env.world_size == 1 or self.acc is None:
            return
        dist.all_reduce(self.acc)

    def record(self, names: Sequence[str]) -> dict[str, Any]:
        if self.acc is None:
            return {"train_loss": float("nan")}
        v = self.acc.cpu().tolist()
        m = self.m
        n = max(1.0, v[0])
        rec: dict[str, Any] = {
            "train_loss": v[1] / n,
            "train_member_loss": {k: x / n for k, x in zip(names, v[4 : 4 + m], strict=True)},
            "train_member_top1": {k: x / n for k, x in zip(names, v[4 + m : 4 + 2 * m], strict=True)},
        }
        if m > 1:
            rec["train_ensemble_top1"] = v[2] / n
            rec["train_disagreement"] = v[3] / n
        for j, k in enumerate(self.keys or []):
            rec[f"train_{k}"] = v[4 + 2 * m + j] / n
        return rec

    def mean_loss(self) -> float:
        """Running mean loss (synchronises with the device)."""
        return float(self.acc[1] / self.acc[0]) if self.acc is not None else float("nan")


class JointTrainer:
    """Train ``M`` members with one optimizer over a joint loss (see the module docstring).

    Args:
        members: The networks (bare modules, on CPU; moved to the run's device here).
        names: One name per member (log keys).
        loss_fn: :data:`LossFn` of the heuristic.
        loaders: Train/validation loaders.
        optimizer: Optimizer spec (:func:`ovdiv.train.optim.build_optimizer`).
        schedule: Schedule spec (:func:`ovdiv.train.optim.build_scheduler`).
        epochs: Number of epochs.
        out_dir: Run folder (``state.pt``, ``metrics.jsonl``).
        env: Distributed environment / device.
        options: :class:`RunOptions`.
        double_backward: The loss differentiates through input gradients (no DDP reducer).
        progress: Progress callback.
        task: Progress task name.
        on_epoch_end: Hook after each epoch (rank 0).
        on_step_end: ``hook(step, members)`` after each optimizer step (rank 0; snapshot ensembles).
        after_step: ``hook(members)`` after each optimizer step on every rank (e.g. re-apply masks).
        grad_clip_norm: Clip the global gradient norm (after AMP unscaling) to this value.
    """

    def __init__(
        self,
        members: Sequence[nn.Module],
        names: Sequence[str],
        loss_fn: LossFn,
        loaders: Loaders,
        *,
        optimizer: Mapping[str, Any],
        schedule: Mapping[str, Any],
        epochs: int,
        out_dir: Path,
        env: DistEnv,
        options: RunOptions,
        double_backward: bool = False,
        progress: ProgressCallback | None = None,
        task: str = "train",
        on_epoch_end: EpochHook | None = None,
        on_step_end: Callable[[int, Sequence[nn.Module]], None] | None = None,
        after_step: Callable[[Sequence[nn.Module]], None] | None = None,
        grad_clip_norm: float | None = None,
    ) -> None:
        if len(members) != len(names) or not members:
            raise TrainingError(f"need one name per member, got {len(members)} members and {len(names)} names")
        self.names = list(names)
        self.loss_fn = loss_fn
        self.loaders = loaders
        self.env = env
        self.opts = options
        self.out_dir = Path(out_dir)
        self.progress = progress
        self.task = task
        self.on_epoch_end = on_epoch_end
        self.on_step_end = on_step_end
        self.after_step = after_step
        self.grad_clip_norm = grad_clip_norm
        self.epochs = int(options.epochs if options.epochs is not None else epochs)
        if self.epochs < 1:
            raise TrainingError(f"epochs must be >= 1, got {self.epochs}")
        self.cuda = env.device.type == "cuda"
        self.use_amp = bool(options.amp and (self.cuda or options.cpu_amp))
        amp_dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16}.get(options.amp_dtype)
        if amp_dtype is None:
            raise TrainingError(f"unknown amp_dtype {options.amp_dtype!r}", "use float16 or bfloat16")
        if self.cuda and double_backward and amp_dtype == torch.float16 and torch.cuda.is_bf16_supported():
            # input gradients inside the loss are not covered by GradScaler: fp16 would underflow them
            log.info("AMP: bfloat16 instead of float16 for a loss with input gradients (no loss scaling needed)")
            amp_dtype = torch.bfloat16
        self.amp_dtype: torch.dtype = amp_dtype if self.cuda else torch.bfloat16
        self.channels_last = bool(options.channels_last and (self.cuda or options.cpu_channels_last))
        if self.cuda:
            torch.backends.cudnn.benchmark = True

        self.stack = _Stack(members).to(env.device)
        if self.channels_last:
            self.stack = self.stack.to(memory_format=torch.channels_last)
        self.members: list[nn.Module] = list(self.stack.members)
        self.spe = len(loaders.train)
        if self.spe < 1:
            raise TrainingError("the training loader yields no batches", "use more data or a smaller batch_size")
        self.total_steps = self.epochs * self.spe
        if options.max_steps is not None:
            self.total_steps = min(self.total_steps, int(options.max_steps))
        self.epochs = min(self.epochs, math.ceil(self.total_steps / self.spe))
        params = [p for p in self.stack.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(params, optimizer)
        self.scheduler = build_scheduler(
            self.optimizer, schedule, steps_per_epoch=self.spe, total_steps=self.total_steps
        )
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=self.cuda and self.use_amp and self.amp_dtype == torch.float16
        )

        self.manual_allreduce = env.world_size > 1 and double_backward
        self.ddp: nn.Module | None = None
        if env.world_size > 1:
            if self.manual_allreduce:
                for t in itertools.chain(self.stack.parameters(), self.stack.buffers()):
                    dist.broadcast(t.data, src=0)
            else:
                from torch.nn.parallel import DistributedDataParallel as DDP

                self.ddp = DDP(self.stack, device_ids=[env.device] if self.cuda else None)
        fwd_module: nn.Module = self.ddp if self.ddp is not None else self.stack
        if options.compile and self.cuda:
            fwd_module = torch.compile(fwd_module)  # type: ignore[assignment]
        self._forward_module = fwd_module
        self.epoch = 0  # completed epochs
        self.step = 0  # completed optimizer steps
        self.best: dict[str, float] = {}

    # ------------------------------------------------------------------ helpers
    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """``torch.autocast`` when AMP is on (CUDA; CPU only with ``cpu_amp``); a null context otherwise."""
        if not self.use_amp:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.env.device.type, dtype=self.amp_dtype)

    def _to_device(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        x = x.to(self.env.device, non_blocking=True)
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y.to(self.env.device, non_blocking=True)

    def _forward(self, x: Tensor) -> Tensor:
        return self._forward_module(x)

    def _allreduce_grads(self) -> None:
        grads = [p.grad for p in self.stack.parameters() if p.grad is not None]
        for g in grads:
            dist.all_reduce(g)
            g.div_(self.env.world_size)

    # ------------------------------------------------------------------ state
    @property
    def state_path(self) -> Path:
        """``out_dir/state.pt``."""
        return self.out_dir / STATE_FILE

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume (plain tensors/containers; ``weights_only``-loadable)."""
        return {
            "format": "ovdiv-train-state/1",
            "names": self.names,
            "members": [{k: v.detach().cpu() for k, v in m.state_dict().items()} for m in self.members],
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "total_steps": self.total_steps,
            "best": dict(self.best),
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state(self.env.device) if self.cuda else None,
        }

    def save_state(self) -> None:
        """Atomically write ``state.pt`` (rank 0)."""
        if not self.env.is_main:
            return
        with atomic_path(self.state_path, suffix=".pt") as tmp:
            torch.save(self.state_dict(), tmp)

    def try_resume(self) -> bool:
        """Load ``state.pt`` when present and ``options.resume``; returns whether it did."""
        if not (self.opts.resume and self.state_path.is_file()):
            return False
        try:
            st = torch.load(self.state_path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise TrainingError(f"cannot read {self.state_path}: {exc}", "delete it to start over") from exc
        if st.get("names") != self.names:
            raise TrainingError(
                f"{self.state_path} holds members {st.get('names')}, this run has {self.names}",
                "use another --out folder",
            )
        for m, sd in zip(self.members, st["members"], strict=True):
            m.load_state_dict(sd)
        self.optimizer.load_state_dict(st["optimizer"])
        self.scaler.load_state_dict(st["scaler"])
        self.epoch, self.step = int(st["epoch"]), int(st["step"])
        if int(st.get("total_steps", -1)) == self.total_steps:
            self.scheduler.load_state_dict(st["scheduler"])
        elif self.step < self.total_steps:
            # epochs / max_steps changed: the schedule is re-planned for the new length and advanced to `step`
            log.warning(
                "%s: schedule re-planned for %d steps (was %s)", self.out_dir, self.total_steps, st.get("total_steps")
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                for _ in range(self.step):
                    self.scheduler.step()
        self.best = dict(st.get("best", {}))
        torch.set_rng_state(st["rng_cpu"])
        if self.cuda and st.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(st["rng_cuda"], self.env.device)
        if self.env.is_main:
            recs = [r for r in read_metrics(self.out_dir) if int(r.get("epoch", 0)) <= self.epoch]
            write_text(self.out_dir / METRICS_FILE, "".join(json.dumps(r) + "\n" for r in recs))
        log.info("resumed %s at epoch %d, step %d", self.out_dir, self.epoch, self.step)
        return True

    def _append_metrics(self, rec: Mapping[str, Any]) -> None:
        if not self.env.is_main:
            return
        path = self.out_dir / METRICS_FILE
        old = path.read_text(encoding="utf-8") if path.is_file() else ""
        write_text(path, old + json.dumps(rec) + "\n")

    # ------------------------------------------------------------------ validation
    @torch.no_grad()
    def validate(self) -> dict[str, Any]:
        """Top-1 and CE per member, ensemble (mean-logit) top-1 and disagreement on the validation set."""
        if self.loaders.val is None:
            return {}
        self.stack.eval()
        correct: list[Tensor] = []
        ens: list[Tensor] = []
        ce = torch.zeros(len(self.members), dtype=torch.float64)
        n = 0
        for x, y in self.loaders.val:
            x, y = self._to_device(x, y)
            with self.autocast():
                z = self.stack(x).float()
            m, b, c = z.shape
            ce += F.cross_entropy(z.reshape(-1, c), y.repeat(m), reduction="none").view(m, b).sum(1).double().cpu()
            correct.append((z.argmax(-1) == y.unsqueeze(0)).cpu())
            ens.append((z.mean(0).argmax(-1) == y).cpu())
            n += b
        cor = torch.cat(correct, dim=1)
        rec: dict[str, Any] = {
            "val_member_loss": {k: float(v) / n for k, v in zip(self.names, ce, strict=True)},
            "val_member_top1": {k: float(v) for k, v in zip(self.names, cor.float().mean(1), strict=True)},
        }
        if len(self.members) > 1:
            rec["val_ensemble_top1"] = float(torch.cat(ens).float().mean())
            rec["val_disagreement"] = pairwise_disagreement(cor)
        return rec

    # ------------------------------------------------------------------ loop
    def fit(self) -> list[dict[str, Any]]:
        """Train until ``epochs`` / ``max_steps``; returns the metrics records of this call's epochs."""
        if self.env.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        records: list[dict[str, Any]] = []
        if self.step >= self.total_steps:
            log.info("%s: already complete (%d steps)", self.out_dir, self.step)
            return records
        sampler = self.loaders.sampler
        while self.epoch < self.epochs and self.step < self.total_steps:
            if sampler is not None:
                sampler.set_epoch(self.epoch)
            if self.loaders.generator is not None:
                self.loaders.generator.manual_seed(self.opts.seed * 1_000_003 + self.epoch)
            t0 = time.perf_counter()
            meter = self._train_epoch()
            meter.reduce(self.env)
            train_seconds = time.perf_counter() - t0
            self.epoch += 1
            rec: dict[str, Any] = {"epoch": self.epoch, "step": self.step, "lr": self.optimizer.param_groups[0]["lr"]}
            rec.update(meter.record(self.names))
            final = self.epoch >= self.epochs or self.step >= self.total_steps
            every = self.opts.val_every
            if final or (every > 0 and self.epoch % every == 0):
                rec.update(self.validate())
            rec["epoch_seconds"] = time.perf_counter() - t0
            rec["train_seconds"] = train_seconds
            rec["images_per_second"] = meter.n * self.env.world_size / max(train_seconds, 1e-9)
            if not math.isfinite(rec["train_loss"]):
                raise TrainingError(
                    f"training diverged in epoch {self.epoch} (loss {rec['train_loss']})", "lower the lr or lambda"
                )
            if self.env.is_main:
                self.stack.eval()
                if self.on_epoch_end is not None:
                    self.on_epoch_end(self.epoch, self.members, rec)
                self.save_state()
                self._append_metrics(rec)
            records.append(rec)
            log.info("epoch %d: %s", self.epoch, {k: v for k, v in rec.items() if not isinstance(v, dict)})
        if self.env.world_size > 1:
            dist.barrier()
        return records

    def _batches(self) -> Iterator[tuple[Tensor, Tensor]]:
        for x, y in self.loaders.train:
            if self.step >= self.total_steps:
                return
            yield self._to_device(x, y)

    def _step(self, x: Tensor, y: Tensor, meter: _Meter) -> None:
        """One optimizer step over the joint loss of batch ``(x, y)``."""
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            out = self.loss_fn(self._forward, self.members, x, y)
        if (not self.cuda or self.step % 50 == 0) and not torch.isfinite(out.loss.detach()):
            raise TrainingError(f"non-finite loss at step {self.step + 1}", "lower the lr or lambda")
        self.scaler.scale(out.loss).backward()
        if self.manual_allreduce:
            self._allreduce_grads()
        if self.grad_clip_norm:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.stack.parameters(), self.grad_clip_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.after_step is not None:
            self.after_step(self.members)
        self.step += 1
        meter.update(out, y)

    def train_steps(self, n: int) -> dict[str, Any]:
        """Run ``n`` optimizer steps (cycling the loader) without hooks, files or validation.

        For benchmarks and smoke checks; CUDA work is synchronised before returning.

        Returns:
            The train part of an epoch record over these steps.
        """
        self.stack.train()
        meter = _Meter(len(self.members))
        it = iter(self.loaders.train)
        for _ in range(n):
            try:
                x, y = next(it)
            except StopIteration:
                it = iter(self.loaders.train)
                x, y = next(it)
            self._step(*self._to_device(x, y), meter)
        if self.cuda:
            torch.cuda.synchronize(self.env.device)
        return meter.record(self.names)

    def _train_epoch(self) -> _Meter:
        self.stack.train()
        meter = _Meter(len(self.members))
        detail = f"epoch {self.epoch + 1}/{self.epochs}"
        for i, (x, y) in enumerate(self._batches()):
            self._step(x, y, meter)
            if self.env.is_main and self.on_step_end is not None:
                self.on_step_end(self.step, self.members)
            if self.progress is not None and self.env.is_main:
                if i % 20 == 0 or self.step == self.total_steps:  # the loss read syncs with the GPU: not every step
                    detail = f"epoch {self.epoch + 1}/{self.epochs} loss {meter.mean_loss():.4f}"
                self.progress(Progress(self.task, self.step, self.total_steps, detail))
        return meter
