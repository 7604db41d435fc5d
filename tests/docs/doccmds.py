"""Commands shown in ``docs/*.md``: extraction, registration by the tests that run them, and a runner.

A command is shown when it is
- a ``$ `` line of a fenced block (with its ``\\`` continuation lines; the lines up to the next ``$`` are its output),
- in a fenced block without ``$`` lines, a line starting with one of our tools (usage synopses, recipes),
- a 4-space indented line starting with a tool outside fenced blocks,
- an inline code span starting with a tool on a prose line that starts with such a span.

Tests register what they run with :func:`doc_cmd` at import time, so ``test_coverage.py`` can check that every
shown command is run (or allowlisted with a reason) without running anything.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
BIN = Path(sys.executable).parent
TOOLS = frozenset(
    "rsp euicc fwbridge ipa eim smdpp curl make mosquitto_pub mosquitto_sub mosquitto_rr mosquitto_passwd "
    "aiocoap-client coap-client openssl printf python python3 .venv/bin/python sudo systemctl journalctl createdb "
    "psql pip cat echo xxd".split()
)
SKIP_LANGS = frozenset({"python", "toml", "json", "asn1", "ini", "yaml", "cbor", "text"})
FENCE = re.compile(r"^\s*```(\S*)\s*$")
ENV_ASSIGN = re.compile(r"^[A-Z_][A-Z0-9_]*=\S*$")


@dataclass(frozen=True)
class DocCommand:
    doc: str  # file name under docs/
    line: int  # 1-based line of the command's first line
    text: str  # normalized: continuations joined, trailing comment removed, whitespace collapsed
    output: tuple[str, ...] = ()  # the lines the doc shows after a ``$`` command


def strip_comment(line: str) -> str:
    """Remove a trailing shell comment (a ``#`` after whitespace, outside quotes)."""
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i].rstrip()
    return line.rstrip()


def _open_quote(text: str) -> bool:
    quote = ""
    for ch in text:
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
    return bool(quote)


def normalize(text: str) -> str:
    return " ".join(text.split())


def first_tool(text: str) -> str | None:
    words = text.split()
    while words and ENV_ASSIGN.match(words[0]):
        words = words[1:]
    if words and words[0] in TOOLS:
        return words[0]
    return None


def _fenced(doc: str, start: int, lines: list[str]) -> list[DocCommand]:
    out: list[DocCommand] = []
    if any(ln.startswith("$ ") for ln in lines):
        i = 0
        while i < len(lines):
            if not lines[i].startswith("$ "):
                i += 1
                continue
            first = i
            parts = [lines[i][2:]]
            while (parts[-1].rstrip().endswith("\\") or _open_quote("\n".join(parts))) and i + 1 < len(lines):
                if parts[-1].rstrip().endswith("\\"):
                    parts[-1] = parts[-1].rstrip()[:-1]
                i += 1
                parts.append(lines[i])
            i += 1
            output: list[str] = []
            while i < len(lines) and not lines[i].startswith("$ "):
                output.append(lines[i])
                i += 1
            text = normalize(strip_comment(" ".join(parts)))
            out.append(DocCommand(doc, start + first, text, tuple(o for o in output if o.strip())))
        return out
    i = 0
    while i < len(lines):
        ln = lines[i]
        if ln[:1].isspace() or not first_tool(strip_comment(ln)):
            i += 1
            continue
        first = i
        parts = [strip_comment(ln)]
        i += 1
        while i < len(lines) and (lines[i][:1].isspace() or parts[-1].endswith("\\")) and lines[i].strip():
            cont = strip_comment(lines[i])
            if cont.strip():
                parts[-1] = parts[-1].removesuffix("\\")
                parts.append(cont)
            i += 1
        out.append(DocCommand(doc, start + first, normalize(" ".join(parts))))
    return out


def extract(path: Path) -> list[DocCommand]:
    doc = path.name
    lines = path.read_text().splitlines()
    cmds: list[DocCommand] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m:
            lang = m.group(1).lower()
            indent = len(lines[i]) - len(lines[i].lstrip())
            j = i + 1
            while j < len(lines) and not FENCE.match(lines[j]):
                j += 1
            body = [ln[indent:] if ln[:indent].isspace() else ln for ln in lines[i + 1 : j]]
            if lang not in SKIP_LANGS:
                cmds += _fenced(doc, i + 2, body)
            i = j + 1
            continue
        ln = lines[i]
        if ln.startswith("    ") and not ln.lstrip().startswith(("-", "*", "|")):
            text = normalize(strip_comment(ln.strip()))
            prev_blank_or_code = i == 0 or not lines[i - 1].strip() or lines[i - 1].startswith("    ")
            if prev_blank_or_code and first_tool(text):
                cmds.append(DocCommand(doc, i + 1, text))
        elif ln.startswith("`"):
            spans = re.findall(r"`([^`]+)`", ln)
            if spans and first_tool(spans[0]):
                cmds += [DocCommand(doc, i + 1, normalize(s)) for s in spans if first_tool(s) and " " in s.strip()]
        i += 1
    return cmds


def all_commands() -> dict[tuple[str, str], DocCommand]:
    """(doc, text) -> command, for every command shown in docs/*.md (first occurrence)."""
    found: dict[tuple[str, str], DocCommand] = {}
    for path in sorted(DOCS.glob("*.md")):
        for c in extract(path):
            found.setdefault((c.doc, c.text), c)
    return found


REGISTERED: dict[tuple[str, str], str] = {}  # (doc, text) -> test module that runs it
_CACHE: dict[str, dict[str, DocCommand]] = {}


def doc_cmd(doc: str, text: str) -> DocCommand:
    """The command ``text`` exactly as ``docs/<doc>`` shows it (normalized); registers it as run by the caller."""
    if doc not in _CACHE:
        _CACHE[doc] = {c.text: c for c in reversed(extract(DOCS / doc))}
    key = normalize(text)
    if key not in _CACHE[doc]:
        raise LookupError(f"docs/{doc} no longer shows the command {key!r}: update tests/docs")
    REGISTERED[(doc, key)] = sys._getframe(1).f_globals.get("__name__", "?")
    return _CACHE[doc][key]


def tool_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("EIM_CONFIG", None)
    env.update(extra or {})
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def substitute(text: str, subs: dict[str, str] | None) -> str:
    for old, new in (subs or {}).items():
        text = text.replace(old, new)
    return text


def run(
    cmd: DocCommand,
    cwd: Path,
    subs: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60.0,
    ok: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a shown command with bash in ``cwd`` (placeholders replaced by ``subs``); exit 0 unless ``ok=False``."""
    script = substitute(cmd.text, subs)
    proc = subprocess.run(
        ["bash", "-o", "pipefail", "-c", script],
        cwd=cwd,
        env=tool_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if ok:
        assert proc.returncode == 0, (
            f"docs/{cmd.doc}:{cmd.line}: {script}\nexit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


def run_together(cmds: list[DocCommand], cwd: Path, subs: dict[str, str] | None = None) -> str:
    """Run shown commands in one shell, one after the other (``$ echo $?`` after a command); return stdout."""
    script = "\n".join(substitute(c.text, subs) for c in cmds)
    proc = subprocess.run(["bash", "-c", script], cwd=cwd, env=tool_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"{script}\nexit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def start(
    cmd: DocCommand,
    cwd: Path,
    log: Path,
    subs: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start a shown background command (``... &``) as its own process; the caller stops it."""
    script = substitute(cmd.text, subs).removesuffix("&").strip()
    argv = shlex.split(script)
    extra = dict(env or {})
    while argv and ENV_ASSIGN.match(argv[0]):
        k, _, v = argv.pop(0).partition("=")
        extra[k] = v
    fh = log.open("ab")
    return subprocess.Popen(argv, cwd=cwd, env=tool_env(extra), stdout=fh, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
