"""Store logic of the fleet view: label and state filters, relabel / remove an eUICC. Batch list and cancel are in
:mod:`eim.store.fleet_batches`, the fleet summary in :mod:`eim.store.fleet_summary`; :class:`FleetLogic` joins the
three, written once for both backends like :mod:`eim.store.logic` (generators that yield SQL). The event feed's
tables are in :mod:`eim.store.events`.

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
from eim.store.fleet_batches import OPEN_SQL, BatchLogic
from eim.store.fleet_summary import (  # re-exported: eim.store.fleet_store and others import them from here
    DEFAULT_VERSION,
    FAILED_STATUSES,
    FINAL_SQL,
    HOURS,
    FleetCounts,
    SummaryLogic,
    failure_rate,
)
from eim.store.logic import Gen, Q, _dumps, row_to_euicc, row_to_op

__all__ = [
    "DEFAULT_VERSION",
    "DRIVER_CAP",
    "FAILED_STATUSES",
    "FINAL_SQL",
    "HOURS",
    "LABEL_KEY",
    "OPEN_SQL",
    "STATES",
    "FleetCounts",
    "FleetLogic",
    "Removal",
    "StateFilter",
    "failure_rate",
]

LABEL_KEY = re.compile(r"[A-Za-z0-9._/-]{1,64}")


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


class FleetLogic(BatchLogic, SummaryLogic):
    """Fleet queries and changes (a :class:`eim.store.logic.Logic` for its audit and locking helpers); batches are
    :class:`eim.store.fleet_batches.BatchLogic`'s, the summary and tallies
    :class:`eim.store.fleet_summary.SummaryLogic`'s."""

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
