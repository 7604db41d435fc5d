"""ES10b.GetEuiccInfo1 - SGP.22 v2.5 §5.7.8: ``BF20`` -> EUICCInfo1 ``BF20 {82 svn, A9 CI ids for
verification, AA CI ids for signing}``."""

from __future__ import annotations

from euicc import isdr
from euicc.context import Context
from rsp import tlv

TAG = 0xBF20


def euicc_info1(ctx: Context) -> bytes:
    ver = b"".join(tlv.encode(0x04, k) for k in ctx.identity.ci_pkids_for_verification())
    sig = b"".join(tlv.encode(0x04, k) for k in ctx.identity.ci_pkids_for_signing())
    return tlv.encode(TAG, tlv.encode(0x82, isdr.SVN) + tlv.encode(0xA9, ver) + tlv.encode(0xAA, sig))


def handle(ctx: Context, request: tlv.Tlv) -> bytes:
    return euicc_info1(ctx)
