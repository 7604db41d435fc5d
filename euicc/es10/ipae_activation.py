"""ES10b.IpaeActivation - SGP.32 v1.2 §5.9: ``BF42 {80 ipaeOption}`` -> ``BF42 {80 notSupported(1)}``: this
card has no IPAe (EUICCInfo2 ipaMode ipad, ISD-R E1 ipaeSupported not set)."""

from __future__ import annotations

from euicc.context import Context
from euicc.es10._common import result
from rsp import tlv

TAG = 0xBF42


def handle(ctx: Context, request: tlv.Tlv) -> bytes:
    return result(TAG, 1)
