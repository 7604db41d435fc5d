"""Push over CoAP(S): the IPA observes (RFC 7641) a "package waiting" resource of its own at the eIM.

Why an observation: a CoAP device behind a carrier NAT cannot be reached by a datagram the eIM starts, because the
NAT has no mapping for it. The IPA sends ``GET /esipa/push/{EID}`` with ``Observe: 0`` over its existing CoAP
association (for CoAPS: the same DTLS session it polls over); the eIM answers 2.05 and keeps the request open. When
an operation is queued for that EID, the eIM sends a *notification* on it: the NAT mapping the registration opened
lets it through. The IPA re-registers before the NAT forgets the mapping (``push.refresh_s`` on the IPA).

**What a notification carries** (measured in ``bench/coap_push.py``, ``docs/performance.md``): a one-byte
"package waiting" (``0x01``; ``0x00`` = nothing waiting), not the TransferEimPackageRequest. The IPA answers it with
an immediate GetEimPackage, so the package is claimed by the same code path as a poll: a notification that is lost,
duplicated or arrives after the IPA already polled hands out nothing twice, and a device that misses it (power
saving, NAT rebinding) gets the package on its next poll, once. The cost is one more round trip than carrying the
package itself; the bytes on air are about the same (the TransferEimPackageResponse it saves is as large as the
GetEimPackageRequest it costs).

Every registration is answered with the current state (``0x01`` when an operation is already queued or in progress),
so a device that re-registers after an eIM restart or a lost observation fetches what was queued meanwhile.

=======================================================  =================================================
request                                                  answer
=======================================================  =================================================
GET ``/esipa/push/{EID}``, Observe 0, identity ok         2.05, payload 0x01/0x00, Observe; kept open
GET without Observe (or Observe 1 = deregister)          2.05 with the current state, not kept open
path segment not 32 hex digits                           4.04 Not Found
EID not registered at the eIM                            4.04 Not Found
CoAPS: EID differs from the DTLS PSK identity            4.03 Forbidden (the existing observation stays)
plain CoAP from a peer :func:`unauthenticated_observer_allowed` refuses    4.01 Unauthorized
POST/PUT/DELETE                                          4.05 Method Not Allowed
=======================================================  =================================================

Observers (:class:`ObserverTable`): one per EID; a new registration for an EID ends the old one (NAT rebinding: new
source port, same EID) silently - the old token gets nothing more, nothing is sent to the dead address. The table
is bounded (``max_observers``): the least recently (re-)registered observer is dropped first. Notifications are
confirmable (CON): a notification that is not acknowledged after ``MAX_RETRANSMIT`` retransmissions, or answered
with a Reset, ends the observation (aiocoap ends the request's pipe), and the device is back to polling.

Forged tokens: aiocoap matches a cancellation, a Reset or a re-registration by (token, remote address); a peer at
another address (or another DTLS session) that sends someone else's token reaches nothing of theirs.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("eim.esipa.coap.push")

PUSH_PATH = ("esipa", "push")
WAITING = b"\x01"
NOTHING = b"\x00"
DEFAULT_MAX_OBSERVERS = 100_000
_NO_RESPONSE_5XX = 16  # RFC 7967 No-Response bit for 5.xx: the ending answer is never sent


def unauthenticated_observer_allowed(peer_host: str | None) -> bool:
    """The default rule for *plain* CoAP observations (no DTLS identity) when no device policy is given: only a
    loopback peer. ``eim serve`` passes the ``[devices]`` policy instead (:mod:`eim.esipa.device_auth`: trusted
    networks, ``allow_unauthenticated``), the same rule as for every other unauthenticated ESipa request.
    """
    if not peer_host:
        return False
    host = peer_host.strip("[]").split("%", 1)[0]
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return host.lower() == "localhost"
    mapped = getattr(addr, "ipv4_mapped", None)
    return bool((mapped or addr).is_loopback)


@dataclass(slots=True, eq=False)
class Observer:
    """One open observation: the registration's aiocoap pipe (``None`` in unit tests), its remote and its time.

    No task or coroutine is kept per observer: a notification is added to the pipe directly (coalesced within one
    turn of the event loop), and the pipe tells the table when the request ends.
    """

    eid: str
    remote: Any
    since: float
    binding: str = "coap"  # "coaps" when the registration came over DTLS
    pipe: Any = None
    tuning: Any = None
    number: int = 0  # the Observe option of the last notification
    notifications: int = 0
    ready: bool = False  # the registration's answer is out: notifications may follow
    waiting: bool = False  # woken before it was ready, or a notification is scheduled
    ended: bool = False

    def notify(self) -> None:
        if self.ended or self.waiting:
            return
        self.waiting = True
        if self.ready:
            asyncio.get_running_loop().call_soon(self._send)

    def _send(self) -> None:
        from aiocoap import Message
        from aiocoap.numbers.codes import Code
        from aiocoap.numbers.types import CON

        self.waiting = False
        if self.ended or self.pipe is None:
            return
        self.number = (self.number + 1) % (1 << 24)
        note = Message(code=Code.CONTENT, payload=WAITING, observe=self.number)
        note.mtype = CON  # confirmable: an unacknowledged notification ends the observation
        if self.tuning is not None:
            note.transport_tuning = self.tuning
        self.notifications += 1
        self.pipe.add_response(note, is_last=False)

    def end(self) -> None:
        """End the observation without sending anything to the device's (old) address."""
        if self.ended:
            return
        self.ended = True
        if self.pipe is not None:
            from aiocoap import Message
            from aiocoap.numbers.codes import Code
            from aiocoap.numbers.types import NON

            last = Message(code=Code.SERVICE_UNAVAILABLE, no_response=_NO_RESPONSE_5XX)  # RFC 7967: never sent
            last.mtype = NON
            self.pipe.add_response(last, is_last=True)


class ObserverTable:
    """The observers one worker holds: EID -> :class:`Observer`, bounded, oldest registration dropped first."""

    def __init__(self, max_observers: int = DEFAULT_MAX_OBSERVERS, *, clock: Callable[[], float] = time.time) -> None:
        if max_observers < 1:
            raise ValueError("max_observers must be at least 1")
        self.max_observers = max_observers
        self.clock = clock
        self.observers: OrderedDict[str, Observer] = OrderedDict()
        self.dropped = 0  # observers pushed out by newer ones (table full) or replaced (NAT rebinding)

    def __len__(self) -> int:
        return len(self.observers)

    def add(self, eid: str, remote: Any, binding: str = "coap", *, pipe: Any = None, tuning: Any = None) -> Observer:
        """Register ``eid``'s observation at ``remote``; ends the EID's previous one and, when full, the oldest."""
        old = self.observers.pop(eid, None)
        since = self.clock()
        if old is not None:
            self._end(old)
            if old.remote == remote:
                since = old.since  # a refresh from the same address: reachable since the first registration
        obs = Observer(eid, remote, since, binding, pipe, tuning)
        self.observers[eid] = obs
        while len(self.observers) > self.max_observers:
            _, oldest = self.observers.popitem(last=False)
            self._end(oldest)
        return obs

    def _end(self, obs: Observer) -> None:
        self.dropped += 1
        obs.end()

    def discard(self, obs: Observer) -> None:
        """The observation's request ended (cancelled, Reset, notifications not acknowledged): forget ``obs`` if
        it is still the EID's current observer."""
        obs.ended = True
        if self.observers.get(obs.eid) is obs:
            del self.observers[obs.eid]

    def notify(self, eid: str) -> bool:
        """Wake ``eid``'s observation (a package is waiting). ``True`` if this worker holds one."""
        obs = self.observers.get(eid)
        if obs is None:
            return False
        obs.notify()
        return True

    def status(self, eid: str) -> dict[str, Any] | None:
        obs = self.observers.get(eid)
        if obs is None:
            return None
        return {"binding": obs.binding, "since": obs.since}

    def close_all(self) -> None:
        for obs in list(self.observers.values()):
            self._end(obs)
        self.observers.clear()


def push_resource_class() -> type:
    from aiocoap import Message, error, resource
    from aiocoap.numbers.codes import Code

    from eim.bindings.coap import _dtls_eid, _peer

    class PushResource(resource.Resource, resource.PathCapable):
        """``/esipa/push/{EID}``: the observable "package waiting" state of one eUICC."""

        def __init__(
            self,
            table: ObserverTable,
            pending: Callable[[str], Awaitable[bool]],
            known: Callable[[str], Awaitable[bool]],
            tuning: Any = None,
            admits: Callable[[str | None], bool] = unauthenticated_observer_allowed,
        ) -> None:
            super().__init__()
            self.table = table
            self.pending = pending
            self.known = known
            self.tuning = tuning
            self.admits = admits

        def get_link_description(self) -> dict[str, Any] | None:
            return None

        async def _authorise(self, request: Any) -> tuple[str, str]:
            path = request.opt.uri_path
            if len(path) != 1 or len(path[0]) != 32 or any(c not in "0123456789abcdefABCDEF" for c in path[0]):
                raise error.NotFound("push resource: /esipa/push/{EID} with the EID in 32 hex digits")
            eid = path[0].upper()
            authenticated = _dtls_eid(request)
            if authenticated is not None:
                if authenticated.upper() != eid:
                    log.warning("push registration for another EID refused", extra={"peer": _peer(request)})
                    raise error.Forbidden("observation of another eUICC than the DTLS identity")
            elif not self.admits(_host(request)):
                log.warning("unauthenticated push registration refused", extra={"peer": _peer(request)})
                raise error.Unauthorized("plain CoAP observation needs an authenticated device (use coaps)")
            if not await self.known(eid):
                raise error.NotFound("push resource: unknown eUICC")
            return eid, "coap" if authenticated is None else "coaps"

        async def render_to_pipe(self, pipe: Any) -> None:
            request = pipe.request
            if request.code is not Code.GET:
                raise error.MethodNotAllowed("push resource: GET (Observe) only")
            eid, binding = await self._authorise(request)
            if request.opt.observe != 0:
                state = WAITING if await self.pending(eid) else NOTHING
                pipe.add_response(Message(code=Code.CONTENT, payload=state), is_last=True)
                return
            # in the table before the store is read: work queued meanwhile wakes this observation (at worst the
            # device hears "waiting" twice), never falls between the read and the registration
            obs = self.table.add(eid, request.remote, binding, pipe=pipe, tuning=self.tuning)
            pipe.on_interest_end(lambda: self.table.discard(obs))
            log.debug("push observer registered", extra={"peer": _peer(request), "observers": len(self.table)})
            waiting = await self.pending(eid) or obs.waiting
            obs.waiting = False
            if obs.ended:
                return  # replaced while the store was read: its pipe is closed already
            pipe.add_response(Message(code=Code.CONTENT, payload=WAITING if waiting else NOTHING, observe=0))
            obs.ready = True  # from now on notify() sends; the coroutine ends, the pipe stays open

    return PushResource


def _host(request: Any) -> str | None:
    """The peer's IP address (simplesocketserver: ``address``, udp6: ``sockaddr``)."""
    remote = request.remote
    for attr in ("address", "sockaddr"):
        value = getattr(remote, attr, None)
        if isinstance(value, tuple) and value:
            return str(value[0])
    return None


def notification_tuning(ack_timeout: float, max_retransmit: int) -> Any:
    """aiocoap transport tuning for notifications: how long a CON notification is retransmitted before the
    observation is dropped (RFC 7252 defaults: 2 s, 4 retransmissions, ~45 s)."""
    from aiocoap.numbers.constants import TransportTuning

    class NotificationTuning(TransportTuning):
        ACK_TIMEOUT = ack_timeout
        MAX_RETRANSMIT = max_retransmit

    return NotificationTuning()


class PushService:
    """What a :class:`eim.bindings.coap.CoapBinding` needs to serve push: the observer table, how to ask the store
    whether an EID is registered and has work, and how persistent notifications are.

    It is also the binding's *waker* for :class:`eim.operations.OperationService` (``wake`` / ``status``).
    """

    def __init__(
        self,
        pending: Callable[[str], Awaitable[bool]],
        known: Callable[[str], Awaitable[bool]],
        *,
        max_observers: int = DEFAULT_MAX_OBSERVERS,
        ack_timeout: float = 2.0,
        max_retransmit: int = 4,
        table: ObserverTable | None = None,
        admits: Callable[[str | None], bool] = unauthenticated_observer_allowed,
    ) -> None:
        """``admits(peer address)``: whether a device that proved no identity (plain CoAP) may observe."""
        self.table = table or ObserverTable(max_observers)
        self.pending = pending
        self.known = known
        self.tuning = notification_tuning(ack_timeout, max_retransmit)
        self.admits = admits

    def install(self, site: Any) -> None:
        site.add_resource(
            PUSH_PATH, push_resource_class()(self.table, self.pending, self.known, self.tuning, self.admits)
        )

    def wake(self, eid: str) -> bool:
        return self.table.notify(eid)

    def status(self, eid: str) -> dict[str, Any] | None:
        return self.table.status(eid)
