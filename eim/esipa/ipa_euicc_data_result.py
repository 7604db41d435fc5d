"""The eIM's side of an IpaEuiccDataResponse (SGP.32 v1.2 §3.4 eUICC data request; §2.11.2.2 IpaEuiccData;
protocol brief §2.4), whatever ESipa function carried it (ProvideEimPackageResult, TransferEimPackageResponse).

Matched by its eimTransactionId only (OPTIONAL in the ASN.1; the eIM sends one in every IpaEuiccDataRequest and
the IPA echoes it; a response without it is refused). The certificates are verified for the operation's EID before
anything is learned: a certificate of another EID (or one that does not chain to a trusted CI) refuses the whole
response - nothing is stored, the operation stays in progress, the IPA gets ``undefinedError`` - and is audited
(``euicc_certificate`` / ``eid_mismatch``). EuiccPackageResults and notifications inside are handled as if they
had come on their own. Entry point: :meth:`eim.esipa.results.ResultProcessor.euicc_data`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from eim.model import OpKind, OpStatus
from eim.packages import euicc_data
from eim.packages.euicc_package import ResultRejected
from eim.store import ResultUpdate
from rsp import tlv

if TYPE_CHECKING:
    from eim.esipa.results import Handled, ResultProcessor


async def handle(
    rp: ResultProcessor, value: tuple[str, Any], raw: bytes, eid: str | None, *, authenticated_eid: str | None = None
) -> Handled:
    """Learn what the eUICC/IPA reported in an IpaEuiccDataResponse (``value``: its decoded CHOICE, ``raw``: the
    bytes as received); results and notifications inside are handled."""
    from eim.esipa.results import Handled

    alt, body = value
    if alt is None:
        return await rp.refuse("undecodable", "unknown IpaEuiccDataResponse alternative", audit=False)
    op, refused = await rp._named(body.get("eimTransactionId"), OpKind.EUICC_DATA, eid, "eUICC data request")
    if op is None:
        return refused or Handled(refused="no eUICC data request matches this response")
    now = rp.clock()
    common = dict(operation_id=op.id, eid=op.eid, who="ipa", now=now, eim_transaction_id=op.eim_transaction_id)
    if alt == "ipaEuiccDataResponseError":
        code = body["ipaEuiccDataErrorCode"]
        name = euicc_data.ERROR_NAMES.get(code, str(code))
        update = ResultUpdate(
            status=OpStatus.FAILED,
            result={"ipaEuiccDataError": code, "name": name},
            result_code=code,
            error=f"eUICC data request refused: {name}",
            **common,
        )
        return Handled(operation=await rp._record(op, update) or op)
    fields, summary = euicc_data.learned(body)
    acks: list[int] = []
    inner = tlv.find(raw, 0xA0)  # ipaEuiccData as received
    certs = certificates(inner)
    if certs is not None:
        euicc_der, eum_der = certs
        try:
            rp.keys.public_key(op.eid, euicc_der, eum_der, None)  # verified for op.eid, on this use
        except ResultRejected as exc:
            return await rp.refuse(exc.cause, f"eUICC data response refused: {exc.reason}", op=op)
        fields["euicc_certificate"], fields["eum_certificate"] = euicc_der, eum_der
        summary["certificates"] = "verified"
    euicc = await rp.store.get_euicc(op.eid)
    if "associationToken" in body and euicc is not None and euicc.association_token is None:
        fields["association_token"] = body["associationToken"]
    update = ResultUpdate(status=OpStatus.DONE, result=summary, euicc_fields=fields, **common)
    changed = await rp._record(op, update)
    if inner is not None:
        for child in tlv.children(inner):
            if child.tag == 0xA2:  # euiccPackageResultList: recover results that were never delivered
                for epr in tlv.children(child):
                    handled = await rp.euicc_package_result(epr.raw, op.eid, authenticated_eid=authenticated_eid)
                    acks += handled.acks
            elif child.tag == 0xA0:  # notificationsList
                acks += await rp.notifications([n.raw for n in tlv.children(child)], op.eid)
    return Handled(acks=acks, operation=changed or op)


def certificates(ipa_euicc_data: tlv.Tlv | None) -> tuple[bytes, bytes | None] | None:
    """``(euiccCertificate DER, eumCertificate DER)`` cut from IpaEuiccData (A6 / A5 carry the certificate
    SEQUENCE with an implicit tag: the DER is ``30`` + the same length and content)."""
    if ipa_euicc_data is None:
        return None
    euicc = tlv.find(ipa_euicc_data, 0xA6)
    if euicc is None:
        return None
    eum = tlv.find(ipa_euicc_data, 0xA5)

    def der(t: tlv.Tlv) -> bytes:
        return b"\x30" + t.raw[1:]

    return der(euicc), der(eum) if eum is not None else None
