"""ES10b.EuiccMemoryReset (SGP.32 tag) - SGP.32 v1.2 §5.9 / SGP.22 v2.5 §5.7.19.

``BF64 {82 resetOptions}`` with bits deleteOperationalProfiles 0, deleteFieldLoadedTestProfiles 1,
resetDefaultSmdpAddress 2, deletePreLoadedTestProfiles 3, deleteProvisioningProfiles 4, resetEimConfigData 5,
resetImmediateEnableConfig 6 -> ``BF64 {80 resetResult, [81 resetEimResult], [82 resetImmediateEnableConfigResult]}``.

resetResult: ok 0, nothingToDelete 1 (no option found anything), ecallActive 104 (emergency profile in use).
resetEimResult (bit 5): ok 0 / nothingToDelete 1. resetImmediateEnableConfigResult (bit 6): ok 0. This card has
no pre-loaded test profiles: every test profile counts as field-loaded. No notifications are generated for the
deleted profiles; pending notifications are kept. Deleting the enabled profile raises a REFRESH."""

from __future__ import annotations

from euicc import der
from euicc.context import SW_WRONG_DATA, Context, Es10Reject
from euicc.es10._common import fields
from euicc.state import CLASS_OPERATIONAL, CLASS_PROVISIONING, CLASS_TEST, ImmediateEnableConfig
from rsp import tlv
from rsp.errors import DecodeError

TAG = 0xBF64


def handle(ctx: Context, request: tlv.Tlv) -> bytes:
    f = fields(request, "EuiccMemoryReset")
    if set(f) != {0x82}:
        raise Es10Reject(SW_WRONG_DATA, "EuiccMemoryReset", "needs exactly 82 resetOptions")
    try:
        options = der.decode_bits(f[0x82].value, "resetOptions")
    except DecodeError as exc:
        raise Es10Reject(SW_WRONG_DATA, "EuiccMemoryReset", str(exc)) from None
    if ctx.state.emergency_active:
        return tlv.encode(TAG, der.integer(0x80, 104))
    classes = set()
    if 0 in options:
        classes.add(CLASS_OPERATIONAL)
    if 1 in options:
        classes.add(CLASS_TEST)
    if 4 in options:
        classes.add(CLASS_PROVISIONING)
    doomed = [p for p in ctx.state.profiles if p.profile_class in classes]
    did_something = bool(doomed)
    for p in doomed:
        if p.enabled:
            ctx.request_refresh()
        ctx.state.profiles.remove(p)
    if doomed:
        gone = {p.iccid for p in doomed}
        if ctx.state.rollback is not None:
            ctx.state.rollback = None
        if ctx.state.fallback_from in gone or not any(p.fallback_attribute for p in ctx.state.profiles):
            ctx.state.fallback_active = False
            ctx.state.fallback_from = None
        if ctx.state.last_download is not None and ctx.state.last_download.iccid in gone:
            ctx.state.last_download = None
    if 2 in options and ctx.state.default_dp_address is not None:
        ctx.state.default_dp_address = None
        did_something = True
    body = b""
    eim_result = None
    if 5 in options:
        eim_result = 0 if ctx.state.eims else 1
        ctx.state.eims.clear()
        did_something = did_something or eim_result == 0
    ie_result = None
    if 6 in options:
        ctx.state.immediate_enable = ImmediateEnableConfig()
        ie_result = 0
        did_something = True
    body = der.integer(0x80, 0 if did_something else 1)
    if eim_result is not None:
        body += der.integer(0x81, eim_result)
    if ie_result is not None:
        body += der.integer(0x82, ie_result)
    return tlv.encode(TAG, body)
