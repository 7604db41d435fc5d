"""Operator authentication of the REST API: named operators, each with a bearer token and a role.

**Roles** (what an authenticated operator may do on the HTTP port; ESipa is never behind them):

============  ====================================================================================
role          may
============  ====================================================================================
read-only     GET/HEAD: eUICCs, operations with their audit trail, batches, notifications, metrics, docs
operator      read-only + every other method on ``/v1`` (register, queue, cancel, batches)
admin         operator + the admin endpoints (``GET /v1/operators``: who may use the API)
============  ====================================================================================

Operators themselves are managed on the eIM's host (``eim operator add|rotate|remove|list``), not over the API:
whoever can write the operators file already owns the eIM.

**The operators file** (``[api] operators_file``), one operator a line, ``#`` comments::

    # name:role:hash
    alice:admin:sha256:5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8
    grafana:read-only:sha256:...

**Tokens** are made by :func:`generate_token`: ``eim_`` + 32 random bytes (256 bits, base64url). The file keeps
only ``sha256(token)`` in hex. SHA-256 and not a password hash (scrypt, PBKDF2, Argon2): those slow down the
guessing of *low-entropy* secrets chosen by people; a 256-bit random token cannot be guessed at any speed, so the
slow hash would add nothing but cost - and that cost would be paid by every API request (or be a lever for
anyone to burn the eIM's CPU with wrong tokens). Without a salt, equal tokens would have equal hashes; the file
refuses two operators with the same hash. A token is looked up by its hash, so no comparison runs over secret
bytes; the legacy ``[api] token`` (chosen by a person, maybe short) is compared with ``hmac.compare_digest``
and is the operator ``admin`` with role ``admin``.

**Reload without a restart**: :meth:`OperatorRegistry.watch` stats the file every second and parses it again, in
a worker thread, when it changed (inode, mtime, size); a file that no longer parses keeps the previous operators
and logs the line that is wrong, once. ``eim serve`` does not start on a file it cannot read or parse. Tokens and
hashes never reach a log line or an exception message.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import hmac
import logging
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from eim.secret_file_watch import SecretFileWatch
from rsp import files

log = logging.getLogger("eim.api.auth")

TOKEN_PREFIX = "eim_"
TOKEN_BYTES = 32  # 256 bits
LEGACY_OPERATOR = "admin"  # the name of the operator behind [api] token
_NAME = re.compile(r"[A-Za-z0-9._@+-]{1,64}")
_HASH = re.compile(r"sha256:[0-9a-f]{64}")


class Role(enum.Enum):
    READ_ONLY = "read-only"
    OPERATOR = "operator"
    ADMIN = "admin"

    def may(self, needed: Role) -> bool:
        return _RANK[self] >= _RANK[needed]


_RANK = {Role.READ_ONLY: 0, Role.OPERATOR: 1, Role.ADMIN: 2}
ROLES = tuple(r.value for r in Role)


@dataclass(frozen=True)
class Operator:
    name: str
    role: Role


class OperatorsFileError(ValueError):
    """The operators file (or a value for it) cannot be used; names the file and line, never a token or hash."""


# ------------------------------------------------------------------------------------------------ tokens
def generate_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise OperatorsFileError(f"operator name must be 1..64 of A-Z a-z 0-9 . _ @ + -, got {name[:70]!r}")
    return name


def check_role(role: str) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise OperatorsFileError(f"role must be one of {', '.join(ROLES)}, got {role[:40]!r}") from None


# ------------------------------------------------------------------------------------------------ the file
@dataclass(frozen=True)
class OperatorEntry:
    name: str
    role: Role
    token_hash: str

    def __repr__(self) -> str:  # never show the hash
        return f"OperatorEntry(name={self.name!r}, role={self.role.value!r})"


def _entry(raw: str, number: int, source: str) -> OperatorEntry | None:
    line = raw.split("#", 1)[0].strip()
    if not line:
        return None
    where = f"{source} line {number}"
    parts = line.split(":", 2)
    if len(parts) != 3:
        raise OperatorsFileError(f"{where}: expected name:role:sha256:<64 hex digits>")
    name, role, digest = (p.strip() for p in parts)
    try:
        check_name(name)
        r = check_role(role)
    except OperatorsFileError as exc:
        raise OperatorsFileError(f"{where}: {exc}") from None
    if not _HASH.fullmatch(digest):
        raise OperatorsFileError(f"{where}: the hash must be sha256:<64 lower-case hex digits>")
    return OperatorEntry(name, r, digest)


def parse_operators_file(text: str, source: str = "operators file") -> dict[str, OperatorEntry]:
    """``name:role:sha256:<hex>`` lines to ``{name: entry}``; names and hashes must be unique."""
    out: dict[str, OperatorEntry] = {}
    hashes: set[str] = set()
    for number, raw in enumerate(text.splitlines(), 1):
        entry = _entry(raw, number, source)
        if entry is None:
            continue
        if entry.name in out:
            raise OperatorsFileError(f"{source} line {number}: operator {entry.name} is listed twice")
        if entry.token_hash in hashes:
            raise OperatorsFileError(f"{source} line {number}: {entry.name} has the token of another operator")
        out[entry.name] = entry
        hashes.add(entry.token_hash)
    return out


def format_line(entry: OperatorEntry) -> str:
    check_name(entry.name)
    if not _HASH.fullmatch(entry.token_hash):
        raise OperatorsFileError(f"cannot write {entry.name}: not a sha256 hash")
    return f"{entry.name}:{entry.role.value}:{entry.token_hash}"


def set_operator(text: str, entry: OperatorEntry, source: str = "operators file") -> tuple[str, bool]:
    """``text`` with ``entry`` replacing the line of the same name (in place) or appended; True if replaced."""
    parse_operators_file(text, source)
    new = format_line(entry)
    out, replaced = [], False
    for number, raw in enumerate(text.splitlines(), 1):
        e = _entry(raw, number, source)
        if e is not None and e.name == entry.name:
            out.append(new)
            replaced = True
        else:
            out.append(raw)
    if not replaced:
        out.append(new)
    result = "\n".join(out) + "\n"
    parse_operators_file(result, source)  # e.g. the same hash twice
    return result, replaced


def remove_operator(text: str, name: str, source: str = "operators file") -> tuple[str, bool]:
    parse_operators_file(text, source)
    kept = []
    for number, raw in enumerate(text.splitlines(), 1):
        e = _entry(raw, number, source)
        if e is None or e.name != name:
            kept.append(raw)
    removed = len(kept) != len(text.splitlines())
    return ("\n".join(kept) + "\n" if kept else ""), removed


def read_text(path: str | os.PathLike[str], *, missing_ok: bool = False) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        if missing_ok:
            return ""
        raise OperatorsFileError(f"{path}: no such file (create it with `eim operator add NAME`)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise OperatorsFileError(f"{path}: cannot read: {exc}") from None


@contextlib.contextmanager
def locked(path: str | os.PathLike[str]) -> Iterator[None]:
    """An exclusive lock on ``<path>.lock``: two ``eim operator`` runs do not lose each other's change."""
    try:
        with files.locked(path):
            yield
    except OSError as exc:
        raise OperatorsFileError(f"{path}.lock: cannot lock: {exc}") from None


def write_operators_file(path: str | os.PathLike[str], text: str) -> None:
    """Replace the file atomically (:func:`rsp.files.replace_private`: mode 0600, fsync'ed, renamed)."""
    parse_operators_file(text, str(path))  # never write a file the eIM would refuse
    try:
        files.replace_private(path, text)
    except OSError as exc:
        raise OperatorsFileError(f"{path}: cannot write: {exc}") from None


# ------------------------------------------------------------------------------------------------ registry
class OperatorRegistry:
    """Who may use the API: the operators file (reloaded when it changes) and the legacy ``[api] token``.

    ``enabled`` is False only when neither is configured (a lab on loopback): then every request is let through
    and no operator is named."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        legacy_token: str | None = None,
        check_interval: float = 1.0,
    ) -> None:
        self.path = Path(path) if path else None
        self.legacy_token = legacy_token or None
        self.check_interval = check_interval
        self._by_hash: dict[str, Operator] = {}
        self._entries: dict[str, OperatorEntry] = {}
        self._file = (
            SecretFileWatch(
                self.path,
                parse=parse_operators_file,
                error=OperatorsFileError,
                log=log,
                what="operators file",
                keeping="operators",
                count_key="operators",
                missing="no such file (create it with `eim operator add NAME`)",
            )
            if self.path is not None
            else None
        )
        if self.path is not None:
            self.reload(strict=True)

    @property
    def enabled(self) -> bool:
        return self.path is not None or self.legacy_token is not None

    def operators(self) -> list[Operator]:
        out = [Operator(e.name, e.role) for e in self._entries.values()]
        if self.legacy_token is not None:
            out.append(Operator(LEGACY_OPERATOR, Role.ADMIN))
        return out

    def authenticate(self, authorization: str | bytes | None) -> Operator | None:
        """The operator whose token is in ``Authorization: Bearer <token>``, else None."""
        if not authorization:
            return None
        if isinstance(authorization, bytes):
            authorization = authorization.decode("latin-1")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or len(token) > 512:
            return None
        found = self._by_hash.get(hash_token(token))
        if found is not None:
            return found
        if self.legacy_token is not None and hmac.compare_digest(
            token.encode("utf-8", "surrogateescape"), self.legacy_token.encode()
        ):
            return Operator(LEGACY_OPERATOR, Role.ADMIN)
        return None

    def credentials_of(self, name: str) -> list[tuple[Operator, str]]:
        """``(operator, token hash)`` of each credential named ``name`` now: its line of the operators file and,
        for ``admin``, the legacy token. The dashboard's sessions keep a fingerprint of the hash they were opened
        with (:mod:`eim.ui.session`), so a rotated token or a removed operator ends them."""
        out = []
        entry = self._entries.get(name)
        if entry is not None:
            out.append((Operator(entry.name, entry.role), entry.token_hash))
        if self.legacy_token is not None and name == LEGACY_OPERATOR:
            out.append((Operator(LEGACY_OPERATOR, Role.ADMIN), hash_token(self.legacy_token)))
        return out

    def reload(self, *, strict: bool = False) -> bool:
        """Read the file again if it changed. ``strict``: raise on a bad file instead of keeping the operators.
        Safe in a worker thread: the tables are replaced by single assignments."""
        if self._file is None:
            return False
        entries = self._file.read(len(self._entries), strict=strict)
        if entries is None:
            return False
        self._by_hash = {e.token_hash: Operator(e.name, e.role) for e in entries.values()}
        self._entries = entries
        return True

    async def watch(self) -> None:
        """Reload every ``check_interval`` seconds, in a worker thread (never on the event loop)."""
        if self.path is None:
            return
        while True:
            await asyncio.sleep(self.check_interval)
            try:
                await asyncio.to_thread(self.reload)
            except asyncio.CancelledError:
                raise
            except Exception:  # never end the watch silently
                log.exception("operators file check failed", extra={"path": str(self.path)})


# ------------------------------------------------------------------------------------------------ policy
ADMIN_PATHS = frozenset({"/v1/operators"})
DOC_PATHS = frozenset(
    {"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json", "/docs/static/swagger-ui-bundle.js"}
    | {"/docs/static/swagger-ui.css"}
)
OPEN_PATHS = frozenset({"/healthz"})


def needed_role(method: str, path: str) -> Role:
    if path in ADMIN_PATHS:
        return Role.ADMIN
    if method in ("GET", "HEAD"):
        return Role.READ_ONLY
    return Role.OPERATOR


def is_public(path: str, *, public_metrics: bool, public_docs: bool) -> bool:
    return path in OPEN_PATHS or (public_metrics and path == "/metrics") or (public_docs and path in DOC_PATHS)
