"""ES9+.InitiateAuthentication (SGP.22 v2.5 §5.6.1, procedure §3.1.2 / §3.0.1).

Input: ``euiccChallenge`` (16 bytes), ``euiccInfo1`` (BF20), ``smdpAddress``.
The SM-DP+ checks the address, picks a CI from ``euiccCiPKIdListForSigning`` for which it holds CERT.DPauth
(and which the eUICC can verify: ``euiccCiPKIdListForVerification``), opens a session with a fresh
transactionId and serverChallenge, and signs ``serverSigned1`` with SK.DPauth.
Output: transactionId (hex), serverSigned1, serverSignature1 (the whole 5F37 TLV), euiccCiPKIdToBeUsed (the
whole 04 TLV), serverCertificate (CERT.DPauth).
"""

from __future__ import annotations

import secrets
from typing import Any

from rsp import crypto, tlv
from rsp.errors import DecodeError
from smdpp import errors
from smdpp.es9plus.common import SmdpContext, b64, b64_field, log, str_field
from smdpp.session import Session

TAG_SVN = 0x82
TAG_CI_LIST_VERIFICATION = 0xA9
TAG_CI_LIST_SIGNING = 0xAA
MIN_SVN = (2, 0, 0)


def parse_euicc_info1(data: bytes) -> tuple[tuple[int, int, int], list[bytes], list[bytes]]:
    """EUICCInfo1 (BF20) -> (svn, CI PKIds for verification, CI PKIds for signing). TLV walk, unknown tags
    skipped (EUICCInfo1 is extensible)."""
    try:
        top = tlv.parse_exact(data, what="EUICCInfo1")
        if top.tag != 0xBF20:
            raise DecodeError("EUICCInfo1", f"expected tag BF20, got {top.tag:X}", 0)
        svn: tuple[int, int, int] | None = None
        verification: list[bytes] = []
        signing: list[bytes] = []
        for c in tlv.children(top, what="EUICCInfo1"):
            if c.tag == TAG_SVN:
                if c.length != 3:
                    raise DecodeError("EUICCInfo1", "svn must be 3 bytes", c.offset)
                svn = (c.value[0], c.value[1], c.value[2])
            elif c.tag in (TAG_CI_LIST_VERIFICATION, TAG_CI_LIST_SIGNING):
                ids = [k.value for k in tlv.children(c, what="EUICCInfo1") if k.tag == 0x04]
                (verification if c.tag == TAG_CI_LIST_VERIFICATION else signing).extend(ids)
        if svn is None:
            raise DecodeError("EUICCInfo1", "missing svn (82)")
        return svn, verification, signing
    except DecodeError as exc:
        raise errors.REQUEST_INVALID.error(f"euiccInfo1: {exc}") from None


def server_signed1(
    transaction_id: bytes, euicc_challenge: bytes, server_address: str, server_challenge: bytes
) -> bytes:
    """``ServerSigned1 ::= SEQUENCE { [0] transactionId, [1] euiccChallenge, [3] serverAddress,
    [4] serverChallenge }``."""
    return tlv.encode(
        0x30,
        tlv.encode(0x80, transaction_id)
        + tlv.encode(0x81, euicc_challenge)
        + tlv.encode(0x83, server_address.encode("utf-8"))
        + tlv.encode(0x84, server_challenge),
    )


def initiate_authentication(ctx: SmdpContext, request: dict[str, Any]) -> dict[str, Any]:
    euicc_challenge = b64_field(request, "euiccChallenge", max_len=64)
    euicc_info1 = b64_field(request, "euiccInfo1", max_len=4096)
    address = str_field(request, "smdpAddress")
    assert address is not None
    if len(euicc_challenge) != 16:
        raise errors.REQUEST_INVALID.error(f"euiccChallenge must be 16 bytes, got {len(euicc_challenge)}")
    if not ctx.config.accepts_address(address):
        raise errors.SMDP_ADDRESS_REFUSED.error(f"Invalid SM-DP+ Address {address!r}: this SM-DP+ is {ctx.address}")
    svn, ci_verification, ci_signing = parse_euicc_info1(euicc_info1)
    if svn < MIN_SVN:
        raise errors.SVN_NOT_SUPPORTED.error(f"SVN {'.'.join(map(str, svn))} not supported (need 2.x)")
    # euiccCiPKIdToBeUsed: the CI of the eUICC's own chain (its signing list), which the SM-DP+ must trust;
    # CERT.DPauth: one issued under a CI the eUICC can verify (its verification list) - usually the same CI.
    trusted = [pkid for pkid in ci_signing if pkid in ctx.credentials.trusted_cis]
    if not trusted:
        raise errors.CI_PKID_NOT_SUPPORTED.error(
            "None of the proposed Public Key Identifiers is supported by the SM-DP+: eUICC signs with "
            + (", ".join(p.hex().upper() for p in ci_signing) or "nothing")
        )
    usable = [pkid for pkid in ci_verification if pkid in ctx.credentials.sets]
    if not usable:
        raise errors.NO_DPAUTH_FOR_CI.error(
            "The SM-DP+ has no CERT.DPauth.SIG under a CI the eUICC verifies ("
            + (", ".join(p.hex().upper() for p in ci_verification) or "none")
            + ")"
        )
    ci_pkid = next((p for p in trusted if p in usable), trusted[0])
    cred_pkid = ci_pkid if ci_pkid in usable else usable[0]
    creds = ctx.credentials.sets[cred_pkid]

    transaction_id = ctx.sessions.new_transaction_id()
    server_challenge = secrets.token_bytes(16)
    signed1 = server_signed1(transaction_id, euicc_challenge, address, server_challenge)
    signature1 = crypto.sign(creds.dpauth_key, signed1)
    ctx.sessions.add(
        Session(
            transaction_id=transaction_id,
            euicc_challenge=euicc_challenge,
            server_challenge=server_challenge,
            ci_pkid=ci_pkid,
            cred_pkid=cred_pkid,
            curve=creds.curve,
        )
    )
    log.info(
        "initiateAuthentication: session %s, eUICC CI %s, DPauth under %s (%s)",
        transaction_id.hex().upper(),
        ci_pkid.hex(),
        cred_pkid.hex(),
        creds.curve,
    )
    return {
        "transactionId": transaction_id.hex().upper(),
        "serverSigned1": b64(signed1),
        "serverSignature1": b64(tlv.encode(0x5F37, signature1)),
        "euiccCiPKIdToBeUsed": b64(tlv.encode(0x04, ci_pkid)),
        "serverCertificate": b64(creds.dpauth_der),
    }
