"""The dashboard calls the operator API in-process: every form goes through the very route, validation and store
call the REST API uses, so its errors are the API's (a 400 naming the field, nothing stored) and its audit
entries name the operator as the API does (``operator:alice``). Only reads the API has no route for (an eUICC's
audit trail) go to the store directly.

The call skips the network and :class:`eim.api.front.ApiFront` (the dashboard has checked the session, the role
and the body size itself) and hands the session's operator to the route as ``request.state.operator``, which is
what the front does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx

from eim.api.auth import Operator


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def error(self) -> dict[str, Any]:
        """``{"code", "message", "field"?}`` of an error answer."""
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            err = dict(self.body["error"])
            if not err.get("field") and err.get("code") == "invalid_request":  # 422: "params.x: Input should ..."
                first = str(err.get("message", "")).split(";")[0]
                if ": " in first:
                    loc = first.split(": ", 1)[0].strip()
                    err["field"] = loc.removeprefix("query.").removeprefix("path.") or None
            return err
        return {"code": "error", "message": str(self.body)[:500]}


class _WithOperator:
    def __init__(self, app: Any, operator: Operator | None) -> None:
        self.app, self.operator = app, operator

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        scope = {**scope, "state": {"operator": self.operator}}
        await self.app(scope, receive, send)


class InProcessApi:
    def __init__(self, app: Any) -> None:
        self.app = app  # the FastAPI app of eim.api.create_api (without its front)

    async def call(
        self,
        operator: Operator | None,
        method: str,
        path: str,
        *,
        params: Any = None,
        json_body: Any = None,
        content: bytes | None = None,
        content_type: str | None = None,
    ) -> Answer:
        transport = httpx.ASGITransport(app=_WithOperator(self.app, operator))
        headers = {"content-type": content_type} if content_type else {}
        async with httpx.AsyncClient(transport=transport, base_url="http://eim.internal") as client:
            r = await client.request(method, path, params=params, json=json_body, content=content, headers=headers)
        try:
            body = r.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = r.text
        return Answer(r.status_code, body)
