"""The reader's test: the README, CONTRIBUTING.md and docs/*.md say only what works.

Everything is discovered from the Markdown files, nothing about their content is written here:

- every relative link (``[text](path)``, ``![alt](path)``, a reference definition
  ``[id]: path``, an HTML ``href``/``src``) names a file or directory that exists, relative to
  the file holding it (``#fragment`` and ``?query`` stripped; URLs with a scheme and pure
  ``#anchors`` are not checked);
- every ``trm-jax`` command of a fenced shell block (```bash, ```sh, ```shell, ```console, or
  an untagged block, where only lines starting with ``trm-jax``/``python`` count) parses with
  the command line's own parsers, and its ``--config NAME --config.a.b=v`` overrides apply to
  that config: a renamed option, subcommand, config or key fails here;
- the cheap ones run as written, from the repository root, and exit 0: ``trm-jax config ...``
  and any ``trm-jax ...``, ``python -m MODULE ...`` or ``python SCRIPT ...`` ending in
  ``--help``/``-h``;
- every ```python block compiles; a block whose preceding line is ``<!-- test: run -->`` also
  runs, alone, in a fresh interpreter on the CPU, from the repository root.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUN_MARKER = "<!-- test: run -->"
SHELL_LANGS = {"bash", "sh", "shell", "console", "zsh"}
COMMAND_TIMEOUT_S = 120
SNIPPET_TIMEOUT_S = 300


def doc_files() -> list[Path]:
    """README.md, CONTRIBUTING.md and every Markdown file under docs/."""
    files = [ROOT / "README.md", ROOT / "CONTRIBUTING.md"] + sorted((ROOT / "docs").rglob("*.md"))
    return [f for f in files if f.is_file()]


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


# ------------------------------------------------------------------------------- Markdown


@dataclasses.dataclass(frozen=True)
class Block:
    """A fenced code block: its file, the line number of its first body line, info string, body."""

    path: Path
    line: int
    lang: str
    body: tuple[str, ...]
    runnable: bool  # preceded by RUN_MARKER

    def where(self, offset: int = 0) -> str:
        return f"{rel(self.path)}:{self.line + offset}"


_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([^\s`]*)")  # any indent: fences inside list items


def fenced_blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown file (CommonMark fences: ``` or ~~~, 3 or more)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = len(m.group(1)), m.group(2), m.group(3).lower()
        end = i + 1
        while end < len(lines) and not re.match(rf"^\s*{fence[0]}{{{len(fence)},}}\s*$", lines[end]):
            end += 1
        body = tuple(line[indent:] if line[:indent].isspace() else line.lstrip() for line in lines[i + 1 : end])
        previous = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        blocks.append(Block(path, i + 2, lang, body, previous == RUN_MARKER))
        i = end + 1
    return blocks


def prose(path: Path) -> str:
    """The file's text with its fenced blocks and inline code spans blanked (line numbers kept)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    inside = set()
    for block in fenced_blocks(path):
        inside.update(range(block.line - 2, block.line + len(block.body)))  # 0-based, fences included
    return "\n".join("" if n in inside else re.sub(r"(`+).*?\1", "", text) for n, text in enumerate(lines))


# Link text may wrap over lines and hold one level of brackets; the target is <...> or has no spaces.
_INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*(<[^>\n]*>|[^)\s]+)(?:\s+[\"'(][^)]*)?\)")
_REFERENCE_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:[ \t]*(<[^>\n]*>|\S+)", re.MULTILINE)
_HTML_ATTR = re.compile(r"""\b(?:href|src)\s*=\s*["']([^"']+)["']""")


def relative_links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of the links to local files (no scheme, not a pure #anchor)."""
    text = prose(path)
    found = []
    for pattern in (_INLINE_LINK, _REFERENCE_DEF, _HTML_ATTR):
        for m in pattern.finditer(text):
            target = m.group(1).strip("<>")
            if not target or target.startswith("#") or re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", target):
                continue
            found.append((text.count("\n", 0, m.start(1)) + 1, target))
    return sorted(found)


# ------------------------------------------------------------------------------- commands


@dataclasses.dataclass(frozen=True)
class Command:
    """One simple command of a shell block: ``where`` (file:line), the line as written, its argv."""

    where: str
    text: str
    env: tuple[tuple[str, str], ...]
    argv: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.where}: {self.text}"


def _logical_lines(block: Block) -> list[tuple[int, str]]:
    """(offset, line) with backslash continuations joined and console prompts removed."""
    out, pending, start = [], "", 0
    for offset, line in enumerate(block.body):
        if block.lang == "console":
            if not line.startswith(("$ ", "> ")) and not pending:
                continue  # output
            line = line[2:] if not pending else line
        if not pending:
            start = offset
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        out.append((start, pending + line))
        pending = ""
    if pending:
        out.append((start, pending))
    return out


def _split_commands(line: str) -> list[list[str]]:
    """A shell line as its simple commands' words (split at &&, ||, ;, |; comments and
    redirections such as ``> out.json`` or ``2>&1`` dropped)."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|<>")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    commands, words, redirected = [], [], False
    for token in lexer:
        if token and set(token) <= set(";&|") and not (redirected and token == "&"):
            commands.append(words)
            words, redirected = [], False
        elif token and set(token) <= set("<>&"):
            if words and words[-1].isdigit() and not redirected:
                words.pop()  # the 2 of 2>
            redirected = True
        elif not redirected:
            words.append(token)
    commands.append(words)
    return [c for c in commands if c]


def scan_shell_blocks(path: Path) -> tuple[list[Command], list[str]]:
    """The simple commands of a file's shell blocks (untagged blocks: trm-jax/python lines only),
    and the lines that cannot be split as shell words (unbalanced quotes)."""
    commands, problems = [], []
    for block in fenced_blocks(path):
        if block.lang not in SHELL_LANGS and block.lang != "":
            continue
        for offset, line in _logical_lines(block):
            if block.lang == "" and not line.lstrip().startswith(("trm-jax ", "python")):
                continue
            try:
                parts = _split_commands(line)
            except ValueError as err:
                problems.append(f"{block.where(offset)}: {line.strip()}\n    not a shell line: {err}")
                continue
            for words in parts:
                env = []
                while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
                    name, value = words.pop(0).split("=", 1)
                    env.append((name, value))
                if words:
                    commands.append(Command(block.where(offset), line.strip(), tuple(env), tuple(words)))
    return commands, problems


def shell_commands(path: Path) -> list[Command]:
    return scan_shell_blocks(path)[0]


def trm_jax_commands(path: Path) -> list[Command]:
    return [c for c in shell_commands(path) if c.argv[0] == "trm-jax" and len(c.argv) > 1]


def is_cheap(command: Command) -> bool:
    """``trm-jax config ...``, or a ``trm-jax``/``python -m MODULE``/``python SCRIPT`` command that
    only asks for help."""
    argv = command.argv
    asks_help = argv[-1] in ("--help", "-h")
    if argv[0] == "trm-jax":
        return len(argv) > 1 and (argv[1] == "config" or asks_help)
    return argv[0] in ("python", "python3") and len(argv) > 2 and argv[1] != "-c" and asks_help


def resolve_argv(argv: tuple[str, ...]) -> list[str]:
    """``trm-jax`` and ``python`` as this test session has them."""
    if argv[0] == "trm-jax":
        exe = shutil.which("trm-jax", path=os.path.dirname(sys.executable)) or shutil.which("trm-jax")
        return ([exe] if exe else [sys.executable, "-m", "trm_jax"]) + list(argv[1:])
    if argv[0] in ("python", "python3"):
        return [sys.executable] + list(argv[1:])
    return list(argv)


def _all(collect) -> list:
    return [item for path in doc_files() for item in collect(path)]


# ---------------------------------------------------------------------------------- tests


def test_the_readme_has_commands_and_snippets_to_check():
    """Guards the tests below against passing vacuously (e.g. a fence syntax they stop reading)."""
    readme = ROOT / "README.md"
    assert trm_jax_commands(readme), "README.md: no trm-jax command found in its fenced shell blocks"
    assert [b for b in fenced_blocks(readme) if b.lang == "python"], "README.md: no ```python block found"


def test_shell_lines_split():
    problems = [p for path in doc_files() for p in scan_shell_blocks(path)[1]]
    assert not problems, "shell lines that do not split into words:\n" + "\n".join(problems)


@pytest.mark.parametrize("path", doc_files(), ids=rel)
def test_relative_links_resolve(path):
    broken = []
    for n, target in relative_links(path):
        local = urllib.parse.unquote(target.split("#", 1)[0].split("?", 1)[0])
        if local and not (path.parent / local).exists():
            broken.append(f"{rel(path)}:{n}: {target}")
    assert not broken, "links to files that do not exist:\n" + "\n".join(broken)


def test_documented_commands_parse():
    """Every documented ``trm-jax`` command line is accepted by the command line's parsers."""
    from trm_jax import configs as configs_lib
    from trm_jax.cli import _split_overrides
    from trm_jax.cli.errors import UsageError
    from trm_jax.cli.parser import make_parser
    from trm_jax.data import build

    failures = []
    commands = _all(trm_jax_commands)
    for command in commands:
        args = list(command.argv[1:])
        stderr = io.StringIO()
        try:
            with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
                if args[0] == "data":
                    build._load_plugins()  # as build.main does: registers `data arc`
                    build.make_parser().parse_args(args[1:])
                    continue
                parsed, rest = make_parser().parse_known_args(args)
                overrides = _split_overrides(rest)
                name = getattr(parsed, "config", None) or getattr(parsed, "name", None)
                if name and re.fullmatch(r"\w+", name):  # a packaged config's name, not a path
                    configs_lib.load_config(name, overrides)
        except SystemExit as exit_:  # argparse, its message on stderr
            if exit_.code:
                message = " ".join(stderr.getvalue().split()[-40:])
                failures.append(f"{command}\n    rejected by the argument parser: {message}")
        except (UsageError, configs_lib.ConfigLoadError, ValueError, KeyError) as err:
            failures.append(f"{command}\n    {type(err).__name__}: {err}")
    assert commands, "no trm-jax command found in README.md or docs/"
    assert not failures, "documented commands the command line rejects:\n" + "\n".join(failures)


def _cheap_commands() -> list[Command]:
    return [c for c in _all(shell_commands) if is_cheap(c)]


@pytest.mark.parametrize("command", _cheap_commands(), ids=str)
def test_cheap_commands_run_as_written(command):
    env = dict(os.environ, JAX_PLATFORMS="cpu", **dict(command.env))
    proc = subprocess.run(
        resolve_argv(command.argv),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, (
        f"{command}\n    exited with {proc.returncode}:\n{proc.stdout[-2000:]}{proc.stderr[-4000:]}"
    )


def _python_blocks() -> list[Block]:
    return [b for path in doc_files() for b in fenced_blocks(path) if b.lang in ("python", "py", "python3")]


@pytest.mark.parametrize("block", _python_blocks(), ids=lambda b: b.where())
def test_python_snippets_compile(block):
    try:
        compile("\n".join(block.body) + "\n", block.where(), "exec")
    except SyntaxError as err:
        pytest.fail(f"{rel(block.path)}:{block.line - 1 + (err.lineno or 1)}: the snippet does not compile: {err.msg}")


@pytest.mark.parametrize("block", [b for b in _python_blocks() if b.runnable], ids=lambda b: b.where())
def test_marked_python_snippets_run(block):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, "-c", "\n".join(block.body) + "\n"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=SNIPPET_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, (
        f"{block.where()}: the snippet marked {RUN_MARKER} exited with "
        f"{proc.returncode}:\n{proc.stdout[-2000:]}{proc.stderr[-4000:]}"
    )
