"""Indirect Profile Download (SGP.32 v1.2 §3.2.3.2): the ES9+ exchange travels over ESipa and the eIM relays it
to the SM-DP+.

GetEUICCInfo1 + GetEUICCChallenge -> ESipa InitiateAuthentication (BF39: smdpAddress, euiccInfo1,
eimTransactionId) -> ES10b.AuthenticateServer (ctxParams1 from the eIM if it generated one, else matchingId +
deviceInfo) -> ESipa AuthenticateClient (BF3B) -> ES10b.PrepareDownload -> ESipa GetBoundProfilePackage (BF3A) ->
ES10b.LoadBoundProfilePackage -> PIR -> ESipa HandleNotification (BF3D) -> RemoveNotificationFromList.

Failure paths: once the eUICC holds a session (after AuthenticateServer), every failure ends with ES10b.CancelSession
and ESipa CancelSession (BF41, the card's signed answer carried as the [1] component): ``timeout`` when the eIM
could not be reached, ``postponed`` for a missing confirmation code, ``loadBppExecutionError`` when the BPP load
broke off, ``undefinedReason`` for an eIM/SM-DP+ error. A failure before any session exists is reported with
ProvideEimPackageResult(profileDownloadTriggerResult profileDownloadError).
"""

from __future__ import annotations

import logging

from ipa import messages as m
from ipa.codes import (
    AuthenticateClientErrorEsipa,
    AuthenticateErrorCode,
    CancelSessionReason,
    DownloadErrorCode,
    GetBoundProfilePackageErrorEsipa,
    InitiateAuthenticationErrorEsipa,
    ProfileDownloadErrorReason,
    code_name,
)
from ipa.es10 import Es10Error
from ipa.es10_download import ProfileInstallationResult
from ipa.esipa import EsipaError
from ipa.procedures.context import IpaContext
from ipa.procedures.profile_download import (
    DownloadData,
    DownloadFailed,
    cancel_on_card,
    cc_required,
    ctx_params1,
)
from ipa.procedures.result_delivery import deliver_results, queue_provide_result
from rsp.errors import DecodeError

log = logging.getLogger("ipa.procedures.indirect_profile_download")


async def _esipa(ctx: IpaContext, message: bytes, step: str) -> bytes:
    try:
        answer = await ctx.send(message)
    except EsipaError as exc:
        await ctx.close_transport()
        raise DownloadFailed(step, str(exc), code=exc.status, cancel_reason=CancelSessionReason.timeout) from None
    if not answer:
        raise DownloadFailed(step, "the eIM answered nothing", cancel_reason=CancelSessionReason.undefinedReason)
    return answer


async def download(
    ctx: IpaContext,
    data: DownloadData | None,
    eim_transaction_id: bytes | None = None,
    confirmation_code: str | None = None,
) -> ProfileInstallationResult:
    txid: bytes | None = None
    try:
        info1 = await ctx.es10.get_euicc_info1()
        challenge = await ctx.es10.get_euicc_challenge()
        smdp = data.smdp_address if data else None
        ctx.report("InitiateAuthentication", smdpAddress=smdp, indirect=True)
        answer = await _esipa(
            ctx, m.initiate_authentication_request(challenge, smdp, info1, eim_transaction_id), "InitiateAuthentication"
        )
        init = _parse(m.parse_initiate_authentication_response, answer, "InitiateAuthentication")
        if isinstance(init, m.EsipaErrorAnswer):
            name = code_name(InitiateAuthenticationErrorEsipa, init.code)
            raise DownloadFailed("InitiateAuthentication", f"eIM answered {name}", code=init.code, code_name=name)
        txid = init.transaction_id
        ctx_params = init.ctx_params1 or ctx_params1(
            (data.matching_id if data else None) or init.matching_id, ctx.config
        )
        ctx.report("AuthenticateServer", transactionId=txid.hex().upper())
        auth = await ctx.es10.authenticate_server(
            init.server_signed1,
            init.server_signature1,
            init.euicc_ci_pkid_to_be_used,
            init.server_certificate,
            ctx_params,
        )
        answer = await _esipa(ctx, m.authenticate_client_request(txid, auth.raw), "AuthenticateClient")
        if not auth.ok:
            name = code_name(AuthenticateErrorCode, auth.error or 127)
            raise DownloadFailed("AuthenticateServer", f"eUICC answered {name}", code=auth.error, code_name=name)
        client = _parse(m.parse_authenticate_client_response, answer, "AuthenticateClient")
        if isinstance(client, m.EsipaErrorAnswer):
            name = code_name(AuthenticateClientErrorEsipa, client.code)
            raise DownloadFailed(
                "AuthenticateClient",
                f"eIM answered {name}",
                code=client.code,
                code_name=name,
                cancel_reason=CancelSessionReason.undefinedReason,
            )
        if isinstance(client, m.AuthenticateClientOkDs):
            raise DownloadFailed(
                "AuthenticateClient",
                "SM-DS event answer: not supported",
                cancel_reason=CancelSessionReason.undefinedReason,
            )
        hash_cc = client.hash_cc
        if hash_cc is None and cc_required(client.smdp_signed2):
            if not confirmation_code:
                raise DownloadFailed(
                    "PrepareDownload",
                    "confirmation code required and none was given",
                    cancel_reason=CancelSessionReason.postponed,
                )
            from ipa.procedures.profile_download import hash_confirmation_code

            hash_cc = hash_confirmation_code(confirmation_code, txid)
        ctx.report("PrepareDownload")
        prep = await ctx.es10.prepare_download(
            client.smdp_signed2, client.smdp_signature2, client.smdp_certificate, hash_cc
        )
        answer = await _esipa(ctx, m.get_bound_profile_package_request(txid, prep.raw), "GetBoundProfilePackage")
        if not prep.ok:
            name = code_name(DownloadErrorCode, prep.error or 127)
            raise DownloadFailed("PrepareDownload", f"eUICC answered {name}", code=prep.error, code_name=name)
        bpp = _parse(m.parse_get_bound_profile_package_response, answer, "GetBoundProfilePackage")
        if isinstance(bpp, m.EsipaErrorAnswer):
            name = code_name(GetBoundProfilePackageErrorEsipa, bpp.code)
            raise DownloadFailed(
                "GetBoundProfilePackage",
                f"eIM answered {name}",
                code=bpp.code,
                code_name=name,
                cancel_reason=CancelSessionReason.undefinedReason,
            )
        ctx.report("LoadBoundProfilePackage", bytes=len(bpp))
        try:
            raw_pir = await ctx.es10.load_bound_profile_package(
                bpp, progress=lambda i, n: ctx.report("LoadBoundProfilePackage", segment=i, segments=n)
            )
        except (Es10Error, DecodeError) as exc:
            raise DownloadFailed(
                "LoadBoundProfilePackage", str(exc), cancel_reason=CancelSessionReason.loadBppExecutionError
            ) from None
        pir = ProfileInstallationResult.parse(raw_pir)
        ctx.report("ProfileInstallationResult", result=pir.describe(), iccid=pir.iccid, seqNumber=pir.seq_number)
        await _deliver_pir(ctx, pir)
        if pir.success and ctx.config.ipa.immediate_enable:
            from ipa.procedures.immediate_enable import immediate_enable

            await immediate_enable(ctx)
        return pir
    except DownloadFailed as exc:
        if exc.cancel_reason is not None and txid is not None:
            delivered = await _cancel(ctx, txid, exc.cancel_reason)
            # the eIM ends the operation on any cancel reason but timeout (it hands the trigger out again then)
            exc.reported = delivered and exc.cancel_reason != CancelSessionReason.timeout
        raise
    except Es10Error as exc:
        if txid is not None:
            await _cancel(ctx, txid, CancelSessionReason.undefinedReason)
        raise DownloadFailed(
            exc.step, str(exc), code=exc.code if exc.code is not None else exc.sw, code_name=exc.code_name
        ) from None


def _parse(fn, answer: bytes, step: str):
    try:
        return fn(answer)
    except DecodeError as exc:
        raise DownloadFailed(
            step, f"unreadable answer from the eIM: {exc}", cancel_reason=CancelSessionReason.undefinedReason
        ) from None


async def _cancel(ctx: IpaContext, txid: bytes, reason: int) -> bool:
    """ES10b.CancelSession and ESipa CancelSession; ``True`` when the eIM took it (answered without error)."""
    signed = await cancel_on_card(ctx, txid, reason)
    if signed is None:
        return False
    try:
        answer = await ctx.send(m.cancel_session_request(txid, signed))
        if answer:
            err = m.parse_cancel_session_response(answer)
            if err is not None:
                log.warning("eIM CancelSession answered error %d", err.code)
                return False
        return True
    except (EsipaError, DecodeError) as exc:
        log.warning("ESipa CancelSession not delivered: %s", exc)
        return False


async def _deliver_pir(ctx: IpaContext, pir: ProfileInstallationResult) -> None:
    try:
        await ctx.send(m.handle_notification(pir.raw))
    except EsipaError as exc:
        log.warning("PIR not delivered to the eIM (%s); notification delivery will retry", exc)
        await ctx.close_transport()
        return
    ctx.report("HandleNotification", seqNumber=pir.seq_number)
    if pir.seq_number is not None:
        ctx.store.state.remove_seqs.append(pir.seq_number)
        await ctx.store.commit()
        from ipa.procedures.result_delivery import remove_acknowledged

        await remove_acknowledged(ctx)


async def run(ctx: IpaContext, data: DownloadData | None, *, eim_transaction_id: bytes | None) -> bool:
    """The download and its report. ``True`` when the eIM has (or will get, from the IPA's queues) the outcome for
    good: a PIR, a profileDownloadTriggerResult, or a CancelSession it took with a reason other than ``timeout``.
    ``False`` when the eIM may hand the same trigger out again (it could not be reached, or told the IPA to come
    back): then the trigger must run again."""
    try:
        await download(ctx, data, eim_transaction_id)
    except DownloadFailed as exc:
        log.error("%s", exc)
        if exc.cancel_reason is None:
            reason = ProfileDownloadErrorReason.undefinedError
            await queue_provide_result(ctx, m.profile_download_trigger_result(eim_transaction_id, error_reason=reason))
            await deliver_results(ctx)
            return True
        return exc.reported
    return True
