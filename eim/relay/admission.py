"""Which notifications the outbox takes (SGP.32 v1.2 ESipa.HandleNotification -> SGP.22 v2.5 §5.6.4
ES9+.HandleNotification): the admission checks of ``eim.relay.outbox`` after the eUICC's signature verified.

- ``unforwardable``: the notificationAddress is not a host name[:port];
- ``address``: the address is link-local/metadata, or loopback/private without permission
  (:mod:`eim.smdp_addresses`), or it is none of: listed in ``allowed_smdp_addresses``, ``default_smdp_address``,
  the SM-DP+ of a download operation of this eIM for the same EID, for a PIR the SM-DP+ of the ES9+ session this
  eIM relayed for that EID and transactionId;
- ``cap``: ``max_pending_per_eid`` notifications of this EID are pending already (the same bytes sent again are
  not counted: they are queued already, and taken as such);
- ``rate``: the EID's token bucket (``rate_per_hour``, ``burst``; in memory, per worker) is empty.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from eim.interfaces import NotificationRefused
from eim.model import OpKind, OutboundNotification
from eim.packages.notification import NotificationRejected, VerifiedNotification, parse
from eim.relay.errors import RelayError
from eim.relay.es9plus_client import check_address
from eim.smdp_addresses import SmdpAddressPolicy


@dataclass(frozen=True)
class Admission:
    """What the outbox takes (``[relay] allowed_smdp_addresses``, ``default_smdp_address``,
    ``allow_private_addresses``, ``max_pending_notifications_per_eid``, ``notification_rate_per_eid_per_hour``,
    ``notification_burst_per_eid``). 0 = no cap / no rate limit."""

    addresses: SmdpAddressPolicy = field(default_factory=SmdpAddressPolicy)
    default_smdp_address: str | None = None
    max_pending_per_eid: int = 50
    rate_per_hour: float = 120.0
    burst: int = 20

    def __post_init__(self) -> None:
        if self.max_pending_per_eid < 0 or self.rate_per_hour < 0 or self.burst < 0:
            raise ValueError("notification admission: cap, rate and burst must be >= 0")
        if self.rate_per_hour > 0 and self.burst < 1:
            raise ValueError("notification admission: a rate limit needs a burst of at least 1")


class TokenBuckets:
    """One token bucket per EID (in memory, per worker): ``burst`` tokens, refilled at ``rate_per_hour``. The
    least recently used buckets are forgotten past ``max_keys`` (a forgotten EID starts full again)."""

    def __init__(self, rate_per_hour: float, burst: int, clock: Callable[[], float], max_keys: int = 100_000) -> None:
        self.rate = rate_per_hour / 3600.0
        self.burst = float(burst)
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str) -> bool:
        now = self.clock()
        tokens, at = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - at) * self.rate)
        ok = tokens >= 1.0
        self._buckets[key] = (tokens - 1.0 if ok else tokens, now)
        while len(self._buckets) > self.max_keys:
            del self._buckets[next(iter(self._buckets))]
        return ok


async def smdp_addresses_of(store: Any, eid: str) -> set[str]:
    """The SM-DP+ addresses of this eIM's download operations for ``eid`` (lower case)."""
    from eim.relay.relay import _download_target

    out = set()
    for op in await store.list_operations(
        eid=eid,
        kind=OpKind.DOWNLOAD,  # pragma: no mutate - other kinds' params never name an SM-DP+ (validated at creation)
        limit=1000,  # pragma: no mutate - a bound on the work, not a check
    ):
        address, _oid = _download_target(op.params)
        if address:
            out.add(address.lower())
    return out


def pir_transaction_id(raw: bytes) -> bytes | None:
    """The ES9+ transactionId of a PIR (``None`` for anything else or what does not parse)."""
    try:
        return parse(raw).transaction_id
    except NotificationRejected:
        return None


class AdmissionGate:
    """The checks above over the store; :meth:`check` raises :class:`NotificationRefused` with the cause."""

    def __init__(self, store: Any, admission: Admission, clock: Callable[[], float]) -> None:
        self.store = store
        self.admission = admission
        a = admission
        self._buckets = TokenBuckets(a.rate_per_hour, a.burst, clock) if a.rate_per_hour > 0 else None

    async def address_refusal(self, eid: str | None, address: str, transaction_id: bytes | None = None) -> str | None:
        """Why ``address`` is not a place this eIM sends ``eid``'s notifications to (see the module docstring). A PIR
        (``transaction_id``) may also go to the SM-DP+ of the ES9+ session this eIM relayed for that EID."""
        policy = self.admission.addresses
        why = policy.refusal(address)
        if why is not None:
            return why
        if policy.listed(address):
            return None
        default = self.admission.default_smdp_address
        if default and address.lower() == default.lower():
            return None
        if eid and address.lower() in await smdp_addresses_of(self.store, eid):
            return None
        if eid and transaction_id is not None:
            from eim.relay.relay import session_key

            session = await self.store.get_download_session(session_key(transaction_id))
            if (
                session is not None
                and str(session.get("eid", "")).upper() == eid.upper()
                and str(session.get("smdp_address", "")).lower() == address.lower()
            ):
                return None
        return (
            f"{address} is not an SM-DP+ of this eIM (not in [relay] allowed_smdp_addresses, not the default, "
            "not the SM-DP+ of a download operation for this eUICC)"
        )

    async def check(self, note: VerifiedNotification) -> OutboundNotification | None:
        """``None``: take it; a row: the same bytes are pending already (take nothing new)."""
        try:
            check_address(note.address, "handleNotification")
        except RelayError as exc:
            raise NotificationRefused(str(exc)) from None  # cause "unforwardable", the default
        why = await self.address_refusal(note.eid, note.address, note.transaction_id)
        if why is not None:
            raise NotificationRefused(why, cause="address")
        cap = self.admission.max_pending_per_eid
        if cap:
            pending = await self.store.pending_notifications_of(note.eid, limit=cap)
            same = [p for p in pending if p.notification == note.raw]
            if same:
                return same[0]
            if len(pending) >= cap:
                raise NotificationRefused(
                    f"{len(pending)} notifications of this eUICC are waiting already", cause="cap"
                )
        if self._buckets is not None and not self._buckets.take(note.eid):
            raise NotificationRefused("too many notifications from this eUICC, try later", cause="rate")
        return None
