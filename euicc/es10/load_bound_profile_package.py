"""ES10b.LoadBoundProfilePackage - SGP.22 v2.5 §5.7.6 (with ES8+ §5.5 and BSP §2.6.4).

The BPP ``BF36 {BF23 ISC, A0 {87..}, A1 {88..}, [A2 {87}], A3 {86..}}`` arrives as separate ES10 commands (each
its own STORE DATA chain): ``BF36 L`` + the whole ``BF23``; the whole ``A0``; the ``A1 L`` header; each ``88``;
the whole ``A2`` if present; the ``A3 L`` header; each ``86``. Intermediate commands are answered with no
data; the last one with the signed ProfileInstallationResult (``BF37``).

InitialiseSecureChannel (bppCommandId 0): transactionId of the session (``invalidTransactionId``),
remoteOpId installBoundProfilePackage (``unsupportedRemoteOperationType``), CRT keyType 88 / keyLen 10
(``unsupportedCrtValues``), smdpSign with CERT.DPpb over the received ISC content before ``5F37`` || ``5F49
euiccOtpk`` (``invalidSignature``); then ECKA-DH with otSK.EUICC and the BSP session keys (``rsp.bsp``).
ConfigureISDP (1), StoreMetadata (2), ReplaceSessionKeys (4) and LoadProfileElements (5) segments are
MAC-checked and decrypted in order: a wrong MAC or padding is ``scp03tSecurityError(8)``, a malformed segment or a
segment out of order ``scp03tStructureError(7)``, a malformed decrypted command ``incorrectInputValues(1)``.
StoreMetadata also refuses an ICCID already on the card (``iccidAlreadyExists(9)``), an unknown profile class
(``unsupportedProfileClass(6)``) and PPRs, which this card's empty RAT does not allow (``pprNotAllowed(15)``).
The profile package is checked by :mod:`euicc.profile_package` (TCA SAIP PE structure): a malformed package is
``peProcessingError(12)``, a ProfileHeader ``iccid`` that names another ICCID than StoreMetadata (compared as
digits: SAIP writes it plain, StoreMetadata as EF.ICCID) ``dataMismatch(13)``; PEs of unknown types that are not
mandated are skipped.

Installation is atomic: nothing reaches the persistent state until the last ``86`` segment succeeded; then the
profile (disabled), its PIR (stored as a pending notification) and any install notifications are written in one
state update. On any error the session ends and an error PIR is returned and kept as a notification; no
profile is left behind.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from euicc import der, notifications, profile_package
from euicc.context import SW_CONDITIONS, Context, Es10Reject
from euicc.state import CLASS_NAMES, CLASS_OPERATIONAL, EVENT_INSTALL, LastDownload, Profile
from rsp import bsp, crypto, tlv
from rsp.errors import DecodeError, RspError

log = logging.getLogger("euicc.lbpp")

STEP = "LoadBoundProfilePackage"

# BppCommandId
INITIALISE_SECURE_CHANNEL = 0
CONFIGURE_ISDP = 1
STORE_METADATA = 2
REPLACE_SESSION_KEYS = 4
LOAD_PROFILE_ELEMENTS = 5

# ErrorReason
INCORRECT_INPUT_VALUES = 1
INVALID_SIGNATURE = 2
INVALID_TRANSACTION_ID = 3
UNSUPPORTED_CRT_VALUES = 4
UNSUPPORTED_REMOTE_OPERATION_TYPE = 5
UNSUPPORTED_PROFILE_CLASS = 6
SCP03T_STRUCTURE_ERROR = 7
SCP03T_SECURITY_ERROR = 8
ICCID_ALREADY_EXISTS = 9
INSUFFICIENT_MEMORY = 10
PE_PROCESSING_ERROR = 12
DATA_MISMATCH = 13
PPR_NOT_ALLOWED = 15
UNKNOWN = 127

MAX_PROFILE_SIZE = 512 * 1024
SIMA_OK = bytes.fromhex("3007A00530038001" + "00")  # EUICCResponse { peStatus { {status ok} } }


class BppFailure(Exception):
    def __init__(self, command_id: int, reason: int, message: str) -> None:
        self.command_id = command_id
        self.reason = reason
        super().__init__(message)


@dataclass
class BppLoader:
    """Progress through one Bound Profile Package."""

    transaction_id: bytes
    server_address: str
    smdp_oid: str
    unprotector: bsp.BspUnprotector
    bpp_remaining: int
    stage: str = "A0"  # A0 -> A1 -> 88 -> A2|A3 -> 86 -> done
    container_remaining: int = 0
    dp_proprietary_data: bytes | None = None
    metadata_buf: bytearray = field(default_factory=bytearray)
    metadata: tlv.Tlv | None = None
    profile: Profile | None = None
    elements: bytearray = field(default_factory=bytearray)


def _header(data: bytes, offset: int = 0) -> tuple[int, int, int]:
    """Tag, header length and declared length at ``offset`` (the value may run past the data)."""
    n = len(data)
    pos = offset
    if pos >= n:
        raise DecodeError("BPP segment", "empty", pos)
    tag = data[pos]
    pos += 1
    if tag & 0x1F == 0x1F:
        while True:
            if pos >= n or pos - offset > 3:
                raise DecodeError("BPP segment", "tag truncated", offset)
            b = data[pos]
            tag = (tag << 8) | b
            pos += 1
            if not b & 0x80:
                break
    if pos >= n:
        raise DecodeError("BPP segment", "length missing", pos)
    lb = data[pos]
    pos += 1
    if lb & 0x80:
        cnt = lb & 0x7F
        if cnt == 0 or cnt > 3 or pos + cnt > n:
            raise DecodeError("BPP segment", "bad length field", pos - 1)
        length = int.from_bytes(data[pos : pos + cnt], "big")
        if tlv.encode_length(length) != data[pos - 1 : pos + cnt]:
            raise DecodeError("BPP segment", "length not minimal", pos - 1)
        pos += cnt
    else:
        length = lb
    return tag, pos - offset, length


# ---------------------------------------------------------------------------------------------------------------
# results


def _pir(ctx: Context, loader_txid: bytes, address: str, smdp_oid: str, iccid: bytes | None, final: bytes) -> bytes:
    seq = ctx.state.take_seq()
    meta = notifications.metadata(seq, EVENT_INSTALL, address, iccid)
    data = tlv.encode(
        0xBF27,
        tlv.encode(0x80, loader_txid) + meta + tlv.encode(0x06, der.oid_bytes(smdp_oid)) + tlv.encode(0xA2, final),
    )
    pir = tlv.encode(0xBF37, data + tlv.encode(0x5F37, ctx.identity.sign(data)))
    notifications.store_pir(ctx, seq, pir, address, iccid)
    return pir


def _fail(ctx: Context, loader: BppLoader, failure: BppFailure) -> bytes:
    log.info("BPP refused at command %d, reason %d: %s", failure.command_id, failure.reason, failure)
    iccid = loader.profile.iccid if loader.profile is not None else None
    final = tlv.encode(0xA1, der.integer(0x80, failure.command_id) + der.integer(0x81, failure.reason))
    ctx.session.clear()
    return _pir(ctx, loader.transaction_id, loader.server_address, loader.smdp_oid, iccid, final)


# ---------------------------------------------------------------------------------------------------------------
# segments


def handle_segment(ctx: Context, command: bytes) -> bytes:
    try:
        tag, hl, length = _header(command)
    except DecodeError as exc:
        loader = ctx.session.bpp
        if isinstance(loader, BppLoader):
            command_id = _COMMAND_OF_STAGE.get(loader.stage, LOAD_PROFILE_ELEMENTS)
            return _fail(ctx, loader, BppFailure(command_id, SCP03T_STRUCTURE_ERROR, str(exc)))
        raise Es10Reject(SW_CONDITIONS, STEP, str(exc)) from None
    if tag == 0xBF36:
        return _start(ctx, command, hl, length)
    loader = ctx.session.bpp
    if not isinstance(loader, BppLoader):
        raise Es10Reject(SW_CONDITIONS, STEP, f"segment {tag:X} without a BPP in progress")
    try:
        return _continue(ctx, loader, command, tag, hl, length)
    except BppFailure as failure:
        return _fail(ctx, loader, failure)


def _start(ctx: Context, command: bytes, hl: int, bpp_length: int) -> bytes:
    prepared, auth = ctx.session.prepared, ctx.session.auth
    if prepared is None or auth is None:
        raise Es10Reject(SW_CONDITIONS, STEP, "BPP without a PrepareDownload session")
    try:
        isc = tlv.parse_exact(command[hl:], what="InitialiseSecureChannelRequest")
        if isc.tag != 0xBF23:
            raise DecodeError("InitialiseSecureChannelRequest", f"expected BF23, got {isc.tag:X}")
        parts = tlv.children(isc, what="InitialiseSecureChannelRequest")
    except DecodeError as exc:
        loader = BppLoader(auth.transaction_id, auth.server_address, prepared.smdp_oid or "", None, 0)  # type: ignore[arg-type]
        return _fail(ctx, loader, BppFailure(INITIALISE_SECURE_CHANNEL, SCP03T_STRUCTURE_ERROR, str(exc)))
    base = BppLoader(auth.transaction_id, auth.server_address, prepared.smdp_oid or "", None, 0)  # type: ignore[arg-type]
    try:
        keys = _initialise_secure_channel(ctx, prepared, auth.transaction_id, parts)
    except BppFailure as failure:
        return _fail(ctx, base, failure)
    remaining = bpp_length - len(isc.raw)
    if remaining <= 0:
        return _fail(ctx, base, BppFailure(INITIALISE_SECURE_CHANNEL, SCP03T_STRUCTURE_ERROR, "BF36 length"))
    ctx.session.bpp = BppLoader(
        transaction_id=auth.transaction_id,
        server_address=auth.server_address,
        smdp_oid=prepared.smdp_oid or "",
        unprotector=bsp.BspUnprotector(keys),
        bpp_remaining=remaining,
    )
    return b""


def _initialise_secure_channel(ctx: Context, prepared, txid: bytes, parts: list[tlv.Tlv]) -> bsp.SessionKeys:
    cid = INITIALISE_SECURE_CHANNEL
    tags = [p.tag for p in parts]
    if tags != [0x82, 0x80, 0xA6, 0x5F49, 0x5F37]:
        raise BppFailure(cid, INCORRECT_INPUT_VALUES, f"unexpected ISC fields {[f'{t:X}' for t in tags]}")
    remote_op, isc_txid, crt, smdp_otpk, smdp_sign = parts
    if isc_txid.value != txid:
        raise BppFailure(cid, INVALID_TRANSACTION_ID, "transactionId differs from the session's")
    if remote_op.value != b"\x01":
        raise BppFailure(cid, UNSUPPORTED_REMOTE_OPERATION_TYPE, "remoteOpId is not installBoundProfilePackage")
    try:
        crt_f = der.fields(crt, "controlRefTemplate")
        key_type, key_len, host_id = crt_f[0x80].value, crt_f[0x81].value, crt_f[0x84].value
    except (KeyError, DecodeError) as exc:
        raise BppFailure(cid, INCORRECT_INPUT_VALUES, f"controlRefTemplate: {exc}") from None
    if key_type != b"\x88" or key_len != b"\x10" or not 1 <= len(host_id) <= 16:
        raise BppFailure(cid, UNSUPPORTED_CRT_VALUES, "only AES-128 (keyType 88, keyLen 10) is supported")
    signed = b"".join(p.raw for p in parts[:4]) + tlv.encode(0x5F49, prepared.otpk)
    if not crypto.is_valid_signature(prepared.dppb, signed, smdp_sign.value):
        raise BppFailure(cid, INVALID_SIGNATURE, "smdpSign does not verify with CERT.DPpb")
    try:
        shared = crypto.ecdh(prepared.otsk, smdp_otpk.value)
        return bsp.derive_session_keys(shared, host_id, ctx.state.eid)
    except RspError as exc:
        raise BppFailure(cid, INCORRECT_INPUT_VALUES, f"key agreement: {exc}") from None


def _unprotect(loader: BppLoader, segment: bytes, tag: int, command_id: int) -> bytes:
    try:
        return loader.unprotector.unprotect(segment, expected_tag=tag)
    except bsp.BspError as exc:
        reason = SCP03T_STRUCTURE_ERROR if exc.kind == "structure" else SCP03T_SECURITY_ERROR
        raise BppFailure(command_id, reason, str(exc)) from None


def _whole(command: bytes, hl: int, length: int, command_id: int) -> None:
    if hl + length != len(command):
        raise BppFailure(command_id, SCP03T_STRUCTURE_ERROR, "segment is not exactly one TLV")


def _continue(ctx: Context, loader: BppLoader, command: bytes, tag: int, hl: int, length: int) -> bytes:
    stage = loader.stage
    loader.bpp_remaining -= len(command)
    if loader.bpp_remaining < 0:
        raise BppFailure(
            _COMMAND_OF_STAGE.get(stage, LOAD_PROFILE_ELEMENTS), SCP03T_STRUCTURE_ERROR, "segments overrun BF36"
        )
    if stage == "A0" and tag == 0xA0:
        _whole(command, hl, length, CONFIGURE_ISDP)
        _configure_isdp(loader, command, hl)
        loader.stage = "A1"
    elif stage == "A1" and tag == 0xA1:
        if len(command) != hl or length == 0:
            raise BppFailure(STORE_METADATA, SCP03T_STRUCTURE_ERROR, "A1 must come as its header alone")
        loader.container_remaining = length
        loader.stage = "88"
    elif stage == "88" and tag == 0x88:
        _whole(command, hl, length, STORE_METADATA)
        loader.container_remaining -= len(command)
        if loader.container_remaining < 0:
            raise BppFailure(STORE_METADATA, SCP03T_STRUCTURE_ERROR, "88 segments overrun A1")
        loader.metadata_buf += _unprotect(loader, command, 0x88, STORE_METADATA)
        if loader.container_remaining == 0:
            _store_metadata(ctx, loader)
            loader.stage = "A2|A3"
    elif stage == "A2|A3" and tag == 0xA2:
        _whole(command, hl, length, REPLACE_SESSION_KEYS)
        _replace_session_keys(loader, command, hl)
        loader.stage = "A3"
    elif stage in ("A2|A3", "A3") and tag == 0xA3:
        if len(command) != hl or length == 0:
            raise BppFailure(LOAD_PROFILE_ELEMENTS, SCP03T_STRUCTURE_ERROR, "A3 must come as its header alone")
        loader.container_remaining = length
        loader.stage = "86"
    elif stage == "86" and tag == 0x86:
        _whole(command, hl, length, LOAD_PROFILE_ELEMENTS)
        loader.container_remaining -= len(command)
        if loader.container_remaining < 0:
            raise BppFailure(LOAD_PROFILE_ELEMENTS, SCP03T_STRUCTURE_ERROR, "86 segments overrun A3")
        loader.elements += _unprotect(loader, command, 0x86, LOAD_PROFILE_ELEMENTS)
        if len(loader.elements) > MAX_PROFILE_SIZE:
            raise BppFailure(LOAD_PROFILE_ELEMENTS, INSUFFICIENT_MEMORY, "profile larger than the card's memory")
        if loader.container_remaining == 0:
            if loader.bpp_remaining != 0:
                raise BppFailure(LOAD_PROFILE_ELEMENTS, SCP03T_STRUCTURE_ERROR, "BF36 length does not match")
            return _install(ctx, loader)
    else:
        raise BppFailure(
            _COMMAND_OF_STAGE.get(stage, LOAD_PROFILE_ELEMENTS),
            SCP03T_STRUCTURE_ERROR,
            f"segment {tag:X} out of order (expecting {stage})",
        )
    return b""


_COMMAND_OF_STAGE = {
    "A0": CONFIGURE_ISDP,
    "A1": STORE_METADATA,
    "88": STORE_METADATA,
    "A2|A3": REPLACE_SESSION_KEYS,
    "A3": LOAD_PROFILE_ELEMENTS,
    "86": LOAD_PROFILE_ELEMENTS,
}


def _sequence_of(command: bytes, hl: int, tag: int, command_id: int) -> list[tlv.Tlv]:
    try:
        items = list(tlv.iter_tlvs(command[hl:], what="BPP sequence"))
    except DecodeError as exc:
        raise BppFailure(command_id, SCP03T_STRUCTURE_ERROR, str(exc)) from None
    if not items or any(i.tag != tag for i in items):
        raise BppFailure(command_id, SCP03T_STRUCTURE_ERROR, f"sequence must hold {tag:X} segments only")
    return items


def _configure_isdp(loader: BppLoader, command: bytes, hl: int) -> None:
    plain = b"".join(
        _unprotect(loader, s.raw, 0x87, CONFIGURE_ISDP) for s in _sequence_of(command, hl, 0x87, CONFIGURE_ISDP)
    )
    try:
        req = tlv.parse_exact(plain, what="ConfigureISDPRequest")
        if req.tag != 0xBF24:
            raise DecodeError("ConfigureISDPRequest", f"tag {req.tag:X}")
        f = der.fields(req, "ConfigureISDPRequest")
    except DecodeError as exc:
        raise BppFailure(CONFIGURE_ISDP, INCORRECT_INPUT_VALUES, str(exc)) from None
    if 0xB8 in f:
        loader.dp_proprietary_data = f[0xB8].value


def _replace_session_keys(loader: BppLoader, command: bytes, hl: int) -> None:
    plain = b"".join(
        _unprotect(loader, s.raw, 0x87, REPLACE_SESSION_KEYS)
        for s in _sequence_of(command, hl, 0x87, REPLACE_SESSION_KEYS)
    )
    try:
        keys = bsp.decode_replace_session_keys(plain)
    except bsp.BspError as exc:
        raise BppFailure(REPLACE_SESSION_KEYS, INCORRECT_INPUT_VALUES, str(exc)) from None
    loader.unprotector.replace_session_keys(keys)


def _bool_field(f: dict[int, tlv.Tlv], tag: int) -> bool | None:
    return der.decode_bool(f[tag].value) if tag in f else None


def _store_metadata(ctx: Context, loader: BppLoader) -> None:
    cid = STORE_METADATA
    try:
        md = tlv.parse_exact(bytes(loader.metadata_buf), what="StoreMetadataRequest")
        if md.tag != 0xBF25:
            raise DecodeError("StoreMetadataRequest", f"tag {md.tag:X}")
        f = der.fields(md, "StoreMetadataRequest")
        iccid = f[0x5A].value
        if len(iccid) != 10:
            raise DecodeError("StoreMetadataRequest", "ICCID must be 10 bytes")
        spn = der.decode_utf8(f[0x91].value)
        name = der.decode_utf8(f[0x92].value)
        profile_class = der.decode_int(f[0x95].value) if 0x95 in f else CLASS_OPERATIONAL
        config = []
        if 0xB6 in f:
            for item in tlv.children(f[0xB6], what="notificationConfigurationInfo"):
                nf = der.fields(item, "NotificationConfigurationInformation")
                config.append((sorted(der.decode_bits(nf[0x80].value)), der.decode_utf8(nf[0x81].value)))
        ppr = f[0x99].value if 0x99 in f else None
        ppr_bits = der.decode_bits(ppr) if ppr is not None else set()
        profile = Profile(
            iccid=iccid,
            isdp_aid=b"",
            profile_class=profile_class,
            service_provider_name=spn,
            profile_name=name,
            icon_type=der.decode_int(f[0x93].value) if 0x93 in f else None,
            icon=f[0x94].value if 0x94 in f else None,
            notification_config=config,
            profile_owner=f[0xB7].value if 0xB7 in f else None,
            dp_proprietary_data=loader.dp_proprietary_data,
            ppr=ppr,
            ecall_indication=bool(_bool_field(f, 0x9F7B)),
            fallback_allowed=_bool_field(f, 0x9F67),
            smdp_oid=loader.smdp_oid,
            smdp_address=loader.server_address,
            metadata=md.raw,
        )
    except (KeyError, DecodeError) as exc:
        raise BppFailure(cid, INCORRECT_INPUT_VALUES, f"StoreMetadataRequest: {exc}") from None
    loader.profile = profile
    if ctx.state.profile(iccid) is not None:
        raise BppFailure(cid, ICCID_ALREADY_EXISTS, f"ICCID {iccid.hex()} already installed")
    if profile_class not in CLASS_NAMES:
        raise BppFailure(cid, UNSUPPORTED_PROFILE_CLASS, f"profile class {profile_class}")
    if ppr_bits & {1, 2}:
        raise BppFailure(cid, PPR_NOT_ALLOWED, "profile policy rules not allowed by the RAT")
    loader.metadata = md


def _check_profile_package(loader: BppLoader) -> None:
    """The package checks of :mod:`euicc.profile_package` (what a card refuses, what it skips)."""
    assert loader.profile is not None
    try:
        package = profile_package.parse(bytes(loader.elements))
        profile_package.check_against_metadata(package, loader.profile.iccid)
    except profile_package.ProfilePackageError as exc:
        raise BppFailure(LOAD_PROFILE_ELEMENTS, exc.reason, str(exc)) from None
    for pe in package.skipped:
        log.info(
            "profile package: PE %d (tag %X, identification %s) of a type this eUICC does not know, not mandated: "
            "skipped",
            pe.index,
            pe.tag,
            pe.identification,
        )


def _install(ctx: Context, loader: BppLoader) -> bytes:
    _check_profile_package(loader)
    profile = loader.profile
    assert profile is not None
    profile.isdp_aid = ctx.state.take_isdp_aid()
    profile.elements = bytes(loader.elements)
    ctx.state.profiles.append(profile)
    ctx.state.last_download = LastDownload(profile.iccid, loader.server_address, loader.smdp_oid)
    final = tlv.encode(0xA0, tlv.encode(0x4F, profile.isdp_aid) + tlv.encode(0x04, SIMA_OK))
    pir = _pir(ctx, loader.transaction_id, loader.server_address, loader.smdp_oid, profile.iccid, final)
    notifications.profile_event(ctx, profile, EVENT_INSTALL, skip_address=loader.server_address)
    ctx.session.clear()
    log.info("profile %s installed in %s", profile.iccid.hex(), profile.isdp_aid.hex())
    return pir
