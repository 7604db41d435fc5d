"""ES10b.LoadEuiccPackage - SGP.32 v1.2 §5.9 (eUICC Package Download and Execution,).

Request: the EuiccPackageRequest ``BF51 {30 EuiccPackageSigned {80 eimId, 5A eidValue, 81 counterValue,
[82 eimTransactionId], A0 psmoList | A1 ecoList}, 5F37 eimSignature}`` exactly as the eIM sent it.

Checks, in this order:

1. the ``30..`` part must at least yield the eimId (else ``6A80``);
2. the eimId names an associated eIM -> else ``EuiccPackageErrorUnsigned`` ``BF51 {A2 {80 eimId,
   [82 eimTransactionId]}}``;
3. eimSignature verifies with the eIM's key (``eimPublicKeyData``: SPKI or certificate) over the received
   ``30..`` bytes || ``84 L associationToken`` (cut from the request, never re-encoded) -> else
   EuiccPackageErrorUnsigned ``{80 eimId, [82 txid], [84 associationToken]}``;
4. from here errors are signed (``EuiccPackageErrorSigned`` ``BF51 {A1 {30 {80 eimId, 81 counterValue,
   [82 txid], 02 code}, 5F37 euiccSignEPE}}``, signature over the ``30..`` || ``84 L token``) and not stored:
   eidValue is this card's EID -> else ``invalidEid(3)``; counterValue <= :data:`COUNTER_MAX` -> else
   ``counterValueOutOfRange(6)``; counterValue greater than the last accepted one -> else ``replayError(4)``;
   no emergency profile in use -> else ``ecallActive(104)``;
5. the counter is taken (persisted), any earlier rollback authorisation ends, the PSMOs or eCOs run in order
   (an unknown or damaged one ends processing with ``processingTerminated unknownOrDamagedCommand(2)``);
6. the result ``BF51 {A0 {30 EuiccPackageResultDataSigned {80 eimId, 81 counterValue, [82 txid], 83 seqNumber,
   30 euiccResult}, 5F37 euiccSignEPR}}`` is signed over the ``30..`` || ``84 L associationToken`` and kept as a
   pending notification under ``seqNumber`` (RetrieveNotificationsList ``euiccPackageResults``, removed with
   RemoveNotificationFromList).

When the association has no token the signature inputs have no ``84`` part.

Tests may make the card lie in steps 4 and 6 (``ctx.forgery``, :class:`euicc.forgery.Forgery`): another
counterValue, eimTransactionId or eimId in the signed data, or another key for the signature.
"""

from __future__ import annotations

import logging

from euicc import der, eco, eim_config, notifications, psmo
from euicc.context import SW_WRONG_DATA, Context, Es10Reject
from euicc.eim_config import COUNTER_MAX, EimConfigError
from euicc.es10._common import children
from euicc.state import RollbackInfo
from rsp import crypto, tlv
from rsp.errors import DecodeError

log = logging.getLogger("euicc.eim_package")

TAG = 0xBF51
STEP = "LoadEuiccPackage"

INVALID_EID = 3
REPLAY_ERROR = 4
COUNTER_VALUE_OUT_OF_RANGE = 6
ECALL_ACTIVE = 104
UNDEFINED_ERROR = 127
UNKNOWN_OR_DAMAGED_COMMAND = 2


def unsigned_error(eim_id_tlv: bytes, txid: bytes | None, token: int | None) -> bytes:
    body = eim_id_tlv + (tlv.encode(0x82, txid) if txid is not None else b"")
    if token is not None:
        body += der.integer(0x84, token)
    return tlv.encode(TAG, tlv.encode(0xA2, body))


def _as_signed(ctx: Context, eim_id_tlv: bytes, counter: int, txid: bytes | None) -> tuple[bytes, int, bytes | None]:
    """``(eimId TLV, counterValue, eimTransactionId)`` to sign: the package's, or the lie of ``ctx.forgery``."""
    lie = ctx.forgery
    if lie is None:
        return eim_id_tlv, counter, txid
    if lie.eim_id is not None:
        eim_id_tlv = tlv.encode(0x80, lie.eim_id.encode())
    if lie.eim_transaction_id is not None:
        txid = lie.eim_transaction_id
    if lie.drop_transaction_id:
        txid = None
    return eim_id_tlv, counter + lie.counter_offset, txid


def _sign(ctx: Context, data: bytes) -> bytes:
    lie = ctx.forgery
    if lie is not None and lie.signing_key is not None:
        return crypto.sign(lie.signing_key, data)
    return ctx.identity.sign(data)


def signed_error(
    ctx: Context, eim_id_tlv: bytes, counter: int, txid: bytes | None, token: int | None, code: int
) -> bytes:
    eim_id_tlv, counter, txid = _as_signed(ctx, eim_id_tlv, counter, txid)
    data = tlv.encode(
        0x30,
        eim_id_tlv
        + der.integer(0x81, counter)
        + (tlv.encode(0x82, txid) if txid is not None else b"")
        + der.integer(0x02, code),
    )
    sig = _sign(ctx, data + eim_config.token_tlv(token))
    return tlv.encode(TAG, tlv.encode(0xA1, data + tlv.encode(0x5F37, sig)))


def signed_result(
    ctx: Context, eim_id_tlv: bytes, counter: int, txid: bytes | None, token: int | None, results: bytes
) -> tuple[int, bytes]:
    """Sign and store an EuiccPackageResultSigned; returns (seqNumber, BF51 bytes)."""
    seq = ctx.state.take_seq()
    signed_eim_id, signed_counter, signed_txid = _as_signed(ctx, eim_id_tlv, counter, txid)
    data = tlv.encode(
        0x30,
        signed_eim_id
        + der.integer(0x81, signed_counter)
        + (tlv.encode(0x82, signed_txid) if signed_txid is not None else b"")
        + der.integer(0x83, seq)
        + tlv.encode(0x30, results),
    )
    sig = _sign(ctx, data + eim_config.token_tlv(token))
    epr = tlv.encode(TAG, tlv.encode(0xA0, data + tlv.encode(0x5F37, sig)))
    notifications.store_epr(ctx, seq, epr, der.decode_utf8(tlv.parse_exact(eim_id_tlv).value))
    return seq, epr


def handle(ctx: Context, request: tlv.Tlv) -> bytes:
    parts = children(request, STEP)
    if [p.tag for p in parts] != [0x30, 0x5F37]:
        raise Es10Reject(SW_WRONG_DATA, STEP, "expected 30 euiccPackageSigned, 5F37 eimSignature")
    signed, signature = parts
    try:
        items = tlv.children(signed, what="EuiccPackageSigned")
    except DecodeError as exc:
        raise Es10Reject(SW_WRONG_DATA, STEP, str(exc)) from None
    if not items or items[0].tag != 0x80:
        raise Es10Reject(SW_WRONG_DATA, STEP, "EuiccPackageSigned does not start with eimId (80)")
    eim_id_tlv = items[0].raw
    try:
        eim_id = der.decode_utf8(items[0].value, "eimId")
    except DecodeError as exc:
        raise Es10Reject(SW_WRONG_DATA, STEP, str(exc)) from None
    by_tag = {i.tag: i for i in items}
    txid_node = by_tag.get(0x82)
    txid = txid_node.value if txid_node is not None and 1 <= len(txid_node.value) <= 16 else None

    eim = ctx.state.eim(eim_id)
    if eim is None:
        log.info("package from unknown eIM %r refused", eim_id)
        return unsigned_error(eim_id_tlv, txid, None)
    token = eim.association_token
    try:
        key = eim_config.public_key(eim.public_key_data or b"")
        crypto.verify(key, signed.raw + eim_config.token_tlv(token), signature.value, what="eimSignature")
    except (EimConfigError, crypto.CryptoError) as exc:
        log.info("package from eIM %r refused: %s", eim_id, exc)
        return unsigned_error(eim_id_tlv, txid, token)

    # authenticated: the structure is the eIM's responsibility from here on
    tags = [i.tag for i in items]
    if (
        tags[:3] != [0x80, 0x5A, 0x81]
        or tags[-1] not in (0xA0, 0xA1)
        or len(tags) not in (4, 5)
        or (len(tags) == 5 and tags[3] != 0x82)
    ):
        raise Es10Reject(SW_WRONG_DATA, STEP, f"EuiccPackageSigned fields {[f'{t:X}' for t in tags]}")
    try:
        counter = der.decode_int(by_tag[0x81].value, "counterValue")
    except DecodeError as exc:
        raise Es10Reject(SW_WRONG_DATA, STEP, str(exc)) from None
    if by_tag[0x5A].value != ctx.state.eid:
        return signed_error(ctx, eim_id_tlv, counter, txid, token, INVALID_EID)
    if counter > COUNTER_MAX or counter < 0:
        return signed_error(ctx, eim_id_tlv, counter, txid, token, COUNTER_VALUE_OUT_OF_RANGE)
    if counter <= eim.counter:
        return signed_error(ctx, eim_id_tlv, counter, txid, token, REPLAY_ERROR)
    if ctx.state.emergency_active:
        return signed_error(ctx, eim_id_tlv, counter, txid, token, ECALL_ACTIVE)

    eim.counter = counter
    ctx.state.rollback = None
    package = items[-1]
    handlers = psmo.HANDLERS if package.tag == 0xA0 else eco.HANDLERS
    run = psmo.PackageRun()
    results = b""
    try:
        operations = tlv.children(package, what="euiccPackage")
    except DecodeError:
        operations = None
        results = der.integer(0x02, UNKNOWN_OR_DAMAGED_COMMAND)
    for op in operations or []:
        handler = handlers.get(op.tag)
        if handler is None:
            results += der.integer(0x02, UNKNOWN_OR_DAMAGED_COMMAND)
            break
        try:
            results += handler(ctx, op, run)
        except psmo.Damaged as exc:
            log.info("package operation %X damaged: %s", op.tag, exc)
            results += der.integer(0x02, UNKNOWN_OR_DAMAGED_COMMAND)
            break
    seq, epr = signed_result(ctx, eim_id_tlv, counter, txid, token, results)
    if run.rollback_from is not None:
        previous, enabled = run.rollback_from
        ctx.state.rollback = RollbackInfo(
            eim_id=eim_id,
            counter=counter,
            transaction_id=txid,
            association_token=token,
            previous_iccid=previous,
            enabled_iccid=enabled,
            epr_seq=seq,
            results=results,
        )
    log.info("package from eIM %r counter %d executed, result seq %d", eim_id, counter, seq)
    return epr
