"""PSMO list operations (SGP.32 v1.2 §2.5.2 Profile State Management Operations; protocol brief §4).

Parameters (JSON)::

    {"psmos": [
        {"enable": {"iccid": "8944...", "rollback": false}},
        {"disable": {"iccid": "..."}},
        {"delete": {"iccid": "..."}},
        {"listProfileInfo": {"iccid" | "isdpAid" | "profileClass": ..., "tags": "5A4F9F70"}},
        {"getRAT": {}},
        {"configureImmediateEnable": {"immediateEnableFlag": true, "defaultSmdpOid": "1.2.3",
                                      "defaultSmdpAddress": "smdp.example.com"}},
        {"setFallbackAttribute": {"iccid": "..."}},
        {"unsetFallbackAttribute": {}},
        {"setDefaultDpAddress": {"address": "smdp.example.com"}}
    ]}
"""

from __future__ import annotations

import re
from typing import Any

from eim.packages.common import (
    ParamError,
    bool_param,
    iccid_from_bytes,
    iccid_to_bytes,
    only_keys,
    require_dict,
    text_param,
    to_json,
)
from rsp import asn1
from rsp.errors import RspError

MAX_ITEMS = 16
PROFILE_CLASSES = {"test": 0, "provisioning": 1, "operational": 2}
_OID = re.compile(r"^[0-2](\.(0|[1-9][0-9]*))+$")

RESULT_NAMES: dict[str, dict[int, str]] = {
    "enableResult": {
        0: "ok",
        1: "iccidOrAidNotFound",
        2: "profileNotInDisabledState",
        3: "disallowedByPolicy",
        5: "catBusy",
        20: "rollbackNotAvailable",
        127: "undefinedError",
    },
    "disableResult": {
        0: "ok",
        1: "iccidOrAidNotFound",
        2: "profileNotInEnabledState",
        3: "disallowedByPolicy",
        5: "catBusy",
        127: "undefinedError",
    },
    "deleteResult": {
        0: "ok",
        1: "iccidOrAidNotFound",
        2: "profileNotInDisabledState",
        3: "disallowedByPolicy",
        20: "rollbackNotAvailable",
        21: "returnFallbackProfile",
        127: "undefinedError",
    },
    "configureImmediateEnableResult": {0: "ok", 1: "insufficientMemory", 7: "commandError", 127: "undefinedError"},
    "rollbackResult": {0: "ok", 127: "undefinedError"},
    "setFallbackAttributeResult": {
        0: "ok",
        1: "iccidOrAidNotFound",
        2: "fallbackNotAllowed",
        3: "fallbackProfileEnabled",
        127: "undefinedError",
    },
    "unsetFallbackAttributeResult": {
        0: "ok",
        2: "noFallbackAttribute",
        3: "fallbackProfileEnabled",
        7: "commandError",
        127: "undefinedError",
    },
    "processingTerminated": {
        1: "resultSizeOverflow",
        2: "unknownOrDamagedCommand",
        3: "interruption",
        127: "undefinedError",
    },
    # eCO results (same EuiccResultData CHOICE)
    "deleteEimResult": {0: "ok", 1: "eimNotFound", 2: "lastEimDeleted", 7: "commandError", 127: "undefinedError"},
    "updateEimResult": {
        0: "ok",
        1: "eimNotFound",
        3: "ciPKUnknown",
        6: "counterValueOutOfRange",
        7: "commandError",
        127: "undefinedError",
    },
    "addEimResultCode": {
        0: "ok",
        1: "insufficientMemory",
        2: "associatedEimAlreadyExists",
        3: "ciPKUnknown",
        5: "invalidAssociationToken",
        6: "counterValueOutOfRange",
        7: "commandError",
        127: "undefinedError",
    },
}


def _iccid(d: dict[str, Any], field: str) -> bytes:
    only_keys(d, {"iccid"}, field)
    if "iccid" not in d:
        raise ParamError(f"{field}.iccid", "is required")
    return iccid_to_bytes(d["iccid"], f"{field}.iccid")


def _one(i: int, item: Any) -> tuple[str, Any]:
    field = f"psmos[{i}]"
    if not isinstance(item, dict) or len(item) != 1:
        raise ParamError(field, 'must be an object with exactly one PSMO name, e.g. {"enable": {"iccid": "..."}}')
    name, raw = next(iter(item.items()))
    field = f"{field}.{name}"
    d = require_dict(raw, field)
    if name == "enable":
        only_keys(d, {"iccid", "rollback"}, field)
        value: dict[str, Any] = {"iccid": _iccid({k: v for k, v in d.items() if k == "iccid"}, field)}
        if bool_param(d, "rollback", field):
            value["rollbackFlag"] = None
        return ("enable", value)
    if name in ("disable", "delete", "setFallbackAttribute"):
        return (name, {"iccid": _iccid(d, field)})
    if name in ("getRAT", "unsetFallbackAttribute"):
        only_keys(d, set(), field)
        return (name, {})
    if name == "listProfileInfo":
        only_keys(d, {"iccid", "isdpAid", "profileClass", "tags"}, field)
        value = {}
        criteria = [k for k in ("iccid", "isdpAid", "profileClass") if k in d]
        if len(criteria) > 1:
            raise ParamError(field, "give at most one search criterion (iccid, isdpAid or profileClass)")
        if "iccid" in d:
            value["searchCriteria"] = ("iccid", iccid_to_bytes(d["iccid"], f"{field}.iccid"))
        elif "isdpAid" in d:
            value["searchCriteria"] = ("isdpAid", _hex(d["isdpAid"], f"{field}.isdpAid", 5, 16))
        elif "profileClass" in d:
            pc = d["profileClass"]
            if pc not in PROFILE_CLASSES:
                raise ParamError(f"{field}.profileClass", f"must be one of {', '.join(PROFILE_CLASSES)}")
            value["searchCriteria"] = ("profileClass", PROFILE_CLASSES[pc])
        if "tags" in d:
            value["tagList"] = _hex(d["tags"], f"{field}.tags", 1, 64)
        return ("listProfileInfo", value)
    if name == "configureImmediateEnable":
        only_keys(d, {"immediateEnableFlag", "defaultSmdpOid", "defaultSmdpAddress"}, field)
        value = {}
        if bool_param(d, "immediateEnableFlag", field):
            value["immediateEnableFlag"] = None
        oid = text_param(d, "defaultSmdpOid", field, required=False, max_len=128)
        if oid is not None:
            if not _OID.match(oid):
                raise ParamError(f"{field}.defaultSmdpOid", f"{oid!r} is not a dotted OBJECT IDENTIFIER")
            value["defaultSmdpOid"] = oid
        addr = text_param(d, "defaultSmdpAddress", field, required=False)
        if addr is not None:
            value["defaultSmdpAddress"] = addr
        return ("configureImmediateEnable", value)
    if name == "setDefaultDpAddress":
        only_keys(d, {"address"}, field)
        addr = text_param(d, "address", field, required=False)
        return ("setDefaultDpAddress", {"defaultDpAddress": addr or ""})
    raise ParamError(
        field.rsplit(".", 1)[0],
        f"unknown PSMO {name!r} (enable, disable, delete, listProfileInfo, getRAT, configureImmediateEnable, "
        "setFallbackAttribute, unsetFallbackAttribute, setDefaultDpAddress)",
    )


def _hex(v: Any, field: str, lo: int, hi: int) -> bytes:
    if not isinstance(v, str):
        raise ParamError(field, "must be a hex string")
    try:
        data = bytes.fromhex(v)
    except ValueError:
        raise ParamError(field, f"{v!r} is not hex") from None
    if not lo <= len(data) <= hi:
        raise ParamError(field, f"must be {lo} to {hi} bytes")
    return data


def validate(params: Any) -> dict[str, Any]:
    """Check PSMO parameters; returns them unchanged (JSON) or raises :class:`ParamError`."""
    d = require_dict(params, "params")
    only_keys(d, {"psmos"}, "params")
    items = d.get("psmos")
    if not isinstance(items, list) or not items:
        raise ParamError("psmos", "must be a non-empty list of PSMOs")
    if len(items) > MAX_ITEMS:
        raise ParamError("psmos", f"at most {MAX_ITEMS} PSMOs in one package")
    values = [_one(i, item) for i, item in enumerate(items)]
    try:  # the whole list must encode (sizes, values)
        asn1.encode("EuiccPackage", ("psmoList", values))
    except RspError as exc:
        raise ParamError("psmos", f"cannot be encoded: {exc}") from None
    return {"psmos": items}


def euicc_package(params: dict[str, Any]) -> tuple[str, list]:
    """The ``euiccPackage`` CHOICE value of EuiccPackageSigned."""
    return ("psmoList", [_one(i, item) for i, item in enumerate(params["psmos"])])


# ------------------------------------------------------------------------------------------------ results
def profile_view(p: dict[str, Any]) -> dict[str, Any]:
    """The registry's JSON view of an SGP32-ProfileInfo."""
    out: dict[str, Any] = {}
    if "iccid" in p:
        out["iccid"] = iccid_from_bytes(p["iccid"])
    if "isdpAid" in p:
        out["isdpAid"] = p["isdpAid"].hex().upper()
    if "profileState" in p:
        out["state"] = {0: "disabled", 1: "enabled"}.get(p["profileState"], p["profileState"])
    for key in ("profileNickname", "serviceProviderName", "profileName"):
        if key in p:
            out[key] = p[key]
    if "profileClass" in p:
        out["profileClass"] = {v: k for k, v in PROFILE_CLASSES.items()}.get(p["profileClass"], p["profileClass"])
    if "fallbackAttribute" in p:
        out["fallbackAttribute"] = p["fallbackAttribute"]
    for config in p.get("notificationConfigurationInfo") or ():  # the SM-DP+ its notifications go to
        if isinstance(config, dict) and isinstance(config.get("notificationAddress"), str):
            out["smdpAddress"] = config["notificationAddress"]
            break
    return out


def describe_results(results: list[Any]) -> tuple[list[dict[str, Any]], int | None, list[dict] | None]:
    """EuiccResultData list -> (JSON entries, first failure code or None, profiles if listed)."""
    entries: list[dict[str, Any]] = []
    failure: int | None = None
    profiles: list[dict] | None = None
    for item in results:
        if not isinstance(item, tuple) or item[0] is None:
            entries.append({"unknown": to_json(item[1] if isinstance(item, tuple) else item)})
            continue
        name, value = item
        entry: dict[str, Any] = {"type": name}
        code: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            code = value
        elif name == "listProfileInfoResult":
            alt, body = value
            if alt == "profileInfoListOk":
                profiles = [profile_view(p) for p in body]
                entry["profiles"] = profiles
            else:
                code = body
                entry["name"] = {1: "incorrectInputValues", 11: "profileChangeOngoing", 127: "undefinedError"}.get(
                    body, str(body)
                )
        elif name == "addEimResult":
            alt, body = value
            if alt == "associationToken":
                entry["associationToken"] = body
            else:
                code = body
                entry["name"] = RESULT_NAMES["addEimResultCode"].get(body, str(body))
        elif name == "listEimResult":
            alt, body = value
            if alt == "eimIdList":
                entry["eims"] = [to_json(e) for e in body]
            else:
                code = body
        elif name == "setDefaultDpAddressResult":
            code = value.get("setDefaultDpAddressResult")
        else:
            entry["value"] = to_json(value)
        if code is not None:
            entry["code"] = code
            entry.setdefault("name", RESULT_NAMES.get(name, {}).get(code, str(code)))
            # processingTerminated is always a failure; for the rest 0 = ok
            if (name == "processingTerminated" or code != 0) and failure is None:
                failure = code
        entries.append(entry)
    return entries, failure, profiles
