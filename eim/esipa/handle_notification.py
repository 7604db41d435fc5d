"""ESipa.HandleNotification (SGP.32 v1.2 §6.3.2 ESipa functions, "HandleNotification"; protocol brief §2.3):
no response body.

``BF3D { A0 pendingNotification | BF50 provideEimPackageResult }``. Every notification is verified first
(``eim.esipa.notification_intake``): the eUICC's signature over the received bytes, with its certificate chained
to a trusted CI (an otherSignedNotification carries it; for a PIR it is the stored certificate of the eUICC of
the download), for the EID it belongs to - which must be the EID the binding authenticated (``eid_hint``: MQTT
topic, DTLS PSK identity) when there is one. A verified PIR (BF37) closes its indirect-download operation (done /
failed); it and other signed notifications are written to the eIM's notification outbox for their SM-DP+
(``eim.relay.outbox``, delivered with retries) before the answer leaves: the empty answer (HTTP 204) tells the
IPA it may delete the notification, so it is sent only once the eIM holds it durably.

HandleNotification has no error answer, so a notification that is not taken is answered with an
:class:`EsipaRejected` status (HTTP status / CoAP 4.00 / MQTT error reply) and the IPA keeps it:

=============================================  ===================================================
notification                                   answer
=============================================  ===================================================
queued (or the same bytes already queued)      no body (HTTP 204)
genuine, but its address is not one this eIM   no body (HTTP 204): acknowledged and dropped (audited
forwards to (``address``, ``unforwardable``)   ``dropped``), so the IPA does not send it forever
malformed or compact                           400
forged, unverifiable, another eUICC's,         403 (not acknowledged: never forwarded)
unregistered eUICC, no download for a PIR
over the per-EID cap or rate                   429 (the IPA sends it again later)
the outbox cannot be written (store failure)   400 (the IPA keeps it and sends it again)
=============================================  ===================================================

A
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
        taken = await rp.pending_notification(note.raw, ctx.eid_hint)
        if not taken.acknowledged:
            raise EsipaRejected(
                taken.http_status, f"handleNotification: notification refused ({taken.cause}): {taken.reason}"
            )
        return None
    error, handled = await provide_eim_package_result.process(rp, body, inner.raw, ctx)
    if error is not None:
        log.warning("result in HandleNotification refused", extra={"code": error, "reason": handled.refused})
    return None
