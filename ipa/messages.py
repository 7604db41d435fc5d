"""ESipa messages as the IPA builds and reads them (SGP.32 v1.2 §6.3, ASN.1 module SGP32Definitions).

Pure functions over BER-TLV (``rsp.tlv``): no I/O, no asn1tools at import time, so the device agent starts fast
and keeps signed bytes exactly as received. Everything the eUICC signed (EuiccPackageRequest, EuiccPackageResult,
notifications, AuthenticateServerResponse, PrepareDownloadResponse, CancelSessionResponse) is carried verbatim:
builders take raw TLVs and only wrap them.

Parsers raise :class:`rsp.errors.DecodeError` (malformed) or :class:`UnknownPackage` (well-formed but not a
package this IPA knows) - the two map to eimPackageResultResponseError invalidPackageFormat / unknownPackage.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ipa import der
from rsp import tlv
from rsp.errors import DecodeError

# ------------------------------------------------------------------ tags
TAG_GET_EIM_PACKAGE = 0xBF4F
TAG_PROVIDE_EIM_PACKAGE_RESULT = 0xBF50
TAG_TRANSFER_EIM_PACKAGE = 0xBF4E
TAG_HANDLE_NOTIFICATION = 0xBF3D
TAG_INITIATE_AUTHENTICATION = 0xBF39
TAG_AUTHENTICATE_CLIENT = 0xBF3B
TAG_GET_BOUND_PROFILE_PACKAGE = 0xBF3A
TAG_CANCEL_SESSION = 0xBF41
TAG_EUICC_PACKAGE = 0xBF51  # EuiccPackageRequest (eIM->eUICC) and EuiccPackageResult (eUICC->eIM)
TAG_IPA_EUICC_DATA = 0xBF52
TAG_EIM_ACKNOWLEDGEMENTS = 0xBF53
TAG_PROFILE_DOWNLOAD_TRIGGER = 0xBF54
TAG_PIR = 0xBF37

# ------------------------------------------------------------------ primitive helpers
# in ipa.der (the ES10 client needs them without the message classes); the same functions under their old names
TAG_EID = der.TAG_EID
child_map = der.child_map
dec_bitstring = der.dec_bitstring
dec_int = der.dec_int
dec_utf8 = der.dec_utf8
enc_bitstring = der.enc_bitstring
enc_int = der.enc_int
expect = der.expect
iccid_to_bytes = der.iccid_to_bytes
iccid_to_str = der.iccid_to_str
int_value = der.int_value


class UnknownPackage(Exception):
    """A well-formed message that is not an eIM package this IPA knows (-> unknownPackage(2))."""

    def __init__(self, tag: int, where: str) -> None:
        self.tag = tag
        super().__init__(f"{where}: unknown package tag {tag:X}")


def strip_tlv_envelope(value: bytes, tag: int, length: int) -> bytes:
    """The TLV-vs-value trap (protocol brief §6): accept ``value`` or a whole ``tag len value`` TLV.

    Returns the bare value of ``length`` bytes when ``value`` is exactly one TLV with ``tag`` around it.
    """
    if len(value) == length:
        return value
    try:
        t = tlv.parse_exact(value)
    except DecodeError:
        return value
    if t.tag == tag and len(t.value) == length:
        return t.value
    return value


# ------------------------------------------------------------------ IPA -> eIM builders
def get_eim_package_request(
    eid: bytes, *, notify_state_change: bool = False, state_change_cause: int | None = None, rplmn: bytes | None = None
) -> bytes:
    body = tlv.encode(TAG_EID, eid)
    if notify_state_change:
        body += b"\x80\x00"
        if state_change_cause is not None:
            body += enc_int(0x81, state_change_cause)
    if rplmn is not None:
        if len(rplmn) != 3:
            raise ValueError("rPLMN is 3 bytes")
        body += tlv.encode(0x82, rplmn)
    return tlv.encode(TAG_GET_EIM_PACKAGE, body)


def provide_eim_package_result(eid: bytes | None, eim_package_result: bytes) -> bytes:
    """ProvideEimPackageResult ``BF50 { [5A eid], <EimPackageResult alternative> }``."""
    body = (tlv.encode(TAG_EID, eid) if eid is not None else b"") + eim_package_result
    return tlv.encode(TAG_PROVIDE_EIM_PACKAGE_RESULT, body)


def epr_and_notifications(epr: bytes, notifications: list[bytes]) -> bytes:
    """ePRAndNotifications ``30 { BF51 EPR, A0 { PendingNotification... } }``, all carried verbatim."""
    return tlv.encode(0x30, epr + tlv.encode(0xA0, b"".join(notifications)))


def eim_package_result_error(code: int, eim_transaction_id: bytes | None = None) -> bytes:
    """eimPackageResultResponseError ``A0 { [80 eimTransactionId], 02 code }``."""
    body = (tlv.encode(0x80, eim_transaction_id) if eim_transaction_id else b"") + enc_int(0x02, code)
    return tlv.encode(0xA0, body)


def profile_download_trigger_result(
    eim_transaction_id: bytes | None,
    *,
    pir: bytes | None = None,
    error_reason: int | None = None,
    error_response: bytes | None = None,
) -> bytes:
    """ProfileDownloadTriggerResult ``BF54 { [82 eimTransactionId], BF37 PIR | 30 { 80 reason, [04 resp] } }``."""
    body = tlv.encode(0x82, eim_transaction_id) if eim_transaction_id else b""
    if pir is not None:
        body += pir
    else:
        err = enc_int(0x80, 127 if error_reason is None else error_reason)
        if error_response is not None:
            err += tlv.encode(0x04, error_response)
        body += tlv.encode(0x30, err)
    return tlv.encode(TAG_PROFILE_DOWNLOAD_TRIGGER, body)


def handle_notification(pending_notification: bytes) -> bytes:
    """HandleNotificationEsipa ``BF3D { A0 { BF37 ... | 30 ... } }``."""
    return tlv.encode(TAG_HANDLE_NOTIFICATION, tlv.encode(0xA0, pending_notification))


def transfer_eim_package_response(alternative: bytes) -> bytes:
    """TransferEimPackageResponse ``BF4E { BF51 | 30 ePRAndNotifications | BF52 | 05 00 | 02 error }``."""
    return tlv.encode(TAG_TRANSFER_EIM_PACKAGE, alternative)


EIM_PACKAGE_RECEIVED = b"\x05\x00"


def transfer_error(code: int) -> bytes:
    return enc_int(0x02, code)


def initiate_authentication_request(
    euicc_challenge: bytes,
    smdp_address: str | None,
    euicc_info1: bytes | None,
    eim_transaction_id: bytes | None,
) -> bytes:
    body = tlv.encode(0x81, euicc_challenge)
    if smdp_address is not None:
        body += tlv.encode(0x83, smdp_address.encode())
    if euicc_info1 is not None:
        body += euicc_info1
    if eim_transaction_id:
        body += tlv.encode(0x82, eim_transaction_id)
    return tlv.encode(TAG_INITIATE_AUTHENTICATION, body)


def authenticate_client_request(transaction_id: bytes, authenticate_server_response: bytes) -> bytes:
    return tlv.encode(TAG_AUTHENTICATE_CLIENT, tlv.encode(0x80, transaction_id) + authenticate_server_response)


def get_bound_profile_package_request(transaction_id: bytes, prepare_download_response: bytes) -> bytes:
    return tlv.encode(TAG_GET_BOUND_PROFILE_PACKAGE, tlv.encode(0x80, transaction_id) + prepare_download_response)


def cancel_session_request(transaction_id: bytes, cancel_session_response: bytes) -> bytes:
    """CancelSessionRequestEsipa ``BF41 { 80 txid, A1 <contents of the eUICC's BF41> }`` (implicit [1])."""
    inner = tlv.parse_exact(cancel_session_response, what="CancelSessionResponse")
    return tlv.encode(TAG_CANCEL_SESSION, tlv.encode(0x80, transaction_id) + tlv.encode(0xA1, inner.value))


# ------------------------------------------------------------------ eIM packages (what arrives)
@dataclass(frozen=True)
class Psmo:
    """One PSMO or eCO of a package: ``kind`` (enable, disable, ..., addEim, listEim) and its fields."""

    kind: str
    iccid: str | None = None
    rollback_flag: bool = False


PSMO_TAGS = {
    0xA3: "enable",
    0xA4: "disable",
    0xA5: "delete",
    0xBF2D: "listProfileInfo",
    0xA6: "getRAT",
    0xA7: "configureImmediateEnable",
    0xA8: "setFallbackAttribute",
    0xA9: "unsetFallbackAttribute",
    0xBF65: "setDefaultDpAddress",
}
ECO_TAGS = {0xA8: "addEim", 0xA9: "deleteEim", 0xAA: "updateEim", 0xAB: "listEim"}


@dataclass(frozen=True)
class EuiccPackageRequest:
    raw: bytes  # the BF51 TLV exactly as received: forwarded verbatim to ES10b.LoadEuiccPackage
    eim_id: str
    eid: bytes
    counter_value: int
    eim_transaction_id: bytes | None
    operations: tuple[Psmo, ...]
    is_eco: bool

    @property
    def enable_with_rollback(self) -> bool:
        return any(p.kind == "enable" and p.rollback_flag for p in self.operations)

    @property
    def changes_profile_state(self) -> bool:
        return any(p.kind in ("enable", "disable") for p in self.operations)


@dataclass(frozen=True)
class IpaEuiccDataRequest:
    raw: bytes
    tag_list: tuple[int, ...]
    euicc_ci_pkid: bytes | None
    search_notification_seq: int | None
    search_notification_event: set[int] | None
    search_epr_seq: int | None
    eim_transaction_id: bytes | None


@dataclass(frozen=True)
class ProfileDownloadTriggerRequest:
    raw: bytes
    activation_code: str | None
    contact_default_smdp: bool
    contact_smds: bool
    smds_address: str | None
    eim_transaction_id: bytes | None


@dataclass(frozen=True)
class EimAcknowledgements:
    raw: bytes
    seq_numbers: tuple[int, ...]


@dataclass(frozen=True)
class NoPackage:
    """GetEimPackageResponse eimPackageError (noEimPackageAvailable(1) is the normal "nothing to do")."""

    code: int


EimPackage = EuiccPackageRequest | IpaEuiccDataRequest | ProfileDownloadTriggerRequest | EimAcknowledgements | NoPackage


def parse_tag_list(value: bytes) -> tuple[int, ...]:
    """The tags listed in a tagList (concatenated tag fields, no lengths)."""
    return tlv.parse_tag_list(value)


def parse_euicc_package_request(t: tlv.Tlv) -> EuiccPackageRequest:
    what = "EuiccPackageRequest"
    kids = child_map(t, what)
    signed = kids.get(0x30)
    if signed is None or 0x5F37 not in kids:
        raise DecodeError(what, "needs euiccPackageSigned (30) and eimSignature (5F37)")
    f = child_map(signed, what)
    for tag, name in ((0x80, "eimId"), (TAG_EID, "eidValue"), (0x81, "counterValue")):
        if tag not in f:
            raise DecodeError(what, f"missing {name} ({tag:X})")
    eid = f[TAG_EID].value
    if len(eid) != 16:
        raise DecodeError(what, f"eidValue of {len(eid)} bytes, need 16")
    ops: list[Psmo] = []
    is_eco = False
    if 0xA0 in f:
        for p in tlv.children(f[0xA0], what=what):
            kind = PSMO_TAGS.get(p.tag)
            if kind is None:
                raise UnknownPackage(p.tag, "PSMO")
            iccid = None
            rollback = False
            if p.tag in (0xA3, 0xA4, 0xA5, 0xA8):
                pf = child_map(p, what)
                if TAG_EID not in pf:
                    raise DecodeError(what, f"{kind} without iccid")
                iccid = iccid_to_str(pf[TAG_EID].value)
                rollback = p.tag == 0xA3 and 0x05 in pf
            ops.append(Psmo(kind, iccid, rollback))
    elif 0xA1 in f:
        is_eco = True
        for p in tlv.children(f[0xA1], what=what):
            kind = ECO_TAGS.get(p.tag)
            if kind is None:
                raise UnknownPackage(p.tag, "eCO")
            ops.append(Psmo(kind))
    else:
        raise DecodeError(what, "no psmoList (A0) or ecoList (A1)")
    return EuiccPackageRequest(
        raw=t.raw,
        eim_id=dec_utf8(f[0x80].value, what),
        eid=eid,
        counter_value=dec_int(f[0x81].value, what),
        eim_transaction_id=f[0x82].value if 0x82 in f else None,
        operations=tuple(ops),
        is_eco=is_eco,
    )


def parse_ipa_euicc_data_request(t: tlv.Tlv) -> IpaEuiccDataRequest:
    what = "IpaEuiccDataRequest"
    f = child_map(t, what)
    if 0x5C not in f:
        raise DecodeError(what, "missing tagList (5C)")
    sn_seq = sn_event = se_seq = None
    if 0xA1 in f:
        c = tlv.children(f[0xA1], what=what)
        if len(c) != 1 or c[0].tag not in (0x80, 0x81):
            raise DecodeError(what, "searchCriteriaNotification needs one of 80/81")
        if c[0].tag == 0x80:
            sn_seq = dec_int(c[0].value, what)
        else:
            sn_event = dec_bitstring(c[0].value, what)
    if 0xA2 in f:
        c = tlv.children(f[0xA2], what=what)
        if len(c) != 1 or c[0].tag != 0x80:
            raise DecodeError(what, "searchCriteriaEuiccPackageResult needs 80")
        se_seq = dec_int(c[0].value, what)
    return IpaEuiccDataRequest(
        raw=t.raw,
        tag_list=parse_tag_list(f[0x5C].value),
        euicc_ci_pkid=f[0x04].value if 0x04 in f else None,
        search_notification_seq=sn_seq,
        search_notification_event=sn_event,
        search_epr_seq=se_seq,
        eim_transaction_id=f[0x83].value if 0x83 in f else None,
    )


def parse_profile_download_trigger(t: tlv.Tlv) -> ProfileDownloadTriggerRequest:
    what = "ProfileDownloadTriggerRequest"
    f = child_map(t, what)
    ac = None
    default = smds = False
    smds_address = None
    if 0xA0 in f:
        c = tlv.children(f[0xA0], what=what)
        if len(c) != 1:
            raise DecodeError(what, "profileDownloadData needs exactly one alternative")
        alt = c[0]
        if alt.tag == 0x80:
            ac = dec_utf8(alt.value, what)
            if len(alt.value) > 255:
                raise DecodeError(what, "activationCode longer than 255")
        elif alt.tag == 0x81:
            default = True
        elif alt.tag == 0xA2:
            smds = True
            sc = child_map(alt, what)
            if 0x0C in sc:
                smds_address = dec_utf8(sc[0x0C].value, what)
        else:
            raise UnknownPackage(alt.tag, "profileDownloadData")
    return ProfileDownloadTriggerRequest(
        raw=t.raw,
        activation_code=ac,
        contact_default_smdp=default,
        contact_smds=smds,
        smds_address=smds_address,
        eim_transaction_id=f[0x82].value if 0x82 in f else None,
    )


def parse_eim_acknowledgements(t: tlv.Tlv) -> EimAcknowledgements:
    seqs = []
    for c in tlv.children(t, what="EimAcknowledgements"):
        if c.tag != 0x80:
            raise DecodeError("EimAcknowledgements", f"unexpected tag {c.tag:X}")
        seqs.append(dec_int(c.value, "EimAcknowledgements"))
    return EimAcknowledgements(t.raw, tuple(seqs))


def parse_package_alternative(t: tlv.Tlv, where: str) -> EimPackage:
    if t.tag == TAG_EUICC_PACKAGE:
        return parse_euicc_package_request(t)
    if t.tag == TAG_IPA_EUICC_DATA:
        return parse_ipa_euicc_data_request(t)
    if t.tag == TAG_PROFILE_DOWNLOAD_TRIGGER:
        return parse_profile_download_trigger(t)
    if t.tag == TAG_EIM_ACKNOWLEDGEMENTS and where == "TransferEimPackageRequest":
        return parse_eim_acknowledgements(t)
    if t.tag == 0x02 and where == "GetEimPackageResponse":
        return NoPackage(dec_int(t.value, where))
    raise UnknownPackage(t.tag, where)


def package_transaction_id(data: bytes) -> bytes | None:
    """Best effort: the eimTransactionId of a (possibly malformed) package, for an error report."""
    try:
        outer = tlv.parse_exact(data)
        inner = tlv.children(outer)[0]
        if inner.tag == TAG_EUICC_PACKAGE:
            found = tlv.find(inner, 0x30, 0x82)
        elif inner.tag == TAG_IPA_EUICC_DATA:
            found = tlv.find(inner, 0x83)
        else:
            found = tlv.find(inner, 0x82)
        return found.value if found is not None and 1 <= len(found.value) <= 16 else None
    except (DecodeError, IndexError):
        return None


def parse_get_eim_package_response(data: bytes) -> EimPackage:
    """GetEimPackageResponse ``BF4F { BF51 | BF52 | BF54 | 02 eimPackageError }``."""
    outer = expect(data, TAG_GET_EIM_PACKAGE, "GetEimPackageResponse")
    kids = tlv.children(outer, what="GetEimPackageResponse")
    if len(kids) != 1:
        raise DecodeError("GetEimPackageResponse", f"{len(kids)} alternatives, need exactly 1")
    return parse_package_alternative(kids[0], "GetEimPackageResponse")


def parse_transfer_eim_package_request(data: bytes) -> EimPackage:
    """TransferEimPackageRequest ``BF4E { BF51 | BF52 | BF53 | BF54 }`` (pushed by the eIM)."""
    outer = expect(data, TAG_TRANSFER_EIM_PACKAGE, "TransferEimPackageRequest")
    kids = tlv.children(outer, what="TransferEimPackageRequest")
    if len(kids) != 1:
        raise DecodeError("TransferEimPackageRequest", f"{len(kids)} alternatives, need exactly 1")
    return parse_package_alternative(kids[0], "TransferEimPackageRequest")


# ------------------------------------------------------------------ eIM answers to the IPA's messages
@dataclass(frozen=True)
class ProvideResultAnswer:
    """ProvideEimPackageResultResponse: ``acknowledgements`` (BF53), empty (30 00), or ``error`` (02)."""

    acknowledgements: tuple[int, ...] = ()
    error: int | None = None


def parse_provide_eim_package_result_response(data: bytes | None) -> ProvideResultAnswer:
    if not data:
        return ProvideResultAnswer()
    outer = expect(data, TAG_PROVIDE_EIM_PACKAGE_RESULT, "ProvideEimPackageResultResponse")
    kids = tlv.children(outer, what="ProvideEimPackageResultResponse")
    if len(kids) != 1:
        raise DecodeError("ProvideEimPackageResultResponse", f"{len(kids)} alternatives, need exactly 1")
    k = kids[0]
    if k.tag == TAG_EIM_ACKNOWLEDGEMENTS:
        return ProvideResultAnswer(parse_eim_acknowledgements(k).seq_numbers)
    if k.tag == 0x30:
        return ProvideResultAnswer()
    if k.tag == 0x02:
        return ProvideResultAnswer(error=dec_int(k.value, "ProvideEimPackageResultResponse"))
    raise DecodeError("ProvideEimPackageResultResponse", f"unexpected alternative {k.tag:X}")


@dataclass(frozen=True)
class InitiateAuthenticationOk:
    transaction_id: bytes
    server_signed1: bytes  # 30 TLV
    server_signature1: bytes  # 64-byte value
    euicc_ci_pkid_to_be_used: bytes  # key identifier value
    server_certificate: bytes  # 30 TLV
    matching_id: str | None = None
    ctx_params1: bytes | None = None  # the CtxParams1 TLV (A0 ...) when the eIM generated it


@dataclass(frozen=True)
class EsipaErrorAnswer:
    """An error alternative of an ESipa response: the INTEGER code."""

    code: int


def _one_alternative(data: bytes, tag: int, what: str) -> tlv.Tlv:
    outer = expect(data, tag, what)
    kids = tlv.children(outer, what=what)
    if len(kids) != 1:
        raise DecodeError(what, f"{len(kids)} alternatives, need exactly 1")
    return kids[0]


def parse_initiate_authentication_response(data: bytes) -> InitiateAuthenticationOk | EsipaErrorAnswer:
    what = "InitiateAuthenticationResponseEsipa"
    alt = _one_alternative(data, TAG_INITIATE_AUTHENTICATION, what)
    if alt.tag == 0x81:
        return EsipaErrorAnswer(dec_int(alt.value, what))
    if alt.tag != 0xA0:
        raise DecodeError(what, f"unexpected alternative {alt.tag:X}")
    kids = tlv.children(alt, what=what)
    f: dict[int, tlv.Tlv] = {}
    certs = []
    for c in kids:
        if c.tag == 0x30:
            certs.append(c)
        else:
            f.setdefault(c.tag, c)
    if len(certs) != 2 or 0x5F37 not in f or 0x04 not in f:
        raise DecodeError(what, "needs serverSigned1, serverSignature1, euiccCiPKIdentifierToBeUsed, serverCertificate")
    signed1 = certs[0]
    txid = f[0x80].value if 0x80 in f else None
    if txid is None:
        found = tlv.find(signed1, 0x80)
        if found is None:
            raise DecodeError(what, "no transactionId (80) and none in serverSigned1")
        txid = found.value
    ctx = None
    if 0xA2 in f:
        inner = tlv.children(f[0xA2], what=what)
        if len(inner) != 1:
            raise DecodeError(what, "ctxParams1 needs exactly one alternative")
        ctx = inner[0].raw
    return InitiateAuthenticationOk(
        transaction_id=txid,
        server_signed1=signed1.raw,
        server_signature1=strip_tlv_envelope(f[0x5F37].value, 0x5F37, 64),
        euicc_ci_pkid_to_be_used=strip_tlv_envelope(f[0x04].value, 0x04, 20),
        server_certificate=certs[1].raw,
        matching_id=dec_utf8(f[0x0C].value, what) if 0x0C in f else None,
        ctx_params1=ctx,
    )


@dataclass(frozen=True)
class AuthenticateClientOk:
    transaction_id: bytes | None
    profile_metadata: bytes | None  # BF25 TLV
    smdp_signed2: bytes  # 30 TLV
    smdp_signature2: bytes  # 64-byte value
    smdp_certificate: bytes  # 30 TLV
    hash_cc: bytes | None = None


@dataclass(frozen=True)
class AuthenticateClientOkDs:
    transaction_id: bytes
    profile_download_trigger: bytes | None


def parse_authenticate_client_response(data: bytes) -> AuthenticateClientOk | AuthenticateClientOkDs | EsipaErrorAnswer:
    what = "AuthenticateClientResponseEsipa"
    alt = _one_alternative(data, TAG_AUTHENTICATE_CLIENT, what)
    if alt.tag == 0x82:
        return EsipaErrorAnswer(dec_int(alt.value, what))
    if alt.tag == 0xA1:
        f = child_map(alt, what)
        if 0x80 not in f:
            raise DecodeError(what, "authenticateClientOkDSEsipa without transactionId")
        return AuthenticateClientOkDs(f[0x80].value, f[0xBF54].raw if 0xBF54 in f else None)
    if alt.tag != 0xA0:
        raise DecodeError(what, f"unexpected alternative {alt.tag:X}")
    f = {}
    seqs = []
    for c in tlv.children(alt, what=what):
        if c.tag == 0x30:
            seqs.append(c)
        else:
            f.setdefault(c.tag, c)
    if len(seqs) != 2 or 0x5F37 not in f:
        raise DecodeError(what, "needs smdpSigned2, smdpSignature2, smdpCertificate")
    return AuthenticateClientOk(
        transaction_id=f[0x80].value if 0x80 in f else None,
        profile_metadata=f[0xBF25].raw if 0xBF25 in f else None,
        smdp_signed2=seqs[0].raw,
        smdp_signature2=strip_tlv_envelope(f[0x5F37].value, 0x5F37, 64),
        smdp_certificate=seqs[1].raw,
        hash_cc=f[0x04].value if 0x04 in f else None,
    )


def parse_get_bound_profile_package_response(data: bytes) -> bytes | EsipaErrorAnswer:
    """The BF36 BoundProfilePackage TLV, or the error code."""
    what = "GetBoundProfilePackageResponseEsipa"
    alt = _one_alternative(data, TAG_GET_BOUND_PROFILE_PACKAGE, what)
    if alt.tag == 0x81:
        return EsipaErrorAnswer(dec_int(alt.value, what))
    if alt.tag != 0xA0:
        raise DecodeError(what, f"unexpected alternative {alt.tag:X}")
    f = child_map(alt, what)
    if 0xBF36 not in f:
        raise DecodeError(what, "no boundProfilePackage (BF36)")
    return f[0xBF36].raw


def parse_cancel_session_response(data: bytes) -> EsipaErrorAnswer | None:
    """None for cancelSessionOk, else the error code."""
    what = "CancelSessionResponseEsipa"
    alt = _one_alternative(data, TAG_CANCEL_SESSION, what)
    if alt.tag == 0xA0:
        return None
    if alt.tag == 0x81:
        return EsipaErrorAnswer(dec_int(alt.value, what))
    raise DecodeError(what, f"unexpected alternative {alt.tag:X}")


# ------------------------------------------------------------------ eUICC results the IPA reads
@dataclass(frozen=True)
class EuiccResultEntry:
    tag: int
    name: str
    code: int | None  # INTEGER results; None for structured ones (listProfileInfo, getRAT, listEim, addEim token)
    raw: bytes


RESULT_TAGS = {
    0x83: "enableResult",
    0x84: "disableResult",
    0x85: "deleteResult",
    0xBF2D: "listProfileInfoResult",
    0xA6: "getRATResult",
    0x87: "configureImmediateEnableResult",
    0xA8: "addEimResult",
    0x89: "deleteEimResult",
    0x8A: "updateEimResult",
    0xAB: "listEimResult",
    0x8C: "rollbackResult",
    0x8D: "setFallbackAttributeResult",
    0x8E: "unsetFallbackAttributeResult",
    0x02: "processingTerminated",
    0xBF65: "setDefaultDpAddressResult",
}


@dataclass(frozen=True)
class EuiccPackageResult:
    """ES10b.LoadEuiccPackage / ProfileRollback result (BF51), with the raw TLV kept for forwarding."""

    raw: bytes
    kind: str  # "signed" | "errorSigned" | "errorUnsigned"
    eim_id: str
    counter_value: int | None = None
    eim_transaction_id: bytes | None = None
    seq_number: int | None = None
    results: tuple[EuiccResultEntry, ...] = ()
    error_code: int | None = None

    @property
    def ok_results(self) -> list[str]:
        return [r.name for r in self.results if r.code == 0]

    @property
    def profile_changed(self) -> bool:
        return any(r.code == 0 and r.name in ("enableResult", "disableResult", "rollbackResult") for r in self.results)


def parse_euicc_package_result(data: bytes | tlv.Tlv) -> EuiccPackageResult:
    what = "EuiccPackageResult"
    t = data if isinstance(data, tlv.Tlv) else expect(data, TAG_EUICC_PACKAGE, what)
    kids = tlv.children(t, what=what)
    if len(kids) != 1:
        raise DecodeError(what, f"{len(kids)} alternatives, need exactly 1")
    alt = kids[0]
    if alt.tag == 0xA2:
        f = child_map(alt, what)
        if 0x80 not in f:
            raise DecodeError(what, "euiccPackageErrorUnsigned without eimId")
        return EuiccPackageResult(
            t.raw,
            "errorUnsigned",
            dec_utf8(f[0x80].value, what),
            eim_transaction_id=f[0x82].value if 0x82 in f else None,
        )
    if alt.tag not in (0xA0, 0xA1):
        raise DecodeError(what, f"unexpected alternative {alt.tag:X}")
    signed = tlv.find(alt, 0x30)
    if signed is None:
        raise DecodeError(what, "signed data (30) missing")
    f = child_map(signed, what)
    if 0x80 not in f or 0x81 not in f:
        raise DecodeError(what, "eimId/counterValue missing")
    eim_id = dec_utf8(f[0x80].value, what)
    counter = dec_int(f[0x81].value, what)
    txid = f[0x82].value if 0x82 in f else None
    if alt.tag == 0xA1:
        if 0x02 not in f:
            raise DecodeError(what, "euiccPackageErrorCode missing")
        return EuiccPackageResult(t.raw, "errorSigned", eim_id, counter, txid, error_code=dec_int(f[0x02].value, what))
    if 0x83 not in f or 0x30 not in f:
        raise DecodeError(what, "seqNumber/euiccResult missing")
    entries = []
    for r in tlv.children(f[0x30], what=what):
        name = RESULT_TAGS.get(r.tag, f"unknown{r.tag:X}")
        code = dec_int(r.value, what) if not r.constructed and r.value else None
        entries.append(EuiccResultEntry(r.tag, name, code, r.raw))
    return EuiccPackageResult(t.raw, "signed", eim_id, counter, txid, dec_int(f[0x83].value, what), tuple(entries))


@dataclass(frozen=True)
class PendingNotification:
    """One pending notification as returned by RetrieveNotificationsList: raw TLV + its metadata."""

    raw: bytes  # BF37 PIR or 30 otherSignedNotification, verbatim
    seq_number: int
    events: frozenset[str] = field(default_factory=frozenset)
    address: str | None = None
    iccid: str | None = None

    @property
    def is_pir(self) -> bool:
        return self.raw[:2] == b"\xbf\x37"


def parse_notification_metadata(t: tlv.Tlv) -> tuple[int, frozenset[str], str | None, str | None]:
    from ipa.codes import NOTIFICATION_EVENTS

    what = "NotificationMetadata"
    f = child_map(t, what)
    if 0x80 not in f:
        raise DecodeError(what, "seqNumber missing")
    events: set[str] = set()
    if 0x81 in f:
        events = {
            NOTIFICATION_EVENTS[b] if b < len(NOTIFICATION_EVENTS) else f"bit{b}" for b in dec_bitstring(f[0x81].value)
        }
    addr = dec_utf8(f[0x0C].value, what) if 0x0C in f else None
    iccid = iccid_to_str(f[TAG_EID].value) if TAG_EID in f else None
    return dec_int(f[0x80].value, what), frozenset(events), addr, iccid


def parse_pending_notification(t: tlv.Tlv) -> PendingNotification:
    what = "PendingNotification"
    if t.tag == TAG_PIR:
        meta = tlv.find(t, 0xBF27, 0xBF2F)
    elif t.tag == 0x30:
        meta = tlv.find(t, 0xBF2F)
    else:
        raise DecodeError(what, f"unexpected notification tag {t.tag:X}")
    if meta is None:
        raise DecodeError(what, "notificationMetadata (BF2F) missing")
    seq, events, addr, iccid = parse_notification_metadata(meta)
    return PendingNotification(t.raw, seq, events, addr, iccid)
