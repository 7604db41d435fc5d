"""Notifications forwarded to the SM-DP+ (SGP.32 v1.2 §5.14.4 ESipa.HandleNotification -> SGP.22 v2.5 §5.6.4
ES9+.HandleNotification).

The IPA hands the eIM a PendingNotification: a ProfileInstallationResult ``BF37`` (the PIR at the end of a
download) or an otherSignedNotification ``30`` (enable/disable/delete of a profile). Each names its receiver in
``notificationMetadata.notificationAddress`` (``0C``); the relay POSTs ``{pendingNotification: b64(TLV)}`` there
and expects HTTP 204. The bytes go out exactly as received (they carry the eUICC's signature). Compact
notifications (``minimizeEsipaBytes``) cannot be forwarded without rebuilding them: :class:`NotForwardable`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eim.relay.common import b64
from eim.relay.errors import NotForwardable
from rsp import tlv
from rsp.errors import DecodeError

FUNCTION = "handleNotification"


@dataclass(frozen=True)
class Notification:
    raw: bytes  # BF37 or 30, verbatim
    address: str
    transaction_id: bytes | None  # PIR only: the ES9+ transactionId of the download it ends
    kind: str  # "pir" | "other"


def unwrap(data: bytes) -> bytes:
    """Accept the notification itself, its ESipa ``A0`` wrapper, or a whole ``BF3D`` HandleNotificationEsipa."""
    what = "PendingNotification"
    top = tlv.parse_exact(data, what=what)
    if top.tag == 0xBF3D:
        kids = tlv.children(top, what=what)
        if len(kids) != 1 or kids[0].tag != 0xA0:
            raise NotForwardable(FUNCTION, "only HandleNotificationEsipa.pendingNotification goes to an SM-DP+")
        inner = tlv.children(kids[0], what=what)
        if len(inner) != 1:
            raise DecodeError(what, "pendingNotification must hold exactly one notification")
        return inner[0].raw
    if top.tag == 0xA0:
        kids = tlv.children(top, what=what)
        if len(kids) == 1 and kids[0].tag in (0xBF37, 0x30, 0xA0, 0xA1):
            return kids[0].raw
    return top.raw


def parse(data: bytes) -> Notification:
    raw = unwrap(data)
    top = tlv.parse_exact(raw, what="PendingNotification")
    if top.tag == 0xBF37:
        data_tlv = tlv.require(top, 0xBF27, what="ProfileInstallationResult")
        meta = tlv.require(data_tlv, 0xBF2F, what="ProfileInstallationResultData")
        txid = tlv.find(data_tlv, 0x80, what="ProfileInstallationResultData")
        kind = "pir"
    elif top.tag == 0x30:
        meta = tlv.require(top, 0xBF2F, what="OtherSignedNotification")
        txid = None
        kind = "other"
    elif top.tag in (0xA0, 0xA1):
        raise NotForwardable(FUNCTION, "compact notifications cannot be forwarded to an SM-DP+")
    else:
        raise DecodeError("PendingNotification", f"unknown notification tag {top.tag:X}")
    address_tlv = tlv.find(meta, 0x0C, what="NotificationMetadata")
    if address_tlv is None:
        raise NotForwardable(FUNCTION, "the notification names no notificationAddress")
    try:
        address = address_tlv.value.decode("utf-8")
    except UnicodeDecodeError:
        raise DecodeError("NotificationMetadata", "notificationAddress is not UTF-8") from None
    return Notification(raw, address, txid.value if txid is not None else None, kind)


def es9_request(notification: Notification) -> dict[str, Any]:
    return {"pendingNotification": b64(notification.raw)}
