"""Dashboard sessions: log in with an operator token, a server-side session behind an opaque cookie, CSRF checks.

========================================================  ==========================================================
request                                                   answer
========================================================  ==========================================================
no / unknown / expired session cookie (auth configured)   GET: 303 to ``/ui/login?next=...``; POST: 303 to login
login with a wrong token                                  401, the login page again with "token not accepted"
POST without the session's CSRF token, or a wrong one     403 ``csrf``, nothing done
POST whose ``Origin`` (or ``Referer``) is another site    403 ``origin``, nothing done (also for the login form)
POST by a read-only operator (any action)                 403 naming the operator and role, nothing done
operator removed or rotated in the operators file         the session ends at its next request (fingerprint)
========================================================  ==========================================================

The cookie carries only a random 256-bit session id: ``HttpOnly``, ``SameSite=Strict``, ``Path=/``, ``Secure``
when the request came over TLS. The session itself is a row of the store (``ui_sessions``, migration 0006), so
every eIM worker sharing the store knows it and a restart logs nobody out; the row is keyed by the SHA-256 of the
id (the id is never stored) and holds the operator's name, the CSRF token, when it was opened and last used, when
it expires, and a fingerprint of the operator's credential: SHA-256 over the token hash it logged in with (never
the token, never the hash the operators file keeps). On every request the operator is looked up again in
:class:`eim.api.auth.OperatorRegistry` by name and the fingerprint compared: a removed operator or a rotated token
ends the session, a changed role applies at once. A session ends after :data:`IDLE_S` without a request (the last
use is written at most every :data:`TOUCH_S`, so to within that), after :data:`MAX_AGE_S` in any case, or at
logout (its row is deleted); an expired row is never used, and all of them are deleted whenever a session is
opened; past :data:`MAX_SESSIONS` the least recently used go. With no authentication configured (a lab on
loopback, where the API lets every caller through), the dashboard does the same: a session is opened at the first
visit (it carries the CSRF token), with no operator name, and the pages say that authentication is off.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from eim.api.auth import Operator, OperatorRegistry, Role, hash_token
from eim.store.ui_sessions import UiSessionRow

COOKIE = "eim_session"
IDLE_S = 3600.0
MAX_AGE_S = 12 * 3600.0
TOUCH_S = 60.0
MAX_SESSIONS = 10000


class SessionStore(Protocol):
    """What the sessions need of the store (:class:`eim.store.ui_sessions.UiSessionStore`)."""

    async def ui_session_create(self, row: UiSessionRow, *, now: float, cap: int) -> int: ...

    async def ui_session_get(self, id_hash: str, *, now: float) -> UiSessionRow | None: ...

    async def ui_session_touch(self, id_hash: str, *, now: float, expires_at: float) -> bool: ...

    async def ui_session_delete(self, id_hash: str) -> bool: ...


def id_hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8", "surrogateescape")).hexdigest()


def fingerprint(token_hash: str) -> str:
    """What a session keeps of the credential it was opened with: SHA-256 over the token's hash."""
    return hashlib.sha256(b"eim-ui-session:" + token_hash.encode()).hexdigest()


@dataclass
class Session:
    id: str  # the cookie's value: in this request's memory only
    csrf: str
    created: float
    seen: float
    operator: Operator | None = None  # None: authentication is off (lab)
    expires: float = 0.0
    credential: str | None = field(default=None, repr=False)

    @property
    def name(self) -> str | None:
        return self.operator.name if self.operator is not None else None

    @property
    def role(self) -> Role:
        return self.operator.role if self.operator is not None else Role.ADMIN  # no auth: as the API, all allowed

    def may_act(self) -> bool:
        return self.role.may(Role.OPERATOR)


class Sessions:
    """The dashboard's sessions, kept in the store shared by every worker."""

    def __init__(self, registry: OperatorRegistry, store: SessionStore, clock: Callable[[], float] = time.time) -> None:
        self.registry = registry
        self.store = store
        self.clock = clock

    @property
    def auth_enabled(self) -> bool:
        return self.registry.enabled

    async def _new(self, operator: Operator | None, credential: str | None) -> Session:
        now = self.clock()
        s = Session(
            secrets.token_urlsafe(32),
            secrets.token_urlsafe(32),
            now,
            now,
            operator,
            now + min(IDLE_S, MAX_AGE_S),
            credential,
        )
        row = UiSessionRow(id_hash(s.id), s.name, credential, s.csrf, now, now, s.expires)
        await self.store.ui_session_create(row, now=now, cap=MAX_SESSIONS)
        return s

    async def login(self, token: str) -> Session | None:
        """A new session for the operator whose token this is, else None."""
        token = token.strip()
        if not token or len(token) > 512 or not token.isprintable():
            return None
        operator = self.registry.authenticate(f"Bearer {token}")
        if operator is None:
            return None
        return await self._new(operator, fingerprint(hash_token(token)))

    async def anonymous(self) -> Session:
        """A session when authentication is off (carries the CSRF token only)."""
        return await self._new(None, None)

    async def get(self, sid: str | None) -> Session | None:
        """The live session of this cookie value, with its operator checked again against the registry."""
        if not sid or len(sid) > 100 or not sid.isascii():
            return None
        key = id_hash(sid)
        now = self.clock()
        row = await self.store.ui_session_get(key, now=now)
        if row is None:
            return None
        operator: Operator | None = None
        if self.registry.enabled:
            operator = self._operator(row)
            if operator is None:  # opened while auth was off, operator removed, token rotated
                await self.store.ui_session_delete(key)
                return None
        expires = min(row.created_at + MAX_AGE_S, now + IDLE_S)
        seen = row.seen_at
        if now - row.seen_at >= TOUCH_S:
            await self.store.ui_session_touch(key, now=now, expires_at=expires)
            seen = now
        return Session(sid, row.csrf, row.created_at, seen, operator, expires, row.credential)

    def _operator(self, row: UiSessionRow) -> Operator | None:
        if row.operator is None or row.credential is None:
            return None
        for operator, token_hash in self.registry.credentials_of(row.operator):
            if hmac.compare_digest(fingerprint(token_hash), row.credential):
                return operator  # a changed role applies at once
        return None

    async def logout(self, sid: str | None) -> None:
        if sid and len(sid) <= 100 and sid.isascii():
            await self.store.ui_session_delete(id_hash(sid))


def csrf_ok(session: Session, sent: str | None) -> bool:
    return bool(sent) and hmac.compare_digest(session.csrf.encode(), (sent or "").encode("utf-8", "replace"))


def same_origin(headers: dict[str, str], scheme: str, host: str | None) -> bool:
    """``Origin`` (else ``Referer``) names this site, or neither is sent (a non-browser client: the CSRF token and
    ``SameSite=Strict`` still apply)."""
    origin = headers.get("origin")
    if origin is None:
        ref = headers.get("referer")
        if ref is None:
            return True
        parts = ref.split("/", 3)
        origin = "/".join(parts[:3]) if len(parts) >= 3 else ref
    if not host or origin == "null":
        return False
    return origin.lower() == f"{scheme}://{host}".lower()


def cookie_header(session_id: str, *, secure: bool, clear: bool = False) -> str:
    value = "" if clear else session_id
    attrs = [f"{COOKIE}={value}", "Path=/", "HttpOnly", "SameSite=Strict"]
    if clear:
        attrs.append("Max-Age=0")
    if secure:
        attrs.append("Secure")
    return "; ".join(attrs)
