"""Store logic of batches (``/v1/batches``: one operation kind queued for many eUICCs; list, per-item page and
cancel), written once for both backends like :mod:`eim.store.logic` (generators that yield SQL); part of
:class:`eim.store.fleet.FleetLogic`. Creating a batch is :mod:`eim.store.logic`'s.
"""

from __future__ import annotations

from eim.model import OpStatus
from eim.store.logic import Gen, Logic, Q, row_to_op

OPEN_SQL = "status IN ('queued', 'in_progress')"


class BatchLogic(Logic):
    """List, page and cancel batches."""

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
