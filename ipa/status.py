"""The daemon's status file: what ``ipa run`` is doing, for ``ipa status`` without opening the port (issue 17).

``ipa run`` keeps ``status-<EID>.json`` in its state directory (next to the state file), one file per eUICC:

- written at start, at every change of the daemon's view (its state - ``starting``, ``idle``, ``working``,
  ``backoff``, ``stopped`` -, the binding in use, the results queued for the eIM, the consecutive failures, the
  procedure in flight, the last poll's outcome) and when it stops; an idle daemon that polls and finds nothing
  does not write it again (the state file records the last eIM contact);
- written whole to a temporary file in the same directory, mode 0600, then renamed over the old one: a reader
  sees the old or the new view, never a torn one. Not fsync'ed: it is a view, not a record (the state file is the
  record), so a power cut at worst loses the last view, and a gateway's SD card is spared a flush per change;
- it names the daemon's pid and the process's start time (``/proc/<pid>/stat`` field 22), so ``ipa status`` can
  tell a running daemon from a file left behind by one that was killed (its pid gone, or reused by another
  process).

Format (JSON, version 1)::

    {"v": 1, "pid": 812, "pidStart": 123456, "eid": "8904...", "state": "idle", "since": 1765090000.1,
     "updated": 1765090000.1, "binding": "http", "eimUrl": "https://eim.example:443", "failures": 0,
     "nextPoll": null, "queue": [{"kind": "provide_eim_package_result", "attempts": 0, "seqNumbers": [3]}],
     "inflight": null, "lastPoll": {"outcome": "idle", "detail": "noEimPackageAvailable", "at": 1765090000.1},
     "stopped": null}

Times are seconds since the epoch (UTC). :func:`read_status` refuses anything else with :class:`StatusError`
naming the field.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("ipa.status")

STATUS_VERSION = 1
MAX_STATUS_BYTES = 64 * 1024
STATES = ("starting", "idle", "working", "backoff", "stopped")
# what decides whether the file is rewritten: everything but the times
_VIEW_KEYS = ("state", "binding", "eimUrl", "failures", "queue", "inflight", "lastOutcome", "stopped")


class StatusError(Exception):
    """The status file cannot be read as a status (the message names the field)."""


def status_path(state_file: str | os.PathLike[str], eid: bytes | str) -> Path:
    """``status-<EID>.json`` in the directory of ``state_file``."""
    text = eid.hex().upper() if isinstance(eid, bytes) else eid.upper()
    return Path(state_file).with_name(f"status-{text}.json")


def process_start(pid: int) -> int | None:
    """The start time of process ``pid`` in clock ticks after boot (``/proc/<pid>/stat`` field 22), or None when
    there is no such process (or no /proc)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    try:  # the command name (field 2) is in parentheses and may hold spaces and parentheses: split after it
        return int(data[data.rindex(b")") + 2 :].split()[19])
    except (ValueError, IndexError):
        return None


def write_status(path: Path, view: dict[str, Any]) -> None:
    """Replace ``path`` with ``view``: a temporary file in the same directory, mode 0600, renamed over it."""
    from rsp.files import private_dir

    private_dir(path.parent)
    data = json.dumps(view, separators=(",", ":"), sort_keys=True).encode()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask, and a file left by an earlier run with other bits
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _number(obj: dict[str, Any], key: str, *, optional: bool = False) -> None:
    value = obj.get(key)
    if value is None and optional:
        return
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise StatusError(f"{key} must be a number")


def read_status(path: Path) -> dict[str, Any] | None:
    """The status in ``path``; None when there is no file. Raises :class:`StatusError` for anything that is not
    a status this IPA writes (the message names the field)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_STATUS_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StatusError(f"cannot read it: {exc.strerror or exc}") from None
    if len(data) > MAX_STATUS_BYTES:
        raise StatusError(f"larger than {MAX_STATUS_BYTES} bytes")
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise StatusError(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise StatusError("top level is not an object")
    if obj.get("v") != STATUS_VERSION:
        raise StatusError(f"unsupported version {obj.get('v')!r} (this IPA writes {STATUS_VERSION})")
    pid = obj.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        raise StatusError("pid must be a positive integer")
    start = obj.get("pidStart")
    if start is not None and (not isinstance(start, int) or isinstance(start, bool)):
        raise StatusError("pidStart must be an integer")
    if obj.get("state") not in STATES:
        raise StatusError(f"state must be one of {', '.join(STATES)}")
    for key in ("since", "updated"):
        _number(obj, key)
    for key in ("nextPoll", "stopped"):
        _number(obj, key, optional=True)
    failures = obj.get("failures")
    if not isinstance(failures, int) or isinstance(failures, bool) or failures < 0:
        raise StatusError("failures must be a non-negative integer")
    for key in ("binding", "eimUrl", "eid"):
        if obj.get(key) is not None and not isinstance(obj[key], str):
            raise StatusError(f"{key} must be text")
    queue = obj.get("queue")
    if not isinstance(queue, list) or not all(isinstance(q, dict) for q in queue):
        raise StatusError("queue must be a list of objects")
    last = obj.get("lastPoll")
    if last is not None and not (isinstance(last, dict) and isinstance(last.get("outcome"), str)):
        raise StatusError("lastPoll must be an object with an outcome")
    return obj


def daemon_view(status: dict[str, Any] | None, *, alive=process_start) -> dict[str, Any]:
    """What ``ipa status`` says about the daemon: ``running`` only when the pid in the file is a live process
    with the same start time; otherwise why not (never ran here, stopped, or killed: a stale file)."""
    if status is None:
        return {"running": False, "note": "no status file: ipa run has not run with this state file"}
    pid, start = status["pid"], status.get("pidStart")
    now_start = alive(pid)
    if status["state"] == "stopped":
        running, note = False, "stopped"
    elif now_start is None:
        running, note = False, f"not running: pid {pid} is gone (killed or crashed); the status file is stale"
    elif start is not None and now_start != start:
        running, note = False, f"not running: pid {pid} is another process now; the status file is stale"
    else:
        running, note = True, "running"
    return {"running": running, "note": note, **{k: v for k, v in status.items() if k != "v"}}


class StatusWriter:
    """The daemon's side: :meth:`update` merges what changed and rewrites the file (off the event loop) when the
    view changed."""

    def __init__(self, path: Path, eid: bytes, *, clock=time.time) -> None:
        self.path = path
        self.clock = clock
        now = clock()
        self.view: dict[str, Any] = {
            "v": STATUS_VERSION,
            "pid": os.getpid(),
            "pidStart": process_start(os.getpid()),
            "eid": eid.hex().upper(),
            "state": "starting",
            "since": now,
            "updated": now,
            "binding": None,
            "eimUrl": None,
            "failures": 0,
            "nextPoll": None,
            "queue": [],
            "inflight": None,
            "lastPoll": None,
            "stopped": None,
        }
        self._written: tuple | None = None
        self.writes = 0

    def _key(self) -> tuple:
        last = self.view.get("lastPoll") or {}
        view = {**self.view, "lastOutcome": (last.get("outcome"), last.get("detail"))}
        return tuple(json.dumps(view.get(k), sort_keys=True) for k in _VIEW_KEYS)

    async def update(self, **fields: Any) -> bool:
        """Merge ``fields``; write the file if the view changed. True when it was written. A failed write is
        logged, never raised: the daemon's work does not depend on its status file."""
        now = self.clock()
        if "state" in fields and fields["state"] != self.view["state"]:
            self.view["since"] = now
        self.view.update(fields)
        key = self._key()
        if key == self._written:
            return False
        self.view["updated"] = now
        try:
            await asyncio.to_thread(write_status, self.path, dict(self.view))
        except OSError as exc:
            log.warning("cannot write the status file %s: %s", self.path, exc)
            return False
        self._written = key
        self.writes += 1
        return True
