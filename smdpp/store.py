"""Download orders and their profile states (an ES2+-like operator surface, SGP.22 v2.5 §3.1.1 / §5.3).

One SQLite file (``DIR/smdpp.sqlite``) holds the orders, their state history and the notifications received.
Several processes may share it (the server and ``smdpp order ...`` on the command line): WAL mode, short
``BEGIN IMMEDIATE`` transactions for every read-modify-write.

Profile states (of the ICCID an order carries), as SGP.22 names them:

``available``   the ICCID is back in the pool (order cancelled with final state available)
``allocated``   DownloadOrder without an EID
``linked``      DownloadOrder with an EID
``confirmed``   ConfirmOrder done, not yet released (``order create --hold``)
``released``    ready to download: the matchingId may start a download
``downloaded``  a Bound Profile Package was delivered (getBoundProfilePackage)
``installed``   the eUICC's signed ProfileInstallationResult reported success (handleNotification)
``error``       the download failed for good (PIR error, cancelSession, confirmation-code retries exhausted)
``unavailable`` withdrawn by the operator (order cancel with final state unavailable)

A matchingId is one-time: once an order leaves ``released``/``downloaded`` for ``installed``, ``error``,
``available`` or ``unavailable``, its matchingId is refused (SGP.22 8.2.6/3.8).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rsp.activation_code import ActivationCode

STATES = (
    "available",
    "allocated",
    "linked",
    "confirmed",
    "released",
    "downloaded",
    "installed",
    "error",
    "unavailable",
)
# States in which a matchingId may start (or, for downloaded, resume with rebinding) a download.
DOWNLOADABLE = ("released", "downloaded")
FINAL = ("installed", "error", "available", "unavailable")

DEFAULT_CC_RETRIES = 3
DEFAULT_DOWNLOAD_ATTEMPTS = 5

_SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    matching_id TEXT PRIMARY KEY,
    profile TEXT NOT NULL,
    iccid TEXT NOT NULL,
    eid TEXT,
    state TEXT NOT NULL,
    cc_hash BLOB,
    cc_attempts INTEGER NOT NULL DEFAULT 0,
    cc_max INTEGER NOT NULL,
    download_attempts INTEGER NOT NULL DEFAULT 0,
    download_max INTEGER NOT NULL,
    expires_at REAL,
    smdp_address TEXT NOT NULL,
    bound_eid TEXT,
    transaction_id TEXT,
    last_error TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS orders_eid ON orders(eid);
CREATE INDEX IF NOT EXISTS orders_iccid ON orders(iccid);
CREATE TABLE IF NOT EXISTS order_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    matching_id TEXT NOT NULL,
    at REAL NOT NULL,
    state TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS iccid_counter (
    profile TEXT PRIMARY KEY,
    next INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS euiccs (
    eid TEXT PRIMARY KEY,
    certificate BLOB NOT NULL,
    seen_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS notifications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at REAL NOT NULL,
    kind TEXT NOT NULL,
    event TEXT,
    seq_number INTEGER,
    iccid TEXT,
    eid TEXT,
    transaction_id TEXT,
    matching_id TEXT,
    verified INTEGER NOT NULL,
    detail TEXT NOT NULL,
    raw BLOB NOT NULL
);
"""


class StoreError(Exception):
    """An operator request that the store refuses (unknown order, bad transition, bad value)."""


@dataclass(frozen=True)
class Order:
    matching_id: str
    profile: str
    iccid: str
    eid: str | None
    state: str
    cc_required: bool
    cc_attempts: int
    cc_max: int
    download_attempts: int
    download_max: int
    expires_at: float | None
    smdp_address: str
    bound_eid: str | None
    transaction_id: str | None
    last_error: str | None
    created_at: float
    updated_at: float

    @property
    def activation_code(self) -> str:
        """SGP.22 §4.1 activation code: ``1$<SM-DP+ address>$<matchingId>[$$1]`` (``$$1``: code required)."""
        return ActivationCode(self.smdp_address, self.matching_id, confirmation_code_required=self.cc_required).format()

    @property
    def why_closed(self) -> str:
        """Why a matchingId in a final state is refused, in words a user can act on."""
        if self.state == "installed":
            return f"already used: installed on EID {self.bound_eid}" if self.bound_eid else "already used: installed"
        if self.state in ("available", "unavailable"):
            return "cancelled by the operator"
        if self.state == "error":
            return self.last_error or "ended by an error"
        return "not released"

    def expired(self, now: float | None = None) -> bool:
        return self.expires_at is not None and (now if now is not None else time.time()) >= self.expires_at

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["activation_code"] = self.activation_code
        d["expires_at"] = _iso(self.expires_at)
        d["created_at"] = _iso(self.created_at)
        d["updated_at"] = _iso(self.updated_at)
        return d


@dataclass(frozen=True)
class Notification:
    id: int
    received_at: float
    kind: str
    event: str | None
    seq_number: int | None
    iccid: str | None
    eid: str | None
    transaction_id: str | None
    matching_id: str | None
    verified: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["received_at"] = _iso(self.received_at)
        return d


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def hash_confirmation_code(cc: str) -> bytes:
    """SGP.22 §3.1.3.1: the SM-DP+ keeps SHA256(confirmation code)."""
    return hashlib.sha256(cc.encode("utf-8")).digest()


def new_matching_id() -> str:
    """A one-time matchingId: four groups of five characters (0-9, A-Z), as seen in real activation codes."""
    alphabet = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"
    return "-".join("".join(secrets.choice(alphabet) for _ in range(5)) for _ in range(4))


def luhn_digit(digits: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


class OrderStore:
    """SQLite store of download orders. Thread-safe; every mutation is one IMMEDIATE transaction."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=10.0)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=10000")
        self._db.executescript(_SCHEMA)

    @classmethod
    def in_dir(cls, data_dir: str | Path) -> OrderStore:
        return cls(Path(data_dir) / "smdpp.sqlite")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def transaction(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction on the store's connection (for the tables of ``smdpp.session``)."""
        return self._tx()

    def fetchone(self, sql: str, args: tuple[Any, ...] = ()) -> sqlite3.Row | None:
        """One row of a read outside a write transaction (for the tables of ``smdpp.session``)."""
        with self._lock:
            return self._db.execute(sql, args).fetchone()

    def executescript(self, script: str) -> None:
        with self._lock:
            self._db.executescript(script)

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            else:
                self._db.execute("COMMIT")

    # ------------------------------------------------------------------ orders
    def next_iccid(self, profile: str, prefix: str) -> str:
        """Allocate the next ICCID of a test profile: ``prefix`` + serial + Luhn digit (19 digits, padded F)."""
        with self._tx() as db:
            row = db.execute("SELECT next FROM iccid_counter WHERE profile=?", (profile,)).fetchone()
            n = row["next"] if row else 1
            db.execute(
                "INSERT INTO iccid_counter(profile, next) VALUES(?, ?) "
                "ON CONFLICT(profile) DO UPDATE SET next=excluded.next",
                (profile, n + 1),
            )
        body = prefix + str(n).rjust(18 - len(prefix), "0")
        if len(body) != 18:
            raise StoreError(f"ICCID space of profile {profile!r} exhausted")
        return body + luhn_digit(body)

    def create_order(
        self,
        *,
        profile: str,
        iccid: str,
        smdp_address: str,
        eid: str | None = None,
        confirmation_code: str | None = None,
        expires_at: float | None = None,
        release: bool = True,
        matching_id: str | None = None,
        cc_max: int = DEFAULT_CC_RETRIES,
        download_max: int = DEFAULT_DOWNLOAD_ATTEMPTS,
    ) -> Order:
        """DownloadOrder + ConfirmOrder (+ ReleaseProfile unless ``release`` is false) in one step."""
        if eid is not None and (len(eid) != 32 or not eid.isdigit()):
            raise StoreError(f"EID must be 32 decimal digits, got {eid!r}")
        if confirmation_code is not None and not (1 <= len(confirmation_code) <= 64):
            raise StoreError("confirmation code must be 1..64 characters")
        if matching_id is not None and not (1 <= len(matching_id) <= 64 and matching_id.isprintable()):
            raise StoreError("matchingId must be 1..64 printable characters")
        if "$" in (matching_id or ""):
            raise StoreError("matchingId must not contain '$'")
        now = time.time()
        if expires_at is not None and expires_at <= now:
            raise StoreError("expiry is in the past")
        state = "released" if release else "confirmed"
        cc_hash = hash_confirmation_code(confirmation_code) if confirmation_code else None
        with self._tx() as db:
            mid = matching_id or new_matching_id()
            if db.execute("SELECT 1 FROM orders WHERE matching_id=?", (mid,)).fetchone():
                raise StoreError(f"matchingId {mid} already exists")
            db.execute(
                "INSERT INTO orders(matching_id, profile, iccid, eid, state, cc_hash, cc_max, download_max, "
                "expires_at, smdp_address, created_at, updated_at) VALUES(?,?,?,?,?,?,?,?,?,?,?,?)",
                (mid, profile, iccid, eid, state, cc_hash, cc_max, download_max, expires_at, smdp_address, now, now),
            )
            self._event(
                db, mid, "linked" if eid else "allocated", f"download order for profile {profile} ICCID {iccid}"
            )
            self._event(db, mid, state, "confirmed" + (" and released" if release else ""))
        return self.get(mid)  # type: ignore[return-value]

    def get(self, matching_id: str) -> Order | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM orders WHERE matching_id=?", (matching_id,)).fetchone()
        return _order(row) if row else None

    def require(self, matching_id: str) -> Order:
        order = self.get(matching_id)
        if order is None:
            raise StoreError(f"no order with matchingId {matching_id}")
        return order

    def list(self, state: str | None = None, eid: str | None = None) -> list[Order]:
        sql, args = "SELECT * FROM orders", []
        where = []
        if state:
            where.append("state=?")
            args.append(state)
        if eid:
            where.append("(eid=? OR bound_eid=?)")
            args += [eid, eid]
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at, matching_id"
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [_order(r) for r in rows]

    def find_for_eid(self, eid: str) -> Order | None:
        """The oldest released order linked to ``eid`` (download with an empty matchingId, SGP.22 §3.1.2)."""
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM orders WHERE eid=? AND state='released' ORDER BY created_at LIMIT 1", (eid,)
            ).fetchone()
        return _order(row) if row else None

    def events(self, matching_id: str) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT at, state, detail FROM order_events WHERE matching_id=? ORDER BY id", (matching_id,)
            ).fetchall()
        return [{"at": _iso(r["at"]), "state": r["state"], "detail": r["detail"]} for r in rows]

    def update(
        self, matching_id: str, *, expect: tuple[str, ...] | None = None, detail: str = "", **fields: Any
    ) -> Order:
        """Change fields of one order atomically; ``expect`` guards the current state."""
        allowed = {
            "state",
            "eid",
            "bound_eid",
            "transaction_id",
            "last_error",
            "cc_attempts",
            "download_attempts",
        }
        bad = set(fields) - allowed
        if bad:
            raise StoreError(f"cannot update {sorted(bad)}")
        if "state" in fields and fields["state"] not in STATES:
            raise StoreError(f"unknown state {fields['state']!r}")
        with self._tx() as db:
            row = db.execute("SELECT state FROM orders WHERE matching_id=?", (matching_id,)).fetchone()
            if row is None:
                raise StoreError(f"no order with matchingId {matching_id}")
            if expect is not None and row["state"] not in expect:
                raise StoreError(f"order {matching_id} is {row['state']}, expected one of {', '.join(expect)}")
            sets = ", ".join(f"{k}=?" for k in fields) + ", updated_at=?"
            db.execute(f"UPDATE orders SET {sets} WHERE matching_id=?", [*fields.values(), time.time(), matching_id])
            if "state" in fields and (fields["state"] != row["state"] or detail):
                self._event(db, matching_id, fields["state"], detail)
            elif detail:
                self._event(db, matching_id, row["state"], detail)
        return self.require(matching_id)

    def count_failed_cc(self, matching_id: str) -> Order:
        """One more wrong confirmation code; at ``cc_max`` the order goes to ``error``."""
        with self._tx() as db:
            row = db.execute("SELECT cc_attempts, cc_max FROM orders WHERE matching_id=?", (matching_id,)).fetchone()
            if row is None:
                raise StoreError(f"no order with matchingId {matching_id}")
            n = row["cc_attempts"] + 1
            if n >= row["cc_max"]:
                db.execute(
                    "UPDATE orders SET cc_attempts=?, state='error', last_error=?, updated_at=? WHERE matching_id=?",
                    (n, "confirmation code retries exhausted", time.time(), matching_id),
                )
                self._event(
                    db, matching_id, "error", f"wrong confirmation code ({n}/{row['cc_max']}): retries exhausted"
                )
            else:
                db.execute(
                    "UPDATE orders SET cc_attempts=?, updated_at=? WHERE matching_id=?", (n, time.time(), matching_id)
                )
                self._event(db, matching_id, "released", f"wrong confirmation code ({n}/{row['cc_max']})")
        return self.require(matching_id)

    def release(self, matching_id: str) -> Order:
        return self.update(
            matching_id, expect=("allocated", "linked", "confirmed"), state="released", detail="released"
        )

    def cancel(self, matching_id: str, final_state: str = "unavailable") -> Order:
        """ES2+ CancelOrder: the order ends; its ICCID becomes ``available`` or ``unavailable``."""
        if final_state not in ("available", "unavailable"):
            raise StoreError("final state must be available or unavailable")
        return self.update(
            matching_id,
            expect=("allocated", "linked", "confirmed", "released", "downloaded", "error"),
            state=final_state,
            detail="cancelled by the operator",
        )

    def _event(self, db: sqlite3.Connection, matching_id: str, state: str, detail: str) -> None:
        db.execute(
            "INSERT INTO order_events(matching_id, at, state, detail) VALUES(?,?,?,?)",
            (matching_id, time.time(), state, detail),
        )

    # ------------------------------------------------------------------ notifications
    def add_notification(
        self,
        *,
        kind: str,
        raw: bytes,
        verified: bool,
        detail: str,
        event: str | None = None,
        seq_number: int | None = None,
        iccid: str | None = None,
        eid: str | None = None,
        transaction_id: str | None = None,
        matching_id: str | None = None,
    ) -> int:
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO notifications(received_at, kind, event, seq_number, iccid, eid, transaction_id, "
                "matching_id, verified, detail, raw) VALUES(?,?,?,?,?,?,?,?,?,?,?)",
                (
                    time.time(),
                    kind,
                    event,
                    seq_number,
                    iccid,
                    eid,
                    transaction_id,
                    matching_id,
                    int(verified),
                    detail,
                    raw,
                ),
            )
            return int(cur.lastrowid or 0)

    def remember_euicc(self, eid: str, certificate_der: bytes) -> None:
        """Keep the eUICC certificate learned in AuthenticateClient (to verify later notifications)."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO euiccs(eid, certificate, seen_at) VALUES(?,?,?) "
                "ON CONFLICT(eid) DO UPDATE SET certificate=excluded.certificate, seen_at=excluded.seen_at",
                (eid, certificate_der, time.time()),
            )

    def euicc_certificate(self, eid: str) -> bytes | None:
        with self._lock:
            row = self._db.execute("SELECT certificate FROM euiccs WHERE eid=?", (eid,)).fetchone()
        return bytes(row["certificate"]) if row else None

    def find_by_transaction(self, transaction_id: str) -> Order | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM orders WHERE transaction_id=?", (transaction_id,)).fetchone()
        return _order(row) if row else None

    def notifications(self, limit: int = 100) -> list[Notification]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM notifications ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [
            Notification(
                r["id"],
                r["received_at"],
                r["kind"],
                r["event"],
                r["seq_number"],
                r["iccid"],
                r["eid"],
                r["transaction_id"],
                r["matching_id"],
                bool(r["verified"]),
                r["detail"],
            )
            for r in rows
        ]

    def cc_hash(self, matching_id: str) -> bytes | None:
        """SHA256(confirmation code) of an order, or None when it needs no code."""
        with self._lock:
            row = self._db.execute("SELECT cc_hash FROM orders WHERE matching_id=?", (matching_id,)).fetchone()
        return bytes(row["cc_hash"]) if row and row["cc_hash"] is not None else None

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) AS n FROM orders GROUP BY state").fetchall()
        return {r["state"]: r["n"] for r in rows}

    def dump(self) -> str:
        """All orders as JSON (used by tests to check that bad input changed nothing)."""
        return json.dumps([o.to_json() for o in self.list()], sort_keys=True)


def _order(row: sqlite3.Row) -> Order:
    return Order(
        matching_id=row["matching_id"],
        profile=row["profile"],
        iccid=row["iccid"],
        eid=row["eid"],
        state=row["state"],
        cc_required=row["cc_hash"] is not None,
        cc_attempts=row["cc_attempts"],
        cc_max=row["cc_max"],
        download_attempts=row["download_attempts"],
        download_max=row["download_max"],
        expires_at=row["expires_at"],
        smdp_address=row["smdp_address"],
        bound_eid=row["bound_eid"],
        transaction_id=row["transaction_id"],
        last_error=row["last_error"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )
