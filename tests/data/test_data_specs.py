from __future__ import annotations

import pytest

from ovdiv.data import CBAR_CORRUPTIONS, corruptions, expand_spec, parse_spec
from ovdiv.errors import DataError


def test_base_specs() -> None:
    assert parse_spec("imagenet").kind == "imagenet"
    assert parse_spec("imagenetv2").kind == "imagenetv2"
    d = parse_spec("demo:train")
    assert (d.kind, d.split, d.canonical) == ("demo", "train", "demo:train")
    assert parse_spec("demo:test").canonical == "demo"
    f = parse_spec("imagefolder:/x/y@z")  # a path may contain '@'
    assert (f.kind, f.path) == ("imagefolder", "/x/y@z")


@pytest.mark.parametrize(
    ("text", "name", "severity", "base", "canonical"),
    [
        ("lines1.6", "lines", 1.6, "imagenet", "lines1.6"),
        ("plasma4.0", "plasma_noise", 4.0, "imagenet", "plasma_noise4.0"),
        ("plasma4", "plasma_noise", 4.0, "imagenet", "plasma_noise4.0"),
        ("checkerboard4.0", "checkerboard_cutout", 4.0, "imagenet", "checkerboard_cutout4.0"),
        ("waterdrop7.0@demo", "water_drop", 7.0, "demo", "water_drop7.0@demo"),
        ("lines1.6@demo:train", "lines", 1.6, "demo", "lines1.6@demo:train"),
        ("plasma4.0@imagefolder:/x", "plasma_noise", 4.0, "imagefolder", "plasma_noise4.0@imagefolder:/x"),
        ("plasma_noise4.75@imagenet", "plasma_noise", 4.75, "imagenet", "plasma_noise4.75"),
    ],
)
def test_corrupted_specs(text: str, name: str, severity: float, base: str, canonical: str) -> None:
    s = parse_spec(text)
    assert s.kind == "corrupted" and s.corruption == name and s.severity == severity
    assert s.base is not None and s.base.kind == base
    assert s.canonical == canonical
    assert parse_spec(s.canonical).canonical == canonical  # canonical form is a fixed point


def test_cbar_list_matches_the_corruptions_registry() -> None:
    assert tuple(CBAR_CORRUPTIONS) == tuple(corruptions.OFFICIAL_CBAR)


def test_full_cbar_expansion() -> None:
    assert set(CBAR_CORRUPTIONS) <= set(corruptions.available())
    full = expand_spec("cbar")
    assert len(full) == 50 and len(set(full)) == 50
    assert full[0].startswith("caustic_refraction") and full[-1].startswith("brownish_noise")
    for name in CBAR_CORRUPTIONS:
        table = corruptions.severity_table(name)
        assert expand_spec(f"cbar:{name}") == [f"{name}{float(m)!r}" for m in table]
        assert all(parse_spec(s).severity == float(m) for s, m in zip(expand_spec(f"cbar:{name}"), table, strict=True))


def test_cbar_expansion() -> None:
    assert expand_spec("cbar:plasma@demo") == [
        "plasma_noise4.75@demo",
        "plasma_noise7.0@demo",
        "plasma_noise8.5@demo",
        "plasma_noise9.25@demo",
        "plasma_noise10.0@demo",
    ]
    assert expand_spec("cbar:checkerboard:3") == ["checkerboard_cutout4.0"]
    assert expand_spec("lines1.6") == ["lines1.6"]


def test_errors_are_one_clear_line() -> None:
    with pytest.raises(DataError) as exc:
        parse_spec("nosuchthing2.0")
    msg = str(exc.value)
    assert "\n" not in msg and "lines" in msg and "plasma_noise" in msg  # lists the valid names
    with pytest.raises(DataError, match="outside"):
        parse_spec("lines11")
    with pytest.raises(DataError, match=r"outside 1\.\.5"):
        parse_spec("cbar:plasma:6")
    with pytest.raises(DataError, match="not an official"):
        parse_spec("cbar:lines")
    with pytest.raises(DataError, match="unknown base"):
        parse_spec("lines1.6@imagenet-val")
    with pytest.raises(DataError, match="unknown base"):
        parse_spec("lines1.6@cbar")
    with pytest.raises(DataError):
        parse_spec("")
    with pytest.raises(DataError, match="imagefolder"):
        parse_spec("imagefolder:")
