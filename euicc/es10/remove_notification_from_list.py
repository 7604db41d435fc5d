"""ES10b.RemoveNotificationFromList (NotificationSent) - SGP.22 v2.5 §5.7.11, also for eUICC Package Results
(SGP.32 v1.2: EPRs are kept under a notification seqNumber until removed).

``BF30 {80 seqNumber}`` -> ``BF30 {80 ok(0) | nothingToDelete(1)}``. Removing the EPR of the package that
granted a rollback ends that authorisation (the eIM has the result, so the IPA reached it)."""

from __future__ import annotations

from euicc.context import SW_WRONG_DATA, Context, Es10Reject
from euicc.es10._common import fields, integer, result
from rsp import tlv

TAG = 0xBF30


def handle(ctx: Context, request: tlv.Tlv) -> bytes:
    f = fields(request, "RemoveNotificationFromList")
    if 0x80 not in f:
        raise Es10Reject(SW_WRONG_DATA, "RemoveNotificationFromList", "needs 80 seqNumber")
    seq = integer(f[0x80], "seqNumber")
    n = ctx.state.notification(seq)
    if n is None:
        return result(TAG, 1)
    ctx.state.notifications.remove(n)
    if ctx.state.rollback is not None and ctx.state.rollback.epr_seq == seq:
        ctx.state.rollback = None
    return result(TAG, 0)
