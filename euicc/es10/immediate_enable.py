"""ES10b.ImmediateEnable - SGP.32 v1.2 §5.9: ``BF5A {80 refreshFlag}`` -> ``BF5A {80 result}``.

Enables the profile installed by the latest download, when immediate enabling is configured
(``immediateEnableNotAvailable(1)`` otherwise, also when the configured default SM-DP+ address or OID is not
the one the profile came from); without such a freshly installed, still disabled profile it answers
``noSessionContext(4)``. The enable disables the current profile, emits the configured notifications, and with
refreshFlag TRUE raises a REFRESH and ends any rollback authorisation."""

from __future__ import annotations

from euicc import profiles
from euicc.context import Context
from euicc.es10._common import refresh_flag, result
from rsp import tlv

TAG = 0xBF5A


def handle(ctx: Context, request: tlv.Tlv) -> bytes:
    refresh = refresh_flag(request, "ImmediateEnable")
    cfg = ctx.state.immediate_enable
    if not cfg.flag:
        return result(TAG, 1)
    last = ctx.state.last_download
    profile = ctx.state.profile(last.iccid) if last is not None else None
    if last is None or profile is None or profile.enabled:
        return result(TAG, 4)
    if (cfg.smdp_address and cfg.smdp_address != last.smdp_address) or (cfg.smdp_oid and cfg.smdp_oid != last.smdp_oid):
        return result(TAG, 1)
    profiles.enable(ctx, profile, refresh=refresh)
    ctx.state.last_download = None
    ctx.state.fallback_active = False
    ctx.state.fallback_from = None
    if refresh:
        ctx.state.rollback = None
    return result(TAG, 0)
