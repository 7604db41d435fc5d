"""Profile Download triggered by the eIM (SGP.32 v1.2 §3.2.3): ProfileDownloadTriggerRequest (BF54) ->
direct (§3.2.3.1, the IPA talks ES9+ to the SM-DP+) or indirect (§3.2.3.2, ES9+ relayed by the eIM over ESipa).

Choice (:func:`use_indirect`): indirect when the trigger carries no download data (the eIM holds it and relays),
or when the IPA may not contact SM-DP+ servers itself (``ipa.direct_download = false``); else direct.

Reporting: direct -> ProvideEimPackageResult(profileDownloadTriggerResult {eimTransactionId, PIR or
profileDownloadError}); indirect -> the PIR goes to the eIM with HandleNotification (on a failure before a PIR
exists: CancelSession over ESipa and, when nothing could be cancelled, profileDownloadTriggerResult with the error).

Shared here: download data from the trigger, ctxParams1, CancelSession with the reason of the failure path.

Each trigger once: the same ProfileDownloadTriggerRequest can reach the IPA more than once. Over MQTT the eIM
pushes a package again while its result is missing (``[operations] push_retry_s``), and the IPA's persistent
session keeps every copy while the IPA is down or busy (a modem re-opening its SIM); after a restart the IPA also
polls and is handed the same in-progress download. Run twice, the second run's InitiateAuthentication names an
operation the first one finished: the eIM answers ``invalidEimTransactionId`` (52), and the IPA reports a failure
for a download that succeeded. So once the outcome of a trigger is reported for good (a PIR, a
profileDownloadTriggerResult, a CancelSession the eIM took with a reason other than ``timeout``), its
eimTransactionId goes into the state file (``downloads``, the last 64), and a later copy is acknowledged (a push:
``eimPackageReceived``) but not run. A download that failed because the eIM could not be reached, or told the IPA to
come back, is not recorded: the eIM hands its trigger out again and it runs again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ipa import messages as m
from ipa.codes import CancelSessionReason, ProfileDownloadErrorReason, code_name
from ipa.config import IpaConfig
from ipa.procedures.context import IpaContext, ProcedureError
from ipa.procedures.euicc_data_request import device_info
from rsp import tlv

log = logging.getLogger("ipa.procedures.profile_download")


class DownloadFailed(ProcedureError):
    """A download failed at ``step``; ``cancel_reason`` is the CancelSessionReason used (None: nothing to cancel)."""

    def __init__(
        self,
        step: str,
        message: str,
        *,
        code: int | str | None = None,
        code_name: str | None = None,
        cancel_reason: int | None = None,
        error_response: bytes | None = None,
    ) -> None:
        super().__init__("profile download", step, message, code, code_name)
        self.cancel_reason = cancel_reason
        self.error_response = error_response
        self.reported = False  # the eIM took a CancelSession that ends the operation (set by the indirect procedure)
        self.pir = None  # the eUICC's PIR when the installation itself failed (finalResult error)


@dataclass(frozen=True)
class DownloadData:
    smdp_address: str | None
    matching_id: str | None
    confirmation_code_required: bool = False
    smdp_oid: str | None = None


def parse_activation_code(text: str) -> DownloadData:
    from rsp.activation_code import ActivationCodeError, parse

    try:
        ac = parse(text)
    except ActivationCodeError as exc:
        raise DownloadFailed("activation code", str(exc)) from None
    return DownloadData(ac.smdp_address, ac.matching_id or None, ac.confirmation_code_required, ac.smdp_oid)


def ctx_params1(matching_id: str | None, config: IpaConfig) -> bytes:
    """CtxParams1 ``A0 { [80 matchingId], A1 deviceInfo }`` (ctxParamsForCommonAuthentication)."""
    body = tlv.encode(0x80, matching_id.encode()) if matching_id else b""
    body += tlv.encode(0xA1, device_info(config))
    return tlv.encode(0xA0, body)


def hash_confirmation_code(code: str, transaction_id: bytes) -> bytes:
    """SGP.22 §3.1.3: SHA256(SHA256(confirmation code) || transactionId)."""
    import hashlib  # only with a confirmation code: the daemon does not load it otherwise

    return hashlib.sha256(hashlib.sha256(code.encode()).digest() + transaction_id).digest()


def cc_required(smdp_signed2: bytes) -> bool:
    found = tlv.find(smdp_signed2, 0x01)
    return bool(found and found.value and found.value[0])


async def download_data_from_trigger(ctx: IpaContext, trig: m.ProfileDownloadTriggerRequest) -> DownloadData | None:
    """None means "the eIM supplies the download data" (indirect, eimDownloadDataHandling)."""
    if trig.activation_code is not None:
        return parse_activation_code(trig.activation_code)
    if trig.contact_default_smdp:
        addrs = await ctx.es10.get_euicc_configured_addresses()
        if not addrs.default_dp_address:
            raise DownloadFailed("EuiccConfiguredAddresses", "contactDefaultSmdp but no default SM-DP+ address set")
        return DownloadData(addrs.default_dp_address, None)
    if trig.contact_smds:
        raise DownloadFailed("contactSmds", "SM-DS event retrieval (ES11) is not supported by this IPA")
    return None


async def cancel_on_card(ctx: IpaContext, transaction_id: bytes | None, reason: int) -> bytes | None:
    """ES10b.CancelSession with ``reason``; the card's signed answer, or None if it could not be cancelled."""
    if not transaction_id:
        return None
    ctx.report("CancelSession", reason=code_name(CancelSessionReason, reason))
    try:
        return await ctx.es10.cancel_session(transaction_id, reason)
    except Exception as exc:
        log.warning("CancelSession(%s) on the eUICC failed: %s", code_name(CancelSessionReason, reason), exc)
        return None


def use_indirect(ctx: IpaContext, data: DownloadData | None) -> bool:
    """Direct or indirect (SGP.32 v1.2 §3.2.3).

    The trigger itself says what the eIM wants: without download data the eIM holds it (eimDownloadDataHandling)
    and relays the download, so indirect; with an activation code the IPA contacts the SM-DP+ itself when it may
    (``ipa.direct_download``), else it asks the eIM to relay (indirect). The eIM configuration's
    ``indirectProfileDownload`` says the eIM *can* relay; it does not force the relay on an IPA that was handed an
    activation code.
    """
    if data is None:
        return True
    return not ctx.config.ipa.direct_download


async def run(ctx: IpaContext, trig: m.ProfileDownloadTriggerRequest) -> None:
    """Handle a ProfileDownloadTriggerRequest end to end, including the report to the eIM."""
    from ipa.procedures import direct_profile_download, indirect_profile_download
    from ipa.procedures.result_delivery import deliver_results, queue_provide_result

    txid = trig.eim_transaction_id
    if txid and txid in ctx.store.state.finished_downloads:
        log.warning(
            "download trigger %s already handled, its outcome reported: not run again (a repeated push or hand-out)",
            txid.hex().upper(),
        )
        return
    try:
        data = await download_data_from_trigger(ctx, trig)
    except DownloadFailed as exc:
        log.error("%s", exc)
        await queue_provide_result(
            ctx, m.profile_download_trigger_result(txid, error_reason=ProfileDownloadErrorReason.undefinedError)
        )
        await finished(ctx, txid)
        await deliver_results(ctx)
        return
    if use_indirect(ctx, data):
        if await indirect_profile_download.run(ctx, data, eim_transaction_id=txid):
            await finished(ctx, txid)
    else:
        pir = None
        err: DownloadFailed | None = None
        try:
            pir = await direct_profile_download.download(ctx, data)
        except DownloadFailed as exc:
            err = exc
            log.error("%s", exc)
        if pir is None and err is not None and err.pir is not None:
            pir = err.pir  # a failed installation is reported with its (error) PIR
        if pir is not None:
            result = m.profile_download_trigger_result(txid, pir=pir.raw)
            seqs = [pir.seq_number] if pir.seq_number is not None else []
        else:
            result = m.profile_download_trigger_result(
                txid,
                error_reason=ProfileDownloadErrorReason.undefinedError,
                error_response=err.error_response if err else None,
            )
            seqs = []
        await queue_provide_result(ctx, result, seq_numbers=seqs)
        await finished(ctx, txid)
        await deliver_results(ctx)


async def finished(ctx: IpaContext, txid: bytes | None) -> None:
    """Remember that the outcome of the trigger ``txid`` is reported (module docstring, "Each trigger once")."""
    if not txid:
        return
    from ipa.state import MAX_FINISHED_DOWNLOADS

    st = ctx.store.state
    if txid not in st.finished_downloads:
        st.finished_downloads = [*st.finished_downloads, bytes(txid)][-MAX_FINISHED_DOWNLOADS:]
        await ctx.store.commit()
