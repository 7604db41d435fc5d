"""The store methods of the fleet view and the event feed (:mod:`eim.store.fleet`, :mod:`eim.store.events`), shared by
both backends: each one runs one logic generator as one transaction, like :class:`eim.store.base.SqlStore`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from eim.model import AuditEntry, Euicc, Operation
from eim.store.events import Delivery, Event, EventLogic, Subscription
from eim.store.fleet import FleetCounts, FleetLogic, Removal, StateFilter
from eim.store.logic import StoreError
from eim.store.tallies import COMPACT_AT

log = logging.getLogger("eim.store")

POLL_FLUSH_S = 1.0  # the poll tally is added to fleet_hourly this often
KEEP_HOURLY_S = 7 * 86400  # fleet_hourly rows older than this are pruned


class FleetEventsStore:
    """Mixed into :class:`eim.store.base.SqlStore`."""

    dialect: str

    async def _run(self, factory: Any, *, write: bool = True) -> Any:  # pragma: no cover - provided by the backend
        raise NotImplementedError

    @property
    def fleet(self) -> FleetLogic:
        logic = self.__dict__.get("_fleet_logic")
        if logic is None:
            logic = self.__dict__["_fleet_logic"] = FleetLogic(self.dialect)
        return logic

    @property
    def events(self) -> EventLogic:
        logic = self.__dict__.get("_event_logic")
        if logic is None:
            logic = self.__dict__["_event_logic"] = EventLogic(self.dialect)
        return logic

    def _fresh(self, e: Euicc | None) -> Euicc | None:
        """SQLite keeps recent ``last_contact`` values in memory for a second: show them."""
        fix = getattr(self, "_with_contact", None)
        return fix(e) if fix is not None else e

    # ---- fleet
    async def find_euiccs(
        self,
        *,
        labels: list[tuple[str, str]] = (),
        limit: int = 100,
        after: str | None = None,  # type: ignore[assignment]
        state: StateFilter | None = None,
    ) -> list[Euicc]:
        """eUICCs in EID order, those with every ``(key, value)`` label (and in ``state``) only. The state is
        read from the rows: a contact not yet written (the SQLite store writes them about once a second) counts
        from the next page read on."""
        pairs = list(labels)
        out = await self._run(lambda: self.fleet.list_euiccs(limit, after, pairs, state), write=False)
        return [e for e in (self._fresh(e) for e in out) if e is not None]

    async def eids_by_labels(self, labels: list[tuple[str, str]], *, limit: int) -> list[str]:
        pairs = list(labels)
        return await self._run(lambda: self.fleet.eids_by_labels(pairs, limit), write=False)

    async def patch_euicc(
        self, eid: str, changes: dict[str, Any], *, who: str, now: float | None = None
    ) -> Euicc | None:
        at = time.time() if now is None else now
        return self._fresh(await self._run(lambda: self.fleet.patch_euicc(eid, dict(changes), who, at)))

    async def delete_euicc(self, eid: str, *, who: str, force: bool = False, now: float | None = None) -> Removal:
        at = time.time() if now is None else now
        return await self._run(lambda: self.fleet.delete_euicc(eid, who, at, force))

    async def list_batches(self, *, limit: int = 100, after: tuple[float, str] | None = None) -> list[dict[str, Any]]:
        return await self._run(lambda: self.fleet.list_batches(limit, after), write=False)

    async def batch_page(self, batch_id: str, *, limit: int, after_idx: int | None = None) -> Any:
        """See :meth:`eim.store.fleet.FleetLogic.batch_page`."""
        return await self._run(lambda: self.fleet.batch_page(batch_id, limit, after_idx), write=False)

    async def cancel_batch(
        self, batch_id: str, *, who: str, now: float | None = None
    ) -> tuple[list[Operation], dict[str, int]] | None:
        at = time.time() if now is None else now
        return await self._run(lambda: self.fleet.cancel_batch(batch_id, who, at))

    async def fleet_counts(self, *, now: float | None = None, default_interval_s: float = 86400.0) -> FleetCounts:
        at = time.time() if now is None else now
        if await self._run(self.fleet.tally_rows, write=False) > COMPACT_AT:  # fold the delta rows first
            await self._run(self.fleet.compact_tallies)
        return await self._run(lambda: self.fleet.fleet_counts(at, default_interval_s), write=False)

    async def recount_fleet_tallies(self) -> None:
        """Rebuild the fleet tallies from the registry (after rows were written around the store)."""
        await self._run(self.fleet.recount_tallies)

    async def note_profile_event(self, eid: str, event: str, iccid: str | None, address: str | None) -> bool:
        """A verified notification's profile event: updates the eUICC's enabled profile and its SM-DP+."""
        return await self._run(lambda: self.fleet.note_profile_event(eid, event, iccid, address))

    # ---- polls per hour (fleet_hourly, migration 0005): tallied in memory, added once a second
    def count_poll(self, now: float) -> None:
        """One poll of a registered eUICC at ``now``; written by :meth:`flush_poll_tally` within a second."""
        tally: dict[int, int] = self.__dict__.setdefault("_poll_tally", {})
        hour = int(now // 3600) * 3600
        tally[hour] = tally.get(hour, 0) + 1
        task = self.__dict__.get("_poll_flusher")
        if task is None or task.done():
            self.__dict__["_poll_flusher"] = asyncio.get_running_loop().create_task(
                self._poll_flush_loop(), name="eim-store-poll-tally"
            )

    async def _poll_flush_loop(self) -> None:
        while self.__dict__.get("_poll_tally"):
            await asyncio.sleep(POLL_FLUSH_S)
            await self.flush_poll_tally()

    async def flush_poll_tally(self, *, now: float | None = None) -> None:
        """Add the polls counted since the last flush to fleet_hourly (one transaction); kept for the next
        attempt when the store refuses."""
        tally: dict[int, int] = self.__dict__.get("_poll_tally") or {}
        if not tally:
            return
        self.__dict__["_poll_tally"] = {}
        at = time.time() if now is None else now
        rows = [("polls", hour, n) for hour, n in sorted(tally.items())]
        prune = int(at // 3600) * 3600 - KEEP_HOURLY_S
        try:
            await self._run(lambda: self.fleet.add_hourly(rows, prune))
        except StoreError as exc:
            log.warning("poll counts not written", extra={"hours": len(rows), "error": str(exc)})
            again: dict[int, int] = self.__dict__.setdefault("_poll_tally", {})
            for hour, n in tally.items():
                again[hour] = again.get(hour, 0) + n

    async def stop_poll_tally(self) -> None:
        """Stop the flusher and write what is left (the backends call this when they close)."""
        task = self.__dict__.get("_poll_flusher")
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.flush_poll_tally()

    # ---- subscriptions
    async def add_subscription(self, sub: Subscription) -> Subscription:
        return await self._run(lambda: self.events.add_subscription(sub))

    async def get_subscription(self, sub_id: str) -> Subscription | None:
        return await self._run(lambda: self.events.get_subscription(sub_id), write=False)

    async def list_subscriptions(self, *, limit: int = 100, after: str | None = None) -> list[Subscription]:
        return await self._run(lambda: self.events.list_subscriptions(limit, after), write=False)

    async def delete_subscription(self, sub_id: str, *, who: str, now: float | None = None) -> bool:
        at = time.time() if now is None else now
        return await self._run(lambda: self.events.delete_subscription(sub_id, who, at))

    # ---- event feed
    async def fan_out_events(
        self, to_events: Callable[[AuditEntry], list[Event]], *, now: float, limit: int = 500, settle_s: float = 2.0
    ) -> tuple[int, int]:
        return await self._run(lambda: self.events.fan_out(now, to_events, limit=limit, settle_s=settle_s))

    async def scan_stale(
        self, to_event: Callable[[dict[str, Any]], Event], *, now: float, default_interval_s: float, limit: int = 1000
    ) -> int:
        return await self._run(lambda: self.events.stale_scan(now, default_interval_s, to_event, limit=limit))

    async def claim_deliveries(self, *, now: float, lease_s: float, owner: str, limit: int = 16) -> list[Delivery]:
        return await self._run(lambda: self.events.claim_deliveries(now, lease_s, owner, limit))

    async def delivery_outcome(self, delivery_id: int, *, owner: str, now: float, status: str, **kw: Any) -> bool:
        return await self._run(lambda: self.events.delivery_outcome(delivery_id, owner, now, status=status, **kw))

    async def release_deliveries(self, owner: str, *, now: float | None = None) -> int:
        at = time.time() if now is None else now
        return await self._run(lambda: self.events.release_deliveries(owner, at))

    async def list_deliveries(
        self, sub_id: str, *, status: str | None = None, limit: int = 100, after: int | None = None
    ) -> list[Delivery]:
        return await self._run(lambda: self.events.list_deliveries(sub_id, status, limit, after), write=False)

    async def retry_delivery(
        self, sub_id: str, delivery_id: int, *, who: str, now: float | None = None
    ) -> Delivery | None:
        at = time.time() if now is None else now
        return await self._run(lambda: self.events.retry_delivery(sub_id, delivery_id, who, at))

    async def next_delivery_due(self) -> float | None:
        return await self._run(self.events.next_delivery_due, write=False)

    async def purge_delivered(self, before: float) -> int:
        return await self._run(lambda: self.events.purge_delivered(before))
