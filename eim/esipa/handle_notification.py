"""ESipa.HandleNotification (SGP.32 v1.2 §6.3.2 ESipa functions, "HandleNotification"; protocol brief §2.3):
no response body.

``BF3D { A0 pendingNotification | BF50 provideEimPackageResult }``. A PIR (BF37) closes its indirect-download
operation (done / failed); it and other signed notifications are written to the eIM's notification outbox for
their SM-DP+ (``eim.relay.outbox``, delivered with retries) before the answer leaves: the empty answer (HTTP 204)
tells the IPA it may delete the notification, so it is sent only once the eIM holds it durably. A store failure
makes the request fail (HTTP 400 / CoAP 4.00 / MQTT error reply) and the IPA keeps the notification. A
ProvideEimPackageResult is processed as in ProvideEimPackageResult (its acknowledgements cannot be returned here:
the IPA gets them by sending the result again with ProvideEimPackageResult).
"""

from __future__ import annotations

import logging
from typing import Any

from eim.esipa import provide_eim_package_result
from eim.esipa.results import ResultProcessor
from eim.interfaces import EsipaRejected, RequestContext
from rsp import tlv

log = logging.getLogger("eim.esipa")


async def handle_notification(rp: ResultProcessor, value: tuple[str, Any], raw: bytes, ctx: RequestContext) -> None:
    alt, body = value
    if alt is None:
        raise EsipaRejected(400, "handleNotification: unknown alternative")
    inner = tlv.children(raw, what="HandleNotificationEsipa")[0]
    if alt == "pendingNotification":
        note = tlv.children(inner)[0]  # explicit [0]: the notification TLV inside A0
        if note.tag == 0xBF37:
            handled = await rp.pir(note.raw, ctx.eid_hint, None)
        else:
            ok = await rp.forward(ctx.eid_hint, note.raw)
            handled = None if ok else "it cannot be forwarded"
        if handled is not None and getattr(handled, "refused", handled):
            log.warning("notification not accepted", extra={"reason": getattr(handled, "refused", handled)})
        return None
    error, handled = await provide_eim_package_result.process(rp, body, inner.raw, ctx)
    if error is not None:
        log.warning("result in HandleNotification refused", extra={"code": error, "reason": handled.refused})
    return None
