"""ES10b.ProfileRollback - SGP.32 v1.2 §5.9: ``BF58 {80 refreshFlag}`` -> ``BF58 {02 cmdResult,
[BF51 EuiccPackageResult]}``.

Allowed only while the latest eUICC Package enabled a profile with ``rollbackFlag`` and its result has not been
removed (delivered) nor superseded by a newer package: else ``rollbackNotAllowed(1)``. The card returns to the
profile enabled before (or disables the newly enabled one if there was none), and answers a new signed
EuiccPackageResult for the same eimId/counterValue/eimTransactionId: the original results followed by
``rollbackResult ok`` (``8C 01 00``), under a new seqNumber; it replaces the original result, which is removed
from the pending list."""

from __future__ import annotations

from euicc import der, profiles
from euicc.context import Context
from euicc.es10._common import refresh_flag
from euicc.es10.load_euicc_package import signed_result
from rsp import tlv

TAG = 0xBF58


def handle(ctx: Context, request: tlv.Tlv) -> bytes:
    refresh = refresh_flag(request, "ProfileRollback")
    rb = ctx.state.rollback
    if rb is None:
        return tlv.encode(TAG, der.integer(0x02, 1))
    previous = ctx.state.profile(rb.previous_iccid) if rb.previous_iccid is not None else None
    if previous is not None:
        if not previous.enabled:
            profiles.enable(ctx, previous, refresh=refresh)
    else:
        current = ctx.state.enabled_profile()
        if current is not None and current.iccid == rb.enabled_iccid:
            profiles.disable(ctx, current, refresh=refresh)
    original = ctx.state.notification(rb.epr_seq)
    if original is not None:
        ctx.state.notifications.remove(original)
    _, epr = signed_result(
        ctx,
        der.utf8(0x80, rb.eim_id),
        rb.counter,
        rb.transaction_id,
        rb.association_token,
        rb.results + der.integer(0x8C, 0),
    )
    ctx.state.rollback = None
    return tlv.encode(TAG, der.integer(0x02, 0) + epr)
