"""What every ES9+ function shares: the SM-DP+ context and the JSON field readers (SGP.22 v2.5 §6.5 JSON binding).

Binary fields are base64 of DER (``serverSignature1``/``smdpSignature2`` of the whole ``5F37`` TLV,
``euiccCiPKIdToBeUsed`` of the whole ``04`` TLV: protocol brief §6); ``transactionId`` is hex. Every malformed
field raises :class:`~smdpp.errors.Es9Error` with the field name in the message.
"""

from __future__ import annotations

import base64
import binascii
import logging
from dataclasses import dataclass
from typing import Any

from smdpp import errors
from smdpp.config import SmdppConfig
from smdpp.credentials import Credentials
from smdpp.errors import Es9Error
from smdpp.session import Session, SessionConflict, SessionStore
from smdpp.store import OrderStore

log = logging.getLogger("smdpp.es9plus")

MAX_B64_FIELD = 1_000_000  # no ES9+ field the eUICC/LPA sends comes close


@dataclass
class SmdpContext:
    """Everything an ES9+ function needs; built once per worker process by the app factory. The sessions live in
    the store's SQLite file (``smdpp.session``) unless given."""

    config: SmdppConfig
    credentials: Credentials
    store: OrderStore
    sessions: SessionStore = None  # type: ignore[assignment]  # set in __post_init__

    def __post_init__(self) -> None:
        if self.sessions is None:
            self.sessions = SessionStore(self.store, ttl=self.config.session_ttl)

    @property
    def address(self) -> str:
        return self.config.address


def b64_field(request: dict[str, Any], name: str, *, max_len: int = MAX_B64_FIELD) -> bytes:
    value = request.get(name)
    if value is None:
        raise errors.REQUEST_ELEMENT_MISSING.error(f"mandatory element {name} missing")
    if not isinstance(value, str):
        raise errors.REQUEST_INVALID.error(f"{name} must be a base64 string")
    if len(value) > max_len * 4 // 3 + 4:
        raise errors.REQUEST_INVALID.error(f"{name} too long")
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise errors.REQUEST_INVALID.error(f"{name} is not valid base64") from None


def str_field(request: dict[str, Any], name: str, *, optional: bool = False, max_len: int = 255) -> str | None:
    value = request.get(name)
    if value is None:
        if optional:
            return None
        raise errors.REQUEST_ELEMENT_MISSING.error(f"mandatory element {name} missing")
    if not isinstance(value, str) or len(value) > max_len:
        raise errors.REQUEST_INVALID.error(f"{name} must be a string of at most {max_len} characters")
    return value


def transaction_id_field(request: dict[str, Any]) -> bytes:
    value = request.get("transactionId")
    if value is None:
        raise errors.REQUEST_ELEMENT_MISSING.error("mandatory element transactionId missing")
    if not isinstance(value, str) or not (2 <= len(value) <= 32) or len(value) % 2:
        raise Es9Error("8.10.1", "2.1", "TransactionId - Invalid: must be 1..16 bytes of hex")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise Es9Error("8.10.1", "2.1", "TransactionId - Invalid: not hex") from None


def save_session(ctx: SmdpContext, session: Session, expect: str) -> None:
    """Write a session's step (guarded by the state it was read in): another worker that moved or ended it
    meanwhile makes this step fail as "TransactionId - Unknown"."""
    try:
        ctx.sessions.save(session, expect)
    except SessionConflict as exc:
        raise errors.TRANSACTION_ID_UNKNOWN.error(f"TransactionId - Unknown: {exc}") from None


def session_for(ctx: SmdpContext, transaction_id: bytes) -> Session:
    session = ctx.sessions.get(transaction_id)
    if session is None:
        raise errors.TRANSACTION_ID_UNKNOWN.error(
            f"TransactionId - Unknown: {transaction_id.hex().upper()} relates to no ongoing RSP session"
        )
    return session


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
