"""The fleet routes of the operator API: relabel / annotate an eUICC (``PATCH /v1/euiccs/{eid}``), remove it
(``DELETE``), and the fleet at a glance (``GET /v1/fleet``).

``GET /v1/fleet`` counts from indexes (migration 0004), never by reading every row: registered eUICCs, those
never seen, seen within 1 h and 24 h, stale (silent longer than their expected poll interval: ``[fleet]
poll_interval_s`` or the eUICC's own ``poll_interval_s``), by binding of the last contact; operations by kind and
status; the notification outbox and the webhook deliveries by status. Since migration 0005 also: eUICCs by SGP.32
version (``1.2`` includes those with nothing version-specific seen yet) and by the SM-DP+ of their enabled profile
(``unknown``: none enabled or not learned yet, :mod:`eim.store.enabled_profile`); operations ended in the last 24 h
by status and the failure rate, ``(failed + expired) / (done + failed + expired)``, over the last 24 h and over
every stored operation (``null`` when nothing ended); and ``hourly``, 24 buckets (oldest first, the last one the
current hour) of operations created, ended and failed and of polls.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from eim.events.webhook_url import UrlPolicy
from eim.operations import Conflict, NotFound, OperationService
from eim.packages.common import ParamError, normalise_eid
from eim.store.fleet import LABEL_KEY, STATES, StateFilter

MAX_NOTE = 1024


@dataclass(frozen=True)
class FleetApiSettings:
    default_poll_interval_s: float = 86400.0  # [fleet] poll_interval_s
    url_policy: UrlPolicy = field(default_factory=UrlPolicy)  # [events] allow_loopback / allow_private
    wake_events: Callable[[], None] | None = None  # the event worker's wake-up (a retry is sent at once)


def parse_labels(values: list[str], name: str = "label") -> list[tuple[str, str]]:
    """``["site=berlin", "tier=gold"]`` to pairs; 400 naming ``name`` for anything else."""
    out = []
    for v in values:
        key, eq, value = v.partition("=")
        if not eq:
            raise ParamError(name, f"must be key=value, got {v[:80]!r}")
        if not LABEL_KEY.fullmatch(key):
            raise ParamError(name, f"label key must be 1..64 of A-Z a-z 0-9 . _ / -, got {key[:70]!r}")
        if len(value) > 256 or not value.isprintable():
            raise ParamError(name, "label value must be up to 256 printable characters")
        out.append((key, value))
    if len(out) > 16:
        raise ParamError(name, "at most 16 label filters")
    return out


def state_filter(state: str | None, settings: FleetApiSettings | None) -> StateFilter | None:
    """``GET /v1/euiccs?state=``: the contact state at this moment (stale after ``[fleet] poll_interval_s`` or
    the eUICC's own interval); 400 naming ``state`` for anything else."""
    if state is None:
        return None
    if state not in STATES:
        raise ParamError("state", f"must be one of {', '.join(STATES)}")
    interval = (settings or FleetApiSettings()).default_poll_interval_s
    return StateFilter(state, time.time(), interval)


def check_label_map(labels: dict[str, Any], name: str, *, allow_null: bool) -> None:
    if len(labels) > 64:
        raise ParamError(name, "at most 64 labels")
    for k, v in labels.items():
        if not (0 < len(k) <= 64 and k.isprintable()):
            raise ParamError(f"{name}.{k[:64]}", "label keys are 1..64 printable characters")
        if v is None and allow_null:
            continue
        if not isinstance(v, str) or len(v) > 256 or not v.isprintable():
            raise ParamError(f"{name}.{k[:64]}", "label values are up to 256 printable characters")


class EuiccPatch(BaseModel):
    """A merge patch (RFC 7396): fields left out stay; ``labels`` is merged key by key, ``null`` removes a key;
    ``note`` / ``poll_interval_s`` ``null`` clears them."""

    model_config = ConfigDict(extra="forbid")
    labels: dict[str, str | None] | None = Field(None, description="keys to set; a null value removes the key")
    note: str | None = Field(None, max_length=MAX_NOTE)
    poll_interval_s: float | None = Field(None, description="expected poll interval (60 s .. 366 days); null: default")


def fleet_view(c: Any, default_interval_s: float) -> dict[str, Any]:
    ops: dict[str, dict[str, int]] = {}
    by_status: dict[str, int] = {}
    for (kind, status), n in sorted(c.operations.items()):
        ops.setdefault(kind, {})[status] = n
        by_status[status] = by_status.get(status, 0) + n
    return {
        "euiccs": {
            "registered": c.registered,
            "never_seen": c.never_seen,
            "seen_1h": c.seen_1h,
            "seen_24h": c.seen_24h,
            "stale": c.stale,
            "by_binding": c.by_binding,
            "by_sgp32_version": c.by_sgp32_version,
            "by_enabled_smdp": c.by_enabled_smdp,
        },
        "stale_after_s": default_interval_s,
        "operations": {
            "by_status": by_status,
            "by_kind": ops,
            "ended_24h": c.ended_24h,
            "failure_rate_24h": c.failure_rate_24h,
            "failure_rate_all": c.failure_rate_all,
        },
        "notifications": c.notifications,
        "event_deliveries": c.deliveries,
        "hourly": list(c.hourly),
    }


def register(app: FastAPI, service: OperationService, store: Any, settings: FleetApiSettings, who: Any) -> None:
    def eid_of(value: str) -> str:
        try:
            return normalise_eid(value)
        except ParamError as exc:
            raise NotFound(f"eUICC {value[:80]!r} not found ({exc.reason})") from None

    @app.patch(
        "/v1/euiccs/{eid}",
        tags=["eUICCs"],
        summary="Relabel or annotate an eUICC (merge patch: labels, note, poll_interval_s)",
    )
    async def patch_euicc(eid: str, body: EuiccPatch, request: Request):
        from eim.api import euicc_view

        sent = body.model_fields_set
        changes: dict[str, Any] = {}
        if "labels" in sent:
            if body.labels is None:
                raise ParamError("labels", "must be an object (use null values to remove keys)")
            check_label_map(body.labels, "labels", allow_null=True)
            changes["labels"] = body.labels
        if "note" in sent:
            if body.note is not None and not all(c.isprintable() or c in "\n\t" for c in body.note):
                raise ParamError("note", "must be printable text")
            changes["note"] = body.note
        if "poll_interval_s" in sent:
            p = body.poll_interval_s
            if p is not None and not (math.isfinite(p) and 60 <= p <= 366 * 86400):
                raise ParamError("poll_interval_s", "must be between 60 seconds and 366 days (or null)")
            changes["poll_interval_s"] = p
        if not changes:
            raise ParamError("body", "nothing to change (labels, note, poll_interval_s)")
        e = await store.patch_euicc(eid_of(eid), changes, who=who(request))
        if e is None:
            raise NotFound(f"eUICC {eid[:80]} is not registered")
        return euicc_view(e)

    @app.delete(
        "/v1/euiccs/{eid}",
        tags=["eUICCs"],
        summary="Remove an eUICC (409 while it has open operations, unless force=true cancels them)",
        description="Removes the eUICC and its operations' rows; the audit trail keeps their history, and "
        "notifications it sent stay in the outbox until delivered. Its batch items say it was removed.",
    )
    async def delete_euicc(request: Request, eid: str, force: bool = Query(False)):
        e = eid_of(eid)
        removal = await store.delete_euicc(e, who=who(request), force=force)
        if not removal.found:
            raise NotFound(f"eUICC {e} is not registered")
        if not removal.deleted:
            raise Conflict(f"eUICC {e} has {removal.open_ops} open operation(s): cancel them first or use ?force=true")
        if service.metrics:
            for op in removal.cancelled:
                service.metrics.operation_finished(op.kind.value, op.status.value)
        return {"eid": e, "removed": True, "cancelled": [op.id for op in removal.cancelled]}

    @app.get(
        "/v1/fleet",
        tags=["fleet"],
        summary="The fleet at a glance: eUICCs seen / stale / by binding, operations, outbox, deliveries",
    )
    async def fleet_summary():
        counts = await store.fleet_counts(now=time.time(), default_interval_s=settings.default_poll_interval_s)
        return fleet_view(counts, settings.default_poll_interval_s)
