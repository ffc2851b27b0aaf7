"""The ResNet-50 search space, subnet configs and the paper's named subnets (no nncf needed).

nncf identifies a subnet by ``{width group id: channels}`` plus a list of skipped block ids. Both
kinds of id are nncf-version-specific cluster orders (NOTES §8 risk 6), so ovdiv stores the search
space of every run by **node names** (``search_space.json``, written by training) and describes a
subnet as an *arch spec* (:mod:`ovdiv.supernet.arch`: stem width, stage output widths, per-block
mid widths, skipped blocks). This module converts between the two with the stored node names.

Roles of the 37 width groups of torchvision ResNet-50 (NOTES §4): ``stem`` (conv1), ``out.s``
(conv3 of every block of stage s plus its downsample, tied by the residual adds) and
``mid.layerS.B.0`` / ``mid.layerS.B.1`` (conv1 / conv2 of a Bottleneck). The fc layer is never elastic.

Named subnets (the paper's Table ii, OFA-ResNets convention ``d``/``w``/``e``) are mapped as NOTES §4
documents:

- ``d`` (5): ``d[0]`` is OFA's stem depth (no torchvision counterpart, ignored); stage s keeps OFA's
  base ``[2,2,4,2][s] + d[s]`` blocks, i.e. skips its last ``[1,2,2,1][s] - d[s]`` Bottlenecks.
- ``w`` (6): indices into OFA's **ascending** multiplier list ``[0.65, 0.8, 1.0]``; ``w[0]`` (OFA's
  stem mid conv) has no counterpart, ``w[1]`` is the stem output, ``w[2..5]`` the stage outputs.
  nncf lists widths **descending** (index 0 = full), so ``nncf_index = 2 - ofa_index``.
- ``e``: the expand ratio per OFA block slot, ``[4,4,6,4]`` slots per stage; a shorter list sets the
  first slots only (OFA's ``zip`` semantics), the rest stay at the maximum. torchvision's stages have
  ``[3,4,6,3]`` blocks and use the first slots of each stage. ``e >= 0.25`` -> full mid width (0.25
  is torchvision's maximum; OFA's 0.35 is clamped), ``0.2`` -> nncf's 0.8x option, ``<= 0.15`` -> 0.6x.

The index direction of ``w`` is settled by MACs: reading ``w`` ascending (OFA's own convention), the
MACs of the paper's subnets order the same way as their reported top-1 (wB_1a > wB_1b, nB_1 > wB_1c);
read descending the order inverts (wB_1b and wB_1c would be *larger* than wB_1a and nB_1 yet less
accurate). See :func:`index_direction_evidence`. Consequences of the approximation: OFA slot 4 of
stage 1 does not exist in torchvision, so ``nB_2`` (which differs from ``nB_1`` only in ``e[3]``) is
the same torchvision subnet as ``nB_1``.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from ovdiv.errors import ConfigError, SupernetError

from .arch import RESNET50_DEPTHS, resnet50_spec

__all__ = [
    "NAMED_SUBNETS",
    "PAPER_TOP1",
    "OFA_WIDTH_MULTIPLIERS",
    "parse_node",
    "block_name_of_node",
    "group_roles",
    "arch_spec_from_nncf",
    "nncf_from_arch_spec",
    "ofa_to_arch_spec",
    "named_subnet_names",
    "index_direction_evidence",
]

OFA_WIDTH_MULTIPLIERS = (0.65, 0.8, 1.0)
OFA_BASE_DEPTH = (2, 2, 4, 2)
OFA_SLOTS = (4, 4, 6, 4)

_E0 = [0.2, 0.2, 0.2, 0.25, 0.2, 0.25, 0.25, 0.25, 0.2, 0.25, 0.25, 0.25]
_E1 = [0.25, 0.2, 0.25, 0.25, 0.2, 0.25, 0.25, 0.25, 0.2, 0.25, 0.25, 0.25]
_D0 = [0, 0, 0, 0, 1]
_W0 = [0, 0, 0, 2, 2, 2]


def _with(e: list[float], i: int, v: float) -> list[float]:
    out = list(e)
    out[i] = v
    return out


NAMED_SUBNETS: dict[str, dict[str, list[Any]]] = {
    "B_0": {"d": _D0, "w": _W0, "e": _E0},
    "nB_0": {"d": _D0, "w": _W0, "e": _E0},
    "nB_1": {"d": _D0, "w": _W0, "e": _E1},
    "nB_2": {"d": _D0, "w": _W0, "e": _with(_E1, 3, 0.2)},
    "nB_3": {"d": _D0, "w": _W0, "e": _with(_E1, 5, 0.2)},
    "dB_1a": {"d": [0, 0, 1, 0, 0], "w": _W0, "e": _E1},
    "dB_1b": {"d": [1, 0, 0, 0, 0], "w": _W0, "e": _E1},
    "wB_1a": {"d": _D0, "w": [0, 0, 1, 1, 2, 2], "e": _E1},
    "wB_1b": {"d": _D0, "w": [0, 1, 1, 1, 1, 2], "e": _E1},
    "wB_1c": {"d": _D0, "w": [1, 1, 1, 1, 1, 1], "e": _E1},
}
"""The paper's Table ii in OFA notation (all width [0,0,0,2,2,2] unless noted; dB/wB use nB_1's e)."""

PAPER_TOP1: dict[str, float] = {
    "B_0": 76.342,
    "B_1": 76.282,
    "nB_0": 76.301,
    "nB_1": 76.318,
    "nB_2": 76.191,
    "nB_3": 76.142,
    "dB_1a": 76.138,
    "dB_1b": 76.084,
    "wB_1a": 76.170,
    "wB_1b": 75.804,
    "wB_1c": 75.852,
}
"""Reported ImageNet top-1 (%), in the order DESIGN.md §8 lists them (B_0, B_1, nB_0..3, dB_1a/b, wB_1a..c)."""

SPECIAL_SUBNETS = ("min", "max", "best")

_RE_STAGE = re.compile(r"Sequential\[(layer\d)\]/Bottleneck\[(\d+)\]")


def named_subnet_names() -> list[str]:
    """Valid ``--subnet`` names: the paper's plus ``min``, ``max``, ``best``."""
    return [*NAMED_SUBNETS, *SPECIAL_SUBNETS]


def parse_node(node: str) -> tuple[str, str]:
    """``(where, what)`` of an nncf node name of torchvision ResNet-50.

    ``ResNet/NNCFConv2d[conv1]/conv2d_0`` -> ``("stem", "conv1")``;
    ``ResNet/Sequential[layer2]/Bottleneck[0]/Sequential[downsample]/NNCFConv2d[0]/conv2d_0`` ->
    ``("layer2.0", "downsample")``; ``.../Bottleneck[3]/NNCFConv2d[conv2]/conv2d_0`` -> ``("layer2.3", "conv2")``;
    ``.../Bottleneck[1]/ReLU[relu]/relu__2`` -> ``("layer2.1", "relu__2")``;
    ``.../__iadd___0`` -> ``(.., "__iadd___0")``.
    """
    m = _RE_STAGE.search(node)
    if m is None:
        if "NNCFConv2d[conv1]" in node:
            return "stem", "conv1"
        if "NNCFLinear[fc]" in node:
            return "head", "fc"
        return "other", node.rsplit("/", 1)[-1]
    where = f"{m.group(1)}.{m.group(2)}"
    if "Sequential[downsample]" in node:
        return where, "downsample"
    conv = re.search(r"NNCFConv2d\[(conv\d)\]", node)
    if conv:
        return where, conv.group(1)
    return where, node.rsplit("/", 1)[-1]


def block_name_of_node(node: str) -> str:
    """The Bottleneck (``layerS.B``) an nncf node belongs to."""
    where, _ = parse_node(node)
    if not where.startswith("layer"):
        raise SupernetError(f"node {node!r} is not inside a Bottleneck")
    return where


def group_roles(space: dict[str, Any]) -> dict[str, int]:
    """Map width-group roles (``stem``, ``out.1``..``out.4``, ``mid.layerS.B.0|1``) to nncf group ids.

    Raises:
        SupernetError: a group's nodes do not match torchvision ResNet-50's structure.
    """
    roles: dict[str, int] = {}
    for g in space["width_groups"]:
        kinds = {parse_node(n) for n in g["nodes"]}
        whats = {w for _, w in kinds}
        if kinds == {("stem", "conv1")}:
            role = "stem"
        elif whats <= {"conv3", "downsample"}:
            stages = {w.split(".")[0] for w, _ in kinds}
            if len(stages) != 1:
                raise SupernetError(f"width group {g['id']} spans several stages: {sorted(stages)}")
            role = f"out.{stages.pop()[5:]}"
        elif len(kinds) == 1 and whats <= {"conv1", "conv2"}:
            where, what = next(iter(kinds))
            role = f"mid.{where}.{0 if what == 'conv1' else 1}"
        else:
            raise SupernetError(f"width group {g['id']} has an unexpected node set {sorted(g['nodes'])}")
        if role in roles:
            raise SupernetError(f"two width groups play the role {role}")
        roles[role] = int(g["id"])
    return roles


def _groups_by_id(space: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {int(g["id"]): g for g in space["width_groups"]}


def _block_ids(space: dict[str, Any]) -> dict[str, int]:
    return {b["name"]: int(b["id"]) for b in space["blocks"]}


def arch_spec_from_nncf(
    width: dict[int, int], skipped: list[int], space: dict[str, Any], num_classes: int
) -> dict[str, Any]:
    """Arch spec of the nncf subnet ``(width config, skipped block ids)``.

    Args:
        width: ``{group id: active channels}`` (nncf's ``ElasticityDim.WIDTH`` config; missing groups = full).
        skipped: Skipped block ids (``ElasticityDim.DEPTH`` config).
        space: The run's ``search_space.json`` content.
        num_classes: Classifier outputs.
    """
    roles = group_roles(space)
    groups = _groups_by_id(space)

    def w(role: str) -> int:
        gid = roles[role]
        return int(width.get(gid, groups[gid]["width_list"][0]))

    spec = resnet50_spec(num_classes)
    spec["stem"] = w("stem")
    for s, st in enumerate(spec["stages"]):
        st["out"] = w(f"out.{s + 1}")
        for b, blk in enumerate(st["blocks"]):
            blk["mid"] = [w(f"mid.layer{s + 1}.{b}.0"), w(f"mid.layer{s + 1}.{b}.1")]
    by_id = {int(b["id"]): b for b in space["blocks"]}
    for bid in skipped:
        blk_info = by_id.get(int(bid))
        if blk_info is None:
            raise SupernetError(f"skipped block id {bid} is not in the search space")
        s, b = (int(v) for v in blk_info["name"][5:].split("."))
        spec["stages"][s - 1]["blocks"][b]["skip"] = True
        if blk_info.get("drops_relu_of"):
            s2, b2 = (int(v) for v in blk_info["drops_relu_of"][5:].split("."))
            spec["stages"][s2 - 1]["blocks"][b2]["final_relu"] = False
    return spec


def nncf_from_arch_spec(spec: dict[str, Any], space: dict[str, Any]) -> tuple[dict[int, int], list[int]]:
    """``(width config, skipped block ids)`` of an arch spec in a run's search space.

    Raises:
        ConfigError: a width is not one of its group's options or a skipped block is not skippable.
    """
    roles = group_roles(space)
    groups = _groups_by_id(space)
    width: dict[int, int] = {}

    def put(role: str, value: int) -> None:
        gid = roles[role]
        options = [int(v) for v in groups[gid]["width_list"]]
        if int(value) not in options:
            raise ConfigError(f"subnet width {value} for {role} is not one of the search space's options {options}")
        width[gid] = int(value)

    put("stem", spec["stem"])
    ids = _block_ids(space)
    skipped: list[int] = []
    for s, st in enumerate(spec["stages"]):
        put(f"out.{s + 1}", st["out"])
        for b, blk in enumerate(st["blocks"]):
            put(f"mid.layer{s + 1}.{b}.0", blk["mid"][0])
            put(f"mid.layer{s + 1}.{b}.1", blk["mid"][1])
            if blk["skip"]:
                name = f"layer{s + 1}.{b}"
                if name not in ids:
                    raise ConfigError(f"block {name} is not skippable in this search space ({sorted(ids)})")
                skipped.append(ids[name])
    return dict(sorted(width.items())), sorted(skipped)


def _e_index(e: float) -> int:
    if e >= 0.225:
        return 0
    if e >= 0.175:
        return 1
    return 2


def ofa_to_arch_spec(
    d: list[int], w: list[int], e: list[float], space: dict[str, Any], num_classes: int, *, ascending: bool = True
) -> dict[str, Any]:
    """Arch spec of an OFA-style ``(d, w, e)`` subnet (see the module docstring for the mapping).

    Args:
        d: 5 OFA depth entries.
        w: 6 OFA width indices.
        e: Up to 18 OFA expand ratios.
        space: The run's search space (width options per group).
        num_classes: Classifier outputs.
        ascending: Read ``w`` as OFA does (0 = narrowest). False reads it as nncf's 0 = full; only for
            the index-direction comparison.
    """
    if len(d) != 5 or len(w) != 6 or not 1 <= len(e) <= sum(OFA_SLOTS):
        raise ConfigError(f"OFA subnet needs 5 d, 6 w and 1..18 e entries, got {len(d)}, {len(w)}, {len(e)}")
    roles = group_roles(space)
    groups = _groups_by_id(space)

    def option(role: str, idx: int) -> int:
        wl = [int(v) for v in groups[roles[role]]["width_list"]]
        if not 0 <= idx < len(wl):
            raise ConfigError(f"width index {idx} out of range for {role} (options {wl})")
        return wl[idx]

    def nncf_idx(ofa_idx: int) -> int:
        return len(OFA_WIDTH_MULTIPLIERS) - 1 - ofa_idx if ascending else ofa_idx

    spec = resnet50_spec(num_classes)
    spec["stem"] = option("stem", nncf_idx(w[1]))
    ee = list(e) + [0.25] * (sum(OFA_SLOTS) - len(e))
    slot0 = 0
    for s, st in enumerate(spec["stages"]):
        st["out"] = option(f"out.{s + 1}", nncf_idx(w[s + 2]))
        n_skip = RESNET50_DEPTHS[s] - OFA_BASE_DEPTH[s] - int(d[s + 1])
        if n_skip < 0:
            raise ConfigError(f"OFA depth d[{s + 1}]={d[s + 1]} exceeds torchvision's {RESNET50_DEPTHS[s]} blocks")
        for b, blk in enumerate(st["blocks"]):
            k = _e_index(ee[slot0 + b])
            blk["mid"] = [option(f"mid.layer{s + 1}.{b}.0", k), option(f"mid.layer{s + 1}.{b}.1", k)]
            blk["skip"] = b >= RESNET50_DEPTHS[s] - n_skip
        slot0 += OFA_SLOTS[s]
    # the spec must be expressible in this search space (skippable blocks, drop-relu semantics)
    nncf_from_arch_spec(spec, space)
    names = {b["name"]: b for b in space["blocks"]}
    for s, st in enumerate(spec["stages"]):
        for b, blk in enumerate(st["blocks"]):
            info = names.get(f"layer{s + 1}.{b}")
            if blk["skip"] and info is not None and info.get("drops_relu_of"):
                s2, b2 = (int(v) for v in info["drops_relu_of"][5:].split("."))
                spec["stages"][s2 - 1]["blocks"][b2]["final_relu"] = False
    return spec


def named_arch_spec(name: str, space: dict[str, Any], num_classes: int) -> dict[str, Any]:
    """Arch spec of one of the paper's named subnets (:data:`NAMED_SUBNETS`)."""
    if name not in NAMED_SUBNETS:
        raise ConfigError(f"unknown subnet {name!r}", f"choose one of {', '.join(named_subnet_names())}")
    cfg = NAMED_SUBNETS[name]
    return ofa_to_arch_spec(cfg["d"], cfg["w"], cfg["e"], space, num_classes)


def index_direction_evidence(space: dict[str, Any], num_classes: int = 1000) -> dict[str, Any]:
    """MACs at 224x224 of the named subnets under both readings of ``w``, against the reported top-1.

    Returns:
        ``{"ascending": {name: macs}, "descending": {name: macs}, "spearman": {reading: rho}}`` where rho
        is the Spearman correlation between MACs and the paper's top-1 over the named subnets.
    """
    from .arch import count_macs_and_weights

    out: dict[str, Any] = {"ascending": {}, "descending": {}, "spearman": {}}
    for reading, asc in (("ascending", True), ("descending", False)):
        for name, cfg in NAMED_SUBNETS.items():
            spec = ofa_to_arch_spec(cfg["d"], cfg["w"], cfg["e"], space, num_classes, ascending=asc)
            out[reading][name] = count_macs_and_weights(spec, (224, 224))[0]
        names = [n for n in NAMED_SUBNETS if n in PAPER_TOP1]
        out["spearman"][reading] = _spearman([out[reading][n] for n in names], [PAPER_TOP1[n] for n in names])
    return out


def _spearman(a: list[float], b: list[float]) -> float:
    def ranks(x: list[float]) -> list[float]:
        order = sorted(range(len(x)), key=lambda i: x[i])
        r = [0.0] * len(x)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and x[order[j + 1]] == x[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2.0
            i = j + 1
        return r

    ra, rb = ranks(a), ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb, strict=True))
    va = sum((x - ma) ** 2 for x in ra) ** 0.5
    vb = sum((y - mb) ** 2 for y in rb) ** 0.5
    return float(cov / (va * vb)) if va > 0 and vb > 0 else 0.0


def describe_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """A compact, human-readable summary of an arch spec (for cards and ``info``)."""
    return {
        "stem": spec["stem"],
        "stage_out": [st["out"] for st in spec["stages"]],
        "blocks_per_stage": [sum(not b["skip"] for b in st["blocks"]) for st in spec["stages"]],
        "skipped": [
            f"layer{s + 1}.{b}"
            for s, st in enumerate(spec["stages"])
            for b, blk in enumerate(st["blocks"])
            if blk["skip"]
        ],
        "mid": [[blk["mid"] for blk in st["blocks"]] for st in spec["stages"]],
    }


def copy_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """Deep copy of a spec."""
    return copy.deepcopy(spec)
