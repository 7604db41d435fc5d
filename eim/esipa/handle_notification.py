"""ESipa.HandleNotification (SGP.32 v1.2 §6.3.2 ESipa functions, "HandleNotification"; protocol brief §2.3):
no response body.

``BF3D { A0 pendingNotification | BF50 provideEimPackageResult }``. A PIR (BF37) closes its indirect-download
operation (done / failed) and is forwarded to the SM-DP+ through the relay; other signed notifications are
forwarded; a ProvideEimPackageResult is processed as in ProvideEimPackageResult (its acknowledgements cannot be
returned here: the IPA gets them by sending the result again with ProvideEimPackageResult).
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
            handled = None if ok else "forwarding failed"
        if handled is not None and getattr(handled, "refused", handled):
            log.warning("notification not accepted", extra={"reason": getattr(handled, "refused", handled)})
        return None
    error, handled = await provide_eim_package_result.process(rp, body, inner.raw, ctx)
    if error is not None:
        log.warning("result in HandleNotification refused", extra={"code": error, "reason": handled.refused})
    return None
