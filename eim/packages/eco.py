"""eCO list operations (SGP.32 v1.2 §2.5.3 eIM Configuration Operations; protocol brief §4).

Parameters (JSON)::

    {"ecos": [
        {"addEim": {"eimId": "eim2", "eimFqdn": "eim2.example.com:8443", "eimIdType": "fqdn",
                    "counterValue": 1, "associationToken": -1, "eimPublicKey": "<SPKI DER hex or PEM>",
                    "eimCertificate": "<cert DER hex or PEM>", "euiccCiPKId": "<hex>",
                    "indirectProfileDownload": true, "eimSupportedProtocol": ["eimRetrieveHttps"]}},
        {"updateEim": {... same fields ...}},
        {"deleteEim": {"eimId": "eim2"}},
        {"listEim": {}}
    ]}

Results are interpreted by :func:`eim.packages.psmo.describe_results` (one EuiccResultData CHOICE for both).
"""

from __future__ import annotations

from typing import Any

from eim.packages.common import ParamError, only_keys, require_dict, text_param
from rsp import asn1
from rsp.errors import RspError

MAX_ITEMS = 8
EIM_ID_TYPES = {"oid": 1, "fqdn": 2, "proprietary": 3}
PROTOCOLS = ["eimRetrieveHttps", "eimRetrieveCoaps", "eimInjectHttps", "eimInjectCoaps", "eimProprietary"]
CONFIG_FIELDS = {
    "eimId",
    "eimFqdn",
    "eimIdType",
    "counterValue",
    "associationToken",
    "eimPublicKey",
    "eimCertificate",
    "trustedEimPkTls",
    "trustedCertificateTls",
    "eimSupportedProtocol",
    "euiccCiPKId",
    "indirectProfileDownload",
}


def _der(v: Any, field: str) -> bytes:
    """DER from hex or PEM text."""
    if not isinstance(v, str) or not v.strip():
        raise ParamError(field, "must be hex DER or PEM text")
    text = v.strip()
    if text.startswith("-----BEGIN"):
        import base64

        body = "".join(ln for ln in text.splitlines() if ln and not ln.startswith("-----"))
        try:
            return base64.b64decode(body, validate=True)
        except ValueError:
            raise ParamError(field, "PEM body is not base64") from None
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise ParamError(field, "is neither hex nor PEM") from None


def _decoded(type_name: str, der: bytes, field: str) -> Any:
    try:
        return asn1.decode(type_name, der)
    except RspError as exc:
        raise ParamError(field, f"not a valid {type_name}: {exc}") from None


def eim_configuration(d: Any, field: str) -> dict[str, Any]:
    """EimConfigurationData value from JSON."""
    d = require_dict(d, field)
    only_keys(d, CONFIG_FIELDS, field)
    out: dict[str, Any] = {"eimId": text_param(d, "eimId", field, required=True, max_len=128)}
    fqdn = text_param(d, "eimFqdn", field, required=False)
    if fqdn is not None:
        out["eimFqdn"] = fqdn
    if "eimIdType" in d:
        if d["eimIdType"] not in EIM_ID_TYPES:
            raise ParamError(f"{field}.eimIdType", f"must be one of {', '.join(EIM_ID_TYPES)}")
        out["eimIdType"] = EIM_ID_TYPES[d["eimIdType"]]
    for key in ("counterValue", "associationToken"):
        if key in d:
            v = d[key]
            if not isinstance(v, int) or isinstance(v, bool) or not -(2**31) <= v < 2**31:
                raise ParamError(f"{field}.{key}", "must be a 32-bit integer")
            out[key] = v
    if "eimPublicKey" in d and "eimCertificate" in d:
        raise ParamError(field, "give eimPublicKey or eimCertificate, not both")
    if "eimPublicKey" in d:
        out["eimPublicKeyData"] = (
            "eimPublicKey",
            _decoded("SubjectPublicKeyInfo", _der(d["eimPublicKey"], f"{field}.eimPublicKey"), f"{field}.eimPublicKey"),
        )
    if "eimCertificate" in d:
        out["eimPublicKeyData"] = (
            "eimCertificate",
            _decoded("Certificate", _der(d["eimCertificate"], f"{field}.eimCertificate"), f"{field}.eimCertificate"),
        )
    if "trustedEimPkTls" in d and "trustedCertificateTls" in d:
        raise ParamError(field, "give trustedEimPkTls or trustedCertificateTls, not both")
    if "trustedEimPkTls" in d:
        out["trustedPublicKeyDataTls"] = (
            "trustedEimPkTls",
            _decoded(
                "SubjectPublicKeyInfo",
                _der(d["trustedEimPkTls"], f"{field}.trustedEimPkTls"),
                f"{field}.trustedEimPkTls",
            ),
        )
    if "trustedCertificateTls" in d:
        out["trustedPublicKeyDataTls"] = (
            "trustedCertificateTls",
            _decoded(
                "Certificate",
                _der(d["trustedCertificateTls"], f"{field}.trustedCertificateTls"),
                f"{field}.trustedCertificateTls",
            ),
        )
    if "eimSupportedProtocol" in d:
        names = d["eimSupportedProtocol"]
        if not isinstance(names, list) or any(n not in PROTOCOLS for n in names):
            raise ParamError(f"{field}.eimSupportedProtocol", f"must be a list of {', '.join(PROTOCOLS)}")
        bits = [PROTOCOLS.index(n) for n in names]
        nbits = max(bits) + 1 if bits else 0
        data = bytearray((nbits + 7) // 8)
        for b in bits:
            data[b // 8] |= 0x80 >> (b % 8)
        out["eimSupportedProtocol"] = (bytes(data), nbits)
    if "euiccCiPKId" in d:
        kid = _der(d["euiccCiPKId"], f"{field}.euiccCiPKId")
        if not 1 <= len(kid) <= 32:
            raise ParamError(f"{field}.euiccCiPKId", "must be 1 to 32 bytes")
        out["euiccCiPKId"] = kid
    if "indirectProfileDownload" in d:
        if not isinstance(d["indirectProfileDownload"], bool):
            raise ParamError(f"{field}.indirectProfileDownload", "must be true or false")
        if d["indirectProfileDownload"]:
            out["indirectProfileDownload"] = None
    return out


def _one(i: int, item: Any) -> tuple[str, Any]:
    field = f"ecos[{i}]"
    if not isinstance(item, dict) or len(item) != 1:
        raise ParamError(field, 'must be an object with exactly one eCO name, e.g. {"listEim": {}}')
    name, raw = next(iter(item.items()))
    field = f"{field}.{name}"
    if name in ("addEim", "updateEim"):
        return (name, eim_configuration(raw, field))
    d = require_dict(raw, field)
    if name == "deleteEim":
        only_keys(d, {"eimId"}, field)
        return ("deleteEim", {"eimId": text_param(d, "eimId", field, required=True, max_len=128)})
    if name == "listEim":
        only_keys(d, set(), field)
        return ("listEim", {})
    raise ParamError(f"ecos[{i}]", f"unknown eCO {name!r} (addEim, deleteEim, updateEim, listEim)")


def validate(params: Any) -> dict[str, Any]:
    d = require_dict(params, "params")
    only_keys(d, {"ecos"}, "params")
    items = d.get("ecos")
    if not isinstance(items, list) or not items:
        raise ParamError("ecos", "must be a non-empty list of eCOs")
    if len(items) > MAX_ITEMS:
        raise ParamError("ecos", f"at most {MAX_ITEMS} eCOs in one package")
    values = [_one(i, item) for i, item in enumerate(items)]
    try:  # the whole list must encode (sizes, values)
        asn1.encode("EuiccPackage", ("ecoList", values))
    except RspError as exc:
        raise ParamError("ecos", f"cannot be encoded: {exc}") from None
    return {"ecos": items}


def euicc_package(params: dict[str, Any]) -> tuple[str, list]:
    return ("ecoList", [_one(i, item) for i, item in enumerate(params["ecos"])])
