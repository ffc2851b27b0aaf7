from __future__ import annotations

import json

import pytest

from ovdiv.atomic import atomic_open, write_json
from ovdiv.cards import ModelCard, card_path_for, sha256_file
from ovdiv.errors import ConfigError


def test_card_round_trip(tmp_path) -> None:
    card = ModelCard(name="m", format="ir", num_classes=10, input_size=(64, 64), arch_args={"width": 8})
    path = card.save(tmp_path / "m.json")
    again = ModelCard.load(path)
    assert again == card


def test_card_rejects_unknown_keys(tmp_path) -> None:
    (tmp_path / "m.json").write_text(json.dumps({"name": "m", "format": "ir", "num_clases": 3}))
    with pytest.raises(ConfigError, match="num_clases"):
        ModelCard.load(tmp_path / "m.json")


def test_card_rejects_bad_json(tmp_path) -> None:
    (tmp_path / "m.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        ModelCard.load(tmp_path / "m.json")


def test_card_path_and_sha(tmp_path) -> None:
    (tmp_path / "a.xml").write_bytes(b"abc")
    assert card_path_for(tmp_path / "a.xml") == tmp_path / "a.json"
    assert sha256_file(tmp_path / "a.xml") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_atomic_write_leaves_old_file_on_failure(tmp_path) -> None:
    target = tmp_path / "x.json"
    write_json(target, {"a": 1})
    with pytest.raises(RuntimeError), atomic_open(target, "w") as fh:
        fh.write("partial")
        raise RuntimeError("boom")
    assert json.loads(target.read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]


def test_atomic_files_get_umask_permissions(tmp_path) -> None:
    import os

    old = os.umask(0o022)
    try:
        write_json(tmp_path / "r.json", {"a": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o644
