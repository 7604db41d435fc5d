"""RSP sessions of the SM-DP+ (SGP.22 v2.5 §3.1.3: one session per transactionId, from InitiateAuthentication to
the ProfileInstallationResult or CancelSession).

Sessions live in memory (a lab SM-DP+ runs one process); they expire after ``ttl`` seconds without activity.
What must survive a restart (order states, the eUICC certificates learned, notifications) is in the store.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field

from cryptography import x509

# session states
INITIATED = "initiated"  # after InitiateAuthentication
AUTHENTICATED = "authenticated"  # after AuthenticateClient
BOUND = "bound"  # after GetBoundProfilePackage


@dataclass
class Session:
    transaction_id: bytes
    euicc_challenge: bytes
    server_challenge: bytes
    ci_pkid: bytes  # euiccCiPKIdToBeUsed: the CI the eUICC chain must end at
    cred_pkid: bytes  # the CI of the DPauth/DPpb credentials presented
    curve: str
    state: str = INITIATED
    created: float = field(default_factory=time.monotonic)
    touched: float = field(default_factory=time.monotonic)
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
    """Thread-safe map transactionId -> :class:`Session` with idle expiry, and a bounded memory of the sessions
    that ended in an error (:class:`EndedSession`, kept for ``ttl`` seconds)."""

    def __init__(self, ttl: float = 900.0, max_sessions: int = 100_000):
        self.ttl = ttl
        self.max_sessions = max_sessions
        self._lock = threading.Lock()
        self._sessions: dict[bytes, Session] = {}
        self._ended: dict[bytes, EndedSession] = {}  # insertion order = age

    def new_transaction_id(self) -> bytes:
        """16 random bytes, unique among live sessions (SGP.22: unique within the SM-DP+)."""
        while True:
            txid = secrets.token_bytes(16)
            with self._lock:
                if txid not in self._sessions:
                    return txid

    def add(self, session: Session) -> None:
        with self._lock:
            self._expire_locked()
            if len(self._sessions) >= self.max_sessions:
                oldest = min(self._sessions.values(), key=lambda s: s.touched)
                del self._sessions[oldest.transaction_id]
            self._sessions[session.transaction_id] = session

    def get(self, transaction_id: bytes) -> Session | None:
        with self._lock:
            s = self._sessions.get(transaction_id)
            if s is None:
                return None
            now = time.monotonic()
            if now - s.touched > self.ttl:
                del self._sessions[transaction_id]
                return None
            s.touched = now
            return s

    def remove(self, transaction_id: bytes, *, after_error: bool = True) -> Session | None:
        """End a session. ``after_error`` (the default, as every ES9+ function ends a session when it answers an
        error) remembers it for the LPA's cancelSession; a cancelled or completed session is just gone."""
        with self._lock:
            session = self._sessions.pop(transaction_id, None)
            if session is not None and after_error:
                now = time.monotonic()
                for k in [k for k, e in self._ended.items() if now - e.ended > self.ttl]:
                    del self._ended[k]
                while len(self._ended) >= self.max_sessions:
                    del self._ended[next(iter(self._ended))]
                self._ended[transaction_id] = EndedSession(
                    transaction_id, session.state, session.euicc_certificate, session.matching_id, now
                )
            return session

    def ended_after_error(self, transaction_id: bytes) -> EndedSession | None:
        """The session ended in an error, once: a second cancelSession for it is unknown again."""
        with self._lock:
            ended = self._ended.pop(transaction_id, None)
        if ended is None or time.monotonic() - ended.ended > self.ttl:
            return None
        return ended

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def _expire_locked(self) -> None:
        now = time.monotonic()
        dead = [k for k, s in self._sessions.items() if now - s.touched > self.ttl]
        for k in dead:
            del self._sessions[k]
