"""Every shell command shown in the documentation is checked (issue 19).

* Default run: every ``ovdiv`` command line in a ```bash block of ``docs/`` parses against the real
  command line (unknown commands or options fail), and every command CI runs instead (``pip install``,
  ``pytest``, ``mkdocs build``, ``python -m build``) appears in ``.ci/run``.
* ``slow``: every ```bash block is executed, page by page in the site's navigation order, in one
  scratch folder (``models/`` and ``supernet_configs/`` linked in, ``$OVDIV_CACHE`` private), and every
  ```python block is run there too. ``TINY`` lists the only commands run with extra arguments.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest

from ovdiv.cli import cli

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
CI_RUN = ROOT / ".ci" / "run"

#: Commands run with smaller arguments by the slow test (prefix -> appended arguments).
TINY = {"ovdiv demo": ["--epochs", "1", "--train-images", "256", "--eval-images", "48"]}
#: Commands CI runs (`.ci/run`), not this test.
CI_ONLY = ("pip install", "pytest", "mkdocs build", "python -m build", "pre-commit install")
#: Shell builtins / tools the docs use around ovdiv.
SHELL_WORDS = {"ls", "cat", "mkdir", "python", "wait", "if", "else", "fi", "code=$?;", "echo", "test", "NO_COLOR=1"}


def _pages() -> list[Path]:
    """docs/*.md in navigation order (mkdocs.yml), then any page not in the nav."""
    nav = re.findall(r":\s*([\w/.-]+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), re.M)
    pages = [DOCS / p for p in nav if (DOCS / p).is_file()]
    rest = sorted(p for p in DOCS.rglob("*.md") if p not in pages and p.name != "README.md")
    return pages + rest


def _blocks(page: Path, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", page.read_text(encoding="utf-8"), re.S | re.M)


def _commands(block: str) -> list[str]:
    """Logical lines of a bash block (continuations joined, heredoc bodies and comments dropped)."""
    out, heredoc = [], None
    for line in block.replace("\\\n", " ").splitlines():
        if heredoc is not None:
            if line.strip() == heredoc:
                heredoc = None
            continue
        m = re.search(r"<<'?(\w+)'?", line)
        if m:
            heredoc = m.group(1)
        line = line.split(" #")[0].strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


def _ovdiv_invocations(line: str) -> list[list[str]]:
    """The ovdiv argument lists in a shell line (commands separated by ``&& || ; | &``, redirections cut)."""
    lex = shlex.shlex(line.replace("$ARGS", "ARGS_PLACEHOLDER"), posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    found: list[list[str]] = []
    words: list[str] = []
    redirect = False
    for tok in [*lex, ";"]:
        if tok in ("&&", "||", ";", "|", "&", ";;"):
            words = [w for w in words if not re.match(r"^\w+=", w)]
            while words and words[0] in ("if", "then", "!"):
                words = words[1:]
            if words and words[0] == "ovdiv":
                found.append(words[1:])
            words, redirect = [], False
        elif set(tok) <= set("<>"):
            redirect = True
            if words and words[-1].isdigit():
                words.pop()  # the fd of 2>
        elif not redirect:
            words.append(tok)
    return found


ALL_LINES = [(p, line) for p in _pages() for b in _blocks(p, "bash") for line in _commands(b)]


def test_docs_have_commands() -> None:
    assert len(ALL_LINES) > 30
    assert any("ovdiv demo" in line for _, line in ALL_LINES)


def _rest(ctx: click.Context) -> list[str]:
    protected = getattr(ctx, "_protected_args", None)
    if protected is None:
        protected = ctx.protected_args
    return [*protected, *ctx.args]


def _parse(args: list[str]) -> None:
    """Resolve the subcommand chain and parse each level's options like click would, without running it."""
    args = [a for a in args if a != "ARGS_PLACEHOLDER"]
    ctx = cli.make_context("ovdiv", list(args), resilient_parsing=False)
    cmd: click.Command = cli
    while isinstance(cmd, click.Group):
        rest = _rest(ctx)
        if not rest:
            break
        name, sub, rest = cmd.resolve_command(ctx, rest)
        assert sub is not None, f"unknown command {name!r}"
        cmd = sub
        ctx = cmd.make_context(name or "", list(rest), parent=ctx, resilient_parsing=False)


@pytest.mark.parametrize(("page", "line"), ALL_LINES, ids=[f"{p.stem}:{i}" for i, (p, _) in enumerate(ALL_LINES)])
def test_every_command_parses(page: Path, line: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if line.startswith(CI_ONLY):
        assert line in CI_RUN.read_text(), f"{page.name}: {line!r} is not run by .ci/run"
        return
    invocations = _ovdiv_invocations(line)
    first = line.split()[0]
    assert invocations or first in SHELL_WORDS or first.startswith(("ARGS=", "ovdiv")), (
        f"{page.name}: {line!r} is neither an ovdiv command nor a known shell step"
    )
    for args in invocations:
        try:
            _parse(args)
        except click.exceptions.UsageError as exc:
            pytest.fail(f"{page.name}: `ovdiv {' '.join(args)}` does not parse: {exc.format_message()}")
        except click.exceptions.Exit:
            pass  # --help / --version


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("docs_sandbox")
    for name in ("models", "supernet_configs"):
        (d / name).symlink_to(ROOT / name)
    bin_dir = d / ".bin"
    bin_dir.mkdir()
    shim = bin_dir / "ovdiv"  # the ovdiv of this interpreter, with the TINY arguments appended
    cases = "".join(f'  "{k.split()[1]}") set -- "$@" {" ".join(v)};;\n' for k, v in TINY.items())
    shim.write_text(f'#!/usr/bin/env bash\ncase "$1" in\n{cases}esac\nexec {sys.executable} -m ovdiv "$@"\n')
    shim.chmod(0o755)
    return d


def _env(sandbox: Path) -> dict[str, str]:
    env = {**os.environ, "OVDIV_CACHE": str(sandbox / ".cache"), "PYTHONPATH": str(ROOT)}
    env["PATH"] = f"{sandbox / '.bin'}:{Path(sys.executable).parent}:{env['PATH']}"
    env.pop("OVDIV_DATA", None)
    return env


RUN_PAGES = [p for p in _pages() if _blocks(p, "bash") or _blocks(p, "python")]


@pytest.mark.slow
@pytest.mark.parametrize("page", RUN_PAGES, ids=[str(p.relative_to(DOCS)) for p in RUN_PAGES])
def test_page_commands_run(page: Path, sandbox: Path) -> None:
    """Blocks run in page order; pages in navigation order share the sandbox (the demo comes first)."""
    text = page.read_text(encoding="utf-8")
    blocks = [(m.group(1), m.group(2)) for m in re.finditer(r"^```(bash|python)\n(.*?)^```", text, re.S | re.M)]
    for lang, body in blocks:
        if lang == "bash":
            script = "\n".join(
                ln for ln in body.splitlines() if not ln.strip().startswith(CI_ONLY)
            )  # CI runs those (see test_every_command_parses)
            cmd = ["bash", "-euo", "pipefail", "-c", script]
        else:
            cmd = [sys.executable, "-c", body]
        proc = subprocess.run(cmd, cwd=sandbox, env=_env(sandbox), capture_output=True, text=True, check=False)
        assert proc.returncode == 0, f"{page.name}: block failed ({proc.returncode}):\n{body}\n{proc.stderr[-3000:]}"
