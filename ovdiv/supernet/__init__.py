"""BootstrapNAS super-networks from torchvision ResNet-50 (nncf 2.19): train, search, extract, info.

The only ovdiv package that imports nncf's NAS / ``nncf.torch``, and only in a child process:
:func:`train`, :func:`search`, :func:`extract` and :func:`info` each run ``python -m ovdiv.supernet``
with ``NNCF_TORCH_LEGACY_TRACING=1`` (see :mod:`ovdiv.supernet.isolation` for why and how), so they
are safe to call from any process, including one that already uses nncf for INT8 quantisation.
Importing this package imports neither torch nor nncf.

Run directory written by :func:`train` (``--out RUN``)::

    RUN/run.json                 config (with defaults), data, pretrained source, per-epoch history, status
    RUN/search_space.json        width groups (node names, width options) and skippable blocks
    RUN/checkpoints/             supernet_last.pth (resume), supernet_best.pth, last_elasticity.pth,
                                 last_model_weights.pth (nncf's formats, written atomically)
    RUN/logs/                    nncf's graph dumps, nncf_config_used.json
    RUN/reference_outputs.npz    max/min subnet logits of the live network on a fixed probe (reload check)
    RUN/search/                  search_progression.csv / .png, best_subnet.json (after :func:`search`)

Extracted subnets are plain :class:`~ovdiv.supernet.arch.SubnetResNet` modules (no nncf): see
:func:`load_subnet` and the ``supernet_subnet`` entry of the model registry.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ovdiv.types import ProgressCallback

from .config import SupernetConfig, load_config, validate_config
from .space import NAMED_SUBNETS, named_subnet_names

__all__ = [
    "SupernetConfig",
    "load_config",
    "validate_config",
    "NAMED_SUBNETS",
    "named_subnet_names",
    "train",
    "search",
    "extract",
    "info",
    "selfcheck",
    "load_subnet",
]


def _s(p: str | os.PathLike[str] | None) -> str | None:
    return None if p is None else str(p)


def _check_pretrained(
    cfg: SupernetConfig, pretrained: str | os.PathLike[str] | None, *, allow_random_init: bool, resume: bool
) -> None:
    from ovdiv.errors import SupernetError

    if resume:
        return
    if pretrained is not None and str(pretrained) != "torchvision" and not Path(pretrained).is_file():
        raise SupernetError(
            f"pretrained weights file {pretrained} does not exist", "pass --pretrained PATH to a resnet50 state_dict"
        )
    if pretrained is None and cfg.data["require_pretrained"] and not allow_random_init:
        raise SupernetError(
            f"{cfg.source}: the schedule's init_lr {cfg.stages[0].get('init_lr')} fine-tunes a pretrained ResNet-50 "
            "and no --pretrained weights were given",
            "pass --pretrained PATH (torchvision resnet50 state_dict) or --pretrained torchvision where the hub is "
            "reachable; --allow-random-init trains from scratch anyway",
        )


def train(
    config: str | os.PathLike[str],
    *,
    out: str | os.PathLike[str] | None = None,
    data_root: str | os.PathLike[str] | None = None,
    dataset: str | None = None,
    pretrained: str | os.PathLike[str] | None = None,
    allow_random_init: bool = False,
    resume: bool = False,
    device: str | None = None,
    max_epochs: int | None = None,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Build the ResNet-50 super-network and train it with progressive shrinking.

    Args:
        config: A ``supernet_configs/*.json`` file.
        out: Run directory (default ``supernet_runs/<config name>``).
        data_root: ImageFolder root (``train/``, ``val/``) for dataset ``imagenet``; or the data root of specs.
        dataset: ovdiv dataset spec overriding the config's training source (e.g. ``demo:train``).
        pretrained: torchvision ResNet-50 state_dict file, or ``"torchvision"`` (needs the hub).
        allow_random_init: Train without pretrained weights although the config requires them.
        resume: Continue from ``RUN/checkpoints/supernet_last.pth``.
        device: ``auto`` | ``cpu`` | ``cuda`` (default: the config's).
        max_epochs: Stop after this many epochs of this call (resume later).
        progress: Progress callback (per step and per epoch).

    Returns:
        Summary dict: run, status, epochs_done, total_epochs, width_groups, skippable_blocks, device,
        amp, pretrained, last (the last epoch's metrics).

    Raises:
        ConfigError: invalid config (the bad key is named) or run-directory conflicts.
        SupernetError: missing/invalid pretrained weights, or a search space other than expected.
        DataError: unusable data.
    """
    from .isolation import run_isolated

    cfg = load_config(config)  # fail fast, in this process, on a bad config or missing weights
    _check_pretrained(cfg, pretrained, allow_random_init=allow_random_init, resume=resume)
    run_dir = Path(out) if out is not None else Path("supernet_runs") / cfg.name
    kwargs = {
        "config": str(config),
        "out": str(run_dir),
        "data_root": _s(data_root),
        "dataset": dataset,
        "pretrained": _s(pretrained),
        "allow_random_init": allow_random_init,
        "resume": resume,
        "device": device,
        "max_epochs": max_epochs,
    }
    return run_isolated("train", kwargs, progress=progress)


def search(
    run: str | os.PathLike[str],
    *,
    num_evals: int | None = None,
    population: int | None = None,
    dataset: str | None = None,
    data_root: str | os.PathLike[str] | None = None,
    limit: int | None = None,
    ref_acc: float | None = None,
    acc_delta: float | None = None,
    device: str | None = None,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """NSGA-II (pymoo, via nncf) over (MACs, top-1) of a trained super-network's subnets.

    Each evaluation activates a subnet, adapts BN on training data and measures top-1 on a validation
    subset cached in memory (``limit`` images, default the config's ``search_limit``). Writes
    ``RUN/search/search_progression.csv`` (one row per evaluation), ``search_progression.png`` and
    ``best_subnet.json`` (the cheapest subnet within ``acc_delta`` of ``ref_acc``; the maximum subnet
    when none qualifies, flagged ``satisfies_ref_acc: false``).

    Returns:
        Summary dict (evaluated, csv, plot, best, best_macs_M, best_top1, satisfies_ref_acc, supernet_*).
    """
    from .isolation import run_isolated

    kwargs = {
        "run": str(run),
        "num_evals": num_evals,
        "population": population,
        "dataset": dataset,
        "data_root": _s(data_root),
        "limit": limit,
        "ref_acc": ref_acc,
        "acc_delta": acc_delta,
        "device": device,
    }
    return run_isolated("search", kwargs, progress=progress)


def extract(
    run: str | os.PathLike[str],
    *,
    out: str | os.PathLike[str],
    subnet: str | None = None,
    config: str | os.PathLike[str] | None = None,
    name: str | None = None,
    formats: tuple[str, ...] | list[str] = ("onnx", "ir"),
    bn_adapt: bool = True,
    dataset: str | None = None,
    data_root: str | os.PathLike[str] | None = None,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Materialise a subnet as a plain torch model, save it as an ovdiv checkpoint and export it.

    The nncf part (reload, activate, BN adaptation, weight slicing, parity check against the super-network)
    runs in a child process; the checkpoint and ONNX / IR export (:func:`ovdiv.export.export_model`, f32
    self-check) run here without nncf.

    Args:
        run: Run directory of :func:`train`.
        out: Output folder.
        subnet: ``B_0``, ``nB_0``..``nB_3``, ``dB_1a``, ``dB_1b``, ``wB_1a``..``wB_1c``, ``min``, ``max``, ``best``.
        config: Instead of ``subnet``: JSON file with an arch spec, an OFA ``{d, w, e}`` or nncf's
            ``{width, depth}``.
        name: Artifact base name (default ``<config name>_<subnet>``).
        formats: Any of ``"torch"`` (always written), ``"onnx"``, ``"ir"``.
        bn_adapt: Re-estimate BN statistics of the subnet on training data first (as search does).
        dataset: Dataset spec for BN adaptation (default: the run's training data).
        data_root: Data root (default: the run's).
        progress: Progress callback.

    Files in ``out``: ``<name>_torch.pt`` (ovdiv checkpoint: arch spec + state_dict, loadable with
    :func:`ovdiv.models.load_checkpoint` / :func:`load_subnet` without nncf) and its model card
    ``<name>_torch.json``; ``<name>.onnx`` / ``<name>_fp32.xml`` + cards from :func:`ovdiv.export.export_model`;
    ``<name>.reference.npz`` (probe input, super-network and plain-module logits).

    Returns:
        Dict with name, subnet, arch_spec, macs / weights (nncf's and ovdiv's counts), params,
        max_abs_diff_vs_supernet, reload_max_abs_diff, checkpoint, artifacts (path, format, check).
    """
    from ovdiv.errors import ConfigError

    from .export_subnet import export_extracted
    from .isolation import run_isolated

    fmts = [f.strip().lower() for f in formats if f.strip()]
    bad = sorted(set(fmts) - {"torch", "onnx", "ir"})
    if bad:
        raise ConfigError(f"unknown export format(s) {bad}", "use torch, onnx, ir")
    if (subnet is None) == (config is None):
        raise ConfigError("extract needs exactly one of --subnet NAME and --config JSON")
    if subnet is not None and subnet not in named_subnet_names():
        raise ConfigError(f"unknown subnet {subnet!r}", f"choose one of {', '.join(named_subnet_names())}")
    if config is not None and not Path(config).is_file():
        raise ConfigError(f"subnet config {config} does not exist")
    kwargs = {
        "run": str(run),
        "out": str(out),
        "subnet": subnet,
        "config": _s(config),
        "name": name,
        "bn_adapt": bn_adapt,
        "dataset": dataset,
        "data_root": _s(data_root),
    }
    info_ = run_isolated("extract", kwargs, progress=progress)
    return export_extracted(info_, out_dir=Path(out), formats=fmts, progress=progress)


def info(
    target: str | os.PathLike[str],
    *,
    input_size: tuple[int, int] = (224, 224),
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Search space and MACs / weights of the min, max, named (and best) subnets of a config or run.

    MACs and weights are counted twice, by nncf (``count_flops_and_weights_for_active_subnet``, FLOPs/2)
    and by ovdiv's arch-spec counter, at ``input_size`` (default 224x224); ``equal`` says they agree.
    """
    from .isolation import run_isolated

    return run_isolated("info", {"target": str(target), "input_size": list(input_size)}, progress=progress)


def selfcheck(
    config: str | os.PathLike[str],
    *,
    subnets: tuple[str, ...] = ("B_0", "min"),
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Check this environment without data or training: build an untrained super-network from ``config``.

    Fails (:class:`~ovdiv.errors.SupernetError`) unless the expected search space is found; returns,
    for ``max`` and each of ``subnets``, the max |logit| difference between the super-network and the
    extracted plain module and nncf's vs ovdiv's MAC / weight counts at the config's input size.
    """
    from .isolation import run_isolated

    return run_isolated("selfcheck", {"config": str(config), "subnets": list(subnets)}, progress=progress)


def load_subnet(path: str | os.PathLike[str]) -> Any:
    """Rebuild an extracted subnet (``*.subnet.pt``: arch spec + state_dict) without nncf -> ``SubnetResNet``."""
    from .export_subnet import load_subnet_file

    return load_subnet_file(path)
