"""The SM-DP+ ASGI application (Starlette): the ES9+ JSON binding and the operator API.

ES9+ (SGP.22 v2.5 §6.5 JSON binding): ``POST /gsma/rsp2/es9plus/<function>``, body
``{"header": {"functionRequesterIdentifier", "functionCallIdentifier"}, ...fields}``; answer HTTP 200 with
``Content-Type: application/json;charset=UTF-8`` and ``X-Admin-Protocol: gsma/rsp/v2.5.0``, body
``{"header": {"functionExecutionStatus": {"status": "Executed-Success"}}, ...fields}`` or, for any failure,
``{"header": {"functionExecutionStatus": {"status": "Failed", "statusCodeData": {...}}}}``. handleNotification
answers 204. Only HTTP-level faults get 4xx (unknown function 404, wrong method 405, wrong content type 415,
body too large 413). Nothing a client sends produces a 500 or a traceback.

Operator API (JSON, 4xx + ``{"error": message}`` on bad input):
``POST /v1/orders``, ``GET /v1/orders``, ``GET /v1/orders/{matchingId}``, ``POST /v1/orders/{matchingId}/release``,
``POST /v1/orders/{matchingId}/cancel``, ``GET /v1/profiles``, ``POST /v1/profiles`` (import a profile package
file: ``{"upp": base64 DER, "name", "service_provider_name", "profile_name", "profile_class"}``; a package that is
not one, a bad name or a name taken by another package is a 400 naming the check; nothing is stored then),
``GET /v1/notifications``, ``GET /healthz``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from smdpp import errors, orders, profiles, upp
from smdpp.config import SmdppConfig
from smdpp.credentials import Credentials
from smdpp.errors import Es9Error
from smdpp.es9plus import FUNCTIONS, SmdpContext
from smdpp.session import SessionStore
from smdpp.store import STATES, OrderStore, StoreError

log = logging.getLogger("smdpp.http")

ADMIN_PROTOCOL = "gsma/rsp/v2.5.0"
JSON_TYPE = "application/json;charset=UTF-8"
MAX_BODY = 1_000_000
ES9_THREADS = 8  # ES9+ calls of one worker process in flight at once (the store serialises its transactions anyway)
EXECUTION_ERROR = errors.StatusCode("1.2", "4.2", "Function - Execution error")


def _es9_headers() -> dict[str, str]:
    return {"X-Admin-Protocol": ADMIN_PROTOCOL, "Content-Type": JSON_TYPE}


def _es9_json(body: dict[str, Any]) -> Response:
    return Response(json.dumps(body, separators=(",", ":")), status_code=200, headers=_es9_headers())


def _failed(error: Es9Error) -> Response:
    return _es9_json(
        {"header": {"functionExecutionStatus": {"status": "Failed", "statusCodeData": error.status_code_data()}}}
    )


def _http_error(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status, headers={"X-Admin-Protocol": ADMIN_PROTOCOL})


async def _read_body(request: Request) -> bytes | Response:
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
        return _http_error(413, f"request body larger than {MAX_BODY} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            return _http_error(413, f"request body larger than {MAX_BODY} bytes")
    return bytes(body)


def create_app(
    config: SmdppConfig, credentials: Credentials | None = None, store: OrderStore | None = None
) -> Starlette:
    """Build the SM-DP+ application. ``credentials`` default to :func:`smdpp.server.load_credentials`."""
    if credentials is None:
        from smdpp.server import load_credentials

        credentials = load_credentials(config)
    store = store or OrderStore.in_dir(config.data_dir)
    profiles.use_data_dir(config.data_dir)  # serve the packages imported there (smdpp profile import)
    ctx = SmdpContext(
        config=config, credentials=credentials, store=store, sessions=SessionStore(store, ttl=config.session_ttl)
    )

    worker = str(os.getpid())  # create_app runs in the worker process (smdpp.workers)
    # The ES9+ functions (crypto, SQLite) run off the event loop in threads of their own: the executor's hop costs
    # less CPU than anyio's run_in_threadpool (docs/performance.md, section 6b).
    es9_threads = ThreadPoolExecutor(max_workers=ES9_THREADS, thread_name_prefix="smdpp-es9")

    async def es9(request: Request) -> Response:
        response = await _es9_call(request)
        response.headers["X-Smdpp-Worker"] = worker
        return response

    async def _es9_call(request: Request) -> Response:
        name = request.path_params["function"]
        fn = FUNCTIONS.get(name)
        if fn is None:
            return _http_error(404, f"unknown ES9+ function {name!r} (known: {', '.join(FUNCTIONS)})")
        ctype = request.headers.get("content-type", "application/json")
        if not ctype.lower().startswith("application/json"):
            return _http_error(415, f"Content-Type must be application/json, got {ctype!r}")
        raw = await _read_body(request)
        if isinstance(raw, Response):
            return raw
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            return _failed(errors.REQUEST_INVALID.error(f"body is not JSON: {exc}"))
        if not isinstance(body, dict):
            return _failed(errors.REQUEST_INVALID.error("body must be a JSON object"))
        header = body.get("header")
        if header is not None and not isinstance(header, dict):
            return _failed(errors.REQUEST_INVALID.error("header must be a JSON object"))
        try:
            result = await asyncio.get_running_loop().run_in_executor(es9_threads, fn, ctx, body)
        except Es9Error as exc:
            log.info("%s failed: %s", name, exc)
            return _failed(exc)
        except Exception:  # a bug: logged with its traceback here, never sent to the client
            log.exception("%s: internal error", name)
            return _failed(EXECUTION_ERROR.error("Function - Execution error: internal error in the SM-DP+"))
        if result is None:
            return Response(status_code=204, headers={"X-Admin-Protocol": ADMIN_PROTOCOL})
        return _es9_json({"header": {"functionExecutionStatus": {"status": "Executed-Success"}}, **result})

    async def create_order(request: Request) -> Response:
        raw = await _read_body(request)
        if isinstance(raw, Response):
            return raw
        try:
            body = json.loads(raw or b"{}")
        except (ValueError, UnicodeDecodeError) as exc:
            return _http_error(400, f"body is not JSON: {exc}")
        if not isinstance(body, dict):
            return _http_error(400, "body must be a JSON object")
        unknown = set(body) - {"profile", "eid", "confirmation_code", "expires", "hold", "matching_id", "smdp_address"}
        if unknown:
            return _http_error(400, f"unknown fields: {', '.join(sorted(unknown))}")
        hold = body.get("hold", False)
        if not isinstance(hold, bool):
            return _http_error(400, "hold: must be true or false")
        try:
            order = await run_in_threadpool(
                lambda: orders.create_order(
                    store,
                    profile=body.get("profile", profiles.DEFAULT_PROFILE),
                    smdp_address=body.get("smdp_address") or config.address,
                    eid=body.get("eid"),
                    confirmation_code=body.get("confirmation_code"),
                    expires=body.get("expires"),
                    hold=hold,
                    matching_id=body.get("matching_id"),
                )
            )
        except orders.OrderError as exc:
            return _http_error(400, str(exc))
        return JSONResponse(orders.order_json(store, order), status_code=201)

    async def list_orders(request: Request) -> Response:
        state = request.query_params.get("state")
        if state is not None and state not in STATES:
            return _http_error(400, f"state: one of {', '.join(STATES)}")
        eid = request.query_params.get("eid")
        rows = await run_in_threadpool(store.list, state, eid)
        return JSONResponse([orders.order_json(store, o) for o in rows])

    async def get_order(request: Request) -> Response:
        mid = request.path_params["matching_id"]
        order = await run_in_threadpool(store.get, mid)
        if order is None:
            return _http_error(404, f"no order with matchingId {mid}")
        return JSONResponse(orders.order_json(store, order, history=True))

    async def order_action(request: Request) -> Response:
        mid = request.path_params["matching_id"]
        action = request.path_params["action"]
        raw = await _read_body(request)
        if isinstance(raw, Response):
            return raw
        try:
            body = json.loads(raw or b"{}")
        except (ValueError, UnicodeDecodeError):
            return _http_error(400, "body is not JSON")
        if not isinstance(body, dict):
            return _http_error(400, "body must be a JSON object")
        try:
            if action == "release":
                order = await run_in_threadpool(store.release, mid)
            elif action == "cancel":
                final = body.get("final_state", "unavailable")
                if not isinstance(final, str):
                    return _http_error(400, "final_state: available or unavailable")
                order = await run_in_threadpool(store.cancel, mid, final)
            else:
                return _http_error(404, f"unknown action {action!r} (release, cancel)")
        except StoreError as exc:
            status = 404 if str(exc).startswith("no order") else 409
            return _http_error(status, str(exc))
        return JSONResponse(orders.order_json(store, order))

    async def list_profiles(request: Request) -> Response:
        try:
            items = await run_in_threadpool(profiles.all_profiles)
        except upp.UppError as exc:
            return _http_error(500, f"imported profile packages: {exc}")
        return JSONResponse([p.to_json() for p in items])

    async def import_profile(request: Request) -> Response:
        raw = await _read_body(request)
        if isinstance(raw, Response):
            return raw
        try:
            body = json.loads(raw or b"{}")
        except (ValueError, UnicodeDecodeError) as exc:
            return _http_error(400, f"body is not JSON: {exc}")
        if not isinstance(body, dict):
            return _http_error(400, "body must be a JSON object")
        unknown = set(body) - {"upp", "name", "service_provider_name", "profile_name", "profile_class"}
        if unknown:
            return _http_error(400, f"unknown fields: {', '.join(sorted(unknown))}")
        texts = {k: body.get(k) for k in ("name", "service_provider_name", "profile_name", "profile_class")}
        bad_text = any(v is not None and not isinstance(v, str) for v in texts.values())
        if not isinstance(body.get("upp"), str) or bad_text:
            return _http_error(
                400, "upp: base64 of the DER package; name, service_provider_name, profile_name, profile_class: strings"
            )
        try:
            package = base64.b64decode(body["upp"].encode("ascii"), validate=True)
        except (binascii.Error, ValueError, UnicodeEncodeError):
            return _http_error(400, "upp: not base64")
        try:
            profile = await run_in_threadpool(
                lambda: profiles.import_upp(
                    config.data_dir,
                    package,
                    name=texts["name"],
                    service_provider_name=texts["service_provider_name"] or "Lab Operator",
                    profile_name=texts["profile_name"],
                    profile_class=texts["profile_class"] or "operational",
                    what="upp",
                )
            )
        except upp.UppError as exc:
            return _http_error(400, str(exc))
        return JSONResponse(profile.to_json(), status_code=201)

    async def list_notifications(request: Request) -> Response:
        rows = await run_in_threadpool(store.notifications, 200)
        return JSONResponse([n.to_json() for n in rows])

    async def healthz(request: Request) -> Response:
        return JSONResponse(
            {
                "status": "ok",
                "address": config.address,
                "sessions": len(ctx.sessions),
                "credentials": credentials.origin,
                "curves": credentials.curves,
                "worker": int(worker),
            },
            headers={"X-Smdpp-Worker": worker},
        )

    routes = [
        Route("/gsma/rsp2/es9plus/{function}", es9, methods=["POST"]),
        Route("/v1/orders", create_order, methods=["POST"]),
        Route("/v1/orders", list_orders, methods=["GET"]),
        Route("/v1/orders/{matching_id}", get_order, methods=["GET"]),
        Route("/v1/orders/{matching_id}/{action}", order_action, methods=["POST"]),
        Route("/v1/profiles", list_profiles, methods=["GET"]),
        Route("/v1/profiles", import_profile, methods=["POST"]),
        Route("/v1/notifications", list_notifications, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]

    async def not_found(request: Request, exc: Exception) -> Response:
        return _http_error(404, f"no such resource {request.url.path}")

    async def method_not_allowed(request: Request, exc: Exception) -> Response:
        return _http_error(405, f"method {request.method} not allowed on {request.url.path}")

    async def server_error(request: Request, exc: Exception) -> Response:
        log.exception("internal error on %s", request.url.path)
        return _http_error(500, "internal error")

    app = Starlette(routes=routes, exception_handlers={404: not_found, 405: method_not_allowed, 500: server_error})
    app.state.ctx = ctx
    app.state.es9_threads = es9_threads
    return app
