"""The event worker of one eIM process: fans the audit trail out into deliveries, notices eUICCs going silent, and
delivers due deliveries to their subscribers - signed, with retries that back off exponentially (capped, jittered),
from the store's ``event_deliveries`` table. Nothing is kept only in memory: a delivery is a row before anything
is sent, a worker holds it under a lease (``lease_s``) while it sends, and a worker killed mid-delivery leaves a
lease that simply runs out - the next worker (or the same one restarted) sends it again. Receivers therefore
see a delivery at least once and tell repeats by the event id (``X-Eim-Event-Id``).

The same lease / backoff scheme as the notification outbox (``eim.relay.outbox``), over its own table.

A request: ``POST <url>`` with the event JSON as body and headers ``Content-Type: application/json``,
``X-Eim-Event`` (type), ``X-Eim-Event-Id``, ``X-Eim-Delivery`` (delivery id), ``X-Eim-Signature: sha256=<hex>``
(``eim.events.signing``). A 2xx answer is success; anything else, a timeout (``timeout_s`` for the whole exchange)
or a refused connection is a failed attempt. Redirects are not followed (a redirect could lead anywhere) and the
answer's body is not read. The URL is checked again before each attempt
(``eim.events.webhook_url``) and its host name resolved: a name that points to a refused address is not contacted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from eim.events import signing
from eim.events.catalog import from_audit, stale_event
from eim.events.webhook_url import UrlPolicy, WebhookUrlError, check_url, refusal_for_addresses
from eim.store.events import Delivery

log = logging.getLogger("eim.events")

MAX_ERROR = 300


@dataclass(frozen=True)
class EventSettings:
    url_policy: UrlPolicy = field(default_factory=UrlPolicy)
    retry_initial_s: float = 5.0
    retry_max_s: float = 3600.0
    jitter: float = 0.2
    max_attempts: int = 20  # then the delivery ends as failed (re-send with POST .../retry); 0 = never give up
    poll_s: float = 1.0
    timeout_s: float = 10.0
    default_poll_interval_s: float = 86400.0  # [fleet] poll_interval_s: stale after this much silence
    stale_check_s: float = 60.0
    keep_delivered_s: float = 7 * 86400.0
    settle_s: float = 2.0

    @property
    def lease_s(self) -> float:
        return 2 * self.timeout_s + 10


_LIVE: weakref.WeakSet[EventDeliverer] = weakref.WeakSet()


def wake_all() -> None:
    """Wake every event worker of this process (a re-sent delivery goes out now, not at the next poll)."""
    for d in list(_LIVE):
        d.wake()


def backoff(attempts: int, settings: EventSettings, rand: Callable[[], float] = random.random) -> float:
    """Delay before the next attempt after ``attempts`` failed ones: initial * 2^(n-1), capped, +-jitter."""
    base = min(settings.retry_initial_s * 2 ** max(0, min(attempts - 1, 40)), settings.retry_max_s)
    return max(0.0, base * (1 + settings.jitter * (2 * rand() - 1)))


class EventDeliverer:
    def __init__(
        self,
        store: Any,
        settings: EventSettings | None = None,
        *,
        metrics: Any = None,
        clock: Callable[[], float] = time.time,
        owner: str | None = None,
        transport: Any = None,
    ) -> None:
        self.store = store
        self.settings = settings or EventSettings()
        self.metrics = metrics
        self.clock = clock
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self._transport = transport  # httpx transport (tests)
        self._client: Any = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._last_stale = 0.0
        self._last_purge = 0.0
        _LIVE.add(self)

    # ------------------------------------------------------------------ life cycle
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run())

    def wake(self) -> None:
        self._wake.set()

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            await self.store.release_deliveries(self.owner)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a store outage: try again next round
                log.warning("event round failed", extra={"error": str(exc)[:MAX_ERROR]})
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.poll_s)

    # ------------------------------------------------------------------ one round
    async def tick(self) -> int:
        """Fan out, scan for stale eUICCs (every ``stale_check_s``), deliver what is due; deliveries attempted."""
        s = self.settings
        now = self.clock()
        while True:
            read, _queued = await self.store.fan_out_events(from_audit, now=now, settle_s=s.settle_s)
            if read < 500:
                break
        if now - self._last_stale >= s.stale_check_s:
            self._last_stale = now
            await self.store.scan_stale(stale_event, now=now, default_interval_s=s.default_poll_interval_s)
        if now - self._last_purge >= 3600:
            self._last_purge = now
            await self.store.purge_delivered(now - s.keep_delivered_s)
        due = await self.store.claim_deliveries(now=now, lease_s=s.lease_s, owner=self.owner, limit=16)
        if due:
            await asyncio.gather(*(self.deliver(d) for d in due))
        return len(due)

    def _http(self) -> Any:
        if self._client is None:
            import httpx

            self._client = httpx.AsyncClient(
                timeout=self.settings.timeout_s, follow_redirects=False, transport=self._transport
            )
        return self._client

    async def _refusal(self, url: str) -> str | None:
        try:
            check_url(url, self.settings.url_policy)
        except WebhookUrlError as exc:
            return f"URL refused: {exc.reason}"
        parts = urlsplit(url)
        host = parts.hostname or ""
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, parts.port or 443, type=socket.SOCK_STREAM)
        except OSError as exc:
            return f"cannot resolve {host[:80]}: {exc}"
        return refusal_for_addresses(sorted({str(i[4][0]) for i in infos}), self.settings.url_policy)

    async def deliver(self, d: Delivery) -> str:
        """One attempt; returns the delivery's new status (delivered / pending / failed)."""
        s = self.settings
        body = d.body.encode()
        error: str | None = None
        status_code: int | None = None
        why = await self._refusal(d.url or "")
        if why is None:
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "eim-webhooks/1",
                "X-Eim-Event": d.event_type,
                "X-Eim-Event-Id": d.event_id,
                "X-Eim-Delivery": str(d.id),
                signing.HEADER: signing.sign(d.secret or "", body),
            }
            try:
                # one deadline for the whole exchange (a receiver dripping its headers cannot hold a worker), and
                # the answer's body is never read (a receiver cannot make the eIM buffer it)
                async with asyncio.timeout(s.timeout_s):
                    async with self._http().stream("POST", d.url, content=body, headers=headers) as r:
                        status_code = r.status_code
                if not 200 <= status_code < 300:
                    error = f"HTTP {status_code}"
            except TimeoutError:
                error = f"no answer within {s.timeout_s:g} s"
            except Exception as exc:  # httpx errors, TLS, refused connection
                error = f"{type(exc).__name__}: {exc}"[:MAX_ERROR]
        else:
            error = why
        now = self.clock()
        if error is None:
            new = "delivered"
            await self.store.delivery_outcome(d.id, owner=self.owner, now=now, status=new, http_status=status_code)
        elif s.max_attempts and d.attempts >= s.max_attempts:
            new = "failed"
            await self.store.delivery_outcome(
                d.id, owner=self.owner, now=now, status=new, error=error, http_status=status_code
            )
            log.warning(
                "event delivery failed for good",
                extra={"delivery": d.id, "subscription": d.subscription_id, "event": d.event_id, "error": error},
            )
        else:
            new = "pending"
            await self.store.delivery_outcome(
                d.id,
                owner=self.owner,
                now=now,
                status=new,
                next_attempt_at=now + backoff(d.attempts, s),
                error=error,
                http_status=status_code,
            )
            log.info(
                "event delivery will be retried",
                extra={"delivery": d.id, "subscription": d.subscription_id, "attempts": d.attempts, "error": error},
            )
        if self.metrics is not None and hasattr(self.metrics, "event_delivery"):
            self.metrics.event_delivery({"delivered": "delivered", "failed": "failed"}.get(new, "retry"))
        return new
