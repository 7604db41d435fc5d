"""eUICC data requests: IpaEuiccDataRequest (SGP.32 v1.2 §3.4 eUICC data request; protocol brief §2.4) and
what the eIM learns from the IpaEuiccDataResponse.

Parameters (JSON)::

    {"tags": ["euiccCertificate", "eumCertificate", "ipaCapabilities", "euiccInfo2", "defaultSmdpAddress"],
     "euiccCiPKId": "<hex>"}           -- optional, the CI key the certificates should chain to

Tag names are IpaEuiccData field names (or the tags in hex, e.g. "A6"). Without ``tags`` the eIM asks for the
certificates, the IPA capabilities, EUICCInfo2 and the default SM-DP+ address.
"""

from __future__ import annotations

from typing import Any

from eim.packages.common import ParamError, bit_names, only_keys, require_dict, to_json
from rsp import asn1

TAGS = {
    "notificationsList": b"\xa0",
    "defaultSmdpAddress": b"\x81",
    "euiccPackageResultList": b"\xa2",
    "euiccInfo1": b"\xbf\x20",
    "euiccInfo2": b"\xbf\x22",
    "rootSmdsAddress": b"\x83",
    "associationToken": b"\x84",
    "eumCertificate": b"\xa5",
    "euiccCertificate": b"\xa6",
    "ipaCapabilities": b"\xa8",
    "deviceInfo": b"\xa9",
}
DEFAULT_TAGS = ["eumCertificate", "euiccCertificate", "ipaCapabilities", "euiccInfo2", "defaultSmdpAddress"]
IPA_FEATURES = [
    "directRspServerCommunication",
    "indirectRspServerCommunication",
    "eimDownloadDataHandling",
    "eimCtxParams1Generation",
    "eimProfileMetadataVerification",
    "minimizeEsipaBytes",
]
IPA_PROTOCOLS = ["ipaRetrieveHttps", "ipaRetrieveCoaps", "ipaInjectHttps", "ipaInjectCoaps", "ipaProprietary"]
ERROR_NAMES = {1: "incorrectTagList", 5: "euiccCiPKIdNotFound", 104: "ecallActive", 127: "undefinedError"}
_BY_HEX = {v.hex().upper(): k for k, v in TAGS.items()}


def validate(params: Any) -> dict[str, Any]:
    d = require_dict(params, "params")
    only_keys(d, {"tags", "euiccCiPKId"}, "params")
    tags = d.get("tags", DEFAULT_TAGS)
    if not isinstance(tags, list) or not tags:
        raise ParamError("tags", "must be a non-empty list of IpaEuiccData field names")
    names = []
    for t in tags:
        name = t if t in TAGS else _BY_HEX.get(str(t).upper()) if isinstance(t, str) else None
        if name is None:
            raise ParamError("tags", f"unknown tag {t!r} (one of {', '.join(TAGS)})")
        if name not in names:
            names.append(name)
    out: dict[str, Any] = {"tags": names}
    if "euiccCiPKId" in d:
        v = d["euiccCiPKId"]
        try:
            kid = bytes.fromhex(v) if isinstance(v, str) else None
        except ValueError:
            kid = None
        if not kid or len(kid) > 32:
            raise ParamError("euiccCiPKId", "must be 1 to 32 bytes in hex")
        out["euiccCiPKId"] = kid.hex().upper()
    return out


# SGP.32 v1.0 IpaEuiccData tags where they differ (v1.0 §2.11.2.2): defaultSmdpAddress 80, one notificationsList BF2B
V10_TAGS = {
    **TAGS,
    "defaultSmdpAddress": b"\x80",
    "notificationsList": b"\xbf\x2b",
    "euiccPackageResultList": b"\xbf\x2b",
}


def request(params: dict[str, Any], eim_transaction_id: bytes, *, sgp32_version: str | None = None) -> bytes:
    """IpaEuiccDataRequest ``BF52 { 5C tagList, [04 euiccCiPKIdentifierToBeUsed], 83 eimTransactionId }``; for an
    eUICC whose IPA speaks SGP.32 v1.0 (``sgp32_version`` "1.0") the tagList names the v1.0 tags."""
    table = V10_TAGS if sgp32_version == "1.0" else TAGS
    tags: list[bytes] = []
    for n in params["tags"]:
        if table[n] not in tags:
            tags.append(table[n])
    value: dict[str, Any] = {
        "tagList": b"".join(tags),
        "eimTransactionId": eim_transaction_id,
    }
    if "euiccCiPKId" in params:
        value["euiccCiPKIdentifierToBeUsed"] = bytes.fromhex(params["euiccCiPKId"])
    return asn1.encode("IpaEuiccDataRequest", value)


def learned(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(registry fields, JSON summary)`` from a decoded IpaEuiccData (certificates are handled by the caller)."""
    fields: dict[str, Any] = {}
    info: dict[str, Any] = {}
    summary: dict[str, Any] = {"received": sorted(k for k in data if k != "eimTransactionId")}
    caps = data.get("ipaCapabilities")
    if caps is not None:
        fields["ipa_capabilities"] = {
            "ipaFeatures": bit_names(caps.get("ipaFeatures"), IPA_FEATURES),
            "ipaSupportedProtocols": bit_names(caps.get("ipaSupportedProtocols"), IPA_PROTOCOLS),
        }
        summary["ipaCapabilities"] = fields["ipa_capabilities"]
    for key in ("defaultSmdpAddress", "rootSmdsAddress"):
        if key in data:
            info[key] = data[key]
    if "euiccInfo2" in data:
        e2 = data["euiccInfo2"]
        view = {
            k: ".".join(str(b) for b in e2[k])  # VersionType: 3 bytes major.minor.revision
            for k in ("profileVersion", "svn", "euiccFirmwareVer")
            if isinstance(e2.get(k), bytes | bytearray)
        }
        for k in ("ipaMode", "sasAcreditationNumber", "euiccCiPKIdListForSigning", "euiccCiPKIdListForVerification"):
            if k in e2:
                view[k] = to_json(e2[k])
        info["euiccInfo2"] = view
    if "euiccInfo1" in data:
        info["euiccInfo1"] = to_json(data["euiccInfo1"])
    if "deviceInfo" in data:
        info["deviceInfo"] = to_json(data["deviceInfo"])
    if "associationToken" in data:
        summary["associationToken"] = data["associationToken"]
    if info:
        fields["info_merge"] = info
        summary.update(info)
    return fields, summary
