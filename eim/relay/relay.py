"""The indirect-download relay (SGP.32 v1.2 §3.2.3 "Indirect Profile Download"): the eIM as ES9+ client.

:class:`Es9Relay` implements :class:`eim.interfaces.DownloadRelay`. For each ESipa download message it maps the
request to ES9+ JSON (one module per function, ``eim.relay.<function>``), calls the SM-DP+ over verified TLS
(:class:`eim.relay.es9plus_client.Es9PlusClient`) and maps the answer - or the failure - back to the ESipa
response CHOICE of that function. It never raises for a failure the IPA should hear about: every outcome is an
ESipa answer, with the error code tables of docs/esipa-bindings.md.

Session state lives in the store (``RelayStore.put/get/delete_download_session``), keyed ``es9:<transactionId
hex>``: the SM-DP+ address, the EID, the eimTransactionId and operation that started it, its step and expiry.
Any worker on the same store continues any session. The last EUICCInfo1 seen per EID is kept too
(``euiccinfo1:<EID>``), for IPAs that leave it out of InitiateAuthentication (minimizeEsipaBytes).

Which SM-DP+: the InitiateAuthentication's ``smdpAddress``, else the address of the download operation found
by its ``eimTransactionId`` (``params.smdpAddress`` / ``params.activationCode``), else ``default_smdp_address``.
When both the request and the operation name one, they must match (else smdpAddressMismatch). With
``allowed_smdp_addresses`` only those are contacted (invalidDpAddress otherwise); IP literals are checked by
:class:`eim.smdp_addresses.SmdpAddressPolicy` (link-local/metadata never, loopback/private only when allowed:
invalidDpAddress); in any case the SM-DP+'s TLS certificate must chain to the configured CAs. Notifications are
forwarded only where ``eim.relay.outbox`` allows (the outbox checks again before each attempt).

Certificates: after a successful AuthenticateClient (the SM-DP+ has verified the chain and euiccSignature1) the
eUICC and EUM certificates of the AuthenticateServerResponse are stored with ``set_euicc_certificates`` - only
when the eUICC certificate names the same EID.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from dataclasses import replace
from typing import Any

from eim.interfaces import FailedRelayAnswer, RelayFailure, RelayStore
from eim.model import OpKind
from eim.relay import authenticate_client as ac
from eim.relay import cancel_session as cs
from eim.relay import get_bound_profile_package as gbpp
from eim.relay import handle_notification as hn
from eim.relay import initiate_authentication as ia
from eim.relay.common import error_code
from eim.relay.errors import Es9BadResponse, Es9Failed, InvalidSmdpAddress, RelayError, is_transient
from eim.relay.es9plus_client import Es9PlusClient, check_address
from eim.smdp_addresses import SmdpAddressPolicy
from rsp import asn1
from rsp.errors import DecodeError, RspError

log = logging.getLogger("eim.relay")

SESSION_PREFIX = "es9:"
INFO1_PREFIX = "euiccinfo1:"


def session_key(transaction_id: bytes) -> str:
    return SESSION_PREFIX + transaction_id.hex().upper()


class Es9Relay:
    """ES9+ relay for indirect downloads. ``client``: an :class:`Es9PlusClient` (owned by the caller)."""

    def __init__(
        self,
        store: RelayStore,
        client: Es9PlusClient,
        *,
        default_smdp_address: str | None = None,
        allowed_smdp_addresses: Collection[str] | None = None,
        address_policy: SmdpAddressPolicy | None = None,
        session_ttl: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.client = client
        self.default_smdp_address = default_smdp_address
        self.allowed = {a.lower() for a in allowed_smdp_addresses} if allowed_smdp_addresses is not None else None
        # without a policy only link-local/metadata/multicast IP literals are refused (the app passes the real one)
        self.address_policy = address_policy or SmdpAddressPolicy.of(allowed_smdp_addresses or (), allow_private=True)
        self.session_ttl = session_ttl
        self.clock = clock

    # ------------------------------------------------------------------ helpers
    def _check(self, address: str, function: str) -> str:
        check_address(address, function)
        why = self.address_policy.refusal(address)
        if why is not None:
            raise InvalidSmdpAddress(function, why)
        if self.allowed is not None and address.lower() not in self.allowed:
            raise InvalidSmdpAddress(function, f"{address} is not an allowed SM-DP+")
        return address

    async def _session(self, transaction_id: bytes, eid: str) -> dict[str, Any] | None:
        key = session_key(transaction_id)
        session = await self.store.get_download_session(key)
        if session is None:
            return None
        if session.get("expires_at", 0) < self.clock():
            await self.store.delete_download_session(key)
            return None
        if session.get("eid", "").upper() != eid.upper():
            log.warning("ES9+ session of another eUICC addressed", extra={"transaction_id": key})
            return None
        return session

    async def _call_for_answer(self, address: str, function: str, body: dict[str, Any]) -> dict[str, Any]:
        """One ES9+ call whose success carries a body; a 204 there is a bad answer from the SM-DP+."""
        answer = await self.client.call(address, function, body)
        if answer is None:
            raise Es9BadResponse(function, "HTTP 204 where an answer was expected")
        return answer

    async def _save(self, transaction_id: bytes, session: dict[str, Any]) -> None:
        session["expires_at"] = self.clock() + self.session_ttl
        await self.store.put_download_session(session_key(transaction_id), session)

    @staticmethod
    def _valid(answer: bytes, what: str) -> bytes:
        """Our own answer must decode as EsipaMessageFromEimToIpa; a malformed SM-DP+ field would break it."""
        try:
            asn1.decode("EsipaMessageFromEimToIpa", answer)
        except DecodeError as exc:
            raise Es9BadResponse(what, f"the mapped answer does not decode: {exc}") from None
        return answer

    # ------------------------------------------------------------------ InitiateAuthentication
    async def initiate_authentication(self, eid: str, request: bytes) -> bytes:
        try:
            req = ia.parse_request(request)
        except RspError as exc:
            log.info("InitiateAuthentication undecodable", extra={"eid": eid, "reason": str(exc)})
            return ia.error_response(ia.UNDEFINED_ERROR)
        op = None
        if req.eim_transaction_id is not None:
            op = await self.store.find_operation_by_eim_transaction_id(req.eim_transaction_id)
            if op is None or op.eid.upper() != eid.upper() or op.kind != OpKind.DOWNLOAD:
                return ia.error_response(ia.INVALID_EIM_TRANSACTION_ID)
        op_address, op_oid = _download_target(op.params if op is not None else {})
        if req.smdp_address and op_address and req.smdp_address.lower() != op_address.lower():
            return _refused(
                ia, ia.SMDP_ADDRESS_MISMATCH, f"the IPA named {req.smdp_address}, the operation {op_address}"
            )
        address = req.smdp_address or op_address or self.default_smdp_address
        if not address:
            return _refused(ia, ia.INVALID_DP_ADDRESS, "no SM-DP+ address: none in the request or the operation")
        info1_key = INFO1_PREFIX + eid.upper()
        euicc_info1 = req.euicc_info1
        if euicc_info1 is None:
            cached = await self.store.get_download_session(info1_key)
            euicc_info1 = bytes.fromhex(cached["der"]) if cached and "der" in cached else None
            if euicc_info1 is None:
                log.info("InitiateAuthentication without euiccInfo1 and none known", extra={"eid": eid})
                return _refused(ia, ia.UNDEFINED_ERROR, "no euiccInfo1 in the request and none known for this EID")
        try:
            self._check(address, ia.FUNCTION)
            answer = await self._call_for_answer(address, ia.FUNCTION, ia.es9_request(req, euicc_info1, address))
            parsed = ia.parse_answer(answer)
            if op_oid and _certificate_oid(parsed.server_certificate) != op_oid:
                log.warning("SM-DP+ OID mismatch", extra={"eid": eid, "address": address})
                return _refused(ia, ia.SMDP_OID_MISMATCH, f"CERT.DPauth of {address} does not carry OID {op_oid}")
            # The IPA came without download data (no SM-DP+ address): the eIM supplies the matchingId.
            matching_id = _matching_id(op.params) if op is not None and not req.smdp_address else None
            out = self._valid(ia.ok_response(parsed, matching_id), ia.FUNCTION)
        except RelayError as exc:
            return self._failed(ia, exc, eid, tls_code=ia.INVALID_DP_ADDRESS)
        await self._save(
            parsed.transaction_id,
            {
                "eid": eid.upper(),
                "smdp_address": address,
                "eim_transaction_id": req.eim_transaction_id.hex().upper() if req.eim_transaction_id else None,
                "operation_id": op.id if op is not None else None,
                "step": "initiated",
            },
        )
        if req.euicc_info1 is not None:  # remembered for requests that leave it out (minimizeEsipaBytes)
            await self.store.put_download_session(info1_key, {"der": euicc_info1.hex()})
        log.info("ES9+ session started", extra={"eid": eid, "address": address})
        return out

    # ------------------------------------------------------------------ AuthenticateClient
    async def authenticate_client(self, eid: str, request: bytes) -> bytes:
        try:
            req = ac.parse_request(request)
            compact = ac.is_compact(req.authenticate_server_response)
        except RspError as exc:
            log.info("AuthenticateClient undecodable", extra={"eid": eid, "reason": str(exc)})
            return ac.error_response(ac.UNDEFINED_ERROR)
        session = await self._session(req.transaction_id, eid)
        if session is None:
            return ac.error_response(ac.INVALID_TRANSACTION_ID)
        if compact:
            log.info("compact AuthenticateServerResponse not supported", extra={"eid": eid})
            return ac.error_response(ac.UNDEFINED_ERROR)
        try:
            answer = await self._call_for_answer(session["smdp_address"], ac.FUNCTION, ac.es9_request(req))
            out = self._valid(ac.ok_response(ac.parse_answer(answer)), ac.FUNCTION)
        except RelayError as exc:
            return self._failed(ac, exc, eid)
        session["step"] = "authenticated"
        await self._save(req.transaction_id, session)
        await self._learn_certificates(eid, req.authenticate_server_response)
        return out

    async def _learn_certificates(self, eid: str, authenticate_server_response: bytes) -> None:
        certs = ac.certificates(authenticate_server_response)
        if certs is None:
            return
        euicc_cert, eum_cert = certs
        try:
            from rsp.pki import eid_of

            cert_eid = eid_of(euicc_cert)
        except (ValueError, RspError) as exc:
            log.warning("eUICC certificate not stored", extra={"eid": eid, "reason": str(exc)})
            return
        if cert_eid.upper() != eid.upper():
            log.warning("eUICC certificate names another EID: not stored", extra={"eid": eid})
            return
        await self.store.set_euicc_certificates(eid.upper(), euicc_cert, eum_cert)

    # ------------------------------------------------------------------ GetBoundProfilePackage
    async def get_bound_profile_package(self, eid: str, request: bytes) -> bytes:
        try:
            req = gbpp.parse_request(request)
            compact = gbpp.is_compact(req.prepare_download_response)
        except RspError as exc:
            log.info("GetBoundProfilePackage undecodable", extra={"eid": eid, "reason": str(exc)})
            return gbpp.error_response(gbpp.UNDEFINED_ERROR)
        session = await self._session(req.transaction_id, eid)
        if session is None:
            return gbpp.error_response(gbpp.INVALID_TRANSACTION_ID)
        if compact:
            return gbpp.error_response(gbpp.UNDEFINED_ERROR)
        try:
            answer = await self._call_for_answer(session["smdp_address"], gbpp.FUNCTION, gbpp.es9_request(req))
            out = gbpp.ok_response(gbpp.parse_answer(answer))
        except RelayError as exc:
            return self._failed(gbpp, exc, eid)
        session["step"] = "bpp"
        await self._save(req.transaction_id, session)
        return out

    # ------------------------------------------------------------------ CancelSession
    async def cancel_session(self, eid: str, request: bytes) -> bytes:
        try:
            req = cs.parse_request(request)
            compact = cs.is_compact(req.cancel_session_response)
        except RspError as exc:
            log.info("CancelSession undecodable", extra={"eid": eid, "reason": str(exc)})
            return cs.error_response(cs.UNDEFINED_ERROR)
        session = await self._session(req.transaction_id, eid)
        if session is None:
            return cs.error_response(cs.INVALID_TRANSACTION_ID)
        if compact:
            return cs.error_response(cs.UNDEFINED_ERROR)
        try:
            await self.client.call(session["smdp_address"], cs.FUNCTION, cs.es9_request(req))
        except RelayError as exc:
            return self._failed(cs, exc, eid)
        await self.store.delete_download_session(session_key(req.transaction_id))
        return cs.OK

    # ------------------------------------------------------------------ HandleNotification
    async def forward_notification(self, eid: str | None, pending_notification: bytes) -> None:
        """Deliver a PIR or other signed notification to its notificationAddress (HTTP 204 expected).

        Raises :class:`~eim.relay.errors.RelayError` (``NotForwardable``, ``InvalidSmdpAddress``,
        ``Es9Unreachable``, ``Es9Failed``, ``Es9BadResponse``) or ``rsp.errors.DecodeError`` when it was not
        delivered; the caller decides whether to keep it for another attempt.
        """
        note = hn.parse(pending_notification)
        self._check(note.address, hn.FUNCTION)
        answer = await self.client.call(note.address, hn.FUNCTION, hn.es9_request(note))
        if answer is not None:  # 200 with a header: Executed-Success (Failed raised already)
            log.info("handleNotification answered 200 instead of 204", extra={"address": note.address})
        if note.transaction_id is not None:
            await self.store.delete_download_session(session_key(note.transaction_id))
        log.info("notification forwarded", extra={"eid": eid, "kind": note.kind, "address": note.address})

    # ------------------------------------------------------------------
    @staticmethod
    def _failed(module: Any, exc: RelayError, eid: str, *, tls_code: int | None = None) -> bytes:
        """The function's ESipa error for ``exc``, carrying why (:class:`eim.interfaces.FailedRelayAnswer`)."""
        code = error_code(exc, module.ERRORS, tls_code=tls_code if tls_code is not None else module.UNDEFINED_ERROR)
        transient = is_transient(exc)
        log.warning(
            "ES9+ step failed",
            extra={"eid": eid, "function": module.FUNCTION, "reason": str(exc), "code": code, "transient": transient},
        )
        failure = RelayFailure(module.FUNCTION, str(exc), transient)
        if isinstance(exc, Es9Failed):
            failure = replace(
                failure,
                subject_code=exc.subject_code,
                reason_code=exc.reason_code,
                message=exc.status_message or None,
            )
        return FailedRelayAnswer(module.error_response(code), failure)


def _refused(module: Any, code: int, reason: str) -> bytes:
    """An ESipa error the relay chose itself (no ES9+ call failed), with its reason for the operation."""
    return FailedRelayAnswer(module.error_response(code), RelayFailure(module.FUNCTION, reason))


def _download_target(params: dict[str, Any]) -> tuple[str | None, str | None]:
    """(SM-DP+ address, SM-DP+ OID) named by a download operation's params (``eim.packages.download``)."""
    address = params.get("smdpAddress")
    oid = None
    text = params.get("activationCode")
    if isinstance(text, str):
        from rsp import activation_code

        try:
            code = activation_code.parse(text)
        except RspError:
            code = None
        if code is not None:
            address = address or code.smdp_address
            oid = code.smdp_oid
    return (address if isinstance(address, str) and address else None), oid


def _matching_id(params: dict[str, Any]) -> str | None:
    """The matchingId of a download operation's activation code, if it has one."""
    text = params.get("activationCode")
    if not isinstance(text, str):
        return None
    from rsp import activation_code

    try:
        return activation_code.parse(text).matching_id or None
    except RspError:
        return None


def _certificate_oid(certificate: bytes) -> str | None:
    """The SM-DP+ OID in CERT.DPauth: the registeredID in its subjectAltName (SGP.22 §4.5.2.1)."""
    from cryptography import x509

    try:
        cert = x509.load_der_x509_certificate(certificate)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return None
    oids = san.get_values_for_type(x509.RegisteredID)
    return oids[0].dotted_string if oids else None
