"""Store logic of the fleet view (label filters, relabel / remove an eUICC, batch list and cancel, the fleet summary),
written once for both backends like :mod:`eim.store.logic` (generators that yield SQL). The event feed's tables
are in :mod:`eim.store.events`.

Label filters read the ``labels`` JSON column (SQLite ``json_extract``, PostgreSQL ``->>``); label keys used in a
filter are plain names (:data:`LABEL_KEY`) so they can be spelled in a JSON path without quoting rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

from eim.model import OpStatus
from eim.store.logic import Gen, Logic, Q, _dumps, row_to_euicc, row_to_op

LABEL_KEY = re.compile(r"[A-Za-z0-9._/-]{1,64}")
OPEN_SQL = "status IN ('queued', 'in_progress')"


@dataclass(frozen=True)
class FleetCounts:
    """``GET /v1/fleet`` and the fleet gauges (counted from indexes, see migration 0004)."""

    registered: int
    never_seen: int
    seen_1h: int
    seen_24h: int
    stale: int
    by_binding: dict[str, int] = field(default_factory=dict)
    operations: dict[tuple[str, str], int] = field(default_factory=dict)
    notifications: dict[str, int] = field(default_factory=dict)
    deliveries: dict[str, int] = field(default_factory=dict)


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

    # ------------------------------------------------------------------ label filters
    def label_condition(self, labels: list[tuple[str, str]], column: str = "labels") -> tuple[str, list[Any]]:
        """``(sql, args)``: every ``key = value`` pair must hold (AND). Keys must match :data:`LABEL_KEY`."""
        parts, args = [], []
        for key, value in labels:
            if not LABEL_KEY.fullmatch(key):
                raise ValueError(f"label key {key[:70]!r} is not a plain name")
            if self.pg:
                parts.append(f"({column}::jsonb ->> ?) = ?")
                args += [key, value]
            else:
                parts.append(f"json_extract({column}, ?) = ?")
                args += [f'$."{key}"', value]
        return " AND ".join(parts), args

    def list_euiccs(self, limit: int, after: str | None, labels: list[tuple[str, str]]) -> Gen:  # type: ignore[override]
        where, args = [], []
        if labels:
            cond, cargs = self.label_condition(labels)
            where.append(cond)
            args += cargs
        if after is not None:
            where.append("eid > ?")
            args.append(after)
        sql = "SELECT * FROM euiccs" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY eid LIMIT ?"
        rows = yield Q(sql, (*args, limit), "all")
        return [row_to_euicc(r) for r in rows]

    def eids_by_labels(self, labels: list[tuple[str, str]], limit: int) -> Gen:
        cond, args = self.label_condition(labels)
        rows = yield Q(f"SELECT eid FROM euiccs WHERE {cond} ORDER BY eid LIMIT ?", (*args, limit), "all")
        return [r["eid"] for r in rows]

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
        r = yield Q("SELECT eid FROM euiccs WHERE eid = ?" + self._lock(), (eid,), "one")
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
        yield Q("DELETE FROM euiccs WHERE eid = ?", (eid,))
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
        """Index range counts only (migration 0004): never a scan of the table rows."""

        def one(sql: str, *args: Any) -> Q:
            return Q(sql, args, "one")

        never = yield one("SELECT COUNT(*) AS n FROM euiccs WHERE last_contact IS NULL")
        h1 = yield one("SELECT COUNT(*) AS n FROM euiccs WHERE last_contact >= ?", now - 3600.0)
        h24 = yield one("SELECT COUNT(*) AS n FROM euiccs WHERE last_contact >= ?", now - 86400.0)
        stale_default = yield one(
            "SELECT COUNT(*) AS n FROM euiccs WHERE last_contact < ? AND poll_interval_s IS NULL",
            now - default_interval_s,
        )
        stale_own = yield one(
            "SELECT COUNT(*) AS n FROM euiccs WHERE poll_interval_s IS NOT NULL AND last_contact + poll_interval_s < ?",
            now,
        )
        bindings = yield Q("SELECT binding, COUNT(*) AS n FROM euiccs GROUP BY binding", (), "all")
        ops = yield Q("SELECT kind, status, COUNT(*) AS n FROM operations GROUP BY kind, status", (), "all")
        outbox = yield Q("SELECT status, COUNT(*) AS n FROM notification_outbox GROUP BY status", (), "all")
        deliveries = yield Q("SELECT status, COUNT(*) AS n FROM event_deliveries GROUP BY status", (), "all")
        by_binding = {(r["binding"] or "none"): int(r["n"]) for r in bindings}
        return FleetCounts(
            registered=sum(by_binding.values()),  # one pass over euiccs_binding serves both
            never_seen=int(never["n"]),
            seen_1h=int(h1["n"]),
            seen_24h=int(h24["n"]),
            stale=int(stale_default["n"]) + int(stale_own["n"]),
            by_binding=by_binding,
            operations={(r["kind"], r["status"]): int(r["n"]) for r in ops},
            notifications={r["status"]: int(r["n"]) for r in outbox},
            deliveries={r["status"]: int(r["n"]) for r in deliveries},
        )
