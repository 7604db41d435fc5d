"""ES10b.GetEimConfigurationData - SGP.32 v1.2 §5.9: ``BF55 {[A0 {80 eimId}]}`` ->
``BF55 {A0 {30 EimConfigurationData ...}}`` (all eIMs, or the one searched; the counterValue returned is the
last one accepted, so an eIM can resynchronise after a replayError)."""

from __future__ import annotations

from euicc import eim_config
from euicc.context import SW_WRONG_DATA, Context, Es10Reject
from euicc.es10._common import children, fields, utf8
from rsp import tlv

TAG = 0xBF55


def handle(ctx: Context, request: tlv.Tlv) -> bytes:
    f = fields(request, "GetEimConfigurationData")
    eims = list(ctx.state.eims)
    if 0xA0 in f:
        crit = children(f[0xA0], "searchCriteria")
        if len(crit) != 1 or crit[0].tag != 0x80:
            raise Es10Reject(SW_WRONG_DATA, "GetEimConfigurationData", "searchCriteria must be {80 eimId}")
        wanted = utf8(crit[0], "eimId")
        eims = [e for e in eims if e.eim_id == wanted]
    return tlv.encode(TAG, tlv.encode(0xA0, b"".join(eim_config.encode(e) for e in eims)))
