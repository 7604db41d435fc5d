"""ES10b.DisableEmergencyProfile - SGP.32 v1.2 §5.9: ``BF5C {80 refreshFlag}`` -> ``BF5C {80 result}``.

The emergency profile must be enabled (``profileNotInEnabledState(2)`` otherwise); it is disabled and the
profile enabled before EnableEmergencyProfile (if it still exists) is enabled again."""

from __future__ import annotations

from euicc import profiles
from euicc.context import Context
from euicc.es10._common import refresh_flag, result
from rsp import tlv

TAG = 0xBF5C


def handle(ctx: Context, request: tlv.Tlv) -> bytes:
    refresh = refresh_flag(request, "DisableEmergencyProfile")
    emergency = next((p for p in ctx.state.profiles if p.ecall_indication), None)
    if emergency is None or not emergency.enabled:
        return result(TAG, 2)
    back = ctx.state.profile(ctx.state.emergency_from) if ctx.state.emergency_from is not None else None
    if back is not None:
        profiles.enable(ctx, back, refresh=refresh)
    else:
        profiles.disable(ctx, emergency, refresh=refresh)
    ctx.state.emergency_active = False
    ctx.state.emergency_from = None
    if refresh:
        ctx.state.rollback = None
    return result(TAG, 0)
