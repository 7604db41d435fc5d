"""ES10b.CancelSession - SGP.22 v2.5 §5.7.14.

``BF41 {80 transactionId, 81 reason}`` -> ``BF41 {A0 {30 euiccCancelSessionSigned {80 txid, 81 smdpOid,
82 reason}, 5F37 signature}}`` (the signed SEQUENCE has automatic tags; the signature covers its ``30..`` TLV),
or ``BF41 {81 invalidTransactionId(5)}`` when no session with that transactionId exists. The session ends."""

from __future__ import annotations

from euicc import der
from euicc.context import SW_WRONG_DATA, Context, Es10Reject
from euicc.es10._common import fields, integer
from rsp import tlv

TAG = 0xBF41
STEP = "CancelSession"
INVALID_TRANSACTION_ID = 5


def handle(ctx: Context, request: tlv.Tlv) -> bytes:
    f = fields(request, STEP)
    if 0x80 not in f or 0x81 not in f:
        raise Es10Reject(SW_WRONG_DATA, STEP, "needs 80 transactionId and 81 reason")
    txid = f[0x80].value
    reason = integer(f[0x81], "reason")
    auth = ctx.session.auth
    if auth is None or auth.transaction_id != txid or auth.smdp_oid is None:
        return tlv.encode(TAG, der.integer(0x81, INVALID_TRANSACTION_ID))
    signed = tlv.encode(
        0x30, tlv.encode(0x80, txid) + tlv.encode(0x81, der.oid_bytes(auth.smdp_oid)) + der.integer(0x82, reason)
    )
    signature = ctx.identity.sign(signed)
    ctx.session.clear()
    return tlv.encode(TAG, tlv.encode(0xA0, signed + tlv.encode(0x5F37, signature)))
