"""Persistent IPA state: what must survive a crash, in one small CBOR file written atomically.

Held here:
- ``results``: undelivered ESipa results (the DER of the message to send, e.g. a ProvideEimPackageResult), in
  order, each with a unique id. A result is appended *before* anything else is done with it and removed only in
  the same write that records what the eIM acknowledged.
- ``remove_seqs``: sequence numbers the eIM acknowledged that are still to be removed from the eUICC with
  ES10b.RemoveNotificationFromList (a crash between the acknowledgement and the removal must not re-deliver them).
- ``inflight``: the procedure in flight (name + what recovery needs: e.g. the BF51 bytes sent to
  LoadEuiccPackage and the notification sequence numbers that existed before it).
- ``backoff``: consecutive poll failures and when the next poll is due; ``last_contact`` (wall clock) of the eIM.
- ``state_change``: a pending ``stateChangeCause`` to announce with ``notifyStateChange`` in the next poll.
- ``association_tokens``: tokens returned by AddInitialEim, per eimId.
- ``fallback``: whether the IPA executed the fallback mechanism and when.
- ``delivered``: the last sequence numbers the eIM received (so the card's pending EPR list, swept at start,
  only yields results that were never delivered).
- ``downloads``: the eimTransactionIds of the last download triggers whose outcome the IPA has reported (a PIR, a
  profileDownloadTriggerResult or a final CancelSession), so that a second copy of the same trigger is not run
  again (``ipa.procedures.profile_download``, "Each trigger once").

Writes go to a temporary file in the same directory, are fsync'ed, renamed over the old file, and the directory is
fsync'ed: a crash leaves either the old or the new state, never a torn file. A damaged file is kept aside
(``.corrupt``) and the IPA starts from an empty state (the card's pending EPR list is the second source of truth).

Off the event loop: async code calls ``await store.commit()``. The state is encoded on the loop (a snapshot: what
the caller changed, nothing later), the file is written by one writer thread, and ``commit`` returns once that
snapshot - or a later one - is on disk. So every step still sees its state durable before it does the next thing
(loads a package, sends a result, removes a notification), exactly as with a blocking write, while the loop keeps
serving (MQTT keep-alives, pushes, the modem). Order: snapshots are numbered; the writer always writes the newest
one and never one older than what is on disk, so a later state is never overwritten by an earlier one, and
snapshots that queued up while the disk was busy are written once (the newest). A commit whose caller is cancelled
still completes (the writer thread finishes it; the interpreter joins the thread at exit). ``save()`` is the same
write done in the calling thread, for code that runs outside an event loop; on a running loop it still writes (a
state is never dropped) but logs an error naming the call, because it stalls the loop for a whole fsync.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rsp import loopless
from rsp.files import private_dir

log = logging.getLogger("ipa.state")

STATE_VERSION = 1
MAX_DELIVERED = 512
MAX_FINISHED_DOWNLOADS = 64


class StateError(Exception):
    """The state file cannot be decoded (the message says which part is wrong)."""


@dataclass
class PendingResult:
    """One ESipa message waiting to be delivered to the eIM."""

    id: str
    kind: str  # "provide_eim_package_result" | "handle_notification"
    der: bytes
    eim_id: str | None = None
    seq_numbers: list[int] = field(default_factory=list)  # card sequence numbers carried (EPR, notifications)
    attempts: int = 0
    created: float = 0.0
    rollback: dict[str, Any] | None = None  # {"allowed": bool, "done": bool} for enable-with-rollbackFlag results

    def to_obj(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "der": self.der,
            "seq": list(self.seq_numbers),
            "attempts": self.attempts,
            "created": self.created,
        }
        if self.eim_id is not None:
            out["eim"] = self.eim_id
        if self.rollback is not None:
            out["rollback"] = dict(self.rollback)
        return out

    @classmethod
    def from_obj(cls, obj: Any) -> PendingResult:
        if not isinstance(obj, dict):
            raise StateError("result entry is not a map")
        rid, kind, der = obj.get("id"), obj.get("kind"), obj.get("der")
        if not isinstance(rid, str) or not isinstance(kind, str) or not isinstance(der, bytes):
            raise StateError("result entry needs id (text), kind (text) and der (bytes)")
        seq = obj.get("seq", [])
        if not isinstance(seq, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in seq):
            raise StateError("result entry seq must be a list of integers")
        eim = obj.get("eim")
        if eim is not None and not isinstance(eim, str):
            raise StateError("result entry eim must be text")
        attempts = obj.get("attempts", 0)
        created = obj.get("created", 0.0)
        if not isinstance(attempts, int) or isinstance(attempts, bool) or not isinstance(created, int | float):
            raise StateError("result entry attempts/created have the wrong type")
        rollback = obj.get("rollback")
        if rollback is not None and not isinstance(rollback, dict):
            raise StateError("result entry rollback must be a map")
        return cls(rid, kind, der, eim, list(seq), attempts, float(created), rollback)


@dataclass
class IpaState:
    results: list[PendingResult] = field(default_factory=list)
    remove_seqs: list[int] = field(default_factory=list)
    inflight: dict[str, Any] | None = None
    failures: int = 0
    next_poll: float = 0.0
    last_contact: float = 0.0
    state_change: int | None = None
    association_tokens: dict[str, int] = field(default_factory=dict)
    fallback: dict[str, Any] | None = None
    delivered_seqs: list[int] = field(default_factory=list)  # EPR/notification seqs the eIM received (recent)
    finished_downloads: list[bytes] = field(default_factory=list)  # eimTransactionIds of reported downloads (recent)
    eid: bytes | None = None  # the eUICC this state belongs to (None: a new state, or a file from before)

    def is_empty(self) -> bool:
        return self == IpaState(eid=self.eid)

    def to_obj(self) -> dict[str, Any]:
        return {
            "v": STATE_VERSION,
            "eid": self.eid,
            "results": [r.to_obj() for r in self.results],
            "remove_seqs": list(self.remove_seqs),
            "inflight": self.inflight,
            "backoff": {"failures": self.failures, "next_poll": self.next_poll},
            "last_contact": self.last_contact,
            "state_change": self.state_change,
            "tokens": dict(self.association_tokens),
            "fallback": self.fallback,
            "delivered": list(self.delivered_seqs),
            "downloads": list(self.finished_downloads),
        }

    @classmethod
    def from_obj(cls, obj: Any) -> IpaState:
        if not isinstance(obj, dict):
            raise StateError("top level is not a map")
        version = obj.get("v")
        if version != STATE_VERSION:
            raise StateError(f"unsupported state version {version!r} (this IPA writes {STATE_VERSION})")
        results = obj.get("results", [])
        if not isinstance(results, list):
            raise StateError("results is not a list")
        remove = obj.get("remove_seqs", [])
        if not isinstance(remove, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in remove):
            raise StateError("remove_seqs must be a list of integers")
        inflight = obj.get("inflight")
        if inflight is not None and not (isinstance(inflight, dict) and isinstance(inflight.get("procedure"), str)):
            raise StateError("inflight must be a map naming its procedure")
        backoff = obj.get("backoff", {})
        if not isinstance(backoff, dict):
            raise StateError("backoff is not a map")
        failures = backoff.get("failures", 0)
        next_poll = backoff.get("next_poll", 0.0)
        last_contact = obj.get("last_contact", 0.0)
        if not isinstance(failures, int) or isinstance(failures, bool) or failures < 0:
            raise StateError("backoff.failures must be a non-negative integer")
        if not isinstance(next_poll, int | float) or not isinstance(last_contact, int | float):
            raise StateError("backoff.next_poll / last_contact must be numbers")
        cause = obj.get("state_change")
        if cause is not None and (not isinstance(cause, int) or isinstance(cause, bool)):
            raise StateError("state_change must be an integer")
        tokens = obj.get("tokens", {})
        if not isinstance(tokens, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in tokens.items()
        ):
            raise StateError("tokens must map eimId to an integer")
        fallback = obj.get("fallback")
        if fallback is not None and not isinstance(fallback, dict):
            raise StateError("fallback must be a map")
        delivered = obj.get("delivered", [])
        if not isinstance(delivered, list) or not all(
            isinstance(s, int) and not isinstance(s, bool) for s in delivered
        ):
            raise StateError("delivered must be a list of integers")
        downloads = obj.get("downloads", [])
        if not isinstance(downloads, list) or not all(isinstance(t, bytes) and 0 < len(t) <= 16 for t in downloads):
            raise StateError("downloads must be a list of eimTransactionIds (1-16 bytes each)")
        eid = obj.get("eid")
        if eid is not None and not (isinstance(eid, bytes) and len(eid) == 16):
            raise StateError("eid must be 16 bytes")
        return cls(
            eid=eid,
            results=[PendingResult.from_obj(r) for r in results],
            remove_seqs=list(remove),
            inflight=inflight,
            failures=failures,
            next_poll=float(next_poll),
            last_contact=float(last_contact),
            state_change=cause,
            association_tokens=dict(tokens),
            fallback=fallback,
            delivered_seqs=list(delivered),
            finished_downloads=list(downloads),
        )


def encode_state(state: IpaState) -> bytes:
    import cbor2

    return cbor2.dumps(state.to_obj())


def decode_state(data: bytes) -> IpaState:
    """Decode a state file; raise :class:`StateError` for anything malformed."""
    import cbor2

    try:
        obj = cbor2.loads(data)
    except Exception as exc:  # cbor2 raises several types (CBORDecodeError, ValueError, RecursionError...)
        raise StateError(f"not CBOR: {exc}") from None
    return IpaState.from_obj(obj)


class StateStore:
    """The state file. ``state`` is the in-memory copy; after every change ``await commit()`` (in async code) or
    ``save()`` (outside an event loop)."""

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = Path(path) if path is not None else None
        self.state = IpaState()
        self.writes = 0  # snapshots taken (commit/save calls)
        self.files_written = 0  # snapshots that reached the disk (fewer when queued ones were coalesced)
        self._generation = 0  # number of the newest snapshot
        self._latest: tuple[int, bytes] | None = None  # the newest snapshot (number, CBOR)
        self._on_disk = 0  # number of the snapshot in the file
        self._mutex = threading.Lock()  # guards _generation/_latest/_on_disk (loop thread and writer thread)
        self._io = threading.Lock()  # one file write at a time (the writer thread, or save() in its caller)
        self._writer: Any = None  # a concurrent.futures.ThreadPoolExecutor once commit() ran under a loop

    def load(self) -> IpaState:
        if self.path is None or not self.path.exists():
            self.state = IpaState()
            return self.state
        data = self.path.read_bytes()
        try:
            self.state = decode_state(data)
        except StateError as exc:
            aside = self.path.with_suffix(self.path.suffix + ".corrupt")
            log.error("state file %s is damaged (%s); kept as %s, starting empty", self.path, exc, aside)
            with contextlib.suppress(OSError):
                os.replace(self.path, aside)
            self.state = IpaState()
        return self.state

    async def aload(self) -> IpaState:
        """:meth:`load` in a thread (reading, and perhaps moving a damaged file aside, is disk I/O)."""
        return await loopless.blocking(self.load)

    def parked_path(self, eid: bytes) -> Path:
        """Where the state of a card that is not in the device now is kept (``state.cbor.<EID>``)."""
        assert self.path is not None
        return self.path.with_name(f"{self.path.name}.{eid.hex().upper()}")

    async def abind(self, eid: bytes) -> str:
        """Tie the state to the eUICC ``eid`` (read from the card at start). Returns what was done:

        - ``"same"``: the state is this card's;
        - ``"new"``: an empty state, now this card's;
        - ``"swapped"``: the state belonged to another card: it is parked as ``state.cbor.<its EID>`` and this
          card's parked state (if it was here before) or an empty one is taken up. Another card's tokens, results,
          delivered sequence numbers and procedure in flight are never used for this one;
        - ``"unbound"``: a non-empty state from a version that did not record the EID: set aside as
          ``state.cbor.unbound`` (it may be another card's), and this card starts empty; the card's own lists of
          pending results and notifications are the second source of truth."""
        current = self.state
        if current.eid == eid:
            return "same"
        if current.eid is None and current.is_empty():
            outcome = "new"
        else:
            outcome = "unbound" if current.eid is None else "swapped"
            if self.path is not None:
                aside = self.path.with_name(self.path.name + ".unbound") if current.eid is None else None
                await loopless.blocking(self._park, current, aside)
            self.state = IpaState()
            if outcome == "swapped" and self.path is not None:
                parked = self.parked_path(eid)
                restored = await loopless.blocking(_read_state, parked)
                if restored is not None and restored.eid == eid:
                    self.state = restored
                    outcome = "swapped back"
            log.warning(
                "state file belonged to %s: kept aside, this card (%s) %s",
                current.eid.hex().upper() if current.eid else "an unknown card",
                eid.hex().upper(),
                "gets its own earlier state" if outcome == "swapped back" else "starts with an empty state",
            )
        self.state.eid = eid
        await self.commit()
        return outcome

    def _park(self, state: IpaState, aside: Path | None) -> None:
        target = aside if aside is not None else self.parked_path(state.eid)  # type: ignore[arg-type]
        _write_atomically(target, encode_state(state))

    # ------------------------------------------------------------------ writing
    def _snapshot(self) -> int:
        """Encode the current state as the newest snapshot; returns its number."""
        data = encode_state(self.state)
        with self._mutex:
            self.writes += 1
            self._generation += 1
            self._latest = (self._generation, data)
            return self._generation

    def _write_through(self, generation: int) -> None:
        """Make sure snapshot ``generation`` (or a newer one) is on disk. Runs in the writer thread (or the caller's,
        for :meth:`save`). Raises ``OSError`` when the write fails; the file then keeps the older state."""
        assert self.path is not None
        with self._io:
            with self._mutex:
                if self._on_disk >= generation or self._latest is None:
                    return  # a newer snapshot was written meanwhile: it holds this one's changes
                newest, data = self._latest
            _write_atomically(self.path, data)
            with self._mutex:
                self._on_disk = max(self._on_disk, newest)
                self.files_written += 1

    async def commit(self) -> None:
        """Write the current state off the event loop; return once it (or a later state) is on disk."""
        generation = self._snapshot()
        if self.path is None:
            return
        if not loopless.loop_running():  # a one-shot command driven without a loop (ipa.loopless): write here
            self._write_through(generation)
            return
        import asyncio
        import concurrent.futures

        if self._writer is None:
            self._writer = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="ipa-state")
        done = asyncio.wrap_future(self._writer.submit(self._write_through, generation))
        try:
            await asyncio.shield(done)  # a cancelled caller does not cancel the write
        except asyncio.CancelledError:
            done.add_done_callback(_log_failure)  # nobody is left to get its error
            raise

    def save(self) -> None:
        """Write the current state in the calling thread (for code outside an event loop)."""
        generation = self._snapshot()
        if self.path is None:
            return
        if _loop_running():
            caller = traceback.extract_stack(limit=2)[0]
            log.error(
                "state written with a blocking save() on the event loop (use await commit()): called from %s:%s %s",
                caller.filename,
                caller.lineno,
                caller.name,
            )
        self._write_through(generation)

    async def aclose(self) -> None:
        """Wait for the writes in progress and stop the writer thread (a later commit starts a new one)."""
        writer, self._writer = self._writer, None
        if writer is not None:
            import asyncio

            await asyncio.wrap_future(writer.submit(lambda: None))  # in order: after every queued write
            writer.shutdown(wait=False)

    # ------------------------------------------------------------------ helpers used by the procedures
    async def add_result(
        self,
        kind: str,
        der: bytes,
        *,
        eim_id: str | None = None,
        seq_numbers: list[int] | None = None,
        rollback: dict[str, Any] | None = None,
        clear_inflight: bool = False,
    ) -> PendingResult:
        """Queue a result and (optionally) end the procedure in flight, in one atomic write."""
        # os.urandom(8).hex() is secrets.token_hex(8) without importing secrets (hmac, hashlib, random)
        r = PendingResult(os.urandom(8).hex(), kind, der, eim_id, list(seq_numbers or []), 0, time.time(), rollback)
        self.state.results.append(r)
        if clear_inflight:
            self.state.inflight = None
        await self.commit()
        return r

    async def result_delivered(self, result_id: str, acknowledged: list[int]) -> None:
        """Drop a delivered result and remember the acknowledged sequence numbers to remove, in one write."""
        for r in self.state.results:
            if r.id == result_id:
                self.state.delivered_seqs = (self.state.delivered_seqs + r.seq_numbers)[-MAX_DELIVERED:]
        self.state.results = [r for r in self.state.results if r.id != result_id]
        for s in acknowledged:
            if s not in self.state.remove_seqs:
                self.state.remove_seqs.append(s)
        await self.commit()

    async def set_inflight(self, procedure: str | None, **data: Any) -> None:
        self.state.inflight = None if procedure is None else {"procedure": procedure, **data}
        await self.commit()


def _read_state(path: Path) -> IpaState | None:
    """A parked state file, or ``None`` when missing or damaged (then it is not used)."""
    try:
        return decode_state(path.read_bytes())
    except (OSError, StateError):
        return None


def _write_atomically(path: Path, data: bytes) -> None:
    """Temporary file in the same directory, fsync, rename over ``path``, fsync the directory."""
    private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _log_failure(fut: Any) -> None:  # an asyncio.Future
    """The outcome of a write whose caller was cancelled: a failure is logged, not lost."""
    if fut.cancelled():
        return
    exc = fut.exception()
    if exc is not None:
        log.error("writing the state file failed: %s", exc)


def _loop_running() -> bool:
    return loopless.loop_running()
