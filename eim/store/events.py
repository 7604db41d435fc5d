"""Store logic of the event feed (``eim.events``): webhook subscriptions, the fan-out of events into per-subscription
deliveries, and the durable delivery queue with leases and retries. Generators that yield SQL, like
:mod:`eim.store.logic`.

The events come from the audit trail: every change of an operation's status, every notification taken and every
state change an eUICC reported is an audit row, written in the same transaction as the change itself. The fan-out
(:meth:`EventLogic.fan_out`) reads the audit rows past its cursor (``event_cursors``), turns them into events
(a pure function given by the caller) and writes one delivery row per matching subscription, and moves the cursor,
in ONE transaction: a crash before the commit redoes it, after it the deliveries are durable. PostgreSQL: the
cursor row is locked (``FOR UPDATE``), so two workers never fan out the same rows; audit ids are allocated before
their transaction commits, so a row is only taken once it is ``settle_s`` old (a transaction still open with a
smaller id would otherwise be skipped for good).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from eim.model import AuditEntry
from eim.store.logic import Gen, Logic, Q, row_to_audit

DELIVERY_STATUSES = ("pending", "delivered", "failed")


@dataclass(frozen=True)
class Event:
    """One event as delivered: ``body`` is the exact JSON the receiver gets (and the signature covers)."""

    id: str
    type: str
    body: str


@dataclass(frozen=True)
class Subscription:
    id: str
    url: str
    events: tuple[str, ...]
    secret: str
    description: str
    created_at: float
    created_by: str

    def __repr__(self) -> str:  # never show the secret
        return f"Subscription(id={self.id!r}, url={self.url!r}, events={self.events!r})"


@dataclass(frozen=True)
class Delivery:
    id: int
    subscription_id: str
    event_id: str
    event_type: str
    body: str
    status: str
    created_at: float
    updated_at: float
    next_attempt_at: float
    attempts: int
    last_error: str | None
    last_status: int | None
    lease_until: float | None = None
    leased_by: str | None = None
    url: str | None = None  # joined from the subscription when claimed
    secret: str | None = None


def row_to_subscription(r: dict[str, Any]) -> Subscription:
    return Subscription(
        id=r["id"],
        url=r["url"],
        events=tuple(json.loads(r["events"])),
        secret=r["secret"],
        description=r["description"],
        created_at=float(r["created_at"]),
        created_by=r["created_by"],
    )


def row_to_delivery(r: dict[str, Any]) -> Delivery:
    return Delivery(
        id=int(r["id"]),
        subscription_id=r["subscription_id"],
        event_id=r["event_id"],
        event_type=r["event_type"],
        body=r["body"],
        status=r["status"],
        created_at=float(r["created_at"]),
        updated_at=float(r["updated_at"]),
        next_attempt_at=float(r["next_attempt_at"]),
        attempts=int(r["attempts"]),
        last_error=r["last_error"],
        last_status=None if r["last_status"] is None else int(r["last_status"]),
        lease_until=None if r["lease_until"] is None else float(r["lease_until"]),
        leased_by=r["leased_by"],
        url=r.get("url"),
        secret=r.get("secret"),
    )


class EventLogic(Logic):
    # ------------------------------------------------------------------ subscriptions
    def add_subscription(self, s: Subscription) -> Gen:
        yield Q(
            "INSERT INTO subscriptions (id, url, events, secret, description, created_at, created_by)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (s.id, s.url, json.dumps(list(s.events)), s.secret, s.description, s.created_at, s.created_by),
        )
        yield self._audit(
            at=s.created_at,
            who=s.created_by,
            action="subscribe",
            outcome="ok",
            detail={"subscription_id": s.id, "url": s.url, "events": list(s.events)},
        )
        return s

    def get_subscription(self, sub_id: str) -> Gen:
        r = yield Q("SELECT * FROM subscriptions WHERE id = ?", (sub_id,), "one")
        return None if r is None else row_to_subscription(r)

    def list_subscriptions(self, limit: int, after: str | None) -> Gen:
        if after is None:
            rows = yield Q("SELECT * FROM subscriptions ORDER BY id LIMIT ?", (limit,), "all")
        else:
            rows = yield Q("SELECT * FROM subscriptions WHERE id > ? ORDER BY id LIMIT ?", (after, limit), "all")
        return [row_to_subscription(r) for r in rows]

    def delete_subscription(self, sub_id: str, who: str, now: float) -> Gen:
        yield Q("DELETE FROM event_deliveries WHERE subscription_id = ?", (sub_id,))
        n = yield Q("DELETE FROM subscriptions WHERE id = ?", (sub_id,))
        if n:
            yield self._audit(at=now, who=who, action="unsubscribe", outcome="ok", detail={"subscription_id": sub_id})
        return n == 1

    # ------------------------------------------------------------------ fan-out
    def _cursor(self, name: str, initial: Callable[[], Gen]) -> Gen:
        r = yield Q("SELECT position FROM event_cursors WHERE name = ?" + self._lock(), (name,), "one")
        if r is not None:
            return float(r["position"])
        start = yield from initial()
        n = yield Q(
            "INSERT INTO event_cursors (name, position) VALUES (?, ?) ON CONFLICT (name) DO NOTHING", (name, start)
        )
        if n != 1:  # another worker created it: lock and read that one
            r = yield Q("SELECT position FROM event_cursors WHERE name = ?" + self._lock(), (name,), "one")
            return float(r["position"])
        return float(start)

    def _set_cursor(self, name: str, position: float) -> Q:
        return Q("UPDATE event_cursors SET position = ? WHERE name = ?", (position, name))

    def _subscribers(self) -> Gen:
        rows = yield Q("SELECT id, events FROM subscriptions", (), "all")
        return [(r["id"], set(json.loads(r["events"]))) for r in rows]

    def _queue(self, events: Iterable[Event], subs: list[tuple[str, set[str]]], now: float) -> Gen:
        rows = [
            (sid, e.id, e.type, e.body, "pending", now, now, now)
            for e in events
            for sid, types in subs
            if e.type in types
        ]
        if rows:
            yield Q(
                "INSERT INTO event_deliveries (subscription_id, event_id, event_type, body, status, created_at,"
                " updated_at, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (subscription_id, event_id) DO NOTHING",
                rows,
                "many",
            )
        return len(rows)

    def fan_out(
        self, now: float, to_events: Callable[[AuditEntry], list[Event]], *, limit: int, settle_s: float
    ) -> Gen:
        """Turn the audit rows past the cursor into deliveries; ``(rows read, deliveries queued)``."""

        def latest() -> Gen:
            r = yield Q("SELECT MAX(id) AS m FROM audit", (), "one")
            return float(r["m"] or 0)

        cursor = yield from self._cursor("audit", latest)
        subs = yield from self._subscribers()
        # with no subscriber no row becomes a delivery: only the cursor moves on (the rows' ids and times suffice)
        cols = "*" if subs else "id, at"
        rows = yield Q(f"SELECT {cols} FROM audit WHERE id > ? ORDER BY id LIMIT ?", (int(cursor), limit), "all")
        events: list[Event] = []
        last = cursor
        for r in rows:
            if self.pg and float(r["at"]) > now - settle_s:
                break
            if subs:
                events.extend(to_events(row_to_audit(r)))
            last = float(r["id"])
        if last == cursor:
            return 0, 0
        queued = yield from self._queue(events, subs, now)
        yield self._set_cursor("audit", last)
        return int(last - cursor), queued

    def stale_scan(
        self, now: float, default_interval_s: float, to_event: Callable[[dict[str, Any]], Event], *, limit: int
    ) -> Gen:
        """eUICCs that went silent (longer than their expected poll interval) since the last scan: their
        ``euicc.stale`` deliveries. The cursor is the last scan's time; the first scan only sets it."""

        def initial() -> Gen:
            if False:  # pragma: no cover - a generator without a statement
                yield Q("")
            return now

        since = yield from self._cursor("stale", initial)
        if since >= now:
            return 0
        rows = yield Q(
            "SELECT eid, last_contact, poll_interval_s FROM euiccs WHERE last_contact >= ? AND last_contact < ?"
            " AND poll_interval_s IS NULL ORDER BY last_contact LIMIT ?",
            (since - default_interval_s, now - default_interval_s, limit),
            "all",
        )
        until = now
        if len(rows) == limit:  # more than one round's worth: stop before the last contact time seen
            edge = float(rows[-1]["last_contact"])
            rows = [r for r in rows if float(r["last_contact"]) < edge]
            until = edge + default_interval_s
        own = yield Q(
            "SELECT eid, last_contact, poll_interval_s FROM euiccs WHERE poll_interval_s IS NOT NULL"
            " AND last_contact + poll_interval_s >= ? AND last_contact + poll_interval_s < ?",
            (since, until),
            "all",
        )
        events = [to_event(dict(r, poll_interval_s=r["poll_interval_s"] or default_interval_s)) for r in rows]
        events += [to_event(dict(r)) for r in own]
        subs = yield from self._subscribers()
        yield from self._queue(events, subs, now)
        yield self._set_cursor("stale", until)
        return len(events)

    # ------------------------------------------------------------------ deliveries
    def claim_deliveries(self, now: float, lease_s: float, owner: str, limit: int) -> Gen:
        due = "status = 'pending' AND next_attempt_at <= ? AND (lease_until IS NULL OR lease_until <= ?)"
        picked = yield Q(
            f"SELECT id FROM event_deliveries WHERE {due} ORDER BY next_attempt_at, id LIMIT ?" + self._lock(skip=True),
            (now, now, limit),
            "all",
        )
        if not picked:
            return []
        ids = [int(r["id"]) for r in picked]
        marks = ", ".join("?" * len(ids))
        yield Q(
            "UPDATE event_deliveries SET lease_until = ?, leased_by = ?, attempts = attempts + 1, updated_at = ?"
            f" WHERE id IN ({marks}) AND {due}",
            (now + lease_s, owner, now, *ids, now, now),
        )
        rows = yield Q(
            "SELECT d.*, s.url AS url, s.secret AS secret FROM event_deliveries d"
            f" JOIN subscriptions s ON s.id = d.subscription_id WHERE d.id IN ({marks}) AND d.leased_by = ?"
            " ORDER BY d.next_attempt_at, d.id",
            (*ids, owner),
            "all",
        )
        return [row_to_delivery(r) for r in rows]

    def delivery_outcome(
        self,
        delivery_id: int,
        owner: str,
        now: float,
        *,
        status: str,
        next_attempt_at: float | None = None,
        error: str | None = None,
        http_status: int | None = None,
    ) -> Gen:
        """``status``: delivered / pending (retry at ``next_attempt_at``) / failed. ``False``: lease lost."""
        n = yield Q(
            "UPDATE event_deliveries SET status = ?, next_attempt_at = COALESCE(?, next_attempt_at), last_error = ?,"
            " last_status = ?, lease_until = NULL, leased_by = NULL, updated_at = ?"
            " WHERE id = ? AND status = 'pending' AND leased_by = ?",
            (status, next_attempt_at, error, http_status, now, delivery_id, owner),
        )
        return n == 1

    def release_deliveries(self, owner: str, now: float) -> Gen:
        n = yield Q(
            "UPDATE event_deliveries SET lease_until = NULL, leased_by = NULL, updated_at = ?"
            " WHERE leased_by = ? AND status = 'pending'",
            (now, owner),
        )
        return n

    def list_deliveries(self, sub_id: str, status: str | None, limit: int, after: int | None) -> Gen:
        where, args = ["subscription_id = ?"], [sub_id]
        if status is not None:
            where.append("status = ?")
            args.append(status)
        if after is not None:
            where.append("id > ?")
            args.append(after)
        rows = yield Q(
            f"SELECT * FROM event_deliveries WHERE {' AND '.join(where)} ORDER BY id LIMIT ?", (*args, limit), "all"
        )
        return [row_to_delivery(r) for r in rows]

    def retry_delivery(self, sub_id: str, delivery_id: int, who: str, now: float) -> Gen:
        """A delivered or failed delivery is sent again (attempts from zero): the row, or ``None`` when unknown;
        a pending one is left as it is."""
        r = yield Q("SELECT * FROM event_deliveries WHERE id = ? AND subscription_id = ?", (delivery_id, sub_id), "one")
        if r is None:
            return None
        if r["status"] != "pending":
            yield Q(
                "UPDATE event_deliveries SET status = 'pending', attempts = 0, next_attempt_at = ?, updated_at = ?,"
                " lease_until = NULL, leased_by = NULL WHERE id = ?",
                (now, now, delivery_id),
            )
            yield self._audit(
                at=now,
                who=who,
                action="redeliver",
                outcome="queued",
                detail={"subscription_id": sub_id, "delivery_id": delivery_id, "event_id": r["event_id"]},
            )
        r = yield Q("SELECT * FROM event_deliveries WHERE id = ?", (delivery_id,), "one")
        return row_to_delivery(r)

    def next_delivery_due(self) -> Gen:
        r = yield Q(
            "SELECT MIN(CASE WHEN lease_until IS NOT NULL AND lease_until > next_attempt_at THEN lease_until"
            " ELSE next_attempt_at END) AS t FROM event_deliveries WHERE status = 'pending'",
            (),
            "one",
        )
        return None if r is None or r["t"] is None else float(r["t"])

    def purge_delivered(self, before: float) -> Gen:
        n = yield Q("DELETE FROM event_deliveries WHERE status = 'delivered' AND updated_at < ?", (before,))
        return n
