"""The operator surface (ES2+-like, SGP.22 v2.5 §5.3): create, release, cancel and read download orders. Shared by
the CLI (``smdpp order ...``) and the HTTP operator API (``/v1/orders``); input errors raise :class:`OrderError`
with a message that names the field."""

from __future__ import annotations

import datetime as dt
import re
import time
from typing import Any

from rsp.activation_code import ActivationCode, ActivationCodeError
from rsp.pki import is_valid_eid
from smdpp import binding, profiles
from smdpp.store import Order, OrderStore, StoreError


class OrderError(ValueError):
    """Bad operator input (HTTP 400 / CLI exit 2)."""


_DURATION = re.compile(r"^\s*(\d+)\s*([smhd])\s*$", re.IGNORECASE)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_expiry(text: str, now: float | None = None) -> float:
    """``30m``, ``2h``, ``7d``, ``90s`` (from now) or an ISO 8601 date-time (UTC when no offset) -> epoch."""
    now = time.time() if now is None else now
    if not isinstance(text, str) or not text.strip():
        raise OrderError("expires: empty")
    m = _DURATION.match(text)
    if m:
        n = int(m.group(1))
        if n <= 0 or n > 10 * 365 * 86400:
            raise OrderError(f"expires: duration {text!r} out of range")
        return now + n * _UNITS[m.group(2).lower()]
    try:
        when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise OrderError(f"expires: {text!r} is neither a duration (30m, 2h, 7d) nor an ISO 8601 date-time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    t = when.timestamp()
    if t <= now:
        raise OrderError(f"expires: {text} is in the past")
    return t


def create_order(
    store: OrderStore,
    *,
    profile: str,
    smdp_address: str,
    eid: str | None = None,
    confirmation_code: str | None = None,
    expires: str | None = None,
    hold: bool = False,
    matching_id: str | None = None,
) -> Order:
    if not isinstance(profile, str):
        raise OrderError("profile: must be a profile name")
    try:
        p = profiles.get_profile(profile)
    except KeyError as exc:
        raise OrderError(f"profile: {exc.args[0]}") from None
    for name, value in (
        ("eid", eid),
        ("confirmation_code", confirmation_code),
        ("expires", expires),
        ("matching_id", matching_id),
        ("smdp_address", smdp_address),
    ):
        if value is not None and not isinstance(value, str):
            raise OrderError(f"{name}: must be a string")
    if eid is not None and not is_valid_eid(eid):
        raise OrderError(f"eid: must be 32 decimal digits with valid check digits, got {eid!r}")
    if confirmation_code is not None and not (1 <= len(confirmation_code) <= 64):
        raise OrderError("confirmation_code: 1..64 characters")
    try:
        ActivationCode(smdp_address, matching_id or "X")
    except ActivationCodeError as exc:
        raise OrderError(f"{'matching_id' if exc.field == 'AC_Token' else 'smdp address'}: {exc.reason}") from None
    expires_at = parse_expiry(expires) if expires else None
    try:
        # a user's package carries its own ICCID (its ProfileHeader); generated profiles take the next of their range
        iccid = p.fixed_iccid or store.next_iccid(p.name, p.iccid_prefix)
        order = store.create_order(
            profile=p.name,
            iccid=iccid,
            smdp_address=smdp_address,
            eid=eid,
            confirmation_code=confirmation_code,
            expires_at=expires_at,
            release=not hold,
            matching_id=matching_id,
        )
    except StoreError as exc:
        raise OrderError(str(exc)) from None
    if p.pre_protected:
        binding.prepare(p, iccid)  # protect the package now (ES2+ DownloadOrder), not during the download
    return order


def order_json(store: OrderStore, order: Order, *, history: bool = False) -> dict[str, Any]:
    d = order.to_json()
    if history:
        d["history"] = store.events(order.matching_id)
    return d
