"""Search-space roles, nncf <-> arch-spec conversion and the paper's named subnets (no nncf needed).

``data/search_space_manual6.json`` is the ``search_space.json`` nncf 2.19 produced for torchvision
ResNet-50 with the paper's six manual skippable blocks (written by ``ovdiv supernet train``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ovdiv.errors import ConfigError, SupernetError
from ovdiv.supernet import space as sp
from ovdiv.supernet.arch import count_macs_and_weights, resnet50_spec
from ovdiv.supernet.engine import check_search_space

pytestmark = pytest.mark.nas

SPACE = json.loads((Path(__file__).parent / "data" / "search_space_manual6.json").read_text())


def test_roles_cover_all_37_groups() -> None:
    roles = sp.group_roles(SPACE)
    assert len(roles) == 37 == len(SPACE["width_groups"])
    assert roles["out.1"] == 0 and roles["out.4"] == 3 and roles["stem"] == 4  # NOTES §4 table
    assert roles["mid.layer1.0.0"] == 5 and roles["mid.layer1.0.1"] == 6 and roles["mid.layer4.2.1"] == 36
    assert [b["name"] for b in SPACE["blocks"]] == [
        "layer1.2",
        "layer2.2",
        "layer2.3",
        "layer3.4",
        "layer3.5",
        "layer4.2",
    ]


def test_parse_node() -> None:
    assert sp.parse_node("ResNet/NNCFConv2d[conv1]/conv2d_0") == ("stem", "conv1")
    assert sp.parse_node("ResNet/Sequential[layer2]/Bottleneck[0]/Sequential[downsample]/NNCFConv2d[0]/conv2d_0") == (
        "layer2.0",
        "downsample",
    )
    assert sp.parse_node("ResNet/Sequential[layer3]/Bottleneck[4]/ReLU[relu]/relu__2") == ("layer3.4", "relu__2")


def test_nncf_spec_roundtrip() -> None:
    width = {g["id"]: g["width_list"][(g["id"] * 7) % 3] for g in SPACE["width_groups"]}
    skipped = [0, 1, 2, 5]
    spec = sp.arch_spec_from_nncf(width, skipped, SPACE, 10)
    assert sp.nncf_from_arch_spec(spec, SPACE) == (dict(sorted(width.items())), skipped)
    assert [st["out"] for st in spec["stages"]] == [width[0], width[1], width[2], width[3]]


def test_full_width_is_resnet50() -> None:
    spec = sp.arch_spec_from_nncf({}, [], SPACE, 10)
    assert spec == resnet50_spec(10)


def test_b0_mapping() -> None:
    spec = sp.named_arch_spec("B_0", SPACE, 1000)
    w, d = sp.nncf_from_arch_spec(spec, SPACE)
    # d=[0,0,0,0,1]: stages keep OFA base [2,2,4,2] + [0,0,0,1] -> skip layer1.2, layer2.2-3, layer3.4-5
    assert d == [0, 1, 2, 3, 4]
    # w=[0,0,0,2,2,2] read ascending (0 = narrowest): stem and stage-1 output narrowest, stages 2-4 full
    assert (w[4], w[0], w[1], w[2], w[3]) == (32, 152, 512, 1024, 2048)
    # e[0..2]=0.2 -> layer1 mids at nncf's 0.8x (48); e[4]=0.2 -> layer2.0; e[8]=0.2 -> layer3.0
    assert spec["stages"][0]["blocks"][0]["mid"] == [48, 48] and spec["stages"][0]["blocks"][2]["mid"] == [48, 48]
    assert spec["stages"][1]["blocks"][0]["mid"] == [96, 96] and spec["stages"][1]["blocks"][1]["mid"] == [128, 128]
    assert spec["stages"][2]["blocks"][0]["mid"] == [200, 200] and spec["stages"][3]["blocks"][0]["mid"] == [512, 512]


def test_named_subnets_all_distinct_except_documented() -> None:
    specs = {n: sp.named_arch_spec(n, SPACE, 1000) for n in sp.NAMED_SUBNETS}
    assert specs["B_0"] == specs["nB_0"]
    assert specs["nB_2"] == specs["nB_1"]  # e[3] is OFA's 4th stage-1 slot: torchvision's layer1 has 3 blocks
    others = [n for n in specs if n not in ("nB_0", "nB_2")]
    assert len({json.dumps(specs[n], sort_keys=True) for n in others}) == len(others)
    assert set(sp.named_subnet_names()) >= {"B_0", "wB_1c", "min", "max", "best"}


def test_index_direction_settled_by_macs() -> None:
    ev = sp.index_direction_evidence(SPACE)
    asc, desc = ev["ascending"], ev["descending"]
    # ascending reading: MACs order like the reported top-1 (wB_1a 76.170 > wB_1b 75.804; nB_1 > wB_1c)
    assert asc["wB_1a"] > asc["wB_1b"] and asc["nB_1"] > asc["wB_1c"]
    # descending reading inverts both pairs
    assert desc["wB_1a"] < desc["wB_1b"] and desc["nB_1"] < desc["wB_1c"]
    assert ev["spearman"]["ascending"] > 0.5 > 0 > ev["spearman"]["descending"]
    for name in sp.NAMED_SUBNETS:
        assert asc[name] == count_macs_and_weights(sp.named_arch_spec(name, SPACE, 1000))[0]


def test_bad_subnets() -> None:
    with pytest.raises(ConfigError, match="unknown subnet"):
        sp.named_arch_spec("B_9", SPACE, 10)
    with pytest.raises(ConfigError, match="needs 5 d"):
        sp.ofa_to_arch_spec([0, 0], [0] * 6, [0.25], SPACE, 10)
    spec = resnet50_spec(10)
    spec["stem"] = 40
    with pytest.raises(ConfigError, match="not one of"):
        sp.nncf_from_arch_spec(spec, SPACE)
    spec = resnet50_spec(10)
    spec["stages"][2]["blocks"][1]["skip"] = True
    with pytest.raises(ConfigError, match="not skippable"):
        sp.nncf_from_arch_spec(spec, SPACE)


@pytest.mark.parametrize(("groups", "blocks"), [(0, 0), (37, 0), (36, 6), (37, 12)])
def test_search_space_check_fails_hard(groups: int, blocks: int) -> None:
    fake = {"width_groups": [{}] * groups, "blocks": [{}] * blocks}
    with pytest.raises(SupernetError, match=f"{groups} width groups and {blocks} skippable blocks"):
        check_search_space(fake, {"width_groups": 37, "skippable_blocks": 6})
    check_search_space(SPACE, {"width_groups": 37, "skippable_blocks": 6})
