"""``ovdiv pool build``: train / extract / export every member of a pool file, resumably.

A **pool file** (``models/pools/paper14.json``: the paper's 14 members, supplementary Table i) names each
member and how it is made, plus the export formats::

    {
      "name": "paper14", "description": "...",
      "formats": ["onnx", "ir"],                     # FP32 artifacts (INT8/FP16: ovdiv export on them)
      "overrides": {"data": {"train_limit": 1000}},  # merged into every recipe (before a member's own)
      "supernets": {"resnet50": {"config": "../../supernet_configs/resnet50.json",
                                 "pretrained": null, "allow_random_init": false, "run": null}},
      "members": [
        {"name": "ResNext50_32_2", "kind": "recipe", "recipe": "../resnext50_32_2.json"},
        {"name": "bootstrapNAS-B_0", "kind": "subnet", "supernet": "resnet50", "subnet": "B_0"},
        {"name": "dino_resnet1", "kind": "dino", "recipe": "../dino_resnet1.json"},
        {"name": "x", "kind": "recipe", "recipe": "...", "overrides": {"seed": 3, "data": {"train_limit": 64}}}
      ]
    }

Member kinds: ``recipe`` (a member recipe, :func:`ovdiv.train.train_member`), ``dino`` (a DINO recipe,
:func:`ovdiv.train.dino.train_dino`; members with the same backbone share it through ``POOL/dino_backbones``)
and ``subnet`` (a named subnet of a BootstrapNAS super-network, :func:`ovdiv.supernet.extract`; the
super-network is trained once per entry of ``supernets``, or taken from an existing ``run`` folder).
``overrides`` are deep-merged into the recipe JSON before validation (the tiny pool uses them for seeds
and sizes). Relative paths are relative to the pool file.

Everything is validated before anything is trained: an unknown kind, a missing or invalid recipe, an
unknown subnet or super-network, duplicate names, a super-network that would need pretrained weights
that are not given — each is one :class:`~ovdiv.errors.ConfigError` naming the member.

Output folder::

    POOL/runs/<name>-<hash12>/      training runs (train_member / train_dino layout; resumable)
    POOL/dino_backbones/            DINO backbones by content hash (shared between members)
    POOL/supernets/<key>-<hash12>/  super-network runs
    POOL/members/                   <name>.onnx, <name>_fp32.xml (+ .bin) and their model cards
    POOL/state/<name>.json          written when a member is complete: its content hash and artifacts
    POOL/members.txt                one deployed artifact per line, as an absolute path (so that
                                    ``ovdiv evaluate --pool $(cat POOL/members.txt) --size 3`` works
                                    from any working directory)
    POOL/pool.json                  summary (members, kinds, hashes, artifacts, what was skipped, timings)

**Resume**: a member whose ``state/<name>.json`` records the same content hash (SHA-256 of its kind, its
resolved recipe / super-network config + subnet, the training data and the export formats) and whose
artifacts all exist is skipped; an interrupted member continues from its run folder's ``state.pt``.
Changing a recipe changes the hash, and the member is rebuilt in a new run folder.

This module orchestrates training, super-network and export the way a user would (like
:mod:`ovdiv.demo`); it holds no algorithm of its own and sits above ``evaluate`` in the layers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ovdiv.atomic import write_json, write_text
from ovdiv.errors import ConfigError
from ovdiv.types import Progress, ProgressCallback, no_progress

__all__ = ["MEMBER_KINDS", "PoolMember", "PoolSpec", "PoolSummary", "build_pool", "load_pool"]

log = logging.getLogger("ovdiv.pool")

MEMBER_KINDS = ("recipe", "dino", "subnet")
_FORMATS = ("onnx", "ir")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


@dataclass(frozen=True)
class PoolMember:
    """One validated pool member.

    Attributes:
        name: Artifact base name (unique in the pool).
        kind: ``recipe``, ``dino`` or ``subnet``.
        recipe: The resolved recipe JSON (overrides merged; ``recipe`` and ``dino``).
        recipe_path: Where the recipe came from.
        supernet: Key into :attr:`PoolSpec.supernets` (``subnet``).
        subnet: Subnet name (``subnet``).
        note: Free text (e.g. how a paper name maps to a subnet).
    """

    name: str
    kind: str
    recipe: dict[str, Any] | None = None
    recipe_path: Path | None = None
    supernet: str | None = None
    subnet: str | None = None
    note: str = ""


@dataclass(frozen=True)
class PoolSpec:
    """A validated pool file (module docstring)."""

    name: str
    members: list[PoolMember]
    formats: tuple[str, ...] = ("onnx", "ir")
    supernets: dict[str, dict[str, Any]] = field(default_factory=dict)
    description: str = ""
    path: Path | None = None


@dataclass
class PoolSummary:
    """What :func:`build_pool` did.

    Attributes:
        out_dir: The pool folder.
        members_file: ``POOL/members.txt``.
        artifacts: One deployed artifact per member, in pool order.
        built: Members built (trained/extracted and exported) by this call.
        skipped: Members found complete (same content hash).
        timings: Seconds per built member.
    """

    out_dir: Path
    members_file: Path
    artifacts: list[Path]
    built: list[str]
    skipped: list[str]
    timings: dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# pool file
# ---------------------------------------------------------------------------------------------
def _merge(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, Mapping):
        out = dict(base)
        for k, v in over.items():
            out[k] = _merge(base.get(k), v) if k in base else v
        return out
    return over


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{what} {path} is not readable JSON: {exc}") from exc


def _strings(v: Any, key: str, valid: tuple[str, ...], where: str) -> tuple[str, ...]:
    if not isinstance(v, list) or not v or any(x not in valid for x in v):
        raise ConfigError(f"{where}: {key!r} must be a non-empty list of {list(valid)}, got {v!r}")
    return tuple(v)


def _member(
    raw: Any, i: int, base: Path, supernets: Mapping[str, Any], common: Mapping[str, Any], where: str
) -> PoolMember:
    from ovdiv.models.recipes import Recipe
    from ovdiv.train.dino_recipe import DinoRecipe

    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: members[{i}] must be an object with 'name' and 'kind'")
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"{where}: members[{i}] needs a 'name' of letters, digits, '_', '-', '.', got {name!r}")
    at = f"{where}: member {name!r}"
    kind = raw.get("kind")
    if kind not in MEMBER_KINDS:
        raise ConfigError(f"{at}: unknown kind {kind!r}", f"use one of {', '.join(MEMBER_KINDS)}")
    allowed = {"name", "kind", "note"} | ({"supernet", "subnet"} if kind == "subnet" else {"recipe", "overrides"})
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(f"{at}: unknown key(s) {unknown} for kind {kind!r}", f"valid: {', '.join(sorted(allowed))}")
    note = str(raw.get("note", ""))
    if kind == "subnet":
        from ovdiv.supernet import named_subnet_names

        sn, sub = raw.get("supernet"), raw.get("subnet")
        if sn not in supernets:
            raise ConfigError(f"{at}: unknown supernet {sn!r}", f"define it under 'supernets' ({list(supernets)})")
        if sub not in named_subnet_names():
            raise ConfigError(f"{at}: unknown subnet {sub!r}", f"choose one of {', '.join(named_subnet_names())}")
        return PoolMember(name=name, kind=kind, supernet=str(sn), subnet=str(sub), note=note)
    if not isinstance(raw.get("recipe"), str):
        raise ConfigError(f"{at}: kind {kind!r} needs 'recipe': a models/*.json path")
    path = (base / raw["recipe"]).resolve()
    if not path.is_file():
        raise ConfigError(f"{at}: recipe {path} does not exist", "fix the path (relative to the pool file)")
    data = _read_json(path, f"{at}: recipe")
    if not isinstance(data, dict):
        raise ConfigError(f"{at}: recipe {path} must hold a JSON object")
    overrides = raw.get("overrides", {})
    if not isinstance(overrides, Mapping):
        raise ConfigError(f"{at}: 'overrides' must be an object merged into the recipe")
    data = _merge(_merge(data, common), overrides)
    file_kind = data.get("kind", "member")
    if (kind == "dino") != (file_kind == "dino"):
        raise ConfigError(f"{at}: kind {kind!r} but recipe {path} is a {file_kind!r} recipe", "make them agree")
    src = f"recipe {path} (member {name})"
    rec = DinoRecipe.from_dict(data, source=src) if kind == "dino" else Recipe.from_dict(data, source=src)
    return PoolMember(name=name, kind=kind, recipe=rec.to_dict(), recipe_path=path, note=note)


def load_pool(path: str | Path) -> PoolSpec:
    """Read and validate a pool file; every recipe and super-network config is validated too.

    Raises:
        ConfigError: One message naming the member (or key) and the fix.
    """
    p = Path(path)
    raw = _read_json(p, "pool file")
    where = f"pool file {p}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must hold a JSON object")
    unknown = sorted(set(raw) - {"name", "description", "formats", "overrides", "supernets", "members"})
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {unknown}", "valid: name, description, formats, overrides, supernets, members"
        )
    common = raw.get("overrides", {})
    if not isinstance(common, Mapping):
        raise ConfigError(f"{where}: 'overrides' must be an object merged into every recipe")
    base = p.resolve().parent
    formats = _strings(raw.get("formats", ["onnx", "ir"]), "formats", _FORMATS, where)
    supernets: dict[str, dict[str, Any]] = {}
    sn_raw = raw.get("supernets", {})
    if not isinstance(sn_raw, Mapping):
        raise ConfigError(f"{where}: 'supernets' must be an object {{key: {{'config': ...}}}}")
    for key, spec in sn_raw.items():
        supernets[str(key)] = _supernet(str(key), spec, base, where)
    members_raw = raw.get("members")
    if not isinstance(members_raw, list) or not members_raw:
        raise ConfigError(f"{where}: 'members' must be a non-empty list")
    members = [_member(m, i, base, supernets, common, where) for i, m in enumerate(members_raw)]
    names = [m.name for m in members]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"{where}: duplicate member names {dup}")
    return PoolSpec(
        name=str(raw.get("name", p.stem)),
        members=members,
        formats=formats,
        supernets=supernets,
        description=str(raw.get("description", "")),
        path=p,
    )


def _supernet(key: str, spec: Any, base: Path, where: str) -> dict[str, Any]:
    from ovdiv.supernet import load_config

    at = f"{where}: supernets.{key}"
    if not isinstance(spec, Mapping) or not isinstance(spec.get("config"), str):
        raise ConfigError(f"{at} must be an object with 'config': a supernet_configs/*.json path")
    unknown = sorted(set(spec) - {"config", "pretrained", "allow_random_init", "run"})
    if unknown:
        raise ConfigError(f"{at}: unknown key(s) {unknown}", "valid: config, pretrained, allow_random_init, run")
    config = (base / spec["config"]).resolve()
    cfg = load_config(config)  # ConfigError naming the file and key
    out: dict[str, Any] = {"config": config, "data": cfg.data, "allow_random_init": bool(spec.get("allow_random_init"))}
    for k in ("pretrained", "run"):
        v = spec.get(k)
        out[k] = None if v is None else (v if v == "torchvision" else (base / v).resolve())
    return out


# ---------------------------------------------------------------------------------------------
# build
# ---------------------------------------------------------------------------------------------
def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def _member_hash(spec: PoolSpec, m: PoolMember, data: Any) -> str:
    key: dict[str, Any] = {"kind": m.kind, "data": data, "formats": spec.formats}
    if m.kind == "subnet":
        sn = spec.supernets[str(m.supernet)]
        key.update(supernet=_supernet_key(sn, data), subnet=m.subnet)
    else:
        key["recipe"] = {k: v for k, v in (m.recipe or {}).items() if k not in ("description", "source")}
    return _digest(key)


def _supernet_key(sn: Mapping[str, Any], data: Any) -> dict[str, Any]:
    cfg = {k: v for k, v in sn["data"].items() if k not in ("description",)}
    return {"config": cfg, "pretrained": str(sn["pretrained"]), "run": str(sn["run"]), "data": data}


def _check_ready(spec: PoolSpec) -> None:
    """Problems that would only show after hours of training: found now, before any training."""
    for key, sn in spec.supernets.items():
        used = [m.name for m in spec.members if m.supernet == key]
        if not used:
            continue
        run = sn["run"]
        if run is not None:
            meta = Path(run) / "run.json"
            if not meta.is_file():
                raise ConfigError(f"supernet {key!r}: run folder {run} has no run.json", "train it or drop 'run'")
            continue
        pre = sn["pretrained"]
        if pre not in (None, "torchvision") and not Path(pre).is_file():
            raise ConfigError(f"supernet {key!r}: pretrained weights {pre} do not exist", "fix 'pretrained'")
        if pre is None and sn["data"].get("require_pretrained") and not sn["allow_random_init"]:
            raise ConfigError(
                f"supernet {key!r} ({sn['config']}) fine-tunes a pretrained ResNet-50 but the pool gives no "
                f"'pretrained' weights (members {', '.join(used)})",
                "set supernets.<key>.pretrained to a torchvision resnet50 state_dict file, 'run' to a trained "
                "super-network run, or allow_random_init: true",
            )


def _deployed(paths: list[Path], formats: tuple[str, ...]) -> Path:
    """The artifact members.txt lists: the FP32 IR when IR is exported, else the ONNX."""
    if "ir" in formats:
        for p in paths:
            if p.name.endswith("_fp32.xml"):
                return p
    for p in paths:
        if p.suffix == ".onnx":
            return p
    return paths[0]


Builder = Callable[..., list[Path]]


def build_pool(
    pool: PoolSpec | str | Path,
    *,
    out_dir: str | Path,
    data_root: str | Path | None = None,
    dataset: str | None = None,
    device: str | None = None,
    workers: int = 0,
    progress: ProgressCallback | None = None,
) -> PoolSummary:
    """Build every member of a pool that is not complete yet; write ``members.txt``.

    Args:
        pool: A :class:`PoolSpec` or a pool file.
        out_dir: The pool folder (module docstring).
        data_root: ImageFolder root (``train/``, ``val/``) for recipes without their own data and for
            the super-networks' ``imagenet`` dataset.
        dataset: Dataset spec instead of ``data_root`` (e.g. ``demo:train``).
        device: ``cuda`` / ``cpu`` for training (default: CUDA when available).
        workers: DataLoader workers.
        progress: Progress callback (task ``"pool"`` plus each step's own tasks).

    Returns:
        :class:`PoolSummary`.

    Raises:
        ConfigError: Invalid pool (before anything is trained), or both ``data_root`` and ``dataset``.
    """
    spec = pool if isinstance(pool, PoolSpec) else load_pool(pool)
    if data_root is not None and dataset is not None:
        raise ConfigError("pass either --data-root or --dataset, not both")
    _check_ready(spec)
    report = progress or no_progress
    out = Path(out_dir)
    data: Path | str | None = Path(data_root) if data_root is not None else dataset
    data_key = {"root": str(Path(data_root).resolve())} if data_root is not None else {"dataset": dataset}
    for sub in ("runs", "members", "state"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    ctx = _Context(spec, out, data, data_key, device, workers, report)
    artifacts: list[Path] = []
    built: list[str] = []
    skipped: list[str] = []
    timings: dict[str, float] = {}
    records = []
    n = len(spec.members)
    for i, m in enumerate(spec.members):
        digest = _member_hash(spec, m, data_key)
        report(Progress("pool", i, n, m.name))
        state_path = out / "state" / f"{m.name}.json"
        done = _complete(state_path, digest, out)
        if done is not None:
            log.info("pool member %s: complete (hash %s), skipped", m.name, digest[:12])
            skipped.append(m.name)
            paths = done
        else:
            log.info("pool member %s: building (%s)", m.name, m.kind)
            t0 = time.perf_counter()
            paths = _BUILDERS[m.kind](ctx, m, digest)
            timings[m.name] = time.perf_counter() - t0
            write_json(
                state_path,
                {"name": m.name, "kind": m.kind, "hash": digest, "artifacts": [str(p.relative_to(out)) for p in paths],
                 "seconds": timings[m.name]},
            )  # fmt: skip
            built.append(m.name)
        deployed = _deployed(paths, spec.formats)
        artifacts.append(deployed)
        records.append({"name": m.name, "kind": m.kind, "hash": digest, "deployed": str(deployed.relative_to(out)),
                        "artifacts": [str(p.relative_to(out)) for p in paths], "note": m.note})  # fmt: skip
    report(Progress("pool", n, n, "done"))
    members_file = out / "members.txt"
    # absolute: `--pool $(cat POOL/members.txt)` must not depend on the cwd pool build ran in
    write_text(members_file, "".join(f"{p.resolve()}\n" for p in artifacts))
    write_json(
        out / "pool.json",
        {"pool": spec.name, "source": str(spec.path), "formats": list(spec.formats), "members": records,
         "built": built, "skipped": skipped, "timings": timings},
    )  # fmt: skip
    return PoolSummary(out, members_file, artifacts, built, skipped, timings)


def _complete(state_path: Path, digest: str, out: Path) -> list[Path] | None:
    if not state_path.is_file():
        return None
    try:
        st = json.loads(state_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if st.get("hash") != digest:
        return None
    paths = [out / a for a in st.get("artifacts", [])]
    if not paths or not all(p.is_file() for p in paths):
        return None
    return paths


@dataclass
class _Context:
    spec: PoolSpec
    out: Path
    data: Path | str | None
    data_key: dict[str, Any]
    device: str | None
    workers: int
    progress: ProgressCallback


def _export(ctx: _Context, ckpt: Path, name: str) -> list[Path]:
    from ovdiv.export import export_model

    arts = export_model(
        ckpt, ctx.out / "members", name=name, formats=ctx.spec.formats, precisions=("fp32",), progress=ctx.progress,
    )  # fmt: skip
    return [a.path for a in arts]


def _build_recipe(ctx: _Context, m: PoolMember, digest: str) -> list[Path]:
    from ovdiv.models.recipes import Recipe
    from ovdiv.train import train_member

    rec = Recipe.from_dict(m.recipe or {}, source=f"member {m.name}")
    res = train_member(
        rec, out_dir=ctx.out / "runs" / f"{m.name}-{digest[:12]}", data=ctx.data, device=ctx.device,
        workers=ctx.workers, progress=ctx.progress,
    )  # fmt: skip
    return _export(ctx, res.checkpoint, m.name)


def _build_dino(ctx: _Context, m: PoolMember, digest: str) -> list[Path]:
    from ovdiv.train.dino import train_dino
    from ovdiv.train.dino_recipe import DinoRecipe

    rec = DinoRecipe.from_dict(m.recipe or {}, source=f"member {m.name}")
    res = train_dino(
        rec, out_dir=ctx.out / "runs" / f"{m.name}-{digest[:12]}", data=ctx.data,
        backbone_cache=ctx.out / "dino_backbones", device=ctx.device, workers=ctx.workers, progress=ctx.progress,
    )  # fmt: skip
    return _export(ctx, res.checkpoint, m.name)


def _supernet_run(ctx: _Context, key: str) -> Path:
    from ovdiv import supernet

    sn = ctx.spec.supernets[key]
    if sn["run"] is not None:
        return Path(sn["run"])
    run = ctx.out / "supernets" / f"{key}-{_digest(_supernet_key(sn, ctx.data_key))[:12]}"
    meta_path = run / "run.json"
    status = None
    if meta_path.is_file():
        status = json.loads(meta_path.read_text(encoding="utf-8")).get("status")
    if status == "trained":
        return run
    resumable = (run / "checkpoints" / "supernet_last.pth").is_file()
    if run.exists() and not resumable:
        shutil.rmtree(run)  # killed before its first checkpoint: nothing to keep (inside POOL only)
    supernet.train(
        sn["config"],
        out=run,
        data_root=ctx.data if isinstance(ctx.data, Path) else None,
        dataset=ctx.data if isinstance(ctx.data, str) else None,
        pretrained=sn["pretrained"],
        allow_random_init=sn["allow_random_init"],
        resume=resumable,
        device=ctx.device,
        progress=ctx.progress,
    )
    return run


def _build_subnet(ctx: _Context, m: PoolMember, digest: str) -> list[Path]:
    from ovdiv import supernet

    run = _supernet_run(ctx, str(m.supernet))
    res = supernet.extract(
        run, out=ctx.out / "members", subnet=m.subnet, name=m.name, formats=list(ctx.spec.formats),
        progress=ctx.progress,
    )  # fmt: skip
    return [Path(a["path"]) for a in res["artifacts"]]


_BUILDERS: dict[str, Builder] = {"recipe": _build_recipe, "dino": _build_dino, "subnet": _build_subnet}
