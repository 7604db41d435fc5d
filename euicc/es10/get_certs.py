"""ES10b.GetCerts - SGP.32 v1.2 §5.9: ``BF56 {[80 euiccCiPKId]}`` -> ``BF56 {A0 {A5 CERT.EUM, A6 CERT.EUICC}}``
(the certificates implicitly tagged: ``A5``/``A6`` replace their ``30``), or ``BF56 {81 invalidCiPKId(1)}`` for
a CI this card does not sign under."""

from __future__ import annotations

from euicc import der
from euicc.context import Context
from euicc.es10._common import fields
from rsp import tlv

TAG = 0xBF56


def handle(ctx: Context, request: tlv.Tlv) -> bytes:
    f = fields(request, "GetCerts")
    if 0x80 in f and f[0x80].value not in ctx.identity.ci_pkids_for_signing():
        return tlv.encode(TAG, der.integer(0x81, 1))
    eum = tlv.parse_exact(ctx.identity.eum_cert_der)
    euicc = tlv.parse_exact(ctx.identity.euicc_cert_der)
    return tlv.encode(TAG, tlv.encode(0xA0, tlv.encode(0xA5, eum.value) + tlv.encode(0xA6, euicc.value)))
