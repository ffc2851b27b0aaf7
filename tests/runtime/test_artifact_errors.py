"""Broken artifacts give one line naming the file and the real cause, and nothing else on stderr (issue 19)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ovdiv.errors import MemberError
from ovdiv.runtime import load_member
from ovdiv.runtime.artifact_checks import quiet_native_stderr


@pytest.fixture(scope="module")
def broken(tiny_pool, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("broken")
    out: dict[str, Path] = {}
    src = Path(tiny_pool.ir["m0"])
    for name, cut in (("trunc", 0.5), ("longer", 2.0), ("emptybin", 0.0)):
        xml = root / f"{name}.xml"
        shutil.copy(src, xml)
        data = src.with_suffix(".bin").read_bytes()
        xml.with_suffix(".bin").write_bytes(data[: int(len(data) * cut)] if cut <= 1 else data + data)
        out[name] = xml
    rnd = root / "random.onnx"
    rnd.write_bytes(os.urandom(8192))
    out["random_onnx"] = rnd
    (root / "empty.onnx").write_bytes(b"")
    out["empty_onnx"] = root / "empty.onnx"
    (root / "empty.xml").write_bytes(b"")
    (root / "empty.bin").write_bytes(b"\0" * 8)
    out["empty_xml"] = root / "empty.xml"
    (root / "garbage.pt").write_bytes(os.urandom(512))
    out["garbage_pt"] = root / "garbage.pt"
    (root / "empty.pt").write_bytes(b"")
    out["empty_pt"] = root / "empty.pt"
    return out


CASES = [
    ("trunc", r"weights file .*trunc\.bin is truncated \(\d+ bytes; the IR's constants need \d+\)"),
    ("longer", r"longer\.bin has \d+ bytes but the IR's constants end at byte \d+; the \.bin does not belong"),
    ("emptybin", r"emptybin\.bin is empty"),
    ("random_onnx", r"random\.onnx is not an ONNX model \(protobuf decoding failed"),
    ("empty_onnx", r"empty\.onnx: the ONNX file is empty"),
    ("empty_xml", r"empty\.xml: the IR file is empty"),
    ("garbage_pt", r"garbage\.pt is corrupt or not a torch file"),
    ("empty_pt", r"empty\.pt is empty"),
]


@pytest.mark.parametrize(("key", "pattern"), CASES)
def test_library_error_names_the_cause(broken: dict[str, Path], key: str, pattern: str) -> None:
    with pytest.raises(MemberError, match=pattern):
        load_member(broken[key])


@pytest.mark.parametrize("key", ["trunc", "random_onnx", "garbage_pt"])
def test_cli_one_line_nothing_else_on_stderr(broken: dict[str, Path], key: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ovdiv", "evaluate", "--ensemble", str(broken[key]), "--dataset", "demo",
         "--limit", "8", "--attribution", "none", "--cache-dir", str(tmp_path), "--out", str(tmp_path / "o")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr  # no protobuf "tensorflow.GraphDef" lines, no warnings, no traceback
    assert lines[0].startswith("error: member ") and broken[key].name in lines[0]


def test_random_onnx_on_onnxruntime_backend(broken: dict[str, Path]) -> None:
    with pytest.raises(MemberError, match=r"random\.onnx is not an ONNX model"):
        load_member(broken["random_onnx"], backend="onnxruntime")


def test_quiet_native_stderr_captures_fd2() -> None:
    with quiet_native_stderr() as captured:
        os.write(2, b"native noise\n")
    assert captured == ["native noise"]
