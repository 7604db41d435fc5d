"""ES10b.ListNotification - SGP.22 v2.5 §5.7.9: ``BF28 {[81 profileManagementOperation]}`` ->
``BF28 {A0 {BF2F NotificationMetadata ...}}`` for the pending notifications (PIRs and other signed
notifications; eUICC Package Results are listed by RetrieveNotificationsList)."""

from __future__ import annotations

from euicc import der, notifications
from euicc.context import SW_WRONG_DATA, Context, Es10Reject
from euicc.es10._common import fields
from euicc.state import Notification
from rsp import tlv
from rsp.errors import DecodeError

TAG = 0xBF28


def metadata_of(n: Notification) -> bytes:
    """The stored NotificationMetadata (BF2F) TLV, cut from the notification bytes."""
    if n.kind == "pir":
        found = tlv.find(n.data, 0xBF27, 0xBF2F)
    else:
        found = tlv.find(n.data, 0xBF2F)
    assert found is not None
    return found.raw


def event_filter(node: tlv.Tlv | None, step: str) -> set[int] | None:
    if node is None:
        return None
    try:
        return der.decode_bits(node.value, "profileManagementOperation")
    except DecodeError as exc:
        raise Es10Reject(SW_WRONG_DATA, step, str(exc)) from None


def handle(ctx: Context, request: tlv.Tlv) -> bytes:
    f = fields(request, "ListNotification")
    events = event_filter(f.get(0x81), "ListNotification")
    items = [n for n in notifications.pending(ctx) if events is None or n.event in events]
    return tlv.encode(TAG, tlv.encode(0xA0, b"".join(metadata_of(n) for n in items)))
