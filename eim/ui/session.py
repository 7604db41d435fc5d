"""Dashboard sessions: log in with an operator token, a server-side session behind an opaque cookie, CSRF checks.

========================================================  ==========================================================
request                                                   answer
========================================================  ==========================================================
no / unknown / expired session cookie (auth configured)   GET: 303 to ``/ui/login?next=...``; POST: 303 to login
login with a wrong token                                  401, the login page again with "token not accepted"
POST without the session's CSRF token, or a wrong one     403 ``csrf``, nothing done
POST whose ``Origin`` (or ``Referer``) is another site    403 ``origin``, nothing done (also for the login form)
POST by a read-only operator (any action)                 403 naming the operator and role, nothing done
operator removed or rotated in the operators file         the session ends at its next request (token re-checked)
========================================================  ==========================================================

The session keeps the token the operator typed, in this process's memory only (never in a log, the cookie or the
store), and authenticates it again with :class:`eim.api.auth.OperatorRegistry` on every request: the dashboard
follows the API's rules exactly (roles, reloads of the operators file, the legacy ``[api] token``). The cookie
carries only a random 256-bit session id: ``HttpOnly``, ``SameSite=Strict``, ``Path=/``, ``Secure`` when the
request came over TLS. A session ends after :data:`IDLE_S` without a request, after :data:`MAX_AGE_S` in any case,
or at logout. With no authentication configured (a lab on loopback, where the API lets every caller through),
the dashboard does the same: a session is opened at the first visit (it carries the CSRF token), with no operator
name, and the pages say that authentication is off.

Sessions live in the worker's memory: behind a load balancer with several eIM workers, pin a browser to a worker
(sticky sessions) or point the dashboard at one worker; a restart logs everybody out.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from eim.api.auth import Operator, OperatorRegistry, Role

COOKIE = "eim_session"
IDLE_S = 3600.0
MAX_AGE_S = 12 * 3600.0
MAX_SESSIONS = 10000


@dataclass
class Session:
    id: str
    csrf: str
    created: float
    seen: float
    token: str | None = field(default=None, repr=False)  # None: authentication is off (lab)
    operator: Operator | None = None

    @property
    def name(self) -> str | None:
        return self.operator.name if self.operator is not None else None

    @property
    def role(self) -> Role:
        return self.operator.role if self.operator is not None else Role.ADMIN  # no auth: as the API, all allowed

    def may_act(self) -> bool:
        return self.role.may(Role.OPERATOR)


class Sessions:
    """The open sessions of this worker."""

    def __init__(self, registry: OperatorRegistry, clock: Callable[[], float] = time.time) -> None:
        self.registry = registry
        self.clock = clock
        self._by_id: dict[str, Session] = {}

    @property
    def auth_enabled(self) -> bool:
        return self.registry.enabled

    def _new(self, token: str | None, operator: Operator | None) -> Session:
        now = self.clock()
        self._expire(now)
        if len(self._by_id) >= MAX_SESSIONS:  # drop the oldest: a flood of logins cannot grow memory for ever
            oldest = min(self._by_id.values(), key=lambda s: s.seen)
            self._by_id.pop(oldest.id, None)
        s = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), now, now, token, operator)
        self._by_id[s.id] = s
        return s

    def _expire(self, now: float) -> None:
        for sid in [k for k, s in self._by_id.items() if not self._alive(s, now)]:
            del self._by_id[sid]

    @staticmethod
    def _alive(s: Session, now: float) -> bool:
        return now - s.seen < IDLE_S and now - s.created < MAX_AGE_S

    def login(self, token: str) -> Session | None:
        """A new session for the operator whose token this is, else None."""
        token = token.strip()
        if not token or len(token) > 512 or not token.isprintable():
            return None
        operator = self.registry.authenticate(f"Bearer {token}")
        if operator is None:
            return None
        return self._new(token, operator)

    def anonymous(self) -> Session:
        """A session when authentication is off (carries the CSRF token only)."""
        return self._new(None, None)

    def get(self, sid: str | None) -> Session | None:
        """The live session of this cookie value, with its operator checked again against the registry."""
        if not sid or len(sid) > 100:
            return None
        s = self._by_id.get(sid)
        if s is None:
            return None
        now = self.clock()
        if not self._alive(s, now):
            self._by_id.pop(sid, None)
            return None
        if self.registry.enabled:
            if s.token is None:  # opened while auth was off; it was turned on since
                self._by_id.pop(sid, None)
                return None
            operator = self.registry.authenticate(f"Bearer {s.token}")
            if operator is None:  # removed or rotated
                self._by_id.pop(sid, None)
                return None
            s.operator = operator  # a changed role applies at once
        s.seen = now
        return s

    def logout(self, sid: str | None) -> None:
        if sid:
            self._by_id.pop(sid, None)


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
