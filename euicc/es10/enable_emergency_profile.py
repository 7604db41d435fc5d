"""ES10b.EnableEmergencyProfile - SGP.32 v1.2 §5.9: ``BF5B {80 refreshFlag}`` -> ``BF5B {80 result}``.

The emergency profile is the one whose metadata has ``ecallIndication`` TRUE: none -> ``ecallNotAvailable(8)``;
already enabled -> ``profileNotInDisabledState(2)``. The card remembers the profile enabled before (for
DisableEmergencyProfile), enables the emergency profile, and while it is in use refuses eUICC Packages
(``ecallActive``) and the fallback mechanism."""

from __future__ import annotations

from euicc import profiles
from euicc.context import Context
from euicc.es10._common import refresh_flag, result
from rsp import tlv

TAG = 0xBF5B


def handle(ctx: Context, request: tlv.Tlv) -> bytes:
    refresh = refresh_flag(request, "EnableEmergencyProfile")
    emergency = next((p for p in ctx.state.profiles if p.ecall_indication), None)
    if emergency is None:
        return result(TAG, 8)
    if emergency.enabled:
        return result(TAG, 2)
    previous = profiles.enable(ctx, emergency, refresh=refresh)
    ctx.state.emergency_active = True
    ctx.state.emergency_from = previous.iccid if previous is not None else None
    if refresh:
        ctx.state.rollback = None
    return result(TAG, 0)
