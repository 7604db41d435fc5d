"""Profile download operations: ProfileDownloadTriggerRequest (SGP.32 v1.2 §3.2 profile download initiated by
the eIM; protocol brief §2.4, §6) and the outcomes that close them.

Parameters (JSON), exactly one source::

    {"activationCode": "1$smdp.example.com$MATCHING-ID"}     -- or "LPA:1$..."
    {"defaultSmdp": true}                                    -- contactDefaultSmdp
    {"smds": {"address": "lpa.ds.gsma.com"}}                 -- contactSmds (address optional)
    + optional "mode": "direct" | "indirect"

``mode`` is what the eIM expects the IPA to do: ``indirect`` when the IPA's last reported capabilities offer
only indirectRspServerCommunication, ``direct`` when they offer only direct; when both or none are known, the
configured default. It is recorded in the operation (``params.mode``). An explicit ``"mode": "indirect"`` (or an
indirect mode for an IPA that reported eimDownloadDataHandling) makes the eIM keep the download data: the trigger
goes out without profileDownloadData (``params.eimHoldsData``), and the relay supplies the SM-DP+ address and the
matchingId, so the download is relayed; with the activation code in the trigger an IPA goes direct when it can.
Direct downloads end with a ProfileDownloadTriggerResult in ProvideEimPackageResult; indirect ones end with
the PIR that the IPA hands over with HandleNotification (the eIM relays the download itself). Both are accepted
in either mode.
"""

from __future__ import annotations

from typing import Any

from eim.packages.common import ParamError, iccid_from_bytes, only_keys, require_dict, to_json
from rsp import activation_code as ac_mod
from rsp import asn1, tlv
from rsp.errors import DecodeError, RspError

MODES = ("direct", "indirect")
ERROR_REASONS = {
    1: "incorrectInputValues",
    2: "invalidSignature",
    3: "invalidTransactionId",
    4: "unsupportedCrtValues",
    5: "unsupportedRemoteOperationType",
    6: "unsupportedProfileClass",
    7: "scp03tStructureError",
    8: "scp03tSecurityError",
    9: "installFailedDueToIccidAlreadyExistsOnEuicc",
    10: "installFailedDueToInsufficientMemoryForProfile",
    11: "installFailedDueToInterruption",
    12: "installFailedDueToPEProcessingError",
    13: "installFailedDueToDataMismatch",
    14: "testProfileInstallFailedDueToInvalidNaaKey",
    15: "pprNotAllowed",
    127: "installFailedDueToUnknownError",
}


def validate(params: Any) -> dict[str, Any]:
    d = require_dict(params, "params")
    only_keys(d, {"activationCode", "defaultSmdp", "smds", "mode"}, "params")
    sources = [k for k in ("activationCode", "defaultSmdp", "smds") if k in d]
    if len(sources) != 1:
        raise ParamError("params", "give exactly one of activationCode, defaultSmdp, smds")
    out: dict[str, Any] = {}
    if "activationCode" in d:
        text = d["activationCode"]
        if not isinstance(text, str):
            raise ParamError("activationCode", "must be a string")
        try:
            code = ac_mod.parse(text)
        except RspError as exc:
            raise ParamError("activationCode", str(exc)) from None
        canonical = code.format()
        if len(canonical.encode()) > 255:
            raise ParamError("activationCode", "longer than 255 bytes")
        out["activationCode"] = canonical
        out["smdpAddress"] = code.smdp_address
    elif "defaultSmdp" in d:
        if d["defaultSmdp"] is not True:
            raise ParamError("defaultSmdp", "must be true")
        out["defaultSmdp"] = True
    else:
        smds = d["smds"]
        if isinstance(smds, str):
            smds = {"address": smds}
        smds = require_dict(smds, "smds")
        only_keys(smds, {"address"}, "smds")
        addr = smds.get("address")
        if addr is not None and (not isinstance(addr, str) or not addr or len(addr) > 255):
            raise ParamError("smds.address", "must be a non-empty string of at most 255 characters")
        out["smds"] = {"address": addr} if addr else {}
    if "mode" in d:
        if d["mode"] not in MODES:
            raise ParamError("mode", "must be direct or indirect")
        out["mode"] = d["mode"]
    return out


def choose_mode(params: dict[str, Any], ipa_features: list[str] | None, default: str) -> str:
    """The download mode to expect, from the request, else the IPA's capabilities as last learned."""
    if "mode" in params:
        return params["mode"]
    feats = set(ipa_features or [])
    direct = "directRspServerCommunication" in feats
    indirect = "indirectRspServerCommunication" in feats
    if indirect and not direct:
        return "indirect"
    if direct and not indirect:
        return "direct"
    return default


def eim_holds_data(params: dict[str, Any], *, explicit: bool, feats: list[str] | None) -> bool:
    """Whether the eIM keeps the download data itself (eimDownloadDataHandling) and sends a trigger without it.

    That is how the eIM asks for an indirect download on the wire: an IPA handed an activation code goes direct
    when it can. Done when the operator asked for ``mode: indirect`` explicitly, or when the mode is indirect and
    the IPA's last reported capabilities include eimDownloadDataHandling. Only for activation codes (the relay
    needs the SM-DP+ address and the matchingId).
    """
    if params.get("mode") != "indirect" or "activationCode" not in params:
        return False
    return explicit or "eimDownloadDataHandling" in set(feats or [])


def request(params: dict[str, Any], eim_transaction_id: bytes) -> bytes:
    """ProfileDownloadTriggerRequest ``BF54 { [A0 { 80 | 81 | A2 }], 82 eimTransactionId }``; without
    profileDownloadData when the eIM holds the download data (:func:`eim_holds_data`)."""
    if params.get("eimHoldsData"):
        return asn1.encode("ProfileDownloadTriggerRequest", {"eimTransactionId": eim_transaction_id})
    if "activationCode" in params:
        data: tuple[str, Any] = ("activationCode", params["activationCode"])
    elif params.get("defaultSmdp"):
        data = ("contactDefaultSmdp", None)
    else:
        smds = params.get("smds") or {}
        data = ("contactSmds", {"smdsAddress": smds["address"]} if smds.get("address") else {})
    return asn1.encode(
        "ProfileDownloadTriggerRequest", {"profileDownloadData": data, "eimTransactionId": eim_transaction_id}
    )


# -------------------------------------------------------------------------------------------------- outcomes
def pir_summary(pir: bytes) -> dict[str, Any]:
    """Decode a ProfileInstallationResult (BF37) into a summary:
    ``{"ok": bool, "transactionId", "seqNumber", "iccid", "aid" | "bppCommandId"/"errorReason"/"name"}``."""
    value = asn1.decode("SGP32-ProfileInstallationResult", pir)
    data = value["profileInstallationResultData"]
    meta = data["notificationMetadata"]
    out: dict[str, Any] = {
        "transactionId": data["transactionId"].hex().upper(),
        "seqNumber": meta["seqNumber"],
        "notificationAddress": meta["notificationAddress"],
        "smdpOid": data["smdpOid"],
    }
    if "iccid" in meta:
        out["iccid"] = iccid_from_bytes(meta["iccid"])
    alt, res = data["finalResult"]
    if alt == "successResult":
        out["ok"] = True
        out["aid"] = res["aid"].hex().upper()
    elif alt == "errorResult":
        out["ok"] = False
        out["bppCommandId"] = res["bppCommandId"]
        out["errorReason"] = res["errorReason"]
        out["name"] = ERROR_REASONS.get(res["errorReason"], str(res["errorReason"]))
    else:  # an unknown alternative decodes to (None, raw TLV)
        raise DecodeError("ProfileInstallationResult", "finalResult is neither successResult nor errorResult")
    return out


def pir_signed_part(pir: bytes) -> tuple[bytes, bytes]:
    """``(BF27 TLV as received, euiccSignPIR r||s)``: the PIR signature covers the BF27 TLV."""
    signed = tlv.require(pir, 0xBF27, what="ProfileInstallationResult")
    sig = tlv.require(pir, 0x5F37, what="ProfileInstallationResult")
    return signed.raw, sig.value


def trigger_result_summary(value: dict[str, Any]) -> dict[str, Any]:
    """JSON view of a decoded ProfileDownloadTriggerResult (the PIR part is summarised separately)."""
    alt, body = value["profileDownloadTriggerResultData"]
    if alt == "profileDownloadError":
        reason = body["profileDownloadErrorReason"]
        out = {
            "ok": False,
            "profileDownloadErrorReason": reason,
            "name": {104: "ecallActive", 127: "undefinedError"}.get(reason, str(reason)),
        }
        if "errorResponse" in body:
            out["errorResponse"] = to_json(body["errorResponse"])
            answered = describe_error_response(body["errorResponse"])
            if answered is not None:
                out["errorAnswer"] = answered
        return out
    return {"ok": None}


#: the ESipa functions whose error answer an IPA reports as errorResponse: tag -> (function, error member tag)
_ERROR_ANSWERS = {
    0xBF39: ("InitiateAuthentication", 0x81),
    0xBF3B: ("AuthenticateClient", 0x82),
    0xBF3A: ("GetBoundProfilePackage", 0x81),
    0xBF41: ("CancelSession", 0x81),
}
#: names of the codes the eIM answers itself (the relayed ones come from the SM-DP+'s reason, in the audit trail)
_OWN_CODES = {52: "invalidEimTransactionId", 127: "undefinedError"}


def describe_error_response(data: bytes) -> str | None:
    """``"InitiateAuthentication answered invalidEimTransactionId (52)"`` for an errorResponse that is an ESipa
    error answer (one INTEGER alternative); ``None`` for anything else (it stays in ``errorResponse`` as hex)."""
    try:
        outer = tlv.parse_exact(bytes(data))
        members = tlv.children(outer)
    except RspError:
        return None
    known = _ERROR_ANSWERS.get(outer.tag)
    if known is None or len(members) != 1 or members[0].tag != known[1] or not 1 <= members[0].length <= 2:
        return None
    code = int.from_bytes(members[0].value, "big", signed=True)
    name = _OWN_CODES.get(code, "error")
    return f"{known[0]} answered {name} ({code})"


def trigger_error(summary: dict[str, Any], why: str | None = None) -> str:
    """The operation's ``error`` for a profileDownloadError: its reason, what the eIM or SM-DP+ answered, why."""
    error = f"profile download failed: {summary['name']}"
    if "errorAnswer" in summary:
        error += f" ({summary['errorAnswer']})"
    if why:
        error += f": {why}"
    return error
