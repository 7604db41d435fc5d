"""ES10b.ConfigureImmediateProfileEnabling - SGP.32 v1.2 §5.9: ``BF59 {[80 immediateEnableFlag NULL],
[81 defaultSmdpOid], [82 defaultSmdpAddress]}`` -> ``BF59 {80 result}``.

A local configuration for a card not yet associated with an eIM: once an eIM is associated the eIM configures
it (PSMO configureImmediateEnable) and this answers ``associatedEimAlreadyExists(2)``."""

from __future__ import annotations

from euicc import der
from euicc.context import SW_WRONG_DATA, Context, Es10Reject
from euicc.es10._common import fields, result
from rsp import tlv
from rsp.errors import DecodeError

TAG = 0xBF59
STEP = "ConfigureImmediateProfileEnabling"


def handle(ctx: Context, request: tlv.Tlv) -> bytes:
    f = fields(request, STEP)
    try:
        if set(f) - {0x80, 0x81, 0x82}:
            raise DecodeError(STEP, "unexpected field")
        oid = der.decode_oid(f[0x81].value) if 0x81 in f else None
        address = der.decode_utf8(f[0x82].value) if 0x82 in f else None
    except DecodeError as exc:
        raise Es10Reject(SW_WRONG_DATA, STEP, str(exc)) from None
    if ctx.state.eims:
        return result(TAG, 2)
    cfg = ctx.state.immediate_enable
    cfg.flag = 0x80 in f
    cfg.smdp_oid = oid
    cfg.smdp_address = address
    return result(TAG, 0)
