"""ES10b.GetConnectivityParameters - SGP.32 v1.2 §5.9: ``BF5F`` -> ``BF5F {81 parametersNotAvailable(1)}``
(the profiles of this card carry no connectivity parameters)."""

from __future__ import annotations

from euicc.context import Context
from euicc.es10._common import result
from rsp import tlv

TAG = 0xBF5F


def handle(ctx: Context, request: tlv.Tlv) -> bytes:
    return result(TAG, 1, inner=0x81)
