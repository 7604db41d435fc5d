"""eUICC Data Request: answer an IpaEuiccDataRequest (SGP.32 v1.2 §2.11.1.2 data structure; the eIM asks with
GetEimPackage/TransferEimPackage, the IPA answers in ProvideEimPackageResult with ipaEuiccDataResponse).

Every tag of the tagList is served, in the order of the IpaEuiccData SEQUENCE:
``A0`` notificationsList (RetrieveNotificationsList, with searchCriteriaNotification), ``81`` defaultSmdpAddress
and ``83`` rootSmdsAddress (EuiccConfiguredAddresses), ``A2`` euiccPackageResultList (RetrieveNotificationsList
``euiccPackageResults``, with searchCriteriaEuiccPackageResult), ``BF20``/``BF22`` euiccInfo1/2, ``84``
associationToken (GetEimConfigurationData of the requesting eIM), ``A5``/``A6`` EUM/eUICC certificates (GetCerts
with euiccCiPKIdentifierToBeUsed), ``A8`` ipaCapabilities and ``A9`` deviceInfo (from the IPA itself), ``87``
eimTransactionId (echoed). A tag outside this list gives ``incorrectTagList(1)``; an unknown CI key id
``euiccCiPKIdNotFound(5)``. Search criteria select exactly the given sequence number / event.
"""

from __future__ import annotations

import logging

from ipa import messages as m
from ipa.codes import IpaEuiccDataErrorCode
from ipa.config import IpaConfig
from ipa.es10 import Es10Error
from ipa.procedures.context import IpaContext
from rsp import tlv

log = logging.getLogger("ipa.procedures.euicc_data_request")

# IpaEuiccData order (SEQUENCE) and the tags a tagList may name
ORDER = (0xA0, 0x81, 0xA2, 0xBF20, 0xBF22, 0x83, 0x84, 0xA5, 0xA6, 0xA8, 0xA9)

# IpaCapabilities bits
FEATURE_DIRECT, FEATURE_INDIRECT, FEATURE_EIM_DOWNLOAD_DATA = 0, 1, 2


def ipa_capabilities(config: IpaConfig, binding: str | None = None) -> bytes:
    """IpaCapabilities contents ``80 ipaFeatures, 81 ipaSupportedProtocols``."""
    feats = set()
    if config.ipa.direct_download:
        feats.add(FEATURE_DIRECT)
    if config.ipa.indirect_download:
        feats.add(FEATURE_INDIRECT)
        # a trigger without download data is relayed with the eIM's data (profile_download.use_indirect)
        feats.add(FEATURE_EIM_DOWNLOAD_DATA)
    protos = {0}  # ipaRetrieveHttps
    protos.add(1)  # ipaRetrieveCoaps (coap:// without DTLS in this build)
    protos.add(4)  # ipaProprietary: ESipa over MQTT
    return m.enc_bitstring(0x80, feats) + m.enc_bitstring(0x81, protos)


def device_info(config: IpaConfig) -> bytes:
    """DeviceInfo contents ``80 tac, A1 deviceCapabilities, [82 imei]`` (SGP.22 §2.4.2.x)."""
    body = tlv.encode(0x80, bytes.fromhex(config.ipa.tac))
    body += tlv.encode(0xA1, bytes.fromhex(config.ipa.device_capabilities))
    if config.ipa.imei:
        body += tlv.encode(0x82, bytes.fromhex(config.ipa.imei))
    return body


def _error(code: int, txid: bytes | None) -> bytes:
    body = (tlv.encode(0x80, txid) if txid else b"") + m.enc_int(0x02, code)
    return tlv.encode(m.TAG_IPA_EUICC_DATA, tlv.encode(0xA1, body))


async def build_response(ctx: IpaContext, req: m.IpaEuiccDataRequest) -> bytes:
    """The IpaEuiccDataResponse (BF52) for ``req``."""
    txid = req.eim_transaction_id
    wanted = set(req.tag_list)
    unknown = wanted - set(ORDER)
    if unknown:
        log.warning("IpaEuiccDataRequest names tags %s outside IpaEuiccData", [f"{t:X}" for t in sorted(unknown)])
        return _error(IpaEuiccDataErrorCode.incorrectTagList, txid)
    parts: dict[int, bytes] = {}
    es10 = ctx.es10
    try:
        if 0xA0 in wanted:
            if req.search_notification_seq is not None:
                notifs = await es10.retrieve_notifications_list(seq_number=req.search_notification_seq)
                notifs = [n for n in notifs if n.seq_number == req.search_notification_seq]
            elif req.search_notification_event is not None:
                notifs = await es10.retrieve_notifications_list(event_bits=set(req.search_notification_event))
            else:
                notifs = await es10.retrieve_notifications_list()
            parts[0xA0] = tlv.encode(0xA0, b"".join(n.raw for n in notifs))
        if 0x81 in wanted or 0x83 in wanted:
            addrs = await es10.get_euicc_configured_addresses()
            if 0x81 in wanted and addrs.default_dp_address is not None:
                parts[0x81] = tlv.encode(0x81, addrs.default_dp_address.encode())
            if 0x83 in wanted and addrs.root_ds_address is not None:
                parts[0x83] = tlv.encode(0x83, addrs.root_ds_address.encode())
        if 0xA2 in wanted:
            eprs = await es10.retrieve_euicc_package_results()
            if req.search_epr_seq is not None:
                eprs = [e for e in eprs if e.seq_number == req.search_epr_seq]
            parts[0xA2] = tlv.encode(0xA2, b"".join(e.raw for e in eprs))
        if 0xBF20 in wanted:
            parts[0xBF20] = await es10.get_euicc_info1()
        if 0xBF22 in wanted:
            parts[0xBF22] = (await es10.get_euicc_info2()).raw
        if 0x84 in wanted:
            token = None
            for c in await es10.get_eim_configuration_data():
                if ctx.eim_id is None or c.eim_id == ctx.eim_id:
                    token = c.association_token
                    break
            if token is None and ctx.eim_id is not None:
                token = ctx.store.state.association_tokens.get(ctx.eim_id)
            if token is not None:
                parts[0x84] = m.enc_int(0x84, token)
        if 0xA5 in wanted or 0xA6 in wanted:
            try:
                certs = await es10.get_certs(req.euicc_ci_pkid)
            except Es10Error as exc:
                if exc.code == 1:
                    return _error(IpaEuiccDataErrorCode.euiccCiPKIdNotFound, txid)
                raise
            if 0xA5 in wanted:
                parts[0xA5] = tlv.encode(0xA5, tlv.parse_exact(certs.eum_certificate).value)
            if 0xA6 in wanted:
                parts[0xA6] = tlv.encode(0xA6, tlv.parse_exact(certs.euicc_certificate).value)
        if 0xA8 in wanted:
            parts[0xA8] = tlv.encode(0xA8, ipa_capabilities(ctx.config))
        if 0xA9 in wanted:
            parts[0xA9] = tlv.encode(0xA9, device_info(ctx.config))
    except Es10Error as exc:
        log.error("eUICC data request failed at %s: %s", exc.step, exc)
        return _error(IpaEuiccDataErrorCode.undefinedError, txid)
    body = b""
    for tag in ORDER:
        if tag in parts:
            body += parts[tag]
        if tag == 0xA6 and txid:  # eimTransactionId [7] sits between euiccCertificate [6] and ipaCapabilities [8]
            body += tlv.encode(0x87, txid)
    ctx.report("IpaEuiccData", tags=[f"{t:X}" for t in ORDER if t in parts])
    return tlv.encode(m.TAG_IPA_EUICC_DATA, tlv.encode(0xA0, body))


async def run(ctx: IpaContext, req: m.IpaEuiccDataRequest) -> None:
    from ipa.procedures.result_delivery import deliver_results, queue_provide_result

    response = await build_response(ctx, req)
    await queue_provide_result(ctx, response)
    await deliver_results(ctx)
