"""The eIM's durable outbox of notifications owed to SM-DP+s (SGP.32 v1.2 §5.14.4 ESipa.HandleNotification ->
SGP.22 v2.5 §5.6.4 ES9+.HandleNotification), and its forwarder.

Taking responsibility (:meth:`NotificationOutbox.accept`): only a :class:`~eim.packages.notification.
VerifiedNotification` enters - a PIR (``BF37``) or otherSignedNotification (``30``) whose eUICC signature and
certificate chain ``eim.esipa.results`` verified for the EID it is attributed to; raw bytes are refused. Then
the admission checks of :mod:`eim.relay.admission` (address policy, per-EID cap and rate), each refusal a
:class:`NotificationRefused` with a ``cause``; nothing is stored for a refused notification. The caller
(``eim.esipa.notification_intake``) tells the IPA.

What passes is written to the store (``notification_outbox``) exactly as received. The ESipa answer that lets the
IPA delete it leaves only after that write committed; if the write fails, the IPA keeps the notification and
sends it again. The same bytes are queued once.

Delivering (:meth:`NotificationOutbox.run`, one task per worker): due rows are leased to this worker
(PostgreSQL: ``FOR UPDATE SKIP LOCKED``, so two workers never send one notification at the same time) and POSTed
to the SM-DP+ (:meth:`eim.relay.Es9Relay.forward_notification`).
- HTTP 204 (or 200 Executed-Success): the row is deleted; the audit trail keeps ``notification delivered``.
- The SM-DP+ refused it for good (``functionExecutionStatus`` Failed), or it can never be sent (the address is
  not allowed - checked again before every attempt, so a row queued before the policy changed is never sent
  where it is not allowed): the row stays with status ``failed`` and the reason, audited ``notification failed``.
- Anything else (no connection, timeout, TLS failure, HTTP 5xx, a malformed answer): another attempt after an
  exponential, capped, jittered delay (:class:`RetryPolicy`); after ``max_attempts`` attempts the row ends as
  failed ("gave up after N attempts: <last error>").
A worker that dies while delivering leaves a lease that ends after ``lease_s`` (longer than an ES9+ call may
take); the notification is then due again, for any worker. Delivery is at least once: a crash after the SM-DP+
accepted a notification and before the row was deleted sends it again (SM-DP+s treat notifications as idempotent
reports).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from eim.interfaces import DownloadRelay, NotificationRefused
from eim.model import NotificationToSend, OutboundNotification
from eim.packages.notification import VerifiedNotification
from eim.relay.admission import Admission, AdmissionGate, pir_transaction_id
from eim.relay.errors import Es9Failed, InvalidSmdpAddress, NotForwardable, RelayError
from rsp.errors import RspError

log = logging.getLogger("eim.relay")

MIN_WAIT_S = 0.05  # an idle forwarder never looks again sooner than this


@dataclass(frozen=True)
class RetryPolicy:
    """How the forwarder retries (``[relay] notification_retry_*`` and ``notification_poll_s``)."""

    initial_s: float = 5.0  # delay after the first failed attempt
    max_s: float = 900.0  # no delay is longer
    jitter: float = 0.2  # each delay is spread uniformly over +-jitter of its value
    max_attempts: int = 500  # then the notification ends as failed; 0 = never give up
    poll_s: float = 2.0  # how often an idle worker looks for due notifications (queued by others, retries)
    lease_s: float = 70.0  # a claimed notification is not due again before this (> one ES9+ call)
    batch: int = 16  # notifications claimed (and sent concurrently) at a time

    def __post_init__(self) -> None:
        if not (self.initial_s > 0 and self.max_s >= self.initial_s):
            raise ValueError("notification retry: need 0 < initial_s <= max_s")
        if not 0 <= self.jitter <= 1:
            raise ValueError("notification retry: jitter must be between 0 and 1")
        if self.max_attempts < 0 or self.poll_s <= 0 or self.lease_s <= 0 or self.batch < 1:
            raise ValueError("notification retry: max_attempts >= 0, poll_s > 0, lease_s > 0, batch >= 1")

    def delay(self, attempts: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait after ``attempts`` failed attempts: ``initial_s * 2**(attempts-1)`` capped at ``max_s``,
        spread by the jitter, never above ``max_s``."""
        base = min(self.max_s, self.initial_s * 2.0 ** min(max(attempts - 1, 0), 64))
        spread = base * self.jitter
        return max(0.0, min(self.max_s, base - spread + 2.0 * spread * rand()))

    def gives_up(self, attempts: int) -> bool:
        return self.max_attempts > 0 and attempts >= self.max_attempts


def permanent(exc: BaseException) -> bool:
    """True for a failure that sending the same bytes again cannot fix: the SM-DP+ executed handleNotification
    and answered Failed, or the notification cannot be sent to that address at all."""
    return isinstance(exc, Es9Failed | InvalidSmdpAddress | NotForwardable | RspError)


@dataclass(frozen=True)
class Delivery:
    """What one delivery attempt of one notification came to."""

    notification_id: int
    outcome: str  # "delivered" | "retry" | "failed" | "lost_lease"
    reason: str | None = None
    retry_in_s: float | None = None


def worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class NotificationOutbox:
    """Implements :class:`eim.interfaces.NotificationQueue` over the store, and delivers through ``relay``."""

    def __init__(
        self,
        store: Any,
        relay: DownloadRelay,
        policy: RetryPolicy | None = None,
        *,
        admission: Admission | None = None,
        owner: str | None = None,
        metrics: Any = None,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.store = store
        self.relay = relay
        self.policy = policy or RetryPolicy()
        self.admission = admission or Admission()
        self.owner = owner or worker_id()
        self.metrics = metrics
        self.clock = clock
        self.rand = rand
        self.gate = AdmissionGate(store, self.admission, clock)
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ taking responsibility
    async def accept(
        self, notification: VerifiedNotification, *, operation_id: str | None = None
    ) -> OutboundNotification:
        """Write a verified notification to the store for its SM-DP+ (see the module docstring). Raises
        :class:`NotificationRefused` (with its ``cause``) when it is not taken (nothing is written); store errors
        pass."""
        if not isinstance(notification, VerifiedNotification):
            raise NotificationRefused("only verified notifications enter the outbox", cause="unverified")
        note = notification
        eid = note.eid
        same = await self.gate.check(note)
        if same is not None:  # the IPA sends it again (it lost our answer): already ours
            self.wake()
            return same
        item = NotificationToSend(
            notification=note.raw,
            address=note.address,
            kind=note.kind,
            eid=eid,
            operation_id=operation_id,
            seq_number=note.seq_number,
        )
        [(row, created)] = await self.store.enqueue_notifications([item], who="ipa", now=self.clock())
        if created:
            log.info(
                "notification queued",
                extra={
                    "notification": row.id,
                    "eid": eid,
                    "kind": row.kind,
                    "address": row.address,
                    "seq_number": row.seq_number,
                },
            )
            if self.metrics is not None:
                self.metrics.notification_forwarded("queued")
        else:
            log.info(
                "notification already queued",
                extra={"notification": row.id, "eid": eid, "status": row.status.value, "address": row.address},
            )
        self.wake()
        return row

    # ------------------------------------------------------------------ delivering
    def wake(self) -> None:
        """Look for due notifications now (a new one was queued on this worker)."""
        if self._wake is not None:
            self._wake.set()

    async def deliver_due(self) -> list[Delivery]:
        """Claim the notifications due now (up to ``policy.batch``) and try each once, concurrently."""
        now = self.clock()
        items = await self.store.claim_notifications(
            now=now, lease_s=self.policy.lease_s, owner=self.owner, limit=self.policy.batch
        )
        if not items:
            return []
        results = await asyncio.gather(*(self._deliver(item) for item in items), return_exceptions=True)
        out: list[Delivery] = []
        for item, r in zip(items, results, strict=True):
            if isinstance(r, BaseException):
                if isinstance(r, asyncio.CancelledError):
                    raise r
                # the store failed after the attempt: the lease runs out and the notification is due again
                log.warning("notification outcome not recorded", extra={"notification": item.id, "error": str(r)})
                continue
            out.append(r)
        return out

    async def _send(self, item: OutboundNotification) -> None:
        """One attempt: the address is checked again (the policy may have changed since the row was queued), then
        the same bytes go to the SM-DP+. Raises when the SM-DP+ did not take it; the row is deleted only after this
        returned (:meth:`_deliver`)."""
        why = await self.gate.address_refusal(item.eid, item.address, pir_transaction_id(item.notification))
        if why is not None:
            raise InvalidSmdpAddress("handleNotification", why)
        await self.relay.forward_notification(item.eid, item.notification)

    async def _deliver(self, item: OutboundNotification) -> Delivery:
        extra: dict[str, Any] = {
            "notification": item.id,
            "eid": item.eid,
            "kind": item.kind,
            "address": item.address,
            "attempt": item.attempts,
        }
        try:
            await self._send(item)
        except Exception as exc:  # a RelayError/DecodeError, or an unexpected one (then retried)
            reason = str(exc) or type(exc).__name__
            if not isinstance(exc, RelayError | RspError):
                log.exception("notification delivery raised unexpectedly", extra=extra)
            now = self.clock()
            if permanent(exc) or self.policy.gives_up(item.attempts):
                if not permanent(exc):
                    reason = f"gave up after {item.attempts} attempts: {reason}"
                failed = await self.store.notification_failed(item.id, reason=reason, now=now, owner=self.owner)
                if failed is None:
                    return Delivery(item.id, "lost_lease", reason)
                log.warning("notification failed", extra={**extra, "reason": reason})
                if self.metrics is not None:
                    self.metrics.notification_forwarded("failed")
                return Delivery(item.id, "failed", reason)
            delay = self.policy.delay(item.attempts, self.rand)
            kept = await self.store.notification_retry(
                item.id, next_attempt_at=now + delay, error=reason, now=now, owner=self.owner
            )
            if not kept:
                return Delivery(item.id, "lost_lease", reason)
            log.info("notification not delivered, will retry", extra={**extra, "reason": reason, "retry_in_s": delay})
            if self.metrics is not None:
                self.metrics.notification_forwarded("retry")
            return Delivery(item.id, "retry", reason, delay)
        await self.store.notification_delivered(item.id, now=self.clock(), owner=self.owner)
        log.info("notification delivered", extra=extra)
        if self.metrics is not None:
            self.metrics.notification_forwarded("delivered")
        return Delivery(item.id, "delivered")

    async def _idle_wait(self) -> None:
        wait = self.policy.poll_s
        due = await self.store.next_notification_due()
        if due is not None:
            # a row due now that could not be claimed is being claimed by another worker: look again shortly
            wait = min(wait, max(MIN_WAIT_S, due - self.clock()))
        assert self._wake is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), wait)
        self._wake.clear()

    async def run(self) -> None:
        """Deliver until cancelled (one per worker)."""
        self._wake = asyncio.Event()
        log.info("notification forwarder started", extra={"worker": self.owner})
        while True:
            try:
                done = await self.deliver_due()
                if done:
                    continue  # more may be due
                await self._idle_wait()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a store outage: try again after a poll interval
                log.warning("notification forwarder round failed", extra={"error": str(exc)})
                await asyncio.sleep(self.policy.poll_s)

    def start(self) -> asyncio.Task[None]:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self.run(), name="eim-notification-forwarder")
        return self._task

    async def aclose(self) -> None:
        """Stop the forwarder and give back the leases it holds (they are due again for the other workers)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            released = await self.store.release_notifications(self.owner, now=self.clock())
        except Exception as exc:  # the store is going away too: the leases simply run out
            log.warning("notification leases not released", extra={"error": str(exc)})
            return
        if released:
            log.info("notification leases released", extra={"count": released, "worker": self.owner})
