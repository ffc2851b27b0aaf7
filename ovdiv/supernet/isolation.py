"""Run super-network work in a child process (``python -m ovdiv.supernet``) and talk to it over a pipe.

Why: nncf's BootstrapNAS needs ``NNCF_TORCH_LEGACY_TRACING=1`` set before ``nncf.torch`` is imported,
and the setting patches torch for the whole process (NOTES §3 #1, §8 risk 4). The caller's process
may already have imported nncf (INT8 export uses ``nncf.quantize`` in FunctionHook mode) or may not
want torch patched, so every public :mod:`ovdiv.supernet` call spawns a fresh interpreter with the
variable set, sends it one JSON request on stdin and reads JSON lines from a dedicated pipe:

- ``{"type": "progress", "task", "completed", "total", "detail"}`` -> the caller's ProgressCallback;
- ``{"type": "log", "name", "level", "message"}`` -> re-emitted on the caller's ``ovdiv.*`` logger;
- ``{"type": "result", "value"}`` -> the function's return value;
- ``{"type": "error", "kind", "message", "hint"}`` -> re-raised as the same :class:`OvdivError`
  subclass (one line for the CLI); any other exception in the child comes back as a
  :class:`SupernetChildError` carrying the child's traceback (a bug, not a user error).

The child's stdout/stderr (nncf prints there) are collected and logged at DEBUG; their tail is
attached to crash reports.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable
from typing import IO, Any

from ovdiv import errors
from ovdiv.errors import OvdivError, SupernetError
from ovdiv.types import Progress, ProgressCallback, no_progress

from .nncf_env import LEGACY_TRACING_ENV

__all__ = ["run_isolated", "child_main", "SupernetChildError"]

log = logging.getLogger("ovdiv.supernet")
FD_ENV = "OVDIV_SUPERNET_FD"


class SupernetChildError(RuntimeError):
    """The super-network child process crashed with an unexpected exception (a bug); has its traceback."""


def _error_class(kind: str) -> type[OvdivError]:
    cls = getattr(errors, kind, None)
    return cls if isinstance(cls, type) and issubclass(cls, OvdivError) else SupernetError


def run_isolated(command: str, kwargs: dict[str, Any], *, progress: ProgressCallback | None = None) -> Any:
    """Run ``ovdiv.supernet.engine.<command>_in_process(**kwargs)`` in a fresh interpreter.

    Args:
        command: ``train`` | ``search`` | ``extract`` | ``info``.
        kwargs: JSON-serialisable keyword arguments.
        progress: Receives the child's progress events.

    Returns:
        The child's (JSON) result.

    Raises:
        OvdivError: the subclass the child raised (user error).
        SupernetChildError: the child crashed (bug) or died (killed, out of memory).
    """
    progress = progress or no_progress
    r_fd, w_fd = os.pipe()
    env = dict(os.environ)
    env[LEGACY_TRACING_ENV] = "1"
    env[FD_ENV] = str(w_fd)
    env.setdefault("PYTHONUNBUFFERED", "1")
    request = json.dumps(
        {"command": command, "kwargs": kwargs, "log_level": logging.getLogger("ovdiv").getEffectiveLevel()}
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "ovdiv.supernet"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        pass_fds=(w_fd,),
        env=env,
    )
    os.close(w_fd)
    tail: collections.deque[str] = collections.deque(maxlen=60)
    child_log = logging.getLogger("ovdiv.supernet.child")

    def pump(stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip()
            tail.append(line)
            child_log.debug("%s", line)

    assert proc.stdout is not None and proc.stdin is not None
    reader = threading.Thread(target=pump, args=(proc.stdout,), daemon=True)
    reader.start()
    proc.stdin.write(request.encode("utf-8"))
    proc.stdin.close()
    result: Any = None
    error: dict[str, Any] | None = None
    got_result = False
    try:
        with os.fdopen(r_fd, "r", encoding="utf-8") as messages:
            for line in messages:
                try:
                    msg = json.loads(line)
                except json.JSONDecodeError:
                    continue
                kind = msg.get("type")
                if kind == "progress":
                    progress(Progress(msg["task"], int(msg["completed"]), msg.get("total"), msg.get("detail", "")))
                elif kind == "log":
                    logging.getLogger(msg.get("name") or "ovdiv.supernet").log(int(msg["level"]), "%s", msg["message"])
                elif kind == "result":
                    result, got_result = msg.get("value"), True
                elif kind == "error":
                    error = msg
    except BaseException:  # interrupted (Ctrl-C) or a failing callback: do not leave the child running
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
    rc = proc.wait()
    reader.join(timeout=5)
    if error is not None:
        if error.get("kind") == "__bug__":
            raise SupernetChildError(f"supernet {command} crashed in its child process:\n{error.get('traceback', '')}")
        raise _error_class(str(error.get("kind")))(str(error.get("message")), error.get("hint"))
    if not got_result:
        raise SupernetChildError(
            f"supernet {command} child process exited with code {rc} without a result; last output:\n" + "\n".join(tail)
        )
    return result


class _PipeLogHandler(logging.Handler):
    def __init__(self, send: Callable[[dict[str, Any]], None]) -> None:
        super().__init__()
        self.send = send

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.send({"type": "log", "name": record.name, "level": record.levelno, "message": record.getMessage()})
        except Exception:  # pragma: no cover - logging must never break the work
            self.handleError(record)


def child_main() -> int:
    """Entry point of ``python -m ovdiv.supernet``: one request on stdin, messages on fd $OVDIV_SUPERNET_FD."""
    fd = os.environ.get(FD_ENV)
    out = os.fdopen(int(fd), "w", encoding="utf-8", buffering=1) if fd else sys.stdout

    def send(msg: dict[str, Any]) -> None:
        out.write(json.dumps(msg, default=str) + "\n")
        out.flush()

    try:
        request = json.loads(sys.stdin.read())
        command = request["command"]
        kwargs = request.get("kwargs", {})
    except (json.JSONDecodeError, KeyError) as exc:
        send({"type": "error", "kind": "SupernetError", "message": f"bad request to the supernet child: {exc}"})
        return 2
    root = logging.getLogger("ovdiv")
    root.setLevel(int(request.get("log_level", logging.WARNING)))
    root.addHandler(_PipeLogHandler(send))
    root.propagate = False

    def progress(ev: Progress) -> None:
        send({"type": "progress", "task": ev.task, "completed": ev.completed, "total": ev.total, "detail": ev.detail})

    try:
        from . import engine

        fn = getattr(engine, f"{command}_in_process", None)
        if fn is None:
            raise SupernetError(f"unknown supernet command {command!r}")
        value = fn(**kwargs, progress=progress)
        send({"type": "result", "value": value})
        return 0
    except OvdivError as exc:
        send({"type": "error", "kind": type(exc).__name__, "message": exc.message, "hint": exc.hint})
        return 2
    except BaseException:
        send({"type": "error", "kind": "__bug__", "traceback": traceback.format_exc()})
        return 1
