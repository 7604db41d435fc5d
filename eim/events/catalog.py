"""The events the eIM sends to subscribers, and how each is read from the audit trail (pure functions).

=====================  ==========================================================================================
type                   when (audit row)                                  ``data``
=====================  ==========================================================================================
operation.done         an operation ended done (a verified result; a     action, result_code, error (if any)
operation.failed       PIR; ...); failed; expired (its window ended);
operation.expired      cancelled (operator, batch cancel, eUICC removed)
operation.cancelled
euicc.notification     the eUICC reported a change of state in           source "state_change": stateChangeCause
                       GetEimPackage (notifyStateChange, SGP.32 v1.2     (otherEim, fallback, emergencyProfile,
                       §6.3.2.1: stateChangeCause), or the eIM took a    local, reset, immediateEnableProfile,
                       signed notification for an SM-DP+ (PIR or other   deviceChange, undefined), rPLMN; source
                       profile-change notification)                      "notification": kind (pir / other),
                                                                         seq_number, address
euicc.stale            the eUICC has been silent longer than its         last_contact, poll_interval_s
                       expected poll interval (``[fleet]
                       poll_interval_s`` or its own)
=====================  ==========================================================================================

Every event body is ``{"id", "type", "occurred_at", "eid", "operation_id", "data"}``. ``id`` is stable (made
from the audit row, or the eUICC and its last contact), so a receiver that gets a delivery twice (a retry after a
lost answer) can tell: it is the idempotency key, also sent as ``X-Eim-Event-Id``.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from eim.model import AuditEntry
from eim.store.events import Event

OPERATION_ENDS = ("done", "failed", "expired", "cancelled")
EVENT_TYPES = (
    *(f"operation.{s}" for s in OPERATION_ENDS),
    "euicc.notification",
    "euicc.stale",
)
_NOT_OPERATION_RESULTS = frozenset({"notification", "create", "hand_out", "redeliver"})


def iso(t: float | None) -> str | None:
    if t is None:
        return None
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat().replace("+00:00", "Z")


def _body(event_id: str, kind: str, at: float, eid: str | None, op_id: str | None, data: dict[str, Any]) -> str:
    return json.dumps(
        {"id": event_id, "type": kind, "occurred_at": iso(at), "eid": eid, "operation_id": op_id, "data": data},
        separators=(",", ":"),
        sort_keys=True,
    )


def from_audit(a: AuditEntry) -> list[Event]:
    """The events one audit row stands for (most rows: none)."""
    event_id = f"evt-audit-{a.id}"
    if a.operation_id and a.outcome in OPERATION_ENDS and a.action not in _NOT_OPERATION_RESULTS:
        kind = f"operation.{a.outcome}"
        data = {"action": a.action}
        for key in ("result_code", "error", "after"):
            if key in a.detail:
                data[key] = a.detail[key]
        return [Event(event_id, kind, _body(event_id, kind, a.at, a.eid, a.operation_id, data))]
    if a.action == "notification" and a.outcome == "queued":
        d = a.detail
        data = {"source": "notification", "kind": d.get("kind"), "seq_number": d.get("seq_number")}
        data["address"] = d.get("address")
        kind = "euicc.notification"
        return [Event(event_id, kind, _body(event_id, kind, a.at, a.eid, a.operation_id, data))]
    if a.action == "state_change":
        data = {"source": "state_change", "stateChangeCause": a.detail.get("cause"), "rPLMN": a.detail.get("rPLMN")}
        kind = "euicc.notification"
        return [Event(event_id, kind, _body(event_id, kind, a.at, a.eid, None, data))]
    return []


def stale_event(row: dict[str, Any]) -> Event:
    """``row``: eid, last_contact, poll_interval_s of an eUICC that went silent."""
    last = float(row["last_contact"])
    interval = float(row["poll_interval_s"])
    event_id = f"evt-stale-{row['eid']}-{int(last)}"
    data = {"last_contact": iso(last), "poll_interval_s": interval}
    return Event(event_id, "euicc.stale", _body(event_id, "euicc.stale", last + interval, row["eid"], None, data))
