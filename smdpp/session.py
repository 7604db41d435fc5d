"""RSP sessions of the SM-DP+ (SGP.22 v2.5 §3.1.3: one session per transactionId, from InitiateAuthentication to
the ProfileInstallationResult or CancelSession).

Sessions live in the order store's SQLite file (tables ``sessions`` and ``ended_sessions``), so that every worker
of ``smdpp serve --workers N`` continues every session: a download whose initiateAuthentication one worker answered
goes on with whichever worker gets authenticateClient, getBoundProfilePackage and handleNotification. Every change
is one short ``BEGIN IMMEDIATE`` transaction; a change is guarded by the state it was read in
(:meth:`SessionStore.save`), so two workers answering the same step of one session at once cannot both move it on.
Sessions expire ``ttl`` seconds after their last change (wall clock, the same in every process); at most
``max_sessions`` are kept (the oldest started go first). They survive a restart of the server like the orders do.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from smdpp.store import OrderStore

# session states
INITIATED = "initiated"  # after InitiateAuthentication
AUTHENTICATED = "authenticated"  # after AuthenticateClient
BOUND = "bound"  # after GetBoundProfilePackage

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    transaction_id BLOB NOT NULL UNIQUE,
    state TEXT NOT NULL,
    touched REAL NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_touched ON sessions(touched);
CREATE TABLE IF NOT EXISTS ended_sessions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    transaction_id BLOB NOT NULL UNIQUE,
    ended REAL NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ended_sessions_ended ON ended_sessions(ended);
"""


class SessionConflict(Exception):
    """The session changed (another worker answered a step of it) or ended since it was read."""


@dataclass
class Session:
    transaction_id: bytes
    euicc_challenge: bytes
    server_challenge: bytes
    ci_pkid: bytes  # euiccCiPKIdToBeUsed: the CI the eUICC chain must end at
    cred_pkid: bytes  # the CI of the DPauth/DPpb credentials presented
    curve: str
    state: str = INITIATED
    created: float = field(default_factory=time.time)
    touched: float = field(default_factory=time.time)
    # learned in AuthenticateClient
    eid: str | None = None
    euicc_certificate: x509.Certificate | None = None
    matching_id: str | None = None
    iccid: str | None = None
    profile: str | None = None
    cc_required: bool = False
    smdp_signature2_tlv: bytes | None = None  # the whole 5F37 TLV, as sent
    # learned in GetBoundProfilePackage
    euicc_otpk: bytes | None = None
    cc_refused: int = 0  # wrong confirmation codes in this session (the order stays open while attempts remain)

    @property
    def transaction_id_hex(self) -> str:
        return self.transaction_id.hex().upper()

    def to_json(self) -> str:
        cert = self.euicc_certificate
        return json.dumps(
            {
                "euicc_challenge": self.euicc_challenge.hex(),
                "server_challenge": self.server_challenge.hex(),
                "ci_pkid": self.ci_pkid.hex(),
                "cred_pkid": self.cred_pkid.hex(),
                "curve": self.curve,
                "created": self.created,
                "eid": self.eid,
                "euicc_certificate": cert.public_bytes(serialization.Encoding.DER).hex() if cert else None,
                "matching_id": self.matching_id,
                "iccid": self.iccid,
                "profile": self.profile,
                "cc_required": self.cc_required,
                "smdp_signature2_tlv": self.smdp_signature2_tlv.hex() if self.smdp_signature2_tlv else None,
                "euicc_otpk": self.euicc_otpk.hex() if self.euicc_otpk else None,
                "cc_refused": self.cc_refused,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_row(cls, transaction_id: bytes, state: str, touched: float, data: str) -> Session:
        d: dict[str, Any] = json.loads(data)
        return cls(
            transaction_id=bytes(transaction_id),
            euicc_challenge=bytes.fromhex(d["euicc_challenge"]),
            server_challenge=bytes.fromhex(d["server_challenge"]),
            ci_pkid=bytes.fromhex(d["ci_pkid"]),
            cred_pkid=bytes.fromhex(d["cred_pkid"]),
            curve=d["curve"],
            state=state,
            created=d["created"],
            touched=touched,
            eid=d["eid"],
            euicc_certificate=_cert(d["euicc_certificate"]),
            matching_id=d["matching_id"],
            iccid=d["iccid"],
            profile=d["profile"],
            cc_required=d["cc_required"],
            smdp_signature2_tlv=_bytes(d["smdp_signature2_tlv"]),
            euicc_otpk=_bytes(d["euicc_otpk"]),
            cc_refused=d["cc_refused"],
        )


def _bytes(value: str | None) -> bytes | None:
    return bytes.fromhex(value) if value is not None else None


def _cert(value: str | None) -> x509.Certificate | None:
    # written by this module from a certificate verified in AuthenticateClient
    return x509.load_der_x509_certificate(bytes.fromhex(value)) if value is not None else None


@dataclass(frozen=True)
class EndedSession:
    """A session the SM-DP+ ended itself while answering an ES9+ error. SGP.22 has the LPA end the eUICC side with
    ES10b.CancelSession and tell the SM-DP+ with ES9+ cancelSession afterwards (§3.1.3 and the Common Cancel
    Session procedure); that call is expected and gets a plain answer instead of "TransactionId - Unknown"."""

    transaction_id: bytes
    state: str  # the state it had: which step failed (initiated: authenticateClient, authenticated: getBPP)
    euicc_certificate: x509.Certificate | None
    matching_id: str | None
    ended: float

    @property
    def failed_step(self) -> str:
        return {INITIATED: "authenticateClient", AUTHENTICATED: "getBoundProfilePackage"}.get(self.state, self.state)


class SessionStore:
    """transactionId -> :class:`Session` in the order store's SQLite file, shared by every worker process, with
    idle expiry, and a bounded memory of the sessions that ended in an error (:class:`EndedSession`, kept for
    ``ttl`` seconds). Thread-safe (the store's connection lock)."""

    def __init__(self, store: OrderStore, ttl: float = 900.0, max_sessions: int = 100_000):
        self.store = store
        self.ttl = ttl
        self.max_sessions = max_sessions
        store.executescript(_SCHEMA)

    def new_transaction_id(self) -> bytes:
        """16 random bytes (SGP.22: unique within the SM-DP+; the table's UNIQUE constraint guards it)."""
        return secrets.token_bytes(16)

    def add(self, session: Session) -> None:
        now = time.time()
        session.touched = now
        with self.store.transaction() as db:
            db.execute("DELETE FROM sessions WHERE touched < ?", (now - self.ttl,))
            db.execute("DELETE FROM sessions WHERE id <= (SELECT MAX(id) FROM sessions) - ?", (self.max_sessions - 1,))
            db.execute(
                "INSERT INTO sessions(transaction_id, state, touched, data) VALUES(?,?,?,?)",
                (session.transaction_id, session.state, now, session.to_json()),
            )

    def get(self, transaction_id: bytes) -> Session | None:
        row = self.store.fetchone(
            "SELECT state, touched, data FROM sessions WHERE transaction_id=? AND touched >= ?",
            (transaction_id, time.time() - self.ttl),
        )
        if row is None:
            return None
        return Session.from_row(transaction_id, row["state"], row["touched"], row["data"])

    def save(self, session: Session, expect: str) -> None:
        """Write the session's changes, if it is still in state ``expect`` (as it was read); else
        :class:`SessionConflict` and nothing is written."""
        now = time.time()
        with self.store.transaction() as db:
            cur = db.execute(
                "UPDATE sessions SET state=?, touched=?, data=? WHERE transaction_id=? AND state=? AND touched >= ?",
                (session.state, now, session.to_json(), session.transaction_id, expect, now - self.ttl),
            )
            if cur.rowcount != 1:
                raise SessionConflict(f"session {session.transaction_id_hex} is no longer {expect}")
        session.touched = now

    def remove(self, transaction_id: bytes, *, after_error: bool = True) -> Session | None:
        """End a session. ``after_error`` (the default, as every ES9+ function ends a session when it answers an
        error) remembers it for the LPA's cancelSession; a cancelled or completed session is just gone."""
        now = time.time()
        with self.store.transaction() as db:
            rows = db.execute(
                "DELETE FROM sessions WHERE transaction_id=? RETURNING state, touched, data", (transaction_id,)
            ).fetchall()
            if not rows:
                return None
            row = rows[0]
            session = Session.from_row(transaction_id, row["state"], row["touched"], row["data"])
            if after_error:
                db.execute("DELETE FROM ended_sessions WHERE ended < ?", (now - self.ttl,))
                db.execute(
                    "DELETE FROM ended_sessions WHERE id <= (SELECT MAX(id) FROM ended_sessions) - ?",
                    (self.max_sessions - 1,),
                )
                ended = {
                    "state": session.state,
                    "matching_id": session.matching_id,
                    "euicc_certificate": json.loads(row["data"])["euicc_certificate"],
                }
                db.execute(
                    "INSERT OR REPLACE INTO ended_sessions(transaction_id, ended, data) VALUES(?,?,?)",
                    (transaction_id, now, json.dumps(ended)),
                )
        return session

    def ended_after_error(self, transaction_id: bytes) -> EndedSession | None:
        """The session ended in an error, once: a second cancelSession for it is unknown again."""
        with self.store.transaction() as db:
            rows = db.execute(
                "DELETE FROM ended_sessions WHERE transaction_id=? RETURNING ended, data", (transaction_id,)
            ).fetchall()
        if not rows or time.time() - rows[0]["ended"] > self.ttl:
            return None
        row = rows[0]
        d = json.loads(row["data"])
        return EndedSession(
            bytes(transaction_id), d["state"], _cert(d["euicc_certificate"]), d["matching_id"], row["ended"]
        )

    def __len__(self) -> int:
        row = self.store.fetchone("SELECT COUNT(*) AS n FROM sessions WHERE touched >= ?", (time.time() - self.ttl,))
        return int(row["n"]) if row else 0
