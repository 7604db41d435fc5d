"""The command-line contract shared by the six console scripts (``ipa``, ``eim``, ``fwbridge``, ``smdpp``,
``euicc``, ``rsp``); docs/cli.md is its user-facing description.

- One JSON-lines envelope under ``--json`` (the de-facto LPA shape, as lpac prints it):
  ``{"type":"progress","payload":{"code":0,"message":STEP,"data":{...}}}`` while working, ``"type":"item"`` for
  each element of a streamed listing, and exactly one final ``{"type":"lpa","payload":{"code":0,"message":
  "success","data":...}}``; a failure is the final line ``{"type":"lpa","payload":{"code":-1,"message":"STEP:
  reason","data":{"step":STEP,"exit":N,...}}}``.
- Exit codes (:data:`EXIT_CODES`), the same for every tool.
- Global options (``--json``, ``--config``, ...) before or after the subcommand (:func:`globals_after_subcommands`).
- ``--version`` from the installed distribution's metadata (:func:`add_version`).
- No traceback for a reader that closed the pipe (``| head -1``) or for Ctrl-C: :func:`guard`, called once by
  ``rsp.launch`` around each tool's ``main()``.

No I/O besides writing the lines it is asked to write; no import of any tool.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any, NoReturn, TextIO

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_CONNECTION = 3
EXIT_TIMEOUT = 4
EXIT_INTERRUPTED = 130
EXIT_PIPE = 0  # the reader closed stdout (`| head -1`): it has what it asked for; quiet, and pipefail-safe

EXIT_CODES: dict[int, str] = {
    EXIT_OK: "done",
    EXIT_REFUSED: "refused: the peer (eIM, SM-DP+, card, modem) or a local file said no; the message says who and why",
    EXIT_USAGE: "usage: bad command line, option value or configuration; nothing was sent",
    EXIT_CONNECTION: "port or connection: the serial port is missing or busy, the server cannot be reached, TLS failed",
    EXIT_TIMEOUT: "timeout: the peer did not answer in time (AT command, HTTP request)",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C / SIGINT); open sessions were cancelled",
}

DISTRIBUTION = "sgp32-stack"


def version() -> str:
    """The installed version of the distribution (``unknown`` when run from a tree that is not installed)."""
    from importlib import metadata

    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown"


class _VersionAction(argparse.Action):
    """``--version``: reads the distribution's metadata only when asked (``importlib.metadata`` and the email
    parser it pulls in are ~10 ms of every start otherwise)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None) -> NoReturn:
        parser._print_message(f"{parser.prog} {version()}\n", sys.stdout)
        parser.exit()


def add_version(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action=_VersionAction, help="print the version and exit")


def globals_after_subcommands(
    root: argparse.ArgumentParser, names: Iterable[str], argv: Iterable[str] | None = None
) -> None:
    """Accept the root options ``names`` (their first option string, e.g. ``--json``) after the subcommand too, at
    every level (``eim serve --config FILE`` as well as ``eim --config FILE serve``). Given after it, they win;
    absent there, the value given before the subcommand (or the default) stays. With ``argv`` (the command line
    about to be parsed) only the subcommands named in it get them: a parser that is not used is not dressed (a
    one-shot command spends its milliseconds on its work, not on argparse)."""
    wanted = set(names)
    named = set(argv) if argv is not None else None
    globals_ = [a for a in root._actions if a.option_strings and a.option_strings[0] in wanted]
    todo = [root]
    while todo:
        parser_ = todo.pop()
        for action in parser_._actions:
            if not isinstance(action, argparse._SubParsersAction):
                continue
            for name, sub in action.choices.items():
                if named is not None and name not in named:
                    continue
                present = {s for a in sub._actions for s in a.option_strings}
                for g in globals_:
                    if present & set(g.option_strings):
                        continue  # the subcommand has its own option of that name
                    kwargs: dict[str, Any] = {"dest": g.dest, "help": g.help, "default": argparse.SUPPRESS}
                    if isinstance(g, argparse._StoreTrueAction):
                        kwargs["action"] = "store_true"
                    elif isinstance(g, argparse._CountAction):
                        kwargs["action"] = "count"
                    else:
                        for key in ("type", "choices", "metavar"):
                            if getattr(g, key) is not None:
                                kwargs[key] = getattr(g, key)
                    sub.add_argument(*g.option_strings, **kwargs)
                todo.append(sub)


def _terminal_columns() -> int:
    """What ``shutil.get_terminal_size().columns`` answers ($COLUMNS, else the terminal, else 80)."""
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's own formatter, its width found without ``shutil`` (argparse imports it for every parser it
    builds, and with it bz2, lzma and zlib: 0.5 MB of a device daemon's memory and a few ms of every command)."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24, width: int | None = None):
        super().__init__(prog, indent_increment, max_help_position, _terminal_columns() - 2 if width is None else width)


class ContractParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors follow the contract: the message on stderr, exit 2, and under
    ``--json`` (anywhere on the command line) also the final envelope line on stdout."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        if "--json" in (_ARGV if _ARGV is not None else sys.argv[1:]):
            Envelope(True).error(f"usage: {message}", {"step": "usage"}, exit=EXIT_USAGE)
        sys.exit(EXIT_USAGE)


_ARGV: list[str] | None = None


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """``parser.parse_args(argv)``, remembering ``argv`` so that a usage error knows whether ``--json`` was given."""
    global _ARGV
    _ARGV = list(argv) if argv is not None else sys.argv[1:]
    return parser.parse_args(argv)


def _default(o: Any) -> Any:
    if isinstance(o, bytes):
        return o.hex().upper()
    if isinstance(o, set | frozenset | tuple):
        return list(o)
    return str(o)


class Envelope:
    """Writes the contract's lines: JSON lines under ``--json``, text otherwise (results on stdout, progress and
    errors on stderr). Remembers the last progress step, so an interruption can say where it happened."""

    def __init__(self, json_mode: bool, prog: str = "", stream: TextIO | None = None) -> None:
        self.json = json_mode
        self.prog = prog
        self._stream = stream
        self.last_step: str | None = None
        self.last_data: dict[str, Any] = {}
        self.items = 0
        self.cleanup: dict[str, dict[str, Any]] = {}

    @property
    def stream(self) -> TextIO:
        return self._stream or sys.stdout

    def line(self, kind: str, code: int, message: str, data: Any) -> None:
        obj = {"type": kind, "payload": {"code": code, "message": message, "data": data}}
        self.stream.write(json.dumps(obj, separators=(",", ":"), default=_default) + "\n")
        self.stream.flush()

    #: steps of the cleanup after a failure (and results kept for the final line): printed and kept in
    #: ``cleanup``, but a failure stays located at the step before them
    CLEANUP_STEPS = frozenset({"CancelSession", "cancelSession", "EuiccPackageResult"})

    def progress(self, step: str, data: dict[str, Any] | None = None) -> None:
        data = dict(data or {})
        if step in self.CLEANUP_STEPS:
            self.cleanup[step] = data
        else:
            self.last_step, self.last_data = step, data
        if self.json:
            self.line("progress", 0, step, data)
        else:
            detail = " ".join(f"{k}={v}" for k, v in data.items() if v is not None)
            print(f"... {step} {detail}".rstrip(), file=sys.stderr, flush=True)

    def item(self, kind: str, data: Any, human: str) -> None:
        """One element of a listing, printed as it arrives (a fleet's listing does not fit in one line)."""
        self.items += 1
        if self.json:
            self.line("item", 0, kind, data)
        else:
            print(human, file=self.stream, flush=True)

    def success(self, data: Any, human: str | None = None) -> int:
        if self.json:
            self.line("lpa", 0, "success", data)
        elif human is not None:
            print(human, file=self.stream, flush=True)
        else:
            print(json.dumps(data, indent=2, default=_default), file=self.stream, flush=True)
        return EXIT_OK

    def error(self, message: str, data: dict[str, Any] | None = None, *, exit: int = EXIT_REFUSED) -> int:
        data = dict(data or {})
        data["exit"] = exit
        if self.json:
            self.line("lpa", -1, message, data)
        else:
            print(f"{self.prog + ': ' if self.prog else ''}error: {message}", file=sys.stderr, flush=True)
        return exit

    def where(self) -> dict[str, Any]:
        """Where the last progress step was (its name and data: segment 7 of 19, the AT command, ...)."""
        return {"step": self.last_step, **{k: v for k, v in self.last_data.items() if v is not None}}


def step_message(step: str | None, reason: str) -> str:
    """``STEP: reason`` with the step named once (``initiateAuthentication: initiateAuthentication: X`` is
    ``initiateAuthentication: X``)."""
    reason = str(reason)
    if not step:
        return reason
    prefix = f"{step}: "
    while reason.startswith(prefix):
        reason = reason[len(prefix) :]
    return prefix + reason


def _silence_stdout() -> None:
    """Point fd 1 at /dev/null so the interpreter's final flush of a closed pipe does not print a traceback."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def guard(prog: str, main: Callable[[], int | None]) -> int:
    """Run a tool's ``main()`` under the contract: a closed stdout exits 0 silently, Ctrl-C that reached here
    (the tool did not handle it itself) exits 130 with one line on stderr, never a traceback."""
    try:
        rc = main()
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_PIPE
    except KeyboardInterrupt:
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            _silence_stdout()
        print(f"{prog}: interrupted", file=sys.stderr, flush=True)
        if "--json" in (_ARGV if _ARGV is not None else sys.argv[1:]):
            try:
                Envelope(True).error("interrupted", {"step": None}, exit=EXIT_INTERRUPTED)
            except BrokenPipeError:
                _silence_stdout()
        return EXIT_INTERRUPTED
    return int(rc or 0)


def parse_proc_locks(text: str, dev: int, inode: int) -> list[int]:
    """The pids holding a lock on the file (``st_dev``, ``st_ino``) in the text of ``/proc/locks`` (lines like
    ``1: FLOCK  ADVISORY  WRITE 4242 00:05:1093 0 EOF``; the device is ``major:minor`` in hex, the inode decimal)."""
    want = f"{os.major(dev):02x}:{os.minor(dev):02x}:{inode}"
    pids = []
    for line in text.splitlines():
        fields = line.split()
        if "->" in fields:  # a waiter, not the holder
            continue
        for i, f in enumerate(fields):
            if f == want and i > 0 and fields[i - 1].isdigit():
                pids.append(int(fields[i - 1]))
    return pids


def lock_holder(path: str, proc: str = "/proc") -> str | None:
    """``pid 4242 (ipa run)``: who holds the lock on ``path`` (pyserial's exclusive ``flock``), from
    ``/proc/locks`` and the holder's command line; None when it cannot be told (no /proc, another namespace)."""
    try:
        st = os.stat(path)
        with open(os.path.join(proc, "locks"), encoding="ascii", errors="replace") as fh:
            pids = parse_proc_locks(fh.read(), st.st_dev, st.st_ino)
    except OSError:
        return None
    for pid in pids:
        try:
            with open(os.path.join(proc, str(pid), "cmdline"), "rb") as fh:
                argv = [a.decode(errors="replace") for a in fh.read().split(b"\0") if a]
        except OSError:
            argv = []
        words = [os.path.basename(a) for a in argv[:1]] + argv[1:]
        return f"pid {pid}" + (f" ({' '.join(words)[:120]})" if words else "")
    return None


#: the rates a serial port can be set to (termios B50..B4000000); 0 (hang up) and 1 are not among them
BAUD_RATES = frozenset(
    {50, 75, 110, 134, 150, 200, 300, 600, 1200, 1800, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400}
    | {460800, 500000, 576000, 921600, 1000000, 1152000, 1500000, 2000000, 2500000, 3000000, 3500000, 4000000}
)
