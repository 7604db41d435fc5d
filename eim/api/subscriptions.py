"""Webhook subscriptions in the operator API (``/v1/subscriptions``), see ``eim.events``.

``POST /v1/subscriptions`` ``{"url": "https://...", "events": ["operation.done", ...], "description": ""}`` answers
201 with the subscription and its ``secret`` - the only time the secret is shown (deliveries are signed with it:
``X-Eim-Signature: sha256=<hex HMAC-SHA256 of the body>``). ``GET`` lists and shows subscriptions without it.
``GET /v1/subscriptions/{id}/deliveries?status=failed`` shows deliveries with their attempts and last error;
``POST /v1/subscriptions/{id}/deliveries/{delivery_id}/retry`` sends a failed (or delivered) one again.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from fastapi import FastAPI, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from eim.api.paging import decode_cursor, page
from eim.events.catalog import EVENT_TYPES, iso
from eim.events.signing import new_secret
from eim.events.webhook_url import WebhookUrlError, check_url
from eim.operations import NotFound
from eim.packages.common import ParamError
from eim.store.events import Delivery, Subscription


class SubscriptionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(max_length=2048, description="https:// (http:// to loopback with [events] allow_loopback)")
    events: list[str] = Field(min_length=1, max_length=len(EVENT_TYPES), description=", ".join(EVENT_TYPES))
    description: str = Field("", max_length=256)


def subscription_view(s: Subscription) -> dict[str, Any]:
    return {
        "id": s.id,
        "url": s.url,
        "events": list(s.events),
        "description": s.description,
        "created_at": iso(s.created_at),
        "created_by": s.created_by,
    }


def delivery_view(d: Delivery) -> dict[str, Any]:
    return {
        "id": d.id,
        "event_id": d.event_id,
        "event_type": d.event_type,
        "status": d.status,
        "attempts": d.attempts,
        "last_status": d.last_status,
        "last_error": d.last_error,
        "created_at": iso(d.created_at),
        "updated_at": iso(d.updated_at),
        "next_attempt_at": iso(d.next_attempt_at) if d.status == "pending" else None,
        "body": d.body,
    }


def _sub_id(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError):
        raise NotFound(f"subscription {value[:80]!r} not found") from None


def register(app: FastAPI, store: Any, settings: Any, who: Any) -> None:
    async def existing(sub_id: str) -> Subscription:
        sub = await store.get_subscription(_sub_id(sub_id))
        if sub is None:
            raise NotFound(f"subscription {sub_id[:80]} not found")
        return sub

    @app.post(
        "/v1/subscriptions",
        status_code=201,
        tags=["events"],
        summary="Subscribe a webhook URL to events (the answer shows the signing secret, once)",
    )
    async def subscribe(body: SubscriptionIn, request: Request):
        try:
            url = check_url(body.url, settings.url_policy)
        except WebhookUrlError as exc:
            raise ParamError("url", exc.reason) from None
        unknown = [e for e in body.events if e not in EVENT_TYPES]
        if unknown:
            raise ParamError("events", f"unknown event type {unknown[0][:60]!r} (known: {', '.join(EVENT_TYPES)})")
        if not body.description.isprintable():
            raise ParamError("description", "must be printable text")
        sub = Subscription(
            id=str(uuid.uuid4()),
            url=url,
            events=tuple(dict.fromkeys(body.events)),
            secret=new_secret(),
            description=body.description,
            created_at=time.time(),
            created_by=who(request),
        )
        await store.add_subscription(sub)
        return {**subscription_view(sub), "secret": sub.secret}

    @app.get("/v1/subscriptions", tags=["events"], summary="List webhook subscriptions (never their secrets)")
    async def list_subscriptions(
        request: Request,
        limit: int = Query(100, ge=1, le=1000),
        cursor: str | None = Query(None, description="the 'next' value of the previous page"),
    ):
        after = decode_cursor("subscriptions", cursor)
        if after is not None and not isinstance(after, str):
            raise ParamError("cursor", "not a cursor of this list")
        subs = await store.list_subscriptions(limit=limit, after=after)
        return page(
            request, [subscription_view(s) for s in subs], limit, "subscriptions", subs[-1].id if subs else None
        )

    @app.get("/v1/subscriptions/{sub_id}", tags=["events"], summary="One subscription (without its secret)")
    async def show_subscription(sub_id: str):
        return subscription_view(await existing(sub_id))

    @app.delete("/v1/subscriptions/{sub_id}", tags=["events"], summary="Remove a subscription and its deliveries")
    async def unsubscribe(sub_id: str, request: Request):
        sub = await existing(sub_id)
        await store.delete_subscription(sub.id, who=who(request))
        return {"id": sub.id, "removed": True}

    @app.get(
        "/v1/subscriptions/{sub_id}/deliveries",
        tags=["events"],
        summary="Deliveries of a subscription (pending, delivered, failed), oldest first",
    )
    async def list_deliveries(
        request: Request,
        sub_id: str,
        status: Literal["pending", "delivered", "failed"] | None = Query(None),
        limit: int = Query(100, ge=1, le=1000),
        cursor: str | None = Query(None, description="the 'next' value of the previous page"),
    ):
        sub = await existing(sub_id)
        after = decode_cursor("deliveries", cursor)
        if after is not None and (isinstance(after, bool) or not isinstance(after, int) or not 0 <= after < 2**62):
            raise ParamError("cursor", "not a cursor of this list")
        items = await store.list_deliveries(sub.id, status=status, limit=limit, after=after)
        return page(request, [delivery_view(d) for d in items], limit, "deliveries", items[-1].id if items else None)

    @app.post(
        "/v1/subscriptions/{sub_id}/deliveries/{delivery_id}/retry",
        tags=["events"],
        summary="Send a failed (or delivered) delivery again, attempts counted from zero",
    )
    async def retry_delivery(sub_id: str, delivery_id: str, request: Request):
        sub = await existing(sub_id)
        if not delivery_id.isdigit() or len(delivery_id) > 18:
            raise NotFound(f"delivery {delivery_id[:40]!r} not found")
        d = await store.retry_delivery(sub.id, int(delivery_id), who=who(request))
        if d is None:
            raise NotFound(f"delivery {delivery_id} of subscription {sub.id} not found")
        if settings.wake_events is not None:
            settings.wake_events()
        return delivery_view(d)
