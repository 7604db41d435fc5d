"""ES10b.GetEuiccChallenge - SGP.22 v2.5 §5.7.7: ``BF2E`` -> ``BF2E {80 euiccChallenge(16)}``.

Starts a new RSP session: any previous authentication, download preparation or BPP loading is dropped."""

from __future__ import annotations

from euicc.context import Context
from rsp import tlv

TAG = 0xBF2E


def handle(ctx: Context, request: tlv.Tlv) -> bytes:
    ctx.session.clear()
    challenge = ctx.random(16)
    ctx.session.challenge = challenge
    return tlv.encode(TAG, tlv.encode(0x80, challenge))
