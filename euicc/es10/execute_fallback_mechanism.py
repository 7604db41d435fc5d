"""ES10b.ExecuteFallbackMechanism - SGP.32 v1.2 §5.9: ``BF5D {80 refreshFlag}`` -> ``BF5D {80 result}``.

Switches to the profile with the fallback attribute: none -> ``fallbackNotAvailable(6)``; it is already enabled
-> ``profileNotInDisabledState(2)``; emergency profile in use -> ``ecallActive(104)``. The profile enabled before
is remembered for ReturnFromFallback."""

from __future__ import annotations

from euicc import profiles
from euicc.context import Context
from euicc.es10._common import refresh_flag, result
from rsp import tlv

TAG = 0xBF5D


def handle(ctx: Context, request: tlv.Tlv) -> bytes:
    refresh = refresh_flag(request, "ExecuteFallbackMechanism")
    if ctx.state.emergency_active:
        return result(TAG, 104)
    fallback = next((p for p in ctx.state.profiles if p.fallback_attribute), None)
    if fallback is None:
        return result(TAG, 6)
    if fallback.enabled:
        return result(TAG, 2)
    previous = profiles.enable(ctx, fallback, refresh=refresh)
    ctx.state.fallback_active = True
    ctx.state.fallback_from = previous.iccid if previous is not None else None
    return result(TAG, 0)
