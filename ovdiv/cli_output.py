"""How the ``ovdiv`` command line writes: consoles, JSON documents, progress and exit codes.

Part of the CLI layer (L4): only :mod:`ovdiv.cli` imports it. The rules it implements:

* **stdout carries the result only.** Tables and result lines go to stdout; with ``--json`` a command
  writes exactly one JSON document there and nothing else. Logging, progress and errors go to stderr.
* **Logs are not terminals.** Without a terminal (CI logs, pipes, ``subprocess`` with ``stdout=PIPE``)
  rich would assume 80 columns and truncate (``no matchi…``) or fold table cells one word per line;
  here the consoles get a very wide virtual width instead, so tables render at their natural width.
* **Progress** is drawn on stderr when it is a terminal; without one it is off unless asked for with
  ``ovdiv --progress ...`` (then one plain line per completed task, per ~10 % step).
* **NO_COLOR** (https://no-color.org) turns colours off even on a terminal.
* **Exit codes**: :data:`EXIT_CODES`.

The consoles are rebuilt at every invocation (:func:`configure`), so a test that runs the CLI with
click's ``CliRunner`` gets consoles bound to the runner's streams, not to the streams seen at import time.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
from collections.abc import Iterator
from typing import Any, cast

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from ovdiv.types import Progress as ProgressEvent
from ovdiv.types import ProgressCallback

__all__ = [
    "EXIT_CODES",
    "EXIT_CODES_HELP",
    "configure",
    "console",
    "emit_json",
    "err_console",
    "log_handler",
    "progress_bar",
]

log = logging.getLogger("ovdiv")

#: Exit status of every ``ovdiv`` command.
EXIT_CODES: dict[int, str] = {
    0: "success (certify: the policy passed)",
    1: "certify: the policy failed (evaluation itself succeeded)",
    2: "bad input: unusable file, option, dataset spec or policy (one line on stderr says which and why)",
    130: "interrupted (Ctrl-C)",
}

#: The exit-code paragraph shown in ``ovdiv --help`` (click's ``\b`` keeps the lines as they are).
EXIT_CODES_HELP = "\b\nExit codes:\n" + "\n".join(f"  {code:<3}  {meaning}" for code, meaning in EXIT_CODES.items())

# Width given to a console that is not a terminal: wide enough that no table of ovdiv's is truncated
# or folded; rich pads nothing to it (tables take their natural width).
_PIPE_WIDTH = 100_000


class _State:
    out: Console = Console()
    err: Console = Console(stderr=True)
    progress: bool | None = None  # None: on iff stderr is a terminal


_state = _State()


class _ConsoleProxy:
    """Forwards to the console of the current invocation (see :func:`configure`)."""

    def __init__(self, which: str) -> None:
        self._which = which

    def __getattr__(self, name: str) -> Any:
        return getattr(getattr(_state, self._which), name)


#: stdout console (results). Typed as a Console; it forwards to the current invocation's console.
console = cast(Console, _ConsoleProxy("out"))
#: stderr console (errors, logging, progress).
err_console = cast(Console, _ConsoleProxy("err"))


def _make_console(stderr: bool) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    no_color = bool(os.environ.get("NO_COLOR"))
    if tty:
        return Console(stderr=stderr, no_color=no_color)
    # not a terminal: no colours, no cursor tricks, no 80-column wrapping
    return Console(stderr=stderr, no_color=True, color_system=None, width=_PIPE_WIDTH, soft_wrap=False)


def configure(*, progress: bool | None = None) -> None:
    """Bind fresh consoles to the current stdout/stderr and set the progress mode.

    Args:
        progress: True forces progress lines on stderr, False turns them off, None (default) shows
            progress bars iff stderr is a terminal.
    """
    _state.out = _make_console(stderr=False)
    _state.err = _make_console(stderr=True)
    _state.progress = progress


def log_handler() -> logging.Handler:
    """The stderr logging handler: rich's on a terminal, plain ``LEVEL message`` lines otherwise."""
    if _state.err.is_terminal:
        from rich.logging import RichHandler

        return RichHandler(console=_state.err, show_path=False, show_time=False)
    handler = logging.StreamHandler(_StderrProxy())
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    return handler


class _StderrProxy:
    """``sys.stderr`` looked up at write time (click's CliRunner swaps it per invocation)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def emit_json(document: Any) -> None:
    """Write ONE JSON document to stdout (NaN/inf become ``null``; strict JSON, UTF-8)."""
    click.echo(json.dumps(_finite(document), indent=2, allow_nan=False, ensure_ascii=False))


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if hasattr(value, "__fspath__"):
        return os.fspath(value)
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return _finite(value.item())
    return value


@contextlib.contextmanager
def progress_bar(enabled: bool = True) -> Iterator[ProgressCallback]:
    """A :data:`~ovdiv.types.ProgressCallback` for the library, rendered on stderr.

    Terminal: rich progress bars, one per task name. No terminal: nothing, unless ``--progress`` was
    given (then plain lines ``task: 30/100 detail``, one per ~10 % step). Either way the events are
    also logged at INFO when a task completes (visible with ``-v``).
    """
    mode = _state.progress
    tty = _state.err.is_terminal
    if not enabled or mode is False or (mode is None and not tty):
        yield _log_progress
        return
    if not tty:
        yield _plain_progress()
        return
    tasks: dict[str, TaskID] = {}
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[detail]}"),
        console=_state.err,
        transient=False,
    ) as bar:

        def callback(event: ProgressEvent) -> None:
            if event.task not in tasks:
                tasks[event.task] = bar.add_task(event.task, total=event.total, detail=event.detail)
            bar.update(tasks[event.task], completed=event.completed, total=event.total, detail=event.detail)

        yield callback


def _log_progress(event: ProgressEvent) -> None:
    if event.total is not None and event.completed == event.total:
        log.info("%s: %d/%d %s", event.task, event.completed, event.total, event.detail)


def _plain_progress() -> ProgressCallback:
    last_step: dict[str, int] = {}

    def callback(event: ProgressEvent) -> None:
        step = int(10 * event.completed / event.total) if event.total else event.completed
        if last_step.get(event.task) == step:
            return
        last_step[event.task] = step
        total = "?" if event.total is None else str(event.total)
        detail = f" {event.detail}" if event.detail else ""
        print(f"{event.task}: {event.completed}/{total}{detail}", file=sys.stderr, flush=True)
        _log_progress(event)

    return callback
