"""Store logic of the fleet summary (``GET /v1/fleet``, the dashboard's overview and the fleet gauges): counts read
from indexes, the tallies of :mod:`eim.store.tallies` and the hourly counters (migrations 0004 and 0005), never a
scan of the table rows; the enabled profile a verified notification reports (SGP.22 v2.5 §3.5 Notifications:
enable / disable / delete). Written once for both backends like :mod:`eim.store.logic` (generators that yield
SQL); part of :class:`eim.store.fleet.FleetLogic`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from eim.store import tallies
from eim.store.enabled_profile import enabled_from_notification
from eim.store.logic import Gen, Logic, Q

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


class SummaryLogic(Logic):
    """The fleet summary, the enabled profile and the tallies."""

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
