"""ES10b.RetrieveNotificationsList - SGP.22 v2.5 §5.7.10 as extended by SGP.32 v1.2 §5.9
(SGP32-RetrieveNotificationsListRequest/Response).

``BF2B {[A0 searchCriteria {80 seqNumber | 81 profileManagementOperation | 82 euiccPackageResults}]}``:

* no criteria: every pending notification (PIR ``BF37`` and OtherSignedNotification ``30``), by seqNumber ->
  ``BF2B {A0 {...}}``;
* ``80 seqNumber``: exactly that entry - a notification in ``A0``, an eUICC Package Result in ``A2``;
* ``81 event``: the notifications of that event -> ``A0``;
* ``82`` euiccPackageResults: every pending EuiccPackageResult (``BF51``) -> ``BF2B {A2 {...}}``.
An unknown criterion is ``BF2B {81 undefinedError(127)}``.
"""

from __future__ import annotations

from euicc import notifications
from euicc.context import Context
from euicc.es10._common import children, fields
from euicc.es10.list_notification import event_filter
from euicc.state import Notification
from rsp import tlv

TAG = 0xBF2B


def _list(tag: int, items: list[Notification]) -> bytes:
    return tlv.encode(TAG, tlv.encode(tag, b"".join(n.data for n in items)))


def handle(ctx: Context, request: tlv.Tlv) -> bytes:
    f = fields(request, "RetrieveNotificationsList")
    crit = f.get(0xA0)
    if crit is None:
        return _list(0xA0, notifications.pending(ctx))
    inner = children(crit, "searchCriteria")
    if len(inner) != 1:
        return tlv.encode(TAG, bytes.fromhex("81017F"))
    c = inner[0]
    if c.tag == 0x80:
        from euicc.es10._common import integer

        seq = integer(c, "seqNumber")
        n = ctx.state.notification(seq)
        if n is not None and n.kind == "epr":
            return _list(0xA2, [n])
        return _list(0xA0, [n] if n is not None else [])
    if c.tag == 0x81:
        events = event_filter(c, "RetrieveNotificationsList") or set()
        return _list(0xA0, [n for n in notifications.pending(ctx) if n.event in events])
    if c.tag == 0x82:
        return _list(0xA2, notifications.pending(ctx, ("epr",)))
    return tlv.encode(TAG, bytes.fromhex("81017F"))
