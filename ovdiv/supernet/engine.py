"""In-process BootstrapNAS work: build, train, reload, search, extract, count (imports nncf.torch).

Run this module's functions only in a process of their own (the public :mod:`ovdiv.supernet`
functions spawn ``python -m ovdiv.supernet`` for that); :func:`ovdiv.supernet.nncf_env.import_nncf_torch`
refuses to continue in a process whose nncf is not in legacy-tracing mode.

NOTES §3 workarounds handled here: #2 the log dir is created before nncf dumps graphs into it;
#3 ovdiv runs its own epoch loop (nncf's ``EpochBasedTrainingAlgorithm.run`` semantics: stage
``epoch_step`` per epoch, ``scheduler.step`` before every step, min/max subnet validation after BN
adaptation, the same checkpoint files) so no tensorboard writer is needed and checkpoints are
written atomically; #4 rejected by config validation; #5 schema validation; #6 ``device`` set on the
config before reload; #7 ``rebuild_graph`` right after reload while the maximum subnet is active;
#8 ovdiv draws the search plot itself (and the ``get_cmap`` shim is installed); #10 comparisons in
f32; #11 ``ref_acc``/``acc_delta`` exposed; #12 training batches of >= 2 with ``drop_last``.
Search-space sizes are checked against the config's ``expected_search_space`` (37 width groups and
6 manual / 12 automatic skippable blocks for ResNet-50) and anything else is a hard
:class:`SupernetError` — the silent empty-graph failure can't pass unnoticed.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
import os
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ovdiv.atomic import atomic_open, atomic_path, write_json, write_text
from ovdiv.errors import ConfigError, SupernetError
from ovdiv.types import Progress, ProgressCallback, no_progress
from ovdiv.versions import tool_versions

from . import space as sp
from .arch import BUILDER, SubnetResNet, count_macs_and_weights, param_count
from .config import SupernetConfig, load_config, validate_config
from .data import build_loaders
from .nncf_env import import_nncf_torch

__all__ = [
    "RUN_SCHEMA",
    "train_in_process",
    "search_in_process",
    "extract_in_process",
    "info_in_process",
    "selfcheck_in_process",
    "check_search_space",
    "describe_search_space",
]

log = logging.getLogger("ovdiv.supernet")

RUN_SCHEMA = "ovdiv-supernet-run/1"
CKPT_DIR = "checkpoints"
LOG_DIR = "logs"
PROBE_FILE = "reference_outputs.npz"


# ----------------------------------------------------------------------------------------------
# environment, devices, run directory
# ----------------------------------------------------------------------------------------------
def _device(choice: str | None) -> torch.device:
    choice = choice or "auto"
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise SupernetError("device 'cuda' requested but no CUDA GPU is available", "use --device cpu or auto")
    return torch.device(choice)


def _read_run(run_dir: Path) -> dict[str, Any]:
    meta_path = run_dir / "run.json"
    if not meta_path.is_file():
        raise SupernetError(f"{run_dir} is not a supernet run (no run.json)", "pass the --out folder of supernet train")
    try:
        return json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SupernetError(f"{meta_path} is unreadable: {exc}") from exc


def _load_run(run: str | os.PathLike[str]) -> tuple[Path, dict[str, Any], SupernetConfig]:
    """A finished training run's folder, its ``run.json`` and the config recorded there (re-validated).

    Args:
        run: The ``--out`` folder of ``supernet train``.

    Returns:
        ``(run_dir, meta, cfg)``.

    Raises:
        SupernetError: No or unreadable ``run.json``.
        ConfigError: The recorded config does not validate.
    """
    run_dir = Path(run)
    meta = _read_run(run_dir)
    return run_dir, meta, validate_config(meta["config"], source=str(run_dir / "run.json"))


def _atomic_torch_save(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _seed_everything(seed: int) -> None:
    """Seed torch, numpy and ``random`` (nncf draws random subnets with ``random``)."""
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _emit(progress: ProgressCallback, task: str, done: int, total: int | None, detail: str = "") -> None:
    progress(Progress(task=task, completed=done, total=total, detail=detail))


# ----------------------------------------------------------------------------------------------
# building the super-network
# ----------------------------------------------------------------------------------------------
def _load_pretrained(model: nn.Module, pretrained: str | None, num_classes: int) -> dict[str, Any]:
    """Load torchvision-ResNet-50 weights into ``model``; returns provenance for run.json."""
    if pretrained is None:
        return {"source": None}
    if pretrained == "torchvision":
        try:
            from torchvision.models import ResNet50_Weights, resnet50

            state = resnet50(weights=ResNet50_Weights.IMAGENET1K_V1).state_dict()
        except Exception as exc:  # network errors come in many types
            raise SupernetError(
                f"could not fetch torchvision's ResNet50 IMAGENET1K_V1 weights ({type(exc).__name__}: {exc})",
                "this machine cannot reach the torch hub: pass --pretrained PATH to a resnet50 state_dict file",
            ) from exc
        source = "torchvision:IMAGENET1K_V1"
    else:
        path = Path(pretrained)
        if not path.is_file():
            raise SupernetError(
                f"pretrained weights file {path} does not exist", "pass --pretrained PATH to a resnet50 state_dict"
            )
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise SupernetError(f"pretrained weights file {path} cannot be read by torch.load: {exc}") from exc
        for key in ("state_dict", "model_state", "model"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
        if not isinstance(state, dict):
            raise SupernetError(f"pretrained weights file {path} does not hold a state_dict")
        state = {k.removeprefix("module."): v for k, v in state.items()}
        source = str(path.resolve())
    own = model.state_dict()
    dropped = [k for k in ("fc.weight", "fc.bias") if k in state and k in own and state[k].shape != own[k].shape]
    for k in dropped:
        del state[k]
    if dropped:
        log.warning("pretrained classifier has a different class count: fc re-initialised for %d classes", num_classes)
    missing, unexpected = model.load_state_dict(state, strict=False)
    bad_missing = [k for k in missing if k not in dropped]
    if bad_missing or unexpected:
        raise SupernetError(
            f"pretrained weights {pretrained} do not fit torchvision resnet50: missing {bad_missing[:3]}, "
            f"unexpected {unexpected[:3]}"
        )
    return {"source": source, "fc_reinitialised": bool(dropped)}


def describe_search_space(meh: Any) -> dict[str, Any]:
    """The search space of a built super-network by node names (the content of ``search_space.json``)."""
    groups: list[dict[str, Any]] = []
    wh = meh.width_handler
    if wh is not None:
        for cluster in wh._pruned_module_groups_info.get_all_clusters():
            nodes = [e.node_name for e in cluster.elements]
            width_list = [int(v) for v in cluster.elements[0].elastic_op.width_list]
            groups.append({"id": int(cluster.id), "width_list": width_list, "nodes": nodes})
    groups.sort(key=lambda g: g["id"])
    blocks: list[dict[str, Any]] = []
    deps: dict[str, list[int]] = {}
    dh = meh.depth_handler
    if dh is not None:
        for i, blk in enumerate(dh._skipped_blocks):
            start, end = blk.start_node_name, blk.end_node_name
            drops = sp.block_name_of_node(start) if start.endswith("__iadd___0") else None
            blocks.append(
                {"id": i, "start": start, "end": end, "name": sp.block_name_of_node(end), "drops_relu_of": drops}
            )
        deps = {str(k): [int(x) for x in v] for k, v in dict(dh._skip_dependencies).items()}
    return {"width_groups": groups, "blocks": blocks, "skip_dependencies": deps}


def check_search_space(space: dict[str, Any], expected: dict[str, int]) -> None:
    """Fail hard unless the super-network has the expected numbers of width groups and skippable blocks.

    Raises:
        SupernetError: e.g. 0 groups / 0 blocks, nncf's silent failure without legacy tracing (NOTES §3 #1).
    """
    n_groups, n_blocks = len(space.get("width_groups", [])), len(space.get("blocks", []))
    if n_groups != expected["width_groups"] or n_blocks != expected["skippable_blocks"]:
        empty = n_groups == 0 or n_blocks == 0
        raise SupernetError(
            f"nncf built a super-network with {n_groups} width groups and {n_blocks} skippable blocks, expected "
            f"{expected['width_groups']} and {expected['skippable_blocks']}"
            + (" (empty search space)" if empty else ""),
            "nncf.torch must be imported with NNCF_TORCH_LEGACY_TRACING=1 (ovdiv does this in its own process); "
            "check bootstrapNAS.training.elasticity and expected_search_space in the config",
        )


def _nncf_config(
    cfg: SupernetConfig,
    log_dir: Path,
    *,
    input_size: tuple[int, int] | None,
    device: torch.device,
    bn_loader: Any | None,
) -> Any:
    from nncf import NNCFConfig
    from nncf.config.structures import BNAdaptationInitArgs
    from nncf.torch.initialization import wrap_dataloader_for_init

    log_dir.mkdir(parents=True, exist_ok=True)  # NOTES §3 #2
    d = cfg.nncf_dict(log_dir, input_size=input_size)
    search = d["bootstrapNAS"].setdefault("search", {})
    if "batchnorm_adaptation" not in search:  # nncf would default to 2000 samples
        search["batchnorm_adaptation"] = dict(d["bootstrapNAS"]["training"].get("batchnorm_adaptation", {}))
    if bn_loader is None:  # no data (info, extract --no-bn-adapt): nncf must not ask for a BN loader
        d["bootstrapNAS"]["training"]["batchnorm_adaptation"] = {"num_bn_adaptation_samples": 0}
        search["batchnorm_adaptation"] = {"num_bn_adaptation_samples": 0}
    nncf_config = NNCFConfig.from_dict(d)
    nncf_config.device = device.type  # NOTES §3 #6
    if bn_loader is not None:
        nncf_config.register_extra_structs(
            [BNAdaptationInitArgs(data_loader=wrap_dataloader_for_init(bn_loader), device=device.type)]
        )
    return nncf_config


def _torchvision_resnet50(num_classes: int) -> nn.Module:
    from torchvision.models import resnet50

    return resnet50(weights=None, num_classes=num_classes)


def _build(
    cfg: SupernetConfig,
    log_dir: Path,
    device: torch.device,
    *,
    model: nn.Module,
    bn_loader: Any | None,
    input_size: tuple[int, int] | None = None,
) -> tuple[Any, Any, dict[str, Any], Any]:
    """Fresh super-network -> (nncf_network, training algorithm, search space, nncf_config)."""
    import_nncf_torch()
    from nncf.experimental.torch.nas.bootstrapNAS import EpochBasedTrainingAlgorithm
    from nncf.torch.model_creation import create_nncf_network

    nncf_config = _nncf_config(cfg, log_dir, input_size=input_size, device=device, bn_loader=bn_loader)
    model.to(device)
    nncf_network = create_nncf_network(model, nncf_config)
    algo = EpochBasedTrainingAlgorithm.from_config(nncf_network, nncf_config)
    space = describe_search_space(algo.elasticity_ctrl.multi_elasticity_handler)
    check_search_space(space, cfg.expected_search_space)
    return nncf_network, algo, space, nncf_config


def _reload(run_dir: Path, cfg: SupernetConfig, device: torch.device, bn_loader: Any | None) -> tuple[Any, Any, Any]:
    """Trained super-network from ``last_elasticity.pth`` + ``last_model_weights.pth``.

    Returns:
        ``(nncf network, elasticity controller, nncf config)``.
    """
    import_nncf_torch()
    from nncf.experimental.torch.nas.bootstrapNAS.training.model_creator_helpers import resume_compression_from_state
    from nncf.torch.checkpoint_loading import load_state
    from nncf.torch.model_creation import create_nncf_network

    ckpt = run_dir / CKPT_DIR
    el_path, w_path = ckpt / "last_elasticity.pth", ckpt / "last_model_weights.pth"
    if not el_path.is_file() or not w_path.is_file():
        raise SupernetError(f"{run_dir} has no trained super-network checkpoint", "run `ovdiv supernet train` first")
    nncf_config = _nncf_config(cfg, run_dir / LOG_DIR, input_size=None, device=device, bn_loader=bn_loader)
    net = create_nncf_network(_torchvision_resnet50(cfg.num_classes).to(device), nncf_config)
    state = torch.load(el_path, map_location=device, weights_only=False)
    net, ctrl = resume_compression_from_state(net, state, nncf_config)
    load_state(net, torch.load(w_path, map_location=device, weights_only=True), is_resume=True)
    ctrl.multi_elasticity_handler.activate_maximum_subnet()
    net.nncf.rebuild_graph()  # NOTES §3 #7: trace while the maximum subnet is active
    check_search_space(describe_search_space(ctrl.multi_elasticity_handler), cfg.expected_search_space)
    return net, ctrl, nncf_config


def _optimizer(cfg: SupernetConfig, params: Any) -> torch.optim.Optimizer:
    opt = cfg.data["optimizer"]
    kind = opt.get("type", "sgd")
    p = dict(opt.get("optimizer_params", {}))
    lr = float(cfg.stages[0].get("init_lr", 1e-3))
    if kind == "sgd":
        return torch.optim.SGD(
            params,
            lr=lr,
            momentum=p.get("momentum", 0.9),
            weight_decay=p.get("weight_decay", 0.0),
            nesterov=p.get("nesterov", False) and p.get("momentum", 0.9) > 0,
        )
    cls = torch.optim.Adam if kind == "adam" else torch.optim.AdamW
    return cls(
        params,
        lr=lr,
        betas=tuple(p.get("betas", (0.9, 0.999))),
        eps=p.get("eps", 1e-8),
        weight_decay=p.get("weight_decay", 0.0),
    )


# ----------------------------------------------------------------------------------------------
# evaluation helpers
# ----------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model: nn.Module, loader: Any, device: torch.device) -> tuple[float, float, float]:
    """Top-1 %, top-5 % and mean cross-entropy of ``model`` on ``loader`` (eval mode)."""
    model.eval()
    n = 0
    c1 = c5 = 0.0
    loss = 0.0
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        out = model(x).float()
        loss += float(nn.functional.cross_entropy(out, y, reduction="sum"))
        top = out.topk(min(5, out.shape[1]), dim=1).indices
        c1 += float((top[:, 0] == y).sum())
        c5 += float((top == y[:, None]).any(dim=1).sum())
        n += int(y.shape[0])
    return 100.0 * c1 / max(n, 1), 100.0 * c5 / max(n, 1), loss / max(n, 1)


def _probe_input(cfg: SupernetConfig, n: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(1234)
    h, w = cfg.input_size
    return torch.randn(n, 3, h, w, generator=g)


@torch.no_grad()
def _logits(model: nn.Module, x: torch.Tensor, device: torch.device) -> np.ndarray:
    model.eval()
    return model(x.to(device)).float().cpu().numpy()


def _active(meh: Any) -> tuple[dict[int, int], list[int]]:
    from nncf.experimental.torch.nas.bootstrapNAS.elasticity.elasticity_dim import ElasticityDim

    cfg = meh.get_active_config()
    width = {int(k): int(v) for k, v in dict(cfg.get(ElasticityDim.WIDTH, {})).items()}
    depth = [int(b) for b in cfg.get(ElasticityDim.DEPTH, [])]
    return width, depth


def _activate(meh: Any, width: dict[int, int], skipped: list[int]) -> None:
    from nncf.experimental.torch.nas.bootstrapNAS.elasticity.elasticity_dim import ElasticityDim

    dims = meh.get_available_elasticity_dims()
    cfg: OrderedDict[Any, Any] = OrderedDict()
    if ElasticityDim.WIDTH in dims:
        cfg[ElasticityDim.WIDTH] = dict(width)
    if ElasticityDim.DEPTH in dims:
        cfg[ElasticityDim.DEPTH] = list(skipped)
    meh.activate_subnet_for_config(cfg)


def _nncf_macs(meh: Any) -> tuple[int, int]:
    flops, weights = meh.count_flops_and_weights_for_active_subnet()
    return round(flops / 2), int(weights)


# ----------------------------------------------------------------------------------------------
# train
# ----------------------------------------------------------------------------------------------
def _train_epoch(
    model: nn.Module,
    loader: Any,
    ctrl: Any,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    *,
    steps: int,
    amp: bool,
    scaler: Any,
    epoch: int,
    progress: ProgressCallback,
) -> dict[str, float]:
    model.train()
    crit = nn.CrossEntropyLoss()
    total_loss, n, t0 = 0.0, 0, time.perf_counter()
    images = 0
    for i, (x, y) in enumerate(loader):
        if i >= steps:
            break
        ctrl.scheduler.step()  # BEFORE each step: random subnet (every sample_rate steps) + stage LR
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
            out = model(x)
            loss = crit(out.float(), y) + ctrl.loss()
        if not math.isfinite(float(loss)):
            raise SupernetError(
                f"training loss became {float(loss)} at epoch {epoch + 1} step {i + 1}",
                "lower the stage init_lr or check the pretrained weights / data",
            )
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        total_loss += float(loss)
        n += 1
        images += int(x.shape[0])
        _emit(progress, f"epoch {epoch + 1}", i + 1, steps, f"loss {total_loss / n:.3f}")
    dt = time.perf_counter() - t0
    return {"loss": total_loss / max(n, 1), "steps": n, "seconds": dt, "images_per_s": images / dt if dt > 0 else 0.0}


def train_in_process(
    config: str | os.PathLike[str] | dict[str, Any],
    *,
    out: str | os.PathLike[str],
    data_root: str | None = None,
    dataset: str | None = None,
    pretrained: str | None = None,
    allow_random_init: bool = False,
    resume: bool = False,
    device: str | None = None,
    max_epochs: int | None = None,
    progress: ProgressCallback = no_progress,
) -> dict[str, Any]:
    """Progressive-shrinking training of a ResNet-50 super-network (see :func:`ovdiv.supernet.train`)."""
    cfg = validate_config(config) if isinstance(config, dict) else load_config(config)
    run_dir = Path(out)
    ckpt_dir = run_dir / CKPT_DIR
    last = ckpt_dir / "supernet_last.pth"
    if last.is_file() and not resume:
        raise ConfigError(f"{run_dir} already holds a super-network checkpoint", "pass --resume, or a new --out folder")
    if resume and not last.is_file():
        raise ConfigError(f"--resume: {last} does not exist", "train without --resume first")
    if resume:
        old = _read_run(run_dir)
        cfg = validate_config(old["config"], source=str(run_dir / "run.json"))
        data_root = data_root or old.get("data", {}).get("data_root")
        dataset = dataset or old.get("data", {}).get("dataset")
        pretrained_info = old.get("pretrained", {"source": None})
    elif pretrained is None and cfg.data["require_pretrained"] and not allow_random_init:
        raise SupernetError(
            f"{cfg.source}: the schedule's init_lr {cfg.stages[0].get('init_lr')} fine-tunes a pretrained ResNet-50 "
            "and no --pretrained weights were given",
            "pass --pretrained PATH (torchvision resnet50 state_dict) or --pretrained torchvision where the hub is "
            "reachable; --allow-random-init trains from scratch anyway",
        )
    dev = _device(device or cfg.data["device"])
    _seed_everything(int(cfg.data["seed"]))
    amp = bool(cfg.data["amp"]) and dev.type == "cuda"
    train_loader, val_loader = build_loaders(cfg, data_root=data_root, dataset=dataset, seed=int(cfg.data["seed"]))
    assert train_loader is not None
    model = _torchvision_resnet50(cfg.num_classes)
    if not resume:
        pretrained_info = _load_pretrained(model, pretrained, cfg.num_classes)
        if pretrained_info["source"] is None:
            log.warning("training the super-network from random initialisation (no --pretrained)")
    run_dir.mkdir(parents=True, exist_ok=True)
    log_dir = run_dir / LOG_DIR
    _emit(progress, "build super-network", 0, 1)
    if resume:
        import_nncf_torch()
        from nncf.config.structures import BNAdaptationInitArgs
        from nncf.experimental.torch.nas.bootstrapNAS import EpochBasedTrainingAlgorithm
        from nncf.torch.initialization import wrap_dataloader_for_init
        from nncf.torch.model_creation import create_nncf_network

        nncf_config = _nncf_config(cfg, log_dir, input_size=None, device=dev, bn_loader=train_loader)
        net = create_nncf_network(model.to(dev), nncf_config)
        algo = EpochBasedTrainingAlgorithm.from_checkpoint(
            net, BNAdaptationInitArgs(data_loader=wrap_dataloader_for_init(train_loader), device=dev.type), str(last)
        )
        space = describe_search_space(algo.elasticity_ctrl.multi_elasticity_handler)
        check_search_space(space, cfg.expected_search_space)
    else:
        net, algo, space, nncf_config = _build(cfg, log_dir, dev, model=model, bn_loader=train_loader)
    _emit(progress, "build super-network", 1, 1, f"{len(space['width_groups'])} groups, {len(space['blocks'])} blocks")
    write_json(run_dir / "search_space.json", space)
    write_json(log_dir / "nncf_config_used.json", {k: v for k, v in nncf_config.items()})
    ctrl = algo._training_ctrl  # the progressive-shrinking controller (nncf keeps it private)
    meh = ctrl.multi_elasticity_handler
    steps = (
        len(train_loader)
        if cfg.data["steps_per_epoch"] is None
        else min(len(train_loader), cfg.data["steps_per_epoch"])
    )
    optimizer = _optimizer(cfg, net.parameters())
    ctrl.set_training_lr_scheduler_args(optimizer, steps)
    if algo._optimizer_state is not None:
        optimizer.load_state_dict(algo._optimizer_state)
    scaler = torch.amp.GradScaler("cuda") if amp else None
    total_epochs = int(ctrl.get_total_num_epochs())
    start_epoch = int(algo._start_epoch)
    stop_epoch = total_epochs if max_epochs is None else min(total_epochs, start_epoch + int(max_epochs))
    meta = {
        "schema": RUN_SCHEMA,
        "config": cfg.to_dict(),
        "config_source": cfg.source,
        "pretrained": pretrained_info,
        "data": {"dataset": dataset or cfg.data["dataset"], "data_root": str(data_root) if data_root else None},
        "device": dev.type,
        "amp": amp,
        "versions": tool_versions(),
        "total_epochs": total_epochs,
        "epochs_done": start_epoch,
        "steps_per_epoch": steps,
        "status": "training",
        "history": _read_run(run_dir).get("history", []) if resume else [],
        "search_space": {"width_groups": len(space["width_groups"]), "skippable_blocks": len(space["blocks"])},
    }
    write_json(run_dir / "run.json", meta)
    best_sup = float(algo._supernet_best_acc1)
    best_min = float(algo._min_subnet_best_acc1)
    from nncf.api.compression import CompressionStage

    best_stage = CompressionStage.UNCOMPRESSED
    for epoch in range(start_epoch, stop_epoch):
        ctrl.scheduler.epoch_step()
        stats = _train_epoch(
            net, train_loader, ctrl, optimizer, dev, steps=steps, amp=amp, scaler=scaler, epoch=epoch, progress=progress
        )
        stage = ctrl.compression_stage()
        meh.activate_minimum_subnet()
        ctrl.prepare_for_validation()
        min_acc1, min_acc5, min_loss = evaluate(net, val_loader, dev)
        meh.activate_supernet()
        ctrl.prepare_for_validation()
        sup_acc1, sup_acc5, sup_loss = evaluate(net, val_loader, dev)
        is_best = (sup_acc1 > best_sup and stage == best_stage) or stage > best_stage
        best_sup = sup_acc1 if is_best else best_sup
        if (min_acc1 > best_min and stage == best_stage) or stage > best_stage:
            best_min = min_acc1
        best_stage = max(stage, best_stage)
        checkpoint = {
            "epoch": epoch + 1,
            "model_state": net.state_dict(),
            "best_acc1": best_sup,
            "acc1": sup_acc1,
            "min_subnet_best_acc1": best_min,
            "min_subnet_acc1": min_acc1,
            "optimizer": optimizer.state_dict(),
            "training_algo_state": ctrl.get_compression_state(),
        }
        _atomic_torch_save(checkpoint, last)
        if stage == CompressionStage.FULLY_COMPRESSED and best_sup == sup_acc1:
            _atomic_torch_save(checkpoint, ckpt_dir / "supernet_best.pth")
        _atomic_torch_save(algo.elasticity_ctrl.get_compression_state(), ckpt_dir / "last_elasticity.pth")
        _atomic_torch_save(net.state_dict(), ckpt_dir / "last_model_weights.pth")
        lr = float(optimizer.param_groups[0]["lr"])
        row = {
            "epoch": epoch + 1,
            "stage": int(ctrl.scheduler.get_current_stage_desc()[1]) + 1,
            "lr": lr,
            **{f"train_{k}": v for k, v in stats.items()},
            "min_top1": min_acc1,
            "min_top5": min_acc5,
            "min_loss": min_loss,
            "supernet_top1": sup_acc1,
            "supernet_top5": sup_acc5,
            "supernet_loss": sup_loss,
        }
        meta["history"].append(row)
        meta["epochs_done"] = epoch + 1
        write_json(run_dir / "run.json", meta)
        log.info(
            "epoch %d/%d: loss %.4f, min top1 %.2f, supernet top1 %.2f",
            epoch + 1,
            total_epochs,
            stats["loss"],
            min_acc1,
            sup_acc1,
        )
        _emit(progress, "supernet train", epoch + 1, total_epochs, f"supernet top1 {sup_acc1:.1f}")
    # reference outputs of the live network, to check reloads bit-exactly
    probe = _probe_input(cfg)
    meh.activate_maximum_subnet()
    ref_max = _logits(net, probe, dev)
    meh.activate_minimum_subnet()
    w_min, d_min = _active(meh)
    ref_min = _logits(net, probe, dev)
    meh.activate_maximum_subnet()
    with atomic_open(run_dir / PROBE_FILE, "wb") as fh:
        np.savez(
            fh,
            input=probe.numpy(),
            max=ref_max,
            min=ref_min,
            min_width=json.dumps({str(k): v for k, v in w_min.items()}),
            min_depth=json.dumps(d_min),
        )
    meta["status"] = "trained" if meta["epochs_done"] >= total_epochs else "partial"
    write_json(run_dir / "run.json", meta)
    return {
        "run": str(run_dir),
        "status": meta["status"],
        "epochs_done": meta["epochs_done"],
        "total_epochs": total_epochs,
        "width_groups": len(space["width_groups"]),
        "skippable_blocks": len(space["blocks"]),
        "device": dev.type,
        "amp": amp,
        "pretrained": pretrained_info.get("source"),
        "last": meta["history"][-1] if meta["history"] else None,
    }


# ----------------------------------------------------------------------------------------------
# search
# ----------------------------------------------------------------------------------------------
def _cached_loader(loader: Any, batch_size: int) -> Any:
    xs, ys = [], []
    for x, y in loader:
        xs.append(x)
        ys.append(y)
    ds = torch.utils.data.TensorDataset(torch.cat(xs), torch.cat(ys))
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False)


def _plot_progression(
    rows: list[dict[str, Any]], population: int, sup: tuple[float, float], best: dict[str, Any] | None, path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=100)
    gens = [r["generation"] for r in rows]
    sc = ax.scatter(
        [r["macs_M"] for r in rows], [r["top1"] for r in rows], c=gens, cmap="viridis", s=14, marker="D", alpha=0.7
    )
    if rows:
        fig.colorbar(sc, ax=ax, label="generation")
    ax.scatter([sup[0]], [sup[1]], marker="s", s=120, color="tab:blue", edgecolors="black", label="super-network")
    if best is not None:
        ax.scatter(
            [best["macs_M"]],
            [best["top1"]],
            marker="o",
            s=120,
            color="gold",
            edgecolors="black",
            linewidths=2,
            label="best subnet",
        )
    ax.set_xlabel("MMACs")
    ax.set_ylabel("top-1 (%)")
    ax.set_title(f"Search progression (NSGA2, population {population})")
    ax.legend(loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


def search_in_process(
    run: str | os.PathLike[str],
    *,
    num_evals: int | None = None,
    population: int | None = None,
    dataset: str | None = None,
    data_root: str | None = None,
    limit: int | None = None,
    ref_acc: float | None = None,
    acc_delta: float | None = None,
    device: str | None = None,
    progress: ProgressCallback = no_progress,
) -> dict[str, Any]:
    """NSGA-II over (MACs, top-1) of the trained super-network (see :func:`ovdiv.supernet.search`)."""
    run_dir, meta, cfg = _load_run(run)
    scfg = cfg.bnas.setdefault("search", {})
    if num_evals is not None:
        scfg["num_evals"] = int(num_evals)
    if population is not None:
        scfg["population"] = int(population)
    if ref_acc is not None:
        scfg["ref_acc"] = float(ref_acc)
    if acc_delta is not None:
        scfg["acc_delta"] = float(acc_delta)
    pop = int(scfg.get("population", 40))
    evals = int(scfg.get("num_evals", 3000))
    if pop < 2 or evals < pop:
        raise ConfigError(f"search needs population >= 2 and num_evals >= population, got {pop} and {evals}")
    dev = _device(device or meta.get("device"))
    _seed_everything(int(cfg.data["seed"]))
    data_root = data_root or meta.get("data", {}).get("data_root")
    dataset = dataset or meta.get("data", {}).get("dataset")
    lim = limit if limit is not None else cfg.data.get("search_limit")
    train_loader, val_loader = build_loaders(
        cfg, data_root=data_root, dataset=dataset, seed=int(cfg.data["seed"]), val_limit=lim
    )
    val_loader = _cached_loader(val_loader, int(cfg.data["batch_size_val"]))
    net, ctrl, nncf_config = _reload(run_dir, cfg, dev, train_loader)
    import_nncf_torch()
    from nncf.experimental.torch.nas.bootstrapNAS import BaseSearchAlgorithm

    meh = ctrl.multi_elasticity_handler
    space = json.loads((run_dir / "search_space.json").read_text(encoding="utf-8"))
    search_dir = run_dir / "search"
    search_dir.mkdir(parents=True, exist_ok=True)
    nncf_config["log_dir"] = str(search_dir)
    search_algo = BaseSearchAlgorithm.from_config(net, ctrl, nncf_config)
    if acc_delta is not None:
        search_algo.acc_delta = float(acc_delta)
    n_done = [0]
    n_total = search_algo.search_params.num_evals

    def top1_fn(model: nn.Module, loader: Any) -> float:
        acc = evaluate(model, loader, dev)[0]
        n_done[0] += 1
        _emit(progress, "supernet search", min(n_done[0], n_total), n_total, f"top1 {acc:.1f}")
        return acc

    ref = float(scfg.get("ref_acc", 100))
    _, best_cfg, best_vals = search_algo.run(top1_fn, val_loader, str(search_dir), ref_acc=ref)
    # rows: [config, eff name, MACs, acc name, -top1]
    rows: list[dict[str, Any]] = []
    for i, rec in enumerate(search_algo.search_records):
        conf = rec[0]
        from nncf.experimental.torch.nas.bootstrapNAS.elasticity.elasticity_dim import ElasticityDim

        width = {int(k): int(v) for k, v in dict(conf.get(ElasticityDim.WIDTH, {})).items()}
        depth = [int(b) for b in conf.get(ElasticityDim.DEPTH, [])]
        rows.append(
            {
                "eval": i + 1,
                "generation": i // pop + 1,
                "macs_M": abs(float(rec[2])),
                "top1": abs(float(rec[4])),
                "width": width,
                "depth": depth,
            }
        )
    meh.activate_maximum_subnet()
    sup = (
        abs(search_algo.efficiency_evaluator_handler.input_model_value),
        abs(search_algo.accuracy_evaluator_handler.input_model_value),
    )
    found = search_algo.best_vals is not None and None not in search_algo.best_vals
    from nncf.experimental.torch.nas.bootstrapNAS.elasticity.elasticity_dim import ElasticityDim

    bw = {int(k): int(v) for k, v in dict(best_cfg.get(ElasticityDim.WIDTH, {})).items()}
    bd = [int(b) for b in best_cfg.get(ElasticityDim.DEPTH, [])]
    best_spec = sp.arch_spec_from_nncf(bw, bd, space, cfg.num_classes)
    best_macs = float(best_vals[0]) if found else sup[0]
    best_top1 = float(best_vals[1]) if found else sup[1]
    best = {
        "macs_M": best_macs,
        "top1": best_top1,
        "satisfies_ref_acc": found,
        "ref_acc": ref,
        "acc_delta": float(search_algo.acc_delta),
        "nncf": {"width": {str(k): v for k, v in bw.items()}, "depth": bd},
        "arch_spec": best_spec,
        "summary": sp.describe_spec(best_spec),
    }
    buf = io.StringIO()
    wr = csv.writer(buf)
    wr.writerow(["eval", "generation", "macs_M", "top1", "width", "depth"])
    for r in rows:
        wr.writerow(
            [
                r["eval"],
                r["generation"],
                f"{r['macs_M']:.6f}",
                f"{r['top1']:.4f}",
                json.dumps({str(k): v for k, v in r["width"].items()}),
                json.dumps(r["depth"]),
            ]
        )
    write_text(search_dir / "search_progression.csv", buf.getvalue())
    _plot_progression(rows, pop, sup, best, search_dir / "search_progression.png")
    write_json(search_dir / "best_subnet.json", best)
    meta = _read_run(run_dir)
    meta["search"] = {
        "num_evals": n_total,
        "population": pop,
        "evaluated": len(rows),
        "limit": lim,
        "supernet": {"macs_M": sup[0], "top1": sup[1]},
        "best": {k: best[k] for k in ("macs_M", "top1", "satisfies_ref_acc")},
    }
    write_json(run_dir / "run.json", meta)
    return {
        "run": str(run_dir),
        "evaluated": len(rows),
        "population": pop,
        "csv": str(search_dir / "search_progression.csv"),
        "plot": str(search_dir / "search_progression.png"),
        "best": str(search_dir / "best_subnet.json"),
        "best_macs_M": best_macs,
        "best_top1": best_top1,
        "satisfies_ref_acc": found,
        "supernet_macs_M": sup[0],
        "supernet_top1": sup[1],
    }


# ----------------------------------------------------------------------------------------------
# extract
# ----------------------------------------------------------------------------------------------
def _copy_bn(dst: nn.BatchNorm2d, src: nn.BatchNorm2d, c: int) -> None:
    dst.weight.data.copy_(src.weight.data[:c])
    dst.bias.data.copy_(src.bias.data[:c])
    assert dst.running_mean is not None and dst.running_var is not None
    assert src.running_mean is not None and src.running_var is not None
    dst.running_mean.copy_(src.running_mean[:c])
    dst.running_var.copy_(src.running_var[:c])
    if dst.num_batches_tracked is not None and src.num_batches_tracked is not None:
        dst.num_batches_tracked.copy_(src.num_batches_tracked)
    dst.eps, dst.momentum = src.eps, src.momentum


def _copy_conv(dst: nn.Conv2d, src: nn.Conv2d) -> None:
    o, i = dst.weight.shape[:2]
    dst.weight.data.copy_(src.weight.data[:o, :i])


@torch.no_grad()
def materialise(net: nn.Module, spec: dict[str, Any]) -> SubnetResNet:
    """Plain :class:`SubnetResNet` with the active subnet's weights sliced out of the nncf super-network.

    nncf's elastic width keeps the first ``w`` filters (``reorg_weights`` sorted them by importance),
    so slicing ``[:out, :in]`` of every conv / BN / fc reproduces the active subnet exactly.
    """
    plain = SubnetResNet(spec)
    src: Any = net  # NNCFNetwork keeps the original module tree (NNCFConv2d subclasses Conv2d)
    _copy_conv(plain.conv1, src.conv1)
    _copy_bn(plain.bn1, src.bn1, spec["stem"])
    for s, st in enumerate(spec["stages"]):
        dl: Any = getattr(plain, f"layer{s + 1}")
        sl: Any = getattr(src, f"layer{s + 1}")
        for b, blk in enumerate(st["blocks"]):
            if blk["skip"]:
                continue
            d, sb = dl[b], sl[b]
            for k, c in (("1", blk["mid"][0]), ("2", blk["mid"][1]), ("3", st["out"])):
                _copy_conv(getattr(d, "conv" + k), getattr(sb, "conv" + k))
                _copy_bn(getattr(d, "bn" + k), getattr(sb, "bn" + k), c)
            if d.downsample is not None:
                _copy_conv(d.downsample[0], sb.downsample[0])
                _copy_bn(d.downsample[1], sb.downsample[1], st["out"])
    c_last = spec["stages"][-1]["out"]
    plain.fc.weight.data.copy_(src.fc.weight.data[:, :c_last])
    plain.fc.bias.data.copy_(src.fc.bias.data)
    return plain.eval()


def _resolve_subnet(
    name: str | None,
    config: str | os.PathLike[str] | dict[str, Any] | None,
    run_dir: Path,
    space: dict[str, Any],
    meh: Any,
    num_classes: int,
) -> tuple[str, dict[int, int], list[int]]:
    """``(label, width, skipped)`` of ``--subnet NAME`` or ``--config JSON``."""
    if (name is None) == (config is None):
        raise ConfigError("extract needs exactly one of --subnet NAME and --config JSON")
    if name is not None:
        if name == "max":
            meh.activate_maximum_subnet()
            return "max", *_active(meh)
        if name == "min":
            meh.activate_minimum_subnet()
            return "min", *_active(meh)
        if name == "best":
            p = run_dir / "search" / "best_subnet.json"
            if not p.is_file():
                raise ConfigError(f"{run_dir} has no search result", "run `ovdiv supernet search RUN` first")
            best = json.loads(p.read_text(encoding="utf-8"))
            return (
                "best",
                {int(k): int(v) for k, v in best["nncf"]["width"].items()},
                [int(b) for b in best["nncf"]["depth"]],
            )
        spec = sp.named_arch_spec(name, space, num_classes)
        w, d = sp.nncf_from_arch_spec(spec, space)
        return name, w, d
    if isinstance(config, dict):
        raw: Any = config
        label = "custom"
    else:
        p = Path(config)  # type: ignore[arg-type]
        if not p.is_file():
            raise ConfigError(f"subnet config {p} does not exist")
        try:
            raw = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"subnet config {p} is not valid JSON: {exc}") from exc
        label = p.stem
    if isinstance(raw, dict) and "arch_spec" in raw:
        raw = raw["arch_spec"]
    if isinstance(raw, dict) and raw.get("family") == "resnet_bottleneck":
        spec = dict(raw)
        spec["num_classes"] = num_classes
        w, d = sp.nncf_from_arch_spec(spec, space)
        return label, w, d
    if isinstance(raw, dict) and {"d", "w", "e"} <= set(raw):
        spec = sp.ofa_to_arch_spec(raw["d"], raw["w"], raw["e"], space, num_classes)
        w, d = sp.nncf_from_arch_spec(spec, space)
        return label, w, d
    if isinstance(raw, dict) and {"width", "depth"} <= set(raw):
        return label, {int(k): int(v) for k, v in raw["width"].items()}, [int(b) for b in raw["depth"]]
    raise ConfigError(
        "subnet config must be an arch spec (family resnet_bottleneck), an OFA {d, w, e} triple, or nncf's "
        "{width: {group: channels}, depth: [skipped block ids]}"
    )


def extract_in_process(
    run: str | os.PathLike[str],
    *,
    out: str | os.PathLike[str],
    subnet: str | None = None,
    config: str | os.PathLike[str] | dict[str, Any] | None = None,
    name: str | None = None,
    bn_adapt: bool = True,
    dataset: str | None = None,
    data_root: str | None = None,
    device: str | None = None,
    progress: ProgressCallback = no_progress,
) -> dict[str, Any]:
    """Materialise one subnet as a plain torch module + checkpoint (export happens in the caller)."""
    run_dir, meta, cfg = _load_run(run)
    dev = _device(device or "cpu")
    space = json.loads((run_dir / "search_space.json").read_text(encoding="utf-8"))
    train_loader = None
    if bn_adapt:
        data_root = data_root or meta.get("data", {}).get("data_root")
        dataset = dataset or meta.get("data", {}).get("dataset")
        train_loader, _ = build_loaders(cfg, data_root=data_root, dataset=dataset, seed=int(cfg.data["seed"]))
    _emit(progress, "extract", 0, 3, "reload super-network")
    net, ctrl, nncf_config = _reload(run_dir, cfg, dev, train_loader)
    meh = ctrl.multi_elasticity_handler
    # reload check: the maximum / minimum subnets must reproduce the live network's outputs
    reload_diff: dict[str, float] = {}
    probe_path = run_dir / PROBE_FILE
    if probe_path.is_file():
        ref = np.load(probe_path)
        x = torch.from_numpy(ref["input"])
        meh.activate_maximum_subnet()
        reload_diff["max"] = float(np.abs(_logits(net, x, dev) - ref["max"]).max())
        _activate(
            meh, {int(k): v for k, v in json.loads(str(ref["min_width"])).items()}, json.loads(str(ref["min_depth"]))
        )
        reload_diff["min"] = float(np.abs(_logits(net, x, dev) - ref["min"]).max())
    label, width, skipped = _resolve_subnet(subnet, config, run_dir, space, meh, cfg.num_classes)
    _activate(meh, width, skipped)
    aw, ad = _active(meh)
    if aw != {k: aw.get(k) for k in width} or sorted(ad) != sorted(skipped):
        changed_w = {k: (v, aw.get(k)) for k, v in width.items() if aw.get(k) != v}
        raise SupernetError(
            f"nncf could not activate subnet {label!r} as requested (width changes {changed_w}, "
            f"depth {skipped} -> {ad})",
            "pick a configuration inside the trained search space",
        )
    if bn_adapt:
        _emit(progress, "extract", 1, 3, "BN adaptation")
        bn = _bn_adaptation(nncf_config)
        if bn is not None:
            bn.run(net)
    spec = sp.arch_spec_from_nncf(aw, ad, space, cfg.num_classes)
    _emit(progress, "extract", 2, 3, "slice weights")
    plain = materialise(net, spec)
    x = _probe_input(cfg, 4)
    sup_out = _logits(net, x, dev)
    plain_out = _logits(plain.to(dev), x, dev)
    diff = float(np.abs(sup_out - plain_out).max())
    if diff > 1e-5:
        raise SupernetError(f"extracted subnet {label!r} differs from the super-network by {diff:.3g} (max |logit|)")
    nncf_macs, nncf_weights = _nncf_macs(meh)  # at the config's input size, for the active subnet
    macs, weights = count_macs_and_weights(spec, cfg.input_size)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    model_name = name or f"{cfg.name}_{label}"
    with atomic_open(out_dir / f"{model_name}.reference.npz", "wb") as fh:
        np.savez(fh, input=x.numpy(), supernet=sup_out, plain=plain_out)
    macs224, weights224 = count_macs_and_weights(spec, (224, 224))
    info = {
        "name": model_name,
        "subnet": label,
        "run": str(run_dir),
        "arch_spec": spec,
        "summary": sp.describe_spec(spec),
        "nncf": {"width": {str(k): v for k, v in aw.items()}, "depth": ad},
        "input_size": list(cfg.input_size),
        "num_classes": cfg.num_classes,
        "macs": macs,
        "macs_224": macs224,
        "weights": weights,
        "weights_224": weights224,
        "params": param_count(plain),
        "nncf_macs": nncf_macs,
        "nncf_weights": nncf_weights,
        "max_abs_diff_vs_supernet": diff,
        "reload_max_abs_diff": reload_diff,
        "bn_adapted": bool(bn_adapt),
        "reference_file": str(out_dir / f"{model_name}.reference.npz"),
    }
    from ovdiv.models.checkpoint import save_checkpoint

    ckpt = save_checkpoint(
        out_dir / f"{model_name}_torch.pt",
        plain,
        arch=BUILDER,
        arch_args={"spec": spec},
        num_classes=cfg.num_classes,
        input_size=cfg.input_size,
        extra={"supernet_subnet": {k: v for k, v in info.items() if k not in ("arch_spec",)}},
    )
    info["checkpoint"] = str(ckpt)
    _emit(progress, "extract", 3, 3, f"{macs / 1e6:.1f} MMACs")
    return info


def _bn_adaptation(nncf_config: Any) -> Any:
    from nncf.common.initialization.batchnorm_adaptation import BatchnormAdaptationAlgorithm
    from nncf.config.extractors import get_bn_adapt_algo_kwargs

    params = nncf_config.get("bootstrapNAS", {}).get("training", {}).get("batchnorm_adaptation", {})
    kwargs = get_bn_adapt_algo_kwargs(nncf_config, params)
    return BatchnormAdaptationAlgorithm(**kwargs) if kwargs else None


# ----------------------------------------------------------------------------------------------
# info
# ----------------------------------------------------------------------------------------------
def _open_final_search_space(meh: Any, cfg: SupernetConfig) -> None:
    """Enable every elastic dimension with the largest width / depth indicators of the schedule."""
    meh.enable_all()
    stages = cfg.stages
    wi = max((int(st.get("width_indicator", 0)) for st in stages), default=0)
    di = max((int(st.get("depth_indicator", 0)) for st in stages), default=0)
    if meh.width_handler is not None and wi:
        meh.width_handler.width_num_params_indicator = wi
    if meh.depth_handler is not None and di:
        meh.depth_handler.depth_indicator = di


def info_in_process(
    target: str | os.PathLike[str],
    *,
    input_size: tuple[int, int] = (224, 224),
    progress: ProgressCallback = no_progress,
) -> dict[str, Any]:
    """Search space and MACs/weights of min / max / named subnets, counted by nncf and by ovdiv."""
    t = Path(target)
    run_meta: dict[str, Any] | None = None
    if t.is_dir():
        run_meta = _read_run(t)
        cfg = validate_config(run_meta["config"], source=str(t / "run.json"))
    else:
        cfg = load_config(t)
    import tempfile

    _emit(progress, "supernet info", 0, 1, "build super-network")
    with tempfile.TemporaryDirectory(prefix="ovdiv_supernet_info_") as tmp, contextlib.redirect_stdout(io.StringIO()):
        _, algo, space, _ = _build(
            cfg,
            Path(tmp),
            torch.device("cpu"),
            model=_torchvision_resnet50(cfg.num_classes),
            bn_loader=None,
            input_size=input_size,
        )
    meh = algo.elasticity_ctrl.multi_elasticity_handler
    _open_final_search_space(meh, cfg)  # a fresh network (counts do not depend on weights): final-stage space
    subnets: dict[str, Any] = {}

    def record(label: str, spec: dict[str, Any] | None = None) -> None:
        w, d = _active(meh)
        s = sp.arch_spec_from_nncf(w, d, space, cfg.num_classes)
        if spec is not None and s != spec:
            raise SupernetError(f"nncf did not activate subnet {label!r} as requested", "report this as a bug")
        n_macs, n_w = _nncf_macs(meh)
        macs, weights = count_macs_and_weights(s, input_size)
        subnets[label] = {
            "nncf_macs": n_macs,
            "nncf_weights": n_w,
            "macs": macs,
            "weights": weights,
            "params": param_count(SubnetResNet(s)),
            "equal": n_macs == macs and n_w == weights,
            "summary": sp.describe_spec(s),
        }

    meh.activate_maximum_subnet()
    record("max")
    meh.activate_minimum_subnet()
    record("min")
    for name in sp.NAMED_SUBNETS:
        spec = sp.named_arch_spec(name, space, cfg.num_classes)
        w, d = sp.nncf_from_arch_spec(spec, space)
        _activate(meh, w, d)
        record(name, spec)
    if run_meta is not None and (t / "search" / "best_subnet.json").is_file():
        best = json.loads((t / "search" / "best_subnet.json").read_text(encoding="utf-8"))
        _activate(
            meh, {int(k): int(v) for k, v in best["nncf"]["width"].items()}, [int(b) for b in best["nncf"]["depth"]]
        )
        record("best")
    meh.activate_maximum_subnet()
    _emit(progress, "supernet info", 1, 1)
    evidence = sp.index_direction_evidence(space, cfg.num_classes)
    return {
        "config": cfg.name,
        "source": str(t),
        "input_size": list(input_size),
        "num_classes": cfg.num_classes,
        "width_groups": [
            {"id": g["id"], "width_list": g["width_list"], "role": role}
            for role, gid in sorted(sp.group_roles(space).items(), key=lambda kv: kv[1])
            for g in space["width_groups"]
            if g["id"] == gid
        ],
        "blocks": space["blocks"],
        "skip_dependencies": space["skip_dependencies"],
        "subnets": subnets,
        "index_direction": {
            "chosen": "ascending (OFA: 0 = narrowest)",
            "spearman_macs_vs_paper_top1": evidence["spearman"],
        },
        "trained": None
        if run_meta is None
        else {
            "status": run_meta.get("status"),
            "epochs_done": run_meta.get("epochs_done"),
            "total_epochs": run_meta.get("total_epochs"),
        },
    }


# ----------------------------------------------------------------------------------------------
# self-check (no data, no training): the environment builds the expected space, extraction is exact
# ----------------------------------------------------------------------------------------------
def selfcheck_in_process(
    config: str | os.PathLike[str] | dict[str, Any],
    *,
    subnets: list[str] | tuple[str, ...] = ("B_0", "min"),
    seed: int = 0,
    progress: ProgressCallback = no_progress,
) -> dict[str, Any]:
    """Build an untrained super-network from ``config`` and check it end to end without data.

    Checks: the search-space sizes (:func:`check_search_space`); for each of ``subnets`` (and ``max``)
    that the plain :class:`SubnetResNet` sliced out of the active subnet reproduces the super-network's
    logits on a random probe (eval mode) and that nncf's MAC / weight count equals ovdiv's.

    Returns:
        ``{"width_groups", "skippable_blocks", "subnets": {name: {max_abs_diff, macs, nncf_macs, weights,
        nncf_weights, arch_spec}}}``.
    """
    cfg = validate_config(config) if isinstance(config, dict) else load_config(config)
    _seed_everything(seed)
    dev = torch.device("cpu")
    import tempfile

    with tempfile.TemporaryDirectory(prefix="ovdiv_supernet_check_") as tmp, contextlib.redirect_stdout(io.StringIO()):
        net, algo, space, _ = _build(cfg, Path(tmp), dev, model=_torchvision_resnet50(cfg.num_classes), bn_loader=None)
    meh = algo.elasticity_ctrl.multi_elasticity_handler
    _open_final_search_space(meh, cfg)
    # random, non-trivial BN statistics so that a wrong slice cannot hide behind identity BNs
    gen = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert m.running_mean is not None and m.running_var is not None
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
    x = _probe_input(cfg, 2)
    out: dict[str, Any] = {}
    names = ["max", *[n for n in subnets if n != "max"]]
    for i, name in enumerate(names):
        label, width, skipped = _resolve_subnet(name, None, Path("."), space, meh, cfg.num_classes)
        _activate(meh, width, skipped)
        aw, ad = _active(meh)
        spec = sp.arch_spec_from_nncf(aw, ad, space, cfg.num_classes)
        plain = materialise(net, spec)
        diff = float(np.abs(_logits(net, x, dev) - _logits(plain, x, dev)).max())
        n_macs, n_w = _nncf_macs(meh)
        macs, weights = count_macs_and_weights(spec, cfg.input_size)
        out[label] = {
            "max_abs_diff": diff,
            "macs": macs,
            "nncf_macs": n_macs,
            "weights": weights,
            "nncf_weights": n_w,
            "arch_spec": spec,
        }
        _emit(progress, "supernet selfcheck", i + 1, len(names), label)
    meh.activate_maximum_subnet()
    return {
        "config": cfg.name,
        "width_groups": len(space["width_groups"]),
        "skippable_blocks": len(space["blocks"]),
        "search_space": space,
        "subnets": out,
    }
