"""Every reference record of the original ImageNet-C-bar code is reproduced bit-exactly.

Reads ``../shared/reference/cbar`` (refs.json: 117 records of the paper's four settings and the official
plasma/checkerboard severities) and ``cbar/more`` (refs_more.json: all official corruptions at 5 severities
and the candidate-pool ones at level 5) through the ``shared_reference`` fixture; skips when absent. Each
record is checked twice: ``np.random.seed(seed)``-equivalent parameter draws must equal its
``sampled_params`` exactly, and the output must equal its ``.npy`` byte for byte.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ovdiv.data.corruptions import OFFICIAL_CBAR, apply_parameters, available, sample_parameters

# transform_finder names used by the reference records -> ovdiv names.
RECORD_NAMES = {"pinch_and_twirl": "pinch_and_twirl_v2", "fish_eye": "fish_eye_v2"}
PAPER = ["lines", "plasma_noise", "checkerboard_cutout", "water_drop"]


@functools.lru_cache(maxsize=4)
def load_records(json_path: str) -> tuple[dict[str, Any], ...]:
    return tuple(json.loads(Path(json_path).read_text())["records"])


@functools.lru_cache(maxsize=16)
def load_input(path: str) -> np.ndarray:
    return np.load(path)


def jsonable(value: Any) -> Any:
    """The records' encoding: ndarrays as {ndarray, dtype, shape}, tuples as lists."""
    if isinstance(value, np.ndarray):
        return {"ndarray": value.tolist(), "dtype": str(value.dtype), "shape": list(value.shape)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple | list):
        return [jsonable(v) for v in value]
    return value


def decode(value: Any) -> Any:
    if isinstance(value, dict) and "ndarray" in value:
        return np.array(value["ndarray"], dtype=value["dtype"]).reshape(value["shape"])
    return value


def check_record(folder: Path, rec: dict[str, Any]) -> list[str]:
    """Mismatch descriptions for one record (empty = reproduced bit-exactly, parameters included)."""
    name = RECORD_NAMES.get(rec["corruption"], rec["corruption"])
    image = load_input(str(folder / "inputs" / f"{rec['image']}.npy"))
    expected = np.load(folder / rec["output_npy"])
    label = f"{name} sev={rec['severity']} {rec['image']} seed={rec['seed']}"
    problems = []
    params = sample_parameters(name, rec["severity"], rec["seed"], im_size=image.shape[0])
    got = {k: jsonable(v) for k, v in params.items()}
    if got != rec["sampled_params"]:
        problems.append(f"{label}: params {got} != {rec['sampled_params']}")
    recorded = {k: decode(v) for k, v in rec["sampled_params"].items()}
    out = apply_parameters(image, name, recorded)  # params -> pixels, from the record itself
    if out.shape != expected.shape or out.dtype != expected.dtype:
        problems.append(f"{label}: shape/dtype {out.shape}/{out.dtype}")
    else:
        diff = np.abs(out.astype(np.int16) - expected.astype(np.int16))
        if diff.any():
            problems.append(f"{label}: {int((diff > 0).sum())} values differ, max |diff| {int(diff.max())}")
    return problems


def select(records: tuple[dict[str, Any], ...], name: str, **match: Any) -> list[dict[str, Any]]:
    out = [r for r in records if RECORD_NAMES.get(r["corruption"], r["corruption"]) == name]
    return [r for r in out if all(r.get(k) == v for k, v in match.items())]


@pytest.mark.parametrize("name", PAPER)
def test_refs_json_records_bit_exact(shared_reference: Path, name: str) -> None:
    folder = shared_reference / "cbar"
    records = select(load_records(str(folder / "refs.json")), name)
    assert records, f"no {name} records in refs.json"
    problems = [p for rec in records for p in check_record(folder, rec)]
    assert not problems, "\n".join(problems)


def test_refs_json_has_117_records(shared_reference: Path) -> None:
    records = load_records(str(shared_reference / "cbar" / "refs.json"))
    assert len(records) == 117
    assert {r["corruption"] for r in records} == set(PAPER)


def _more(shared_reference: Path) -> tuple[Path, tuple[dict[str, Any], ...]]:
    folder = shared_reference / "cbar" / "more"
    return folder, load_records(str(folder / "refs_more.json"))


@pytest.mark.parametrize("name", OFFICIAL_CBAR)
def test_refs_more_official_one_severity(shared_reference: Path, name: str) -> None:
    """Default run: severity index 3 of every official corruption, both seeds, all three inputs."""
    assert name in available()
    folder, records = _more(shared_reference)
    chosen = select(records, name, severity_index=3)
    assert len(chosen) == 6
    problems = [p for rec in chosen for p in check_record(folder, rec)]
    assert not problems, "\n".join(problems)


@pytest.mark.slow
@pytest.mark.parametrize("name", OFFICIAL_CBAR)
def test_refs_more_official_all_severities(shared_reference: Path, name: str) -> None:
    assert name in available()
    folder, records = _more(shared_reference)
    chosen = select(records, name, set="official")
    assert len(chosen) == 30
    problems = [p for rec in chosen for p in check_record(folder, rec)]
    assert not problems, "\n".join(problems)


def test_refs_more_candidate_pool(shared_reference: Path) -> None:
    """Every implemented candidate-pool corruption at its level-5 reference setting."""
    folder, records = _more(shared_reference)
    pool = [r for r in records if r["set"] == "candidate"]
    implemented = [r for r in pool if RECORD_NAMES.get(r["corruption"], r["corruption"]) in available()]
    assert implemented, "no candidate-pool corruption implemented"
    problems = [p for rec in implemented for p in check_record(folder, rec)]
    assert not problems, "\n".join(problems)
