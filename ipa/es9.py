"""ES9+ client for direct profile download (SGP.22 v2.5 §5.6, JSON binding §6.5): the IPA as an LPA.

POST ``https://<smdpAddress>/gsma/rsp2/es9plus/<function>`` with ``Content-Type: application/json;charset=UTF-8``
and ``X-Admin-Protocol: gsma/rsp/v2.1.0``. Binary fields are base64 of DER. TLS is verified against the
configured CAs (``es9.ca_file``) unless the explicit lab switch ``es9.insecure`` is set.

The TLV-vs-value trap (protocol brief §6): ES9+ JSON carries ``serverSignature1``/``smdpSignature2`` as the whole
``5F37 40 ..`` TLV and ``euiccCiPKIdToBeUsed`` as the whole ``04 14 ..`` TLV. This client accepts either the TLV
or the bare value and returns bare values (the ES10 client re-wraps them).
"""

from __future__ import annotations

import base64
import binascii
import logging
import secrets
import ssl
from dataclasses import dataclass
from typing import Any

from ipa import messages as m
from rsp.resolve import ResolveMap, mapped_transport

log = logging.getLogger("ipa.es9")

ADMIN_PROTOCOL = "gsma/rsp/v2.1.0"


class Es9Error(Exception):
    """An ES9+ call failed. ``step`` is the function; ``subject_code``/``reason_code`` are the SM-DP+'s
    statusCodeData when it answered ``Failed``; ``http_status`` when the HTTP layer failed."""

    def __init__(
        self,
        step: str,
        message: str,
        *,
        subject_code: str | None = None,
        reason_code: str | None = None,
        http_status: int | None = None,
    ) -> None:
        self.step = step
        self.subject_code = subject_code
        self.reason_code = reason_code
        self.http_status = http_status
        super().__init__(f"{step}: {message}")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(value: Any, step: str, name: str) -> bytes:
    if not isinstance(value, str):
        raise Es9Error(step, f"field {name} missing or not a string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise Es9Error(step, f"field {name} is not base64") from None


def as_tlv(data: bytes, tag: int) -> bytes:
    """Accept a TLV with ``tag`` or a bare value; return the TLV."""
    from rsp import tlv
    from rsp.errors import DecodeError

    try:
        t = tlv.parse_exact(data)
        if t.tag == tag:
            return data
    except DecodeError:
        pass
    return tlv.encode(tag, data)


@dataclass(frozen=True)
class Es9Address:
    host: str
    port: int | None

    @classmethod
    def parse(cls, address: str) -> Es9Address:
        from ipa.esipa import _split_host_port

        host, port = _split_host_port(address.strip())
        return cls(host, port)

    @property
    def base(self) -> str:
        return f"https://{self.host}" + (f":{self.port}" if self.port else "")


class Es9Client:
    def __init__(
        self,
        *,
        verify: ssl.SSLContext | bool = True,
        timeout: float = 60.0,
        transport=None,
        resolve: ResolveMap | None = None,
    ) -> None:
        """``transport``: an httpx transport to use instead of the network (tests, proxies). ``resolve``: a lab
        address map (``es9.resolve``, :mod:`rsp.resolve`): connect elsewhere, TLS still checks the SM-DP+ name."""
        import httpx

        if transport is None and resolve:
            transport = mapped_transport(resolve, verify)
        self._client = httpx.AsyncClient(
            transport=transport,
            verify=verify,
            timeout=timeout,
            headers={
                "Content-Type": "application/json;charset=UTF-8",
                "X-Admin-Protocol": ADMIN_PROTOCOL,
                "User-Agent": "gsma-rsp-ipad",
            },
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def _post(
        self, address: str, function: str, body: dict[str, Any], *, expect_body: bool = True
    ) -> dict[str, Any]:
        import httpx

        url = Es9Address.parse(address).base + f"/gsma/rsp2/es9plus/{function}"
        body = {
            "header": {"functionRequesterIdentifier": "ipa", "functionCallIdentifier": secrets.token_hex(8)},
            **body,
        }
        try:
            resp = await self._client.post(url, json=body)
        except httpx.HTTPError as exc:
            raise Es9Error(function, f"{type(exc).__name__}: {exc or 'no detail'} ({url})") from None
        if resp.status_code == 204:
            if expect_body:
                raise Es9Error(function, "204 No Content where an answer was expected", http_status=204)
            return {}
        if resp.status_code != 200:
            raise Es9Error(function, f"HTTP {resp.status_code} {resp.text[:200]}", http_status=resp.status_code)
        try:
            data = resp.json()
        except ValueError:
            raise Es9Error(function, "answer is not JSON", http_status=resp.status_code) from None
        if not isinstance(data, dict):
            raise Es9Error(function, "answer is not a JSON object")
        status = (data.get("header") or {}).get("functionExecutionStatus") or {}
        if status.get("status") not in (None, "Executed-Success", "Executed-WithWarning"):
            scd = status.get("statusCodeData") or {}
            raise Es9Error(
                function,
                f"SM-DP+ answered {status.get('status')}: subject {scd.get('subjectCode')} reason "
                f"{scd.get('reasonCode')} {scd.get('message') or ''}".rstrip(),
                subject_code=scd.get("subjectCode"),
                reason_code=scd.get("reasonCode"),
            )
        return data

    async def initiate_authentication(
        self, smdp_address: str, euicc_challenge: bytes, euicc_info1: bytes
    ) -> m.InitiateAuthenticationOk:
        step = "initiateAuthentication"
        d = await self._post(
            smdp_address,
            step,
            {"euiccChallenge": b64(euicc_challenge), "euiccInfo1": b64(euicc_info1), "smdpAddress": smdp_address},
        )
        txid = d.get("transactionId")
        try:
            txid_b = bytes.fromhex(txid) if isinstance(txid, str) else None
        except ValueError:
            txid_b = None
        if not txid_b:
            raise Es9Error(step, "transactionId missing or not hex")
        return m.InitiateAuthenticationOk(
            transaction_id=txid_b,
            server_signed1=unb64(d.get("serverSigned1"), step, "serverSigned1"),
            server_signature1=m.strip_tlv_envelope(
                unb64(d.get("serverSignature1"), step, "serverSignature1"), 0x5F37, 64
            ),
            euicc_ci_pkid_to_be_used=m.strip_tlv_envelope(
                unb64(d.get("euiccCiPKIdToBeUsed"), step, "euiccCiPKIdToBeUsed"), 0x04, 20
            ),
            server_certificate=unb64(d.get("serverCertificate"), step, "serverCertificate"),
        )

    async def authenticate_client(
        self, smdp_address: str, transaction_id: bytes, authenticate_server_response: bytes
    ) -> m.AuthenticateClientOk:
        step = "authenticateClient"
        d = await self._post(
            smdp_address,
            step,
            {
                "transactionId": transaction_id.hex().upper(),
                "authenticateServerResponse": b64(authenticate_server_response),
            },
        )
        meta = d.get("profileMetadata")
        return m.AuthenticateClientOk(
            transaction_id=transaction_id,
            profile_metadata=unb64(meta, step, "profileMetadata") if meta is not None else None,
            smdp_signed2=unb64(d.get("smdpSigned2"), step, "smdpSigned2"),
            smdp_signature2=m.strip_tlv_envelope(unb64(d.get("smdpSignature2"), step, "smdpSignature2"), 0x5F37, 64),
            smdp_certificate=unb64(d.get("smdpCertificate"), step, "smdpCertificate"),
        )

    async def get_bound_profile_package(
        self, smdp_address: str, transaction_id: bytes, prepare_download_response: bytes
    ) -> bytes:
        step = "getBoundProfilePackage"
        d = await self._post(
            smdp_address,
            step,
            {"transactionId": transaction_id.hex().upper(), "prepareDownloadResponse": b64(prepare_download_response)},
        )
        return unb64(d.get("boundProfilePackage"), step, "boundProfilePackage")

    async def handle_notification(self, address: str, pending_notification: bytes) -> None:
        await self._post(
            address, "handleNotification", {"pendingNotification": b64(pending_notification)}, expect_body=False
        )

    async def cancel_session(self, smdp_address: str, transaction_id: bytes, cancel_session_response: bytes) -> None:
        await self._post(
            smdp_address,
            "cancelSession",
            {"transactionId": transaction_id.hex().upper(), "cancelSessionResponse": b64(cancel_session_response)},
            expect_body=False,
        )
