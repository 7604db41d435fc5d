"""Store logic of the fleet view (label filters, relabel / remove an eUICC, batch list and cancel, the fleet summary),
written once for both backends like :mod:`eim.store.logic` (generators that yield SQL). The event feed's tables
are in :mod:`eim.store.events`.

Label filters read ``euicc_labels`` (migration 0007: one row per label, kept in the transaction that changes the
``labels`` column), walked in EID order from the index ``(key, value, eid)``; label keys used in a filter are plain
names (:data:`LABEL_KEY`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

from eim.model import OpStatus
from eim.store import tallies
from eim.store.enabled_profile import enabled_from_notification
from eim.store.logic import Gen, Logic, Q, _dumps, row_to_euicc, row_to_op

LABEL_KEY = re.compile(r"[A-Za-z0-9._/-]{1,64}")
OPEN_SQL = "status IN ('queued', 'in_progress')"
FINAL_SQL = "('done', 'failed', 'expired', 'cancelled')"  # the predicate of the partial index operations_ended
FAILED_STATUSES = ("failed", "expired")
DEFAULT_VERSION = "1.2"  # euiccs.sgp32_version NULL: nothing version-specific seen, served as SGP.32 v1.2
HOURS = 24


@dataclass(frozen=True)
class FleetCounts:
    """``GET /v1/fleet`` and the fleet gauges (counted from indexes and counters, see migrations 0004 and 0005)."""

    registered: int
    never_seen: int
    seen_1h: int
    seen_24h: int
    stale: int
    by_binding: dict[str, int] = field(default_factory=dict)
    operations: dict[tuple[str, str], int] = field(default_factory=dict)
    notifications: dict[str, int] = field(default_factory=dict)
    deliveries: dict[str, int] = field(default_factory=dict)
    # migration 0005 (appended; see FleetLogic.fleet_counts for what each one is counted from)
    by_sgp32_version: dict[str, int] = field(default_factory=dict)  # None in the store counts as "1.2"
    by_enabled_smdp: dict[str, int] = field(default_factory=dict)  # "unknown": none enabled or not learned
    ended_24h: dict[str, int] = field(default_factory=dict)  # final status -> operations ended in the last 24 h
    failure_rate_24h: float | None = None  # (failed + expired) / (done + failed + expired), last 24 h; None: 0/0
    failure_rate_all: float | None = None  # the same over every stored operation
    # 24 buckets, oldest first: {"hour": start (POSIX s), "created", "ended", "failed", "polls"}
    hourly: tuple[dict[str, int], ...] = ()


DRIVER_CAP = 5_000  # rows counted per filter to choose where a filtered list's walk starts
STATES = ("never_seen", "seen_1h", "seen_24h", "stale")


@dataclass(frozen=True)
class StateFilter:
    """An eUICC list's contact state at ``now``: never seen, seen within 1 h / 24 h, or stale (silent longer than
    its own ``poll_interval_s`` or ``default_interval_s``). Each is one or two index ranges (migration 0004:
    ``euiccs_contact (last_contact, poll_interval_s)`` and the partial ``euiccs_poll_override``)."""

    state: str
    now: float
    default_interval_s: float = 86400.0

    def condition(self, *, per_row: bool = False) -> tuple[str, list[Any]]:
        """``(sql, args)`` over ``euiccs e``. ``per_row``: spelt ``+e.last_contact`` so that no contact index can
        serve it (both backends): the list then walks the EID index and tests each row, which is what a common
        state wants (otherwise SQLite takes the index range and sorts a third of the fleet by EID)."""
        c = "+e.last_contact" if per_row else "e.last_contact"
        if self.state == "never_seen":
            return f"{c} IS NULL", []
        if self.state in ("seen_1h", "seen_24h"):
            return f"{c} >= ?", [self.now - (3600.0 if self.state == "seen_1h" else 86400.0)]
        if self.state == "stale":
            return (
                f"((e.poll_interval_s IS NULL AND {c} < ?)"
                f" OR (e.poll_interval_s IS NOT NULL AND {c} < ? - e.poll_interval_s))"
            ), [self.now - self.default_interval_s, self.now]
        raise ValueError(f"state must be one of {', '.join(STATES)}")

    def count_parts(self) -> list[tuple[str, list[Any]]]:
        """The state as index ranges to count (each capped by the caller), in the contact index's order so that
        a generic plan (PostgreSQL, after five runs of a prepared statement) walks the index rather than the
        table: stale = the default-interval range of ``euiccs_contact`` + the partial ``euiccs_poll_override``."""
        if self.state == "stale":
            return [
                (
                    "e.poll_interval_s IS NULL AND e.last_contact < ? ORDER BY e.last_contact",
                    [self.now - self.default_interval_s],
                ),
                ("e.poll_interval_s IS NOT NULL AND e.last_contact < ? - e.poll_interval_s", [self.now]),
            ]
        cond, args = self.condition()
        return [(cond + ("" if self.state == "never_seen" else " ORDER BY e.last_contact"), args)]


@dataclass(frozen=True)
class Removal:
    """What :meth:`FleetLogic.delete_euicc` did: ``found`` False = no such eUICC; ``open_ops`` > 0 and not
    ``deleted`` = refused (open operations, no force)."""

    found: bool
    deleted: bool = False
    open_ops: int = 0
    cancelled: list[Any] = field(default_factory=list)


class FleetLogic(Logic):
    """Fleet queries and changes (a :class:`eim.store.logic.Logic` for its audit and locking helpers)."""

    # ------------------------------------------------------------------ filtered lists
    def list_euiccs(  # type: ignore[override]
        self, limit: int, after: str | None, labels: list[tuple[str, str]], state: StateFilter | None = None
    ) -> Gen:
        """eUICCs in EID order after ``after``, with every label and in ``state``. The walk starts from the
        smallest of the filters' sets (:meth:`_driver`): a label's rows in ``euicc_labels`` (in EID order), a
        small state set from the contact indexes (sorted), else the EID index itself (a common state: matches
        are dense)."""
        for key, _ in labels:
            if not LABEL_KEY.fullmatch(key):
                raise ValueError(f"label key {key[:70]!r} is not a plain name")
        driver = yield from self._driver(labels, state)
        cond, args = ("", []) if state is None else state.condition(per_row=driver != "state")
        if isinstance(driver, int):  # a label drives: its index range, in EID order
            key, value = labels[driver]
            rest = [p for i, p in enumerate(labels) if i != driver]
            where, wargs = ["d.key = ?", "d.value = ?"], [key, value]
            if after is not None:
                where.append("d.eid > ?")
                wargs.append(after)
            sql = "SELECT e.* FROM euicc_labels d" + self._row_of("d", where)
            order = "d.eid"
        elif driver == "state":  # a small state set: its eIDs from the contact indexes, then sorted
            where, wargs = [], []
            sql = (
                "WITH s AS MATERIALIZED (SELECT e.eid FROM euiccs e WHERE "
                + cond
                + (" AND e.eid > ?" if after is not None else "")
                + ") SELECT e.* FROM s"
                + self._row_of("s", where)
            )
            args = [*args, *([after] if after is not None else [])]
            cond, order, rest = "", "s.eid", list(labels)
        else:
            where, wargs, rest = [], [], []
            if after is not None:
                where.append("e.eid > ?")
                wargs.append(after)
            sql, order = "SELECT e.* FROM euiccs e", "e.eid"
        if cond:
            where.append(cond)
            wargs += args
            args = []
        for key, value in rest:
            where.append("EXISTS (SELECT 1 FROM euicc_labels x WHERE x.eid = e.eid AND x.key = ? AND x.value = ?)")
            wargs += [key, value]
        sql += (" WHERE " + " AND ".join(where) if where else "") + f" ORDER BY {order} LIMIT ?"
        rows = yield Q(sql, (*args, *wargs, limit), "all")
        return [row_to_euicc(r) for r in rows]

    def _row_of(self, alias: str, where: list[str]) -> str:
        """The eUICC row of each ``alias.eid``, probed by primary key in the walk's order. SQLite: a CROSS JOIN
        (the left table stays the outer loop). PostgreSQL: a LATERAL subquery that cannot be flattened (OFFSET
        0): the driver's statements are prepared and, after five runs, planned generically, and a generic plan
        estimated a label at a sixth of the table and merge-joined it with a walk through the whole primary key
        (135 ms for a label on 100 of 300,000 eUICCs, against 0.5 ms probed)."""
        if self.pg:
            return f" CROSS JOIN LATERAL (SELECT * FROM euiccs x WHERE x.eid = {alias}.eid OFFSET 0) e"
        where.insert(0, f"e.eid = {alias}.eid")
        return " CROSS JOIN euiccs e"

    def _driver(self, labels: list[tuple[str, str]], state: StateFilter | None) -> Gen:
        """Which filter the walk starts from: the index of the label with the fewest eUICCs, ``"state"``, or
        ``None`` (the EID index). Each set is counted up to :data:`DRIVER_CAP` rows (an index range each); a
        state set of the cap or more is dense enough to be found by walking the EID index."""
        best: int | str | None = None
        best_n = DRIVER_CAP
        if state is not None:
            n = 0
            for cond, args in state.count_parts():
                r = yield Q(
                    # last_contact, not eid: SQLite's contact indexes cover it (eid is not their rowid)
                    "SELECT COUNT(*) AS n FROM (SELECT e.last_contact FROM euiccs e"
                    f" WHERE {cond} LIMIT {DRIVER_CAP}) c",
                    args,
                    "one",
                )
                n += r["n"]
            if n < DRIVER_CAP:
                best, best_n = "state", n
        for i, (key, value) in enumerate(labels):
            r = yield Q(  # ORDER BY eid: the index's order, so that no plan (not even PostgreSQL's generic one,
                # which guesses a sixth of the table) prefers a sequential scan that a rare label runs to its end
                "SELECT COUNT(*) AS n FROM (SELECT eid FROM euicc_labels WHERE key = ? AND value = ?"
                f" ORDER BY eid LIMIT {DRIVER_CAP}) c",
                (key, value),
                "one",
            )
            if best is None or r["n"] < best_n or (r["n"] == best_n and best == "state"):
                best, best_n = i, r["n"]
        return best

    def eids_by_labels(self, labels: list[tuple[str, str]], limit: int) -> Gen:
        rows = yield from self.list_euiccs(limit, None, labels)
        return [e.eid for e in rows]

    # ------------------------------------------------------------------ relabel / remove
    def patch_euicc(self, eid: str, changes: dict[str, Any], who: str, now: float) -> Gen:
        """``changes``: ``labels`` (a merge patch: ``None`` removes a key), ``note``, ``poll_interval_s``."""
        r = yield Q("SELECT * FROM euiccs WHERE eid = ?" + self._lock(), (eid,), "one")
        if r is None:
            return None
        e = row_to_euicc(r)
        sets, args, detail = [], [], {}
        if "labels" in changes:
            labels = dict(e.labels)
            for k, v in changes["labels"].items():
                if v is None:
                    labels.pop(k, None)
                else:
                    labels[k] = v
            sets.append("labels = ?")
            args.append(_dumps(labels))
            detail["labels"] = changes["labels"]
            e = replace(e, labels=labels)
            yield from self.write_labels(eid, labels)
        for name in ("note", "poll_interval_s"):
            if name in changes:
                sets.append(f"{name} = ?")
                args.append(changes[name])
                detail[name] = changes[name]
                e = replace(e, **{name: changes[name]})
        if sets:
            yield Q(f"UPDATE euiccs SET {', '.join(sets)} WHERE eid = ?", (*args, eid))
            yield self._audit(at=now, who=who, action="update", outcome="ok", eid=eid, detail=detail)
        return e

    def delete_euicc(self, eid: str, who: str, now: float, force: bool) -> Gen:
        """Remove an eUICC and its operations' rows (the audit trail keeps their history). Refused while it has
        open operations unless ``force``: then they are cancelled first (audited), in the same transaction."""
        r = yield Q(
            "SELECT eid, binding, sgp32_version, enabled_smdp FROM euiccs WHERE eid = ?" + self._lock(), (eid,), "one"
        )
        if r is None:
            return Removal(found=False)
        rows = yield Q(f"SELECT * FROM operations WHERE eid = ? AND {OPEN_SQL} ORDER BY seq", (eid,), "all")
        if rows and not force:
            return Removal(found=True, open_ops=len(rows))
        cancelled = []
        for row in rows:
            cancelled.append((yield from self._close_op(row_to_op(row), OpStatus.CANCELLED, now, who, None)))
        yield Q(
            "UPDATE batch_items SET error = ? WHERE operation_id IN (SELECT id FROM operations WHERE eid = ?)",
            (f"eUICC {eid} was removed", eid),
        )
        yield Q("DELETE FROM operations WHERE eid = ?", (eid,))
        yield Q("DELETE FROM euicc_labels WHERE eid = ?", (eid,))
        yield Q("DELETE FROM euiccs WHERE eid = ?", (eid,))
        yield from self._tally(tallies.added(r, -1))
        yield self._audit(at=now, who=who, action="remove", outcome="ok", eid=eid, detail={"cancelled": len(cancelled)})
        return Removal(found=True, deleted=True, open_ops=len(rows), cancelled=cancelled)

    # ------------------------------------------------------------------ batches
    def list_batches(self, limit: int, after: tuple[float, str] | None) -> Gen:
        where, args = "", []
        if after is not None:
            where = " WHERE (b.created_at > ? OR (b.created_at = ? AND b.id > ?))"
            args = [after[0], after[0], after[1]]
        rows = yield Q(
            "SELECT b.*, (SELECT COUNT(*) FROM batch_items i WHERE i.batch_id = b.id) AS n_items,"
            " (SELECT COUNT(*) FROM batch_items i WHERE i.batch_id = b.id AND i.operation_id IS NULL) AS n_refused"
            f" FROM batches b{where}"
            " ORDER BY b.created_at, b.id LIMIT ?",
            (*args, limit),
            "all",
        )
        return rows

    def batch_page(self, batch_id: str, limit: int, after_idx: int | None) -> Gen:
        """A batch's header, its progress counts and one page of its items (``GET /v1/batches/{id}?limit=``):
        ``None`` when unknown, else ``(batch row, item count, counts by status, items)``. The counts are an index
        range each (``batch_items`` primary key, ``operations_batch_status`` of migration 0007); an item whose
        operation is gone (a removed eUICC) or was never made counts as ``refused``, as in the whole batch's
        view. ``items``: dicts with idx, eid, operation_id, error, status, result_code, op_error."""
        b = yield Q("SELECT * FROM batches WHERE id = ?", (batch_id,), "one")
        if b is None:
            return None
        n = yield Q("SELECT COUNT(*) AS n FROM batch_items WHERE batch_id = ?", (batch_id,), "one")
        rows = yield Q(
            "SELECT status, COUNT(*) AS n FROM operations WHERE batch_id = ? GROUP BY status", (batch_id,), "all"
        )
        by_status = {r["status"]: int(r["n"]) for r in rows}
        refused = int(n["n"]) - sum(by_status.values())
        if refused:
            by_status["refused"] = refused
        items = yield Q(
            "SELECT i.idx AS idx, i.eid AS eid, i.operation_id AS operation_id, i.error AS error,"
            " o.status AS status, o.result_code AS result_code, o.error AS op_error"
            " FROM batch_items i LEFT JOIN operations o ON o.id = i.operation_id"
            " WHERE i.batch_id = ? AND i.idx > ? ORDER BY i.idx LIMIT ?",
            (batch_id, -1 if after_idx is None else after_idx, limit),
            "all",
        )
        return b, int(n["n"]), by_status, [dict(r) for r in items]

    def cancel_batch(self, batch_id: str, who: str, now: float) -> Gen:
        """Cancel every open operation of a batch (each under its eUICC's lock, audited). ``None``: no batch."""
        b = yield Q("SELECT id FROM batches WHERE id = ?", (batch_id,), "one")
        if b is None:
            return None
        rows = yield Q(f"SELECT DISTINCT eid FROM operations WHERE batch_id = ? AND {OPEN_SQL}", (batch_id,), "all")
        cancelled = []
        for eid in sorted(r["eid"] for r in rows):  # lock order: by EID, like every multi-eUICC change
            yield Q("SELECT eid FROM euiccs WHERE eid = ?" + self._lock(), (eid,), "one")
            ops = yield Q(
                f"SELECT * FROM operations WHERE eid = ? AND batch_id = ? AND {OPEN_SQL} ORDER BY seq",
                (eid, batch_id),
                "all",
            )
            for row in ops:
                cancelled.append((yield from self._close_op(row_to_op(row), OpStatus.CANCELLED, now, who, None)))
        counts = yield Q(
            "SELECT o.status AS status, COUNT(*) AS n FROM operations o WHERE o.batch_id = ? GROUP BY o.status",
            (batch_id,),
            "all",
        )
        if cancelled:
            yield self._audit(
                at=now,
                who=who,
                action="batch_cancel",
                outcome="cancelled",
                detail={"batch_id": batch_id, "cancelled": len(cancelled)},
            )
        return cancelled, {r["status"]: int(r["n"]) for r in counts}

    # ------------------------------------------------------------------ the fleet at a glance
    def fleet_counts(self, now: float, default_interval_s: float) -> Gen:
        """Index range counts and small counters only (migrations 0004 and 0005): never a scan of the table rows.
        NULL versions count as :data:`DEFAULT_VERSION`; eUICCs without a known enabled SM-DP+ as ``unknown``."""

        def one(sql: str, *args: Any) -> Q:
            return Q(sql, args, "one")

        counted = yield Q(
            "SELECT dim, value, SUM(n) AS n FROM fleet_tallies GROUP BY dim, value HAVING SUM(n) <> 0", (), "all"
        )
        by: dict[str, dict[str, int]] = {dim: {} for dim in tallies.NULL_AS}
        for r in counted:
            by.setdefault(r["dim"], {})[r["value"]] = int(r["n"])
        registered = sum(by["binding"].values())
        # The contact counts walk as few index entries as they can: seen within 24 h is seen within 1 h plus the
        # range between, and the eUICCs silent since the stale threshold are those seen at all minus those seen
        # since (registered comes from the tallies), less the few with their own interval (partial index).
        never = yield one("SELECT COUNT(*) AS n FROM euiccs WHERE last_contact IS NULL")
        h1 = yield one("SELECT COUNT(*) AS n FROM euiccs WHERE last_contact >= ?", now - 3600.0)
        day = yield one(
            "SELECT COUNT(*) AS n FROM euiccs WHERE last_contact >= ? AND last_contact < ?", now - 86400.0, now - 3600.0
        )
        seen_1h, seen_24h = int(h1["n"]), int(h1["n"]) + int(day["n"])
        since = {3600.0: seen_1h, 86400.0: seen_24h}.get(float(default_interval_s))
        if since is None:
            r = yield one("SELECT COUNT(*) AS n FROM euiccs WHERE last_contact >= ?", now - default_interval_s)
            since = int(r["n"])
        own_silent = yield one(
            "SELECT COUNT(*) AS n FROM euiccs WHERE poll_interval_s IS NOT NULL AND last_contact < ?",
            now - default_interval_s,
        )
        stale_default = registered - int(never["n"]) - since - int(own_silent["n"])
        stale_own = yield one(
            "SELECT COUNT(*) AS n FROM euiccs WHERE poll_interval_s IS NOT NULL AND last_contact + poll_interval_s < ?",
            now,
        )
        ops = yield Q("SELECT kind, status, COUNT(*) AS n FROM operations GROUP BY kind, status", (), "all")
        outbox = yield Q("SELECT status, COUNT(*) AS n FROM notification_outbox GROUP BY status", (), "all")
        deliveries = yield Q("SELECT status, COUNT(*) AS n FROM event_deliveries GROUP BY status", (), "all")
        by_binding = by["binding"]
        operations = {(r["kind"], r["status"]): int(r["n"]) for r in ops}
        hours = yield from self.hourly(now)
        by_version = by["version"]
        by_version.setdefault(DEFAULT_VERSION, 0)
        by_smdp = by["smdp"]
        all_ended: dict[str, int] = {}
        for (_kind, status), n in operations.items():
            all_ended[status] = all_ended.get(status, 0) + n
        ended_24h, buckets = hours
        return FleetCounts(
            registered=registered,  # the binding tallies count every registered eUICC once
            never_seen=int(never["n"]),
            seen_1h=seen_1h,
            seen_24h=seen_24h,
            stale=stale_default + int(stale_own["n"]),
            by_binding=by_binding,
            operations=operations,
            notifications={r["status"]: int(r["n"]) for r in outbox},
            deliveries={r["status"]: int(r["n"]) for r in deliveries},
            by_sgp32_version=by_version,
            by_enabled_smdp=by_smdp,
            ended_24h=ended_24h,
            failure_rate_24h=failure_rate(ended_24h),
            failure_rate_all=failure_rate(all_ended),
            hourly=buckets,
        )

    def _hour_of(self, column: str) -> str:
        """The hour bucket (hour start / 3600) of a POSIX-seconds column, in the backend's SQL."""
        return f"FLOOR({column} / 3600)::BIGINT" if self.pg else f"CAST({column} / 3600 AS INTEGER)"

    def hourly(self, now: float) -> Gen:
        """``(ended in the last 24 h by status, 24 hourly buckets)``: index range counts on operations_created and
        operations_ended, and the fleet_hourly poll counters (migration 0005). The last bucket is the current,
        partial hour; an operation's end is when it reached its final status (its ``updated_at``)."""
        current = int(now // 3600)
        first = current - (HOURS - 1)
        created = yield Q(
            f"SELECT {self._hour_of('created_at')} AS h, COUNT(*) AS n FROM operations WHERE created_at >= ?"
            f" GROUP BY {self._hour_of('created_at')}",
            (first * 3600.0,),
            "all",
        )
        ended = yield Q(
            f"SELECT {self._hour_of('updated_at')} AS h, status, COUNT(*) AS n FROM operations"
            f" WHERE status IN {FINAL_SQL} AND updated_at >= ? GROUP BY {self._hour_of('updated_at')}, status",
            (now - 86400.0,),
            "all",
        )
        polls = yield Q("SELECT hour, n FROM fleet_hourly WHERE name = 'polls' AND hour >= ?", (first * 3600,), "all")
        buckets = {
            h: {"hour": h * 3600, "created": 0, "ended": 0, "failed": 0, "polls": 0} for h in range(first, current + 1)
        }
        for r in created:
            if int(r["h"]) in buckets:
                buckets[int(r["h"])]["created"] += int(r["n"])
        ended_24h: dict[str, int] = {}  # the last 24 h exactly (the first bucket's hour may begin later)
        for r in ended:
            h, n, status = int(r["h"]), int(r["n"]), r["status"]
            ended_24h[status] = ended_24h.get(status, 0) + n
            if h in buckets:
                buckets[h]["ended"] += n
                if status in FAILED_STATUSES:
                    buckets[h]["failed"] += n
        for r in polls:
            h = int(r["hour"]) // 3600
            if h in buckets:
                buckets[h]["polls"] += int(r["n"])
        return ended_24h, tuple(buckets[h] for h in range(first, current + 1))

    def add_hourly(self, counts: list[tuple[str, int, int]], prune_before: int) -> Gen:
        """Add ``(name, hour start, n)`` to the fleet_hourly counters (one upsert each) and drop rows older than
        ``prune_before``."""
        for name, hour, n in counts:
            yield Q(
                "INSERT INTO fleet_hourly (name, hour, n) VALUES (?, ?, ?)"
                " ON CONFLICT (name, hour) DO UPDATE SET n = fleet_hourly.n + excluded.n",
                (name, hour, n),
            )
        yield Q("DELETE FROM fleet_hourly WHERE hour < ?", (prune_before,))
        return len(counts)

    # ------------------------------------------------------------------ the enabled profile
    def note_profile_event(self, eid: str, event: str, iccid: str | None, address: str | None) -> Gen:
        """A verified notification's profile event (:func:`eim.store.enabled_profile.enabled_from_notification`);
        True when the eUICC's enabled profile columns changed."""
        r = yield Q("SELECT enabled_iccid, enabled_smdp FROM euiccs WHERE eid = ?" + self._lock(), (eid,), "one")
        if r is None:
            return False
        changes = enabled_from_notification(r["enabled_iccid"], event, iccid, address)
        changes = {k: v for k, v in changes.items() if r[k] != v}
        if not changes:
            return False
        sets = ", ".join(f"{k} = ?" for k in changes)
        yield Q(f"UPDATE euiccs SET {sets} WHERE eid = ?", (*changes.values(), eid))
        yield from self._tally(tallies.changed(r, changes))
        return True

    # ------------------------------------------------------------------ the tallies (eim.store.tallies)
    def tally_rows(self) -> Gen:
        r = yield Q("SELECT COUNT(*) AS n FROM fleet_tallies", (), "one")
        return int(r["n"])

    def compact_tallies(self) -> Gen:
        """Fold the delta rows into one row per (dim, value), dropping zeros. PostgreSQL: one statement (the rows
        deleted are exactly those summed, whatever commits meanwhile); SQLite: one writer at a time."""
        if self.pg:
            n = yield Q(
                "WITH d AS (DELETE FROM fleet_tallies RETURNING dim, value, n)"
                " INSERT INTO fleet_tallies (dim, value, n)"
                " SELECT dim, value, SUM(n) FROM d GROUP BY dim, value HAVING SUM(n) <> 0",
                (),
            )
            return n
        rows = yield Q(
            "SELECT dim, value, SUM(n) AS n FROM fleet_tallies GROUP BY dim, value HAVING SUM(n) <> 0", (), "all"
        )
        yield Q("DELETE FROM fleet_tallies", ())
        yield from self._tally([(r["dim"], r["value"], int(r["n"])) for r in rows])
        return len(rows)

    def recount_tallies(self) -> Gen:
        """Rebuild the tallies from the registry (one GROUP BY per counted column)."""
        yield Q("DELETE FROM fleet_tallies", ())
        for col, dim in tallies.COLUMNS.items():
            null = tallies.NULL_AS[dim]  # a constant of ours: spelled in the SQL so both GROUP BYs match
            yield Q(
                f"INSERT INTO fleet_tallies (dim, value, n) SELECT ?, COALESCE({col}, '{null}'), COUNT(*) FROM euiccs"
                f" GROUP BY COALESCE({col}, '{null}')",
                (dim,),
            )
        return True


def failure_rate(by_status: dict[str, int]) -> float | None:
    """``(failed + expired) / (done + failed + expired)``; cancelled operations are the operator's choice and do not
    count. ``None`` when nothing ended."""
    failed = sum(by_status.get(s, 0) for s in FAILED_STATUSES)
    ended = failed + by_status.get("done", 0)
    return None if ended == 0 else failed / ended
