"""ES10a.GetEuiccConfiguredAddresses - SGP.22 v2.5 §5.7.3: ``BF3C`` -> ``BF3C {[80 defaultDpAddress],
81 rootDsAddress}``."""

from __future__ import annotations

from euicc import der
from euicc.context import Context
from rsp import tlv

TAG = 0xBF3C


def handle(ctx: Context, request: tlv.Tlv) -> bytes:
    body = b""
    if ctx.state.default_dp_address:
        body += der.utf8(0x80, ctx.state.default_dp_address)
    body += der.utf8(0x81, ctx.state.root_ds_address)
    return tlv.encode(TAG, body)
