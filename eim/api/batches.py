"""Batches in the operator API: create (by EID list, by label selector, by per-EID rows as JSON or CSV), list,
show, cancel.

``POST /v1/batches`` takes exactly one way of naming the eUICCs:

- ``"eids": [...]``: the same ``params`` for each;
- ``"labels": {"site": "berlin", ...}``: every eUICC that has all these labels when the batch is created;
- ``"rows": [{"eid": ..., "params": {...}}, ...]``: per-EID parameters merged over ``params`` (one activation
  code per EID for a bulk download);
- a CSV body (``Content-Type: text/csv``), a bulk download: header ``eid,activation_code`` and optionally
  ``mode``; ``?kind=`` (default download) and ``?validity_s=`` in the query.

Every row's parameters are validated before anything is stored: the first bad one is a 400 naming the row and the
field (``rows[3].activationCode``; CSV: ``line 5.activation_code``), and no batch is created. At most 10,000 EIDs.
``POST /v1/batches/{id}/cancel`` cancels every open operation of the batch and reports counts.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
from typing import Any

from fastapi import FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from eim.api.paging import decode_cursor, page
from eim.model import OpKind
from eim.operations import MAX_BATCH, NotFound, OperationService
from eim.packages.common import ParamError

CSV_COLUMNS = {"eid": None, "activation_code": "activationCode", "mode": "mode"}


class BatchRow(BaseModel):
    model_config = ConfigDict(extra="forbid")
    eid: str
    params: dict[str, Any] = Field(default_factory=dict)


class BatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: OpKind
    params: dict[str, Any] = Field(default_factory=dict)
    validity_s: float | None = Field(None, gt=0, description="seconds from not_before (or now) until expiry")
    not_before: dt.datetime | None = None
    eids: list[str] | None = Field(None, min_length=1, max_length=MAX_BATCH)
    labels: dict[str, str] | None = Field(None, description="every eUICC with all these labels")
    rows: list[BatchRow] | None = Field(None, min_length=1, max_length=MAX_BATCH)


# the JSON body is read by hand (it shares the route with CSV), so its schemas are added to the OpenAPI components
_SCHEMA = BatchIn.model_json_schema(ref_template="#/components/schemas/{model}")
COMPONENTS = {**_SCHEMA.pop("$defs", {}), "BatchIn": _SCHEMA}
BATCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/BatchIn"}},
            "text/csv": {
                "schema": {"type": "string"},
                "example": "eid,activation_code\n89049032123451234512345678901235,1$smdp.example.com$MATCH-1\n",
            },
        },
    }
}


def parse_csv(text: str) -> tuple[list[str], list[dict[str, Any]]]:
    """``(eids, per-EID params)`` of a CSV batch; :class:`ParamError` naming the line and column."""
    text = text.removeprefix("\ufeff")
    try:
        lines = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise ParamError("body", f"not CSV: {exc}") from None
    if not lines or not lines[0]:
        raise ParamError("header", "the first line must be the header eid,activation_code[,mode]")
    header = [h.strip().lower() for h in lines[0]]
    for h in header:
        if h not in CSV_COLUMNS:
            raise ParamError("header", f"unknown column {h[:40]!r} (known: {', '.join(CSV_COLUMNS)})")
    if len(set(header)) != len(header) or "eid" not in header:
        raise ParamError("header", "needs an eid column and each column once")
    eids: list[str] = []
    rows: list[dict[str, Any]] = []
    for number, values in enumerate(lines[1:], start=2):
        if not values or all(not v.strip() for v in values):
            continue
        if len(values) != len(header):
            raise ParamError(f"line {number}", f"{len(values)} values for {len(header)} columns")
        if len(eids) >= MAX_BATCH:
            raise ParamError("body", f"at most {MAX_BATCH} rows per batch")
        params: dict[str, Any] = {}
        for h, v in zip(header, values, strict=True):
            v = v.strip()
            if h == "eid":
                if not v:
                    raise ParamError(f"line {number}.eid", "missing")
                eids.append(v)
            elif v:
                params[CSV_COLUMNS[h]] = v
        rows.append(params)
    if not eids:
        raise ParamError("body", "no rows after the header")
    return eids, rows


def _window(validity_s: float | None, not_before: dt.datetime | None) -> tuple[float | None, float | None]:
    nb = None
    if not_before is not None:
        t = not_before if not_before.tzinfo is not None else not_before.replace(tzinfo=dt.UTC)
        nb = t.timestamp()
        if not math.isfinite(nb):
            raise ParamError("not_before", "not a usable time")
    if validity_s is not None and not (math.isfinite(validity_s) and validity_s > 0):
        raise ParamError("validity_s", "must be a positive number of seconds")
    return nb, validity_s


def batch_page_view(request: Request, got: tuple[Any, int, dict[str, int], list[dict[str, Any]]], limit: int) -> dict:
    """``GET /v1/batches/{id}?limit=``: the batch's fields and counts as without ``limit``, one page of items."""
    from eim.api import _iso

    b, n_items, summary, rows = got
    items = [
        {
            "index": r["idx"],
            "eid": r["eid"],
            "operation_id": r["operation_id"],
            "status": r["status"] or "refused",
            "result_code": r["result_code"],
            "error": r["op_error"] if r["status"] else r["error"],
        }
        for r in rows
    ]
    out = page(request, items, limit, "batch_items", rows[-1]["idx"] if rows else None)
    return {
        "id": b["id"],
        "kind": b["kind"],
        "params": json.loads(b["params"]) if b["params"] else {},
        "created_at": _iso(b["created_at"]),
        "created_by": b["created_by"],
        "summary": summary,
        "item_count": n_items,
        **out,
    }


def register(app: FastAPI, service: OperationService, store: Any, settings: Any, who: Any) -> None:
    from eim.api import batch_view
    from eim.api.fleet import check_label_map

    generate = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        for name, value in COMPONENTS.items():
            schemas.setdefault(name, value)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.post(
        "/v1/batches",
        status_code=202,
        tags=["batches"],
        summary="Queue an operation for many eUICCs: by EIDs, by labels, or per-EID rows (JSON or CSV)",
        openapi_extra=BATCH_BODY,
    )
    async def create_batch(
        request: Request,
        response: Response,
        kind: OpKind | None = Query(None, description="CSV bodies only (default download)"),
        validity_s: float | None = Query(None, gt=0, description="CSV bodies only"),
    ):
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        raw = await request.body()
        item_params = None
        if ctype == "text/csv":
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise ParamError("body", "CSV must be UTF-8") from None
            eids, item_params = parse_csv(text)
            op_kind, params, nb, validity = kind or OpKind.DOWNLOAD, {}, None, validity_s
            _window(validity_s, None)
        else:
            if kind is not None or validity_s is not None:
                raise ParamError("kind" if kind is not None else "validity_s", "a query parameter for CSV bodies only")
            try:
                body = BatchIn.model_validate_json(raw)
            except ValidationError as exc:
                raise RequestValidationError(exc.errors()) from None
            ways = [n for n in ("eids", "labels", "rows") if getattr(body, n) is not None]
            if len(ways) != 1:
                raise ParamError("eids", "give exactly one of eids, labels, rows")
            op_kind, params = body.kind, body.params
            nb, validity = _window(body.validity_s, body.not_before)
            if body.eids is not None:
                eids = body.eids
            elif body.rows is not None:
                eids = [r.eid for r in body.rows]
                item_params = [r.params for r in body.rows]
            else:
                from eim.api.fleet import parse_labels

                assert body.labels is not None
                if not body.labels:
                    raise ParamError("labels", "name at least one label")
                check_label_map(body.labels, "labels", allow_null=False)
                pairs = parse_labels([f"{k}={v}" for k, v in body.labels.items()], "labels")
                eids = await store.eids_by_labels(pairs, limit=MAX_BATCH + 1)
                if not eids:
                    raise ParamError("labels", "no registered eUICC has all these labels")
                if len(eids) > MAX_BATCH:
                    raise ParamError("labels", f"more than {MAX_BATCH} eUICCs match: narrow the selector")
        batch = await service.create_batch(
            eids, op_kind, params, validity_s=validity, not_before=nb, who=who(request), item_params=item_params
        )
        response.headers["Location"] = f"/v1/batches/{batch.id}"
        _, ops = await service.get_batch(batch.id)
        return batch_view(batch, ops)

    @app.get("/v1/batches", tags=["batches"], summary="List batches (oldest first, paged)")
    async def list_batches(
        request: Request,
        limit: int = Query(100, ge=1, le=1000),
        cursor: str | None = Query(None, description="the 'next' value of the previous page"),
    ):
        after = decode_cursor("batches", cursor)
        if after is not None and not (
            isinstance(after, list)
            and len(after) == 2
            and isinstance(after[0], int | float)
            and not isinstance(after[0], bool)
            and isinstance(after[1], str)
        ):
            raise ParamError("cursor", "not a cursor of this list")
        rows = await store.list_batches(limit=limit, after=tuple(after) if after else None)
        from eim.api import _iso

        items = [
            {
                "id": r["id"],
                "kind": r["kind"],
                "created_at": _iso(r["created_at"]),
                "created_by": r["created_by"],
                "items": int(r["n_items"]),
                "refused": int(r["n_refused"]),
            }
            for r in rows
        ]
        last = [rows[-1]["created_at"], rows[-1]["id"]] if rows else None
        return page(request, items, limit, "batches", last)

    @app.get("/v1/batches/{batch_id}", tags=["batches"], summary="A batch with per-item results")
    async def show_batch(
        batch_id: str,
        request: Request,
        limit: int | None = Query(None, ge=1, le=1000, description="items per page (default: every item)"),
        cursor: str | None = Query(None, description="the 'next' value of the previous page (with limit)"),
    ):
        """Without ``limit``: every item. With it: the same counts (``summary``, ``item_count``) and one page of
        items in index order with ``next`` / ``next_url``, read as index ranges (a 10,000-item batch page costs
        what its page costs, see docs/performance.md 2c)."""
        from eim.api import _check_uuid

        _check_uuid(batch_id, "batch")
        if limit is None:
            if cursor is not None:
                raise ParamError("cursor", "only with limit")
            batch, ops = await service.get_batch(batch_id)
            return batch_view(batch, ops)
        after = decode_cursor("batch_items", cursor)
        if after is not None and (not isinstance(after, int) or isinstance(after, bool)):
            raise ParamError("cursor", "not a cursor of this list")
        got = await store.batch_page(batch_id, limit=limit, after_idx=after)
        if got is None:
            raise NotFound(f"batch {batch_id} not found")
        return batch_page_view(request, got, limit)

    @app.post(
        "/v1/batches/{batch_id}/cancel",
        tags=["batches"],
        summary="Cancel every open operation of a batch; counts of the batch's operations by status after it",
    )
    async def cancel_batch(batch_id: str, request: Request):
        from eim.api import _check_uuid

        _check_uuid(batch_id, "batch")
        out = await store.cancel_batch(batch_id, who=who(request))
        if out is None:
            raise NotFound(f"batch {batch_id} not found")
        cancelled, by_status = out
        if service.metrics:
            for op in cancelled:
                service.metrics.operation_finished(op.kind.value, op.status.value)
        return {"id": batch_id, "cancelled": len(cancelled), "by_status": by_status}
