"""ES10b.SetDefaultDpAddress (SGP.32 tag) - SGP.32 v1.2 §5.9: ``BF65 {80 defaultDpAddress}`` ->
``BF65 {80 ok(0)}``; an empty address clears it."""

from __future__ import annotations

from euicc.context import SW_WRONG_DATA, Context, Es10Reject
from euicc.es10._common import fields, result, utf8
from rsp import tlv

TAG = 0xBF65


def handle(ctx: Context, request: tlv.Tlv) -> bytes:
    f = fields(request, "SetDefaultDpAddress")
    if set(f) != {0x80}:
        raise Es10Reject(SW_WRONG_DATA, "SetDefaultDpAddress", "needs exactly 80 defaultDpAddress")
    address = utf8(f[0x80], "defaultDpAddress")
    ctx.state.default_dp_address = address or None
    return result(TAG, 0)
