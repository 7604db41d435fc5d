"""ES10c.GetEID (GetEuiccData) - SGP.22 v2.5 §5.7.20: ``BF3E {5C 5A}`` -> ``BF3E {5A EID}``."""

from __future__ import annotations

from euicc.context import SW_WRONG_DATA, Context, Es10Reject
from euicc.es10._common import fields
from rsp import tlv

TAG = 0xBF3E


def handle(ctx: Context, request: tlv.Tlv) -> bytes:
    f = fields(request, "GetEID")
    tag_list = f.get(0x5C)
    if tag_list is None or 0x5A not in tag_list.value:
        raise Es10Reject(SW_WRONG_DATA, "GetEID", "tagList (5C) must ask for 5A")
    return tlv.encode(TAG, tlv.encode(0x5A, ctx.state.eid))
