"""eUICC Packages (ESep, SGP.32 v1.2 §2.5 / §5.9.1 LoadEuiccPackage): build and sign an EuiccPackageRequest, verify
an EuiccPackageResult.

Signing (protocol brief §3.3): ``eimSignature = Sign_SK.eIM( DER(EuiccPackageSigned) || 84 L associationToken )``.
The result signatures follow the same rule: ``euiccSignEPR`` over ``DER(EuiccPackageResultDataSigned) || 84 L
token`` and ``euiccSignEPE`` over ``DER(EuiccPackageErrorDataSigned) || 84 L token``, both cut from the RECEIVED
bytes (never re-encoded) and verified with the eUICC's key, whose certificate must chain to a trusted CI and
name the EID of the message (:class:`EuiccKeys`, checked on every use).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from eim.packages.common import association_token_tlv, eid_to_bytes
from eim.packages.euicc_package_der import decode_euicc_package_result_signed, encode_euicc_package_signed
from rsp import asn1, crypto, tlv
from rsp.errors import DecodeError, RspError

EUICC_PACKAGE_ERROR_CODES = {
    3: "invalidEid",
    4: "replayError",
    6: "counterValueOutOfRange",
    15: "sizeOverflow",
    104: "ecallActive",
    127: "undefinedError",
}
REPLAY_ERROR = 4


@dataclass(frozen=True)
class EimKey:
    """The eIM's package-signing identity: its eimId and private key (NIST P-256 or brainpoolP256r1)."""

    eim_id: str
    private_key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate | None = None

    @property
    def curve(self) -> str:
        return crypto.curve_name(self.private_key)

    def public_key_spki(self) -> bytes:
        return crypto.public_key_spki_der(self.private_key.public_key())


def euicc_package_signed(
    eim_id: str, eid: str, counter_value: int, eim_transaction_id: bytes, euicc_package: tuple[str, list]
) -> bytes:
    """DER of EuiccPackageSigned (our own encoding; these bytes are signed and then sent unchanged). The envelope
    is built by :mod:`eim.packages.euicc_package_der`, the EuiccPackage by asn1tools."""
    return encode_euicc_package_signed(
        eim_id, eid_to_bytes(eid), counter_value, eim_transaction_id, asn1.encode("EuiccPackage", euicc_package)
    )


def sign_euicc_package(key: EimKey, signed_der: bytes, association_token: int | None) -> bytes:
    """eimSignature (64-byte r||s) over ``DER(EuiccPackageSigned) || 84 L associationToken``."""
    return crypto.sign(key.private_key, signed_der + association_token_tlv(association_token))


def euicc_package_request(
    key: EimKey,
    eid: str,
    counter_value: int,
    eim_transaction_id: bytes,
    euicc_package: tuple[str, list],
    association_token: int | None,
    *,
    eim_id: str | None = None,
) -> bytes:
    """A complete EuiccPackageRequest ``BF51 { 30 EuiccPackageSigned, 5F37 eimSignature }``.

    ``eim_id`` is the eimId of the association (default: the key's)."""
    signed = euicc_package_signed(eim_id or key.eim_id, eid, counter_value, eim_transaction_id, euicc_package)
    signature = sign_euicc_package(key, signed, association_token)
    return tlv.encode(0xBF51, signed + tlv.encode(0x5F37, signature))


# ---------------------------------------------------------------------------------------------------- results
#: Why a result was refused: a small fixed set (the ``cause`` label of ``eim_results_refused_total``, the
#: ``cause`` of the audit entry). Never an EID or an operation id.
REFUSAL_CAUSES = (
    "undecodable",  # not an EuiccPackageResult / IpaEuiccDataResponse / ProfileDownloadTriggerResult
    "no_operation",  # no operation is named by the result (eimTransactionId unknown, absent, wrong kind)
    "eid",  # the EID the result came with is not the EID of the operation it names
    "certificate",  # no verified eUICC certificate for the EID (unknown, chain refused, no trusted CI)
    "certificate_eid",  # the eUICC certificate names another EID than the one it is used for
    "eim_id",  # the signed eimId is not the eIM of the association
    "transaction_id",  # the signed eimTransactionId is not the operation's
    "counter",  # the signed counterValue is not the package's
    "signature",  # euiccSignEPR / euiccSignEPE does not verify with the EID's verified key
    "unverified_error",  # an unsigned error from a device not authenticated as the operation's eUICC
)


class ResultRejected(Exception):
    """A result that must not change the operation: ``reason`` says why in words, ``cause`` is one of
    :data:`REFUSAL_CAUSES`."""

    def __init__(self, reason: str, cause: str = "signature") -> None:
        assert cause in REFUSAL_CAUSES, cause
        self.reason = reason
        self.cause = cause
        super().__init__(reason)


@dataclass(frozen=True)
class EuiccPackageOutcome:
    """What an EuiccPackageResult says, once parsed (and, for the signed kinds, verified)."""

    kind: str  # "result" | "error_signed" | "error_unsigned"
    eim_id: str
    eim_transaction_id: bytes | None
    counter_value: int | None = None
    seq_number: int | None = None
    results: list[Any] = field(default_factory=list)  # decoded EuiccResultData list (kind "result")
    error_code: int | None = None  # EuiccPackageErrorCode (kind "error_signed")
    association_token: int | None = None
    signed_part: bytes = b""  # the exact received bytes the signature covers (without the token)
    signature: bytes = b""

    @property
    def signed(self) -> bool:
        return self.kind != "error_unsigned"


def parse_euicc_package_result(raw: bytes) -> EuiccPackageOutcome:
    """Parse a received ``BF51`` EuiccPackageResult TLV; the signed part is cut from ``raw``.

    Only DER is accepted, and nothing the schema does not name: the decoded value must encode back to exactly
    ``raw``, so what is verified (the received bytes) and what is acted on (the decoded value) are the same
    thing. Raises :class:`rsp.errors.DecodeError` for malformed input."""
    return decode_euicc_package_result(raw)[1]


def _signed_result(body: dict[str, Any], signed_part: bytes) -> EuiccPackageOutcome:
    """The outcome of a euiccPackageResultSigned: ``body`` its decoded value, ``signed_part`` the received bytes of
    its EuiccPackageResultDataSigned."""
    data = body["euiccPackageResultDataSigned"]
    return EuiccPackageOutcome(
        kind="result",
        eim_id=data["eimId"],
        eim_transaction_id=data.get("eimTransactionId"),
        counter_value=data["counterValue"],
        seq_number=data["seqNumber"],
        results=list(data["euiccResult"]),
        signed_part=signed_part,
        signature=body["euiccSignEPR"],
    )


def decode_euicc_package_result(raw: bytes) -> tuple[Any, EuiccPackageOutcome]:
    """:func:`parse_euicc_package_result` that also returns the decoded value (``rsp.asn1.decode`` of
    ``EuiccPackageResult``): the ProvideEimPackageResult fast path hands both on, so the result is decoded once."""
    raw = bytes(raw)
    fast = decode_euicc_package_result_signed(raw)
    if fast is not None:  # the usual result, read without asn1tools (the same value, DER by construction)
        value, start, end = fast
        return value, _signed_result(value[1], raw[start:end])
    value = asn1.decode("EuiccPackageResult", raw)
    alt, body = value
    try:
        same = asn1.encode("EuiccPackageResult", value) == raw
    except RspError:
        same = False
    if not same:
        raise DecodeError("EuiccPackageResult", "not DER, or elements the schema does not name")
    outer = tlv.parse_exact(raw, what="EuiccPackageResult")
    first = tlv.children(outer, what="EuiccPackageResult")
    if len(first) != 1:
        raise DecodeError("EuiccPackageResult", "expected exactly one alternative")
    inner = first[0]
    if alt == "euiccPackageResultSigned":
        return value, _signed_result(body, tlv.require(inner, 0x30, what="EuiccPackageResultSigned").raw)
    if alt == "euiccPackageErrorSigned":
        data = body["euiccPackageErrorDataSigned"]
        return value, EuiccPackageOutcome(
            kind="error_signed",
            eim_id=data["eimId"],
            eim_transaction_id=data.get("eimTransactionId"),
            counter_value=data["counterValue"],
            error_code=data["euiccPackageErrorCode"],
            signed_part=tlv.require(inner, 0x30, what="EuiccPackageErrorSigned").raw,
            signature=body["euiccSignEPE"],
        )
    if alt == "euiccPackageErrorUnsigned":
        return value, EuiccPackageOutcome(
            kind="error_unsigned",
            eim_id=body["eimId"],
            eim_transaction_id=body.get("eimTransactionId"),
            association_token=body.get("associationToken"),
        )
    raise DecodeError("EuiccPackageResult", f"unknown alternative ({inner.tag:X})")


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class EuiccKeys:
    """eUICC public keys from certificates verified up to a trusted CI, FOR AN EID.

    Identity is checked on every use, never cached past its check: :meth:`public_key` verifies that the eUICC
    certificate names the EID it is used for each time it is called, and the cache (which saves the chain work
    only) is keyed by the EID together with the certificate bytes, so a key verified for one EID can never come
    back for another. A cached chain is used only within the validity of its certificates."""

    MAX_CACHED = 10_000

    def __init__(
        self,
        trusted_cis: Iterable[x509.Certificate],
        *,
        eid_range: bool = True,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        """``eid_range=False`` skips the EUM's permitted-EID-range check, for test data signed under a lab PKI made
        before its EUMs carried a range (the SGP.32 v1.0 captures); not reachable from the configuration.
        ``clock``: the time certificates are checked at (default now, UTC)."""
        self.trusted_cis = list(trusted_cis)
        self.eid_range = eid_range
        self.clock = clock or _utc_now
        # per entry: the verified leaf's EID and public key (both read from the leaf once), and the validity window
        self._cache: dict[bytes, tuple[str, ec.EllipticCurvePublicKey, dt.datetime, dt.datetime]] = {}

    def public_key(
        self, eid: str, euicc_cert: bytes, eum_cert: bytes | None, ci_key_id: bytes | None = None
    ) -> ec.EllipticCurvePublicKey:
        """The verified key of ``eid``'s eUICC certificate. Raises :class:`ResultRejected` naming the fault
        (cause ``certificate`` or ``certificate_eid``)."""
        now = self.clock()
        # the cache key and lookup only save chain work: a miss verifies the chain again, and the EID check below
        # runs on every use (so neither line is a check; both marked no-mutate)
        ident = hashlib.sha256(
            b"|".join((eid.encode(), euicc_cert, eum_cert or b"", ci_key_id or b""))  # pragma: no mutate
        ).digest()
        cached = self._cache.get(ident)  # pragma: no mutate
        if cached is not None and not cached[2] <= now <= cached[3]:
            del self._cache[ident]
            cached = None
        if cached is None:
            from rsp.pki.certs import Role, eid_of
            from rsp.pki.chain import verify_chain

            if not self.trusted_cis:
                raise ResultRejected(
                    "no trusted CI is configured, the eUICC certificate cannot be verified", "certificate"
                )
            try:
                chain = verify_chain(
                    euicc_cert,
                    [eum_cert] if eum_cert else [],
                    self.trusted_cis,
                    Role.EUICC,
                    now,  # the clock's time: the cache bounds below compare with the same instant
                    ci_key_id=ci_key_id,
                    eid_range=self.eid_range,
                )
            except (RspError, ValueError) as exc:
                raise ResultRejected(f"eUICC certificate refused: {exc}", "certificate") from None
            leaf = chain.leaf
            key = leaf.public_key()
            assert isinstance(key, ec.EllipticCurvePublicKey)  # verify_chain accepts EC keys only (curve_name)
            # verify_chain refused a leaf without a 32-digit EID (ChainError "malformed") and one whose key is not
            # on an RSP curve, so neither can fail here
            cached = (
                eid_of(leaf),
                key,
                max(c.not_valid_before_utc for c in chain.path),
                min(c.not_valid_after_utc for c in chain.path),
            )
            if len(self._cache) >= self.MAX_CACHED:
                self._cache.clear()
            self._cache[ident] = cached
        # the identity check runs on every use, cached or not: the EID the leaf names (read from it when it was
        # verified) against the EID the key is used for
        cert_eid, key = cached[0], cached[1]
        if cert_eid != eid:
            raise ResultRejected(f"the eUICC certificate belongs to EID {cert_eid}, not {eid}", "certificate_eid")
        return key


def verify_outcome(
    outcome: EuiccPackageOutcome,
    *,
    public_key: ec.EllipticCurvePublicKey | None,
    association_token: int | None,
    eim_id: str,
    counter_value: int | None,
    eim_transaction_id: bytes | None,
) -> None:
    """Check the signature over the received bytes and the echo of eimId / counterValue / eimTransactionId.

    Raises :class:`ResultRejected` (its ``cause`` names the check). Unsigned errors cannot be verified: only the
    echo is checked here; whether one may end the operation is the caller's rule (the binding must have
    authenticated the operation's EID, ``eim.esipa.euicc_package_result``)."""
    if outcome.eim_id != eim_id:
        raise ResultRejected(f"eimId {outcome.eim_id!r} is not ours ({eim_id!r})", "eim_id")
    if eim_transaction_id is not None and outcome.eim_transaction_id not in (None, eim_transaction_id):
        raise ResultRejected("eimTransactionId does not match the package sent", "transaction_id")
    if not outcome.signed:
        if outcome.eim_transaction_id != eim_transaction_id:
            raise ResultRejected("unsigned error without the package's eimTransactionId", "transaction_id")
        return
    if counter_value is not None and outcome.counter_value != counter_value:
        raise ResultRejected(
            f"counterValue {outcome.counter_value} does not match the package sent ({counter_value})", "counter"
        )
    if public_key is None:
        raise ResultRejected("no verified eUICC key to check the signature with", "certificate")
    what = "euiccSignEPR" if outcome.kind == "result" else "euiccSignEPE"
    try:
        crypto.verify(
            public_key, outcome.signed_part + association_token_tlv(association_token), outcome.signature, what=what
        )
    except RspError as exc:
        raise ResultRejected(str(exc)) from None  # cause "signature", the default
