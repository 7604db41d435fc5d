"""Cursor paging and strict query strings for every list of the operator API.

A list answers ``{"items": [...], "next": <cursor or null>, "next_url": <path?query or null>}``. The cursor is
opaque (base64url of the list's name and position): pass it back as ``?cursor=`` with the same filters to get the
next page; ``next`` is null on the last page. A cursor of another list, or one that was edited, is a 400 naming
``cursor``.

Every endpoint refuses query parameters it does not know with a 400 naming the parameter
(:func:`reject_unknown_query`): a misspelt filter (``?lable=site=berlin``) must not silently return everything.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any
from urllib.parse import urlencode

from fastapi import Request

from eim.packages.common import ParamError


def encode_cursor(name: str, position: Any) -> str:
    raw = json.dumps([name, position], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(name: str, cursor: str | None) -> Any:
    """The position in ``cursor`` (``None`` for no cursor); :class:`ParamError` on ``cursor`` otherwise."""
    if cursor is None:
        return None
    if not cursor or len(cursor) > 512:
        raise ParamError("cursor", "not a cursor of this list (use the 'next' value of the previous page)")
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise ParamError("cursor", "not a cursor of this list (use the 'next' value of the previous page)") from None
    if not (isinstance(value, list) and len(value) == 2 and value[0] == name):
        raise ParamError("cursor", "not a cursor of this list (use the 'next' value of the previous page)")
    return value[1]


def page(request: Request, items: list[Any], limit: int, name: str, position: Any) -> dict[str, Any]:
    """The answer of a list: ``position`` is the last item's position (used when the page is full)."""
    nxt = encode_cursor(name, position) if len(items) == limit and items else None
    url = None
    if nxt is not None:
        query = [(k, v) for k, v in request.query_params.multi_items() if k != "cursor"] + [("cursor", nxt)]
        url = f"{request.url.path}?{urlencode(query)}"
    return {"items": items, "next": nxt, "next_url": url}


async def reject_unknown_query(request: Request) -> None:
    """A FastAPI dependency of the whole API: 400 naming the first query parameter the route does not declare."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    known = {p.alias for p in _query_params(dependant)}
    for key in request.query_params:
        if key not in known:
            raise ParamError(
                key[:64], "unknown query parameter" + (f" (known: {', '.join(sorted(known))})" if known else "")
            )


def _query_params(dependant: Any) -> list[Any]:
    out = list(dependant.query_params)
    for sub in dependant.dependencies:
        out += _query_params(sub)
    return out
