"""The ASGI front of the operator API: authentication, roles, the body limit, the access log and the request
metric, before FastAPI sees a request.

====================================================  ==============================================
request                                               answer
====================================================  ==============================================
no or unknown bearer token (auth configured)          401 ``unauthorized``, ``WWW-Authenticate: Bearer``
role too low (read-only POSTing, non-admin on admin)  403 ``forbidden`` naming the operator and role
``/healthz``; ``/metrics`` / docs if made public       served without a token
body over the limit / bad Content-Length              413 / 400 (``eim.api.limits``), before FastAPI reads it
anything else                                         FastAPI, with ``request.state.operator`` set
====================================================  ==============================================

The order is the cheap checks first: a caller without a valid token never makes the eIM read its body. One
access log line per call (logger ``eim.api``, info): method, path, status, operator, duration, peer.
"""

from __future__ import annotations

import logging
import time

from eim.api.auth import Operator, OperatorRegistry, is_public, needed_role
from eim.api.limits import (
    BAD,
    DISCONNECTED,
    AsgiApp,
    Message,
    Receive,
    Scope,
    Send,
    declared_length,
    header,
    read_body,
    replay,
    send_json_error,
)
from eim.metrics import Metrics

log = logging.getLogger("eim.api")

BATCH_PATH = "/v1/batches"


class ApiFront:
    def __init__(
        self,
        app: AsgiApp,
        registry: OperatorRegistry,
        *,
        max_body_bytes: int = 1024 * 1024,
        max_batch_body_bytes: int = 4 * 1024 * 1024,
        public_metrics: bool = False,
        public_docs: bool = False,
        metrics: Metrics | None = None,
    ) -> None:
        self.app = app
        self.registry = registry
        self.max_body_bytes = max_body_bytes
        self.max_batch_body_bytes = max_batch_body_bytes
        self.public_metrics = public_metrics
        self.public_docs = public_docs
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        operator: Operator | None = None
        try:
            operator = await self._handle(scope, receive, sending)
        finally:
            self._account(scope, status, operator, started)

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> Operator | None:
        path, method = scope["path"], scope["method"]
        operator = None
        if self.registry.enabled and not is_public(
            path, public_metrics=self.public_metrics, public_docs=self.public_docs
        ):
            operator = self.registry.authenticate(header(scope, b"authorization"))
            if operator is None:
                await send_json_error(
                    send,
                    401,
                    "unauthorized",
                    "missing or wrong bearer token (Authorization: Bearer <token>)",
                    extra=[(b"www-authenticate", b'Bearer realm="eim"')],
                )
                return None
            needed = needed_role(method, path)
            if not operator.role.may(needed):
                await send_json_error(
                    send,
                    403,
                    "forbidden",
                    f"operator {operator.name} has role {operator.role.value}; {method} {path} needs {needed.value}",
                )
                return operator
        scope.setdefault("state", {})["operator"] = operator
        if header(scope, b"content-length") is not None or header(scope, b"transfer-encoding") is not None:
            limit = self.max_batch_body_bytes if path == BATCH_PATH else self.max_body_bytes
            declared = declared_length(scope)
            if declared is BAD:
                await send_json_error(send, 400, "invalid_request", "invalid Content-Length", close=True)
                return operator
            if isinstance(declared, int) and declared > limit:
                await send_json_error(send, 413, "body_too_large", f"request body over {limit} bytes", close=True)
                return operator
            body = await read_body(receive, limit)
            if body is DISCONNECTED:
                return operator
            if body is None:
                await send_json_error(send, 413, "body_too_large", f"request body over {limit} bytes", close=True)
                return operator
            receive = replay(body, receive)  # type: ignore[arg-type]
        await self.app(scope, receive, send)
        return operator

    def _account(self, scope: Scope, status: int, operator: Operator | None, started: float) -> None:
        route = scope.get("route")
        if self.metrics is not None:
            self.metrics.api_request(scope["method"], getattr(route, "path", "unmatched"), status)
        if log.isEnabledFor(logging.INFO):
            client = scope.get("client")
            name = operator.name if operator is not None else None
            ms = round((time.perf_counter() - started) * 1000, 1)
            log.info(
                "%s %s %s %s",
                scope["method"],
                scope["path"],
                status,
                name or "-",
                extra={
                    "method": scope["method"],
                    "path": scope["path"][:200],
                    "status": status,
                    "operator": name,
                    "duration_ms": ms,
                    "peer": f"{client[0]}:{client[1]}" if client else None,
                },
            )
