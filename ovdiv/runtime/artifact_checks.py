"""Check a deployed artifact's files before a runtime parses them, so errors name the real cause.

OpenVINO reports a truncated ``.bin`` as ``Incorrect weights in bin file!`` under a line about
``core.cpp``, an empty ``.onnx`` as "unable to read the model", and a random-bytes ``.onnx`` makes its
TensorFlow frontend's protobuf parser print ``Error parsing text-format tensorflow.GraphDef`` lines
straight to the process's stderr (file descriptor 2, below Python) before any exception reaches us.
These checks read the files first and say what is wrong in one line naming the file:

* :func:`check_ir_files` — the ``.xml`` parses as XML with a ``<net>`` root, and the ``.bin`` exists,
  is not empty and has exactly the byte count the IR's ``Const`` layers address (``offset + size``).
  A shorter file is *truncated*; a longer one belongs to another ``.xml`` (OpenVINO would read the
  wrong weights without complaint when the offsets happen to fit).
* :func:`check_onnx_file` — the file is not empty and parses as an ``onnx.ModelProto`` with a graph.
* :func:`quiet_native_stderr` — silences file descriptor 2 around a native parse and hands back what
  was printed there (logged at DEBUG), for the cases no pre-check can foresee.

Written by hand: neither OpenVINO nor onnx offers a "validate without printing" entry point.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

from ovdiv.errors import MemberError

__all__ = ["check_ir_files", "check_onnx_file", "native_error_reason", "quiet_native_stderr"]

log = logging.getLogger("ovdiv")

_FIX = "re-export it with ovdiv export, or copy the artifact again"


def check_ir_files(xml: Path) -> Path:
    """Check an OpenVINO IR's ``.xml`` and its ``.bin``; return the ``.bin`` path.

    Raises:
        MemberError: missing, empty or non-XML ``.xml``; missing, empty, truncated or size-mismatched
            ``.bin`` (the message gives both byte counts).
    """
    weights = xml.with_suffix(".bin")
    if xml.stat().st_size == 0:
        raise MemberError(f"member {xml}: the IR file is empty (0 bytes)", _FIX)
    try:
        root = ET.parse(xml).getroot()
    except ET.ParseError as exc:
        raise MemberError(f"member {xml} is not an OpenVINO IR: not well-formed XML ({exc})", _FIX) from None
    if root.tag != "net":
        raise MemberError(f"member {xml} is not an OpenVINO IR (XML root <{root.tag}>, expected <net>)", _FIX)
    needed = 0
    for layer in root.iter("layer"):
        data = layer.find("data")
        if data is None or "offset" not in data.attrib or "size" not in data.attrib:
            continue
        try:
            needed = max(needed, int(data.attrib["offset"]) + int(data.attrib["size"]))
        except ValueError:
            raise MemberError(
                f"member {xml}: layer {layer.get('name')!r} has a non-integer weights offset/size", _FIX
            ) from None
    if not weights.is_file():
        raise MemberError(f"member {xml}: weights file {weights.name} is missing", "keep the .bin next to the .xml")
    have = weights.stat().st_size
    if have == needed:
        return weights
    if have == 0:
        raise MemberError(f"member {xml}: weights file {weights} is empty (0 bytes; the IR needs {needed})", _FIX)
    if have < needed:
        raise MemberError(
            f"member {xml}: weights file {weights} is truncated ({have} bytes; the IR's constants need {needed})",
            _FIX,
        )
    raise MemberError(
        f"member {xml}: weights file {weights} has {have} bytes but the IR's constants end at byte {needed}; "
        f"the .bin does not belong to this .xml",
        _FIX,
    )


def check_onnx_file(path: Path) -> None:
    """Check that ``path`` is a non-empty ONNX ``ModelProto`` with a graph (parsed with the onnx package).

    Raises:
        MemberError: empty file, protobuf decode error, or a message without graph nodes.
    """
    if path.stat().st_size == 0:
        raise MemberError(f"member {path}: the ONNX file is empty (0 bytes)", _FIX)
    import onnx
    from google.protobuf.message import DecodeError

    try:
        with quiet_native_stderr():
            model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise MemberError(
            f"member {path} is not an ONNX model (protobuf decoding failed: {native_error_reason(exc)})", _FIX
        ) from None
    if len(model.graph.node) == 0 or model.ir_version <= 0:
        raise MemberError(f"member {path} is not an ONNX model (no graph nodes / no IR version in the file)", _FIX)


def native_error_reason(exc: BaseException) -> str:
    """The informative line of a runtime's multi-line exception (not ``Exception from src/...cpp:84:``)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    useful = [ln for ln in lines if not (ln.startswith("Exception from ") or ln.startswith("Check '"))]
    text = (useful or lines or [type(exc).__name__])[-1]
    return text[:200]


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[list[str]]:
    """Redirect file descriptor 2 to a temporary file for the duration; yield a list that receives its lines.

    Native libraries (protobuf via OpenVINO's frontends, abseil logging) write to fd 2 directly, so
    ``sys.stderr`` redirection cannot catch them. What they printed is logged at DEBUG.
    """
    captured: list[str] = []
    with contextlib.suppress(OSError, ValueError, AttributeError):
        sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 at all
        yield captured
        return
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode("utf-8", "replace")
            captured.extend(ln for ln in text.splitlines() if ln.strip())
            if captured:
                log.debug("native stderr suppressed during model parsing:\n%s", "\n".join(captured))
