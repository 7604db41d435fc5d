"""ES10b.ReturnFromFallback - SGP.32 v1.2 §5.9: ``BF5E {80 refreshFlag}`` -> ``BF5E {80 result}``.

No profile with the fallback attribute -> ``fallbackNotAvailable(6)``; the fallback mechanism not in use ->
``commandError(7)``. Otherwise the profile enabled before ExecuteFallbackMechanism is enabled again (or the
fallback profile disabled if there was none)."""

from __future__ import annotations

from euicc import profiles
from euicc.context import Context
from euicc.es10._common import refresh_flag, result
from rsp import tlv

TAG = 0xBF5E


def handle(ctx: Context, request: tlv.Tlv) -> bytes:
    refresh = refresh_flag(request, "ReturnFromFallback")
    fallback = next((p for p in ctx.state.profiles if p.fallback_attribute), None)
    if fallback is None:
        return result(TAG, 6)
    if not ctx.state.fallback_active:
        return result(TAG, 7)
    back = ctx.state.profile(ctx.state.fallback_from) if ctx.state.fallback_from is not None else None
    if back is not None:
        profiles.enable(ctx, back, refresh=refresh)
    elif fallback.enabled:
        profiles.disable(ctx, fallback, refresh=refresh)
    ctx.state.fallback_active = False
    ctx.state.fallback_from = None
    return result(TAG, 0)
