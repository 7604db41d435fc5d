"""Direct Profile Download (SGP.32 v1.2 §3.2.3.1): the IPA acts as an SGP.22 LPA towards the SM-DP+ over ES9+
(SGP.22 v2.5 §3.1.3 steps, JSON over HTTPS with TLS verified against the configured CAs).

GetEUICCInfo1 + GetEUICCChallenge -> ES9+ initiateAuthentication -> ES10b.AuthenticateServer (ctxParams1 with
matchingId and deviceInfo) -> ES9+ authenticateClient -> (confirmation code) ES10b.PrepareDownload -> ES9+
getBoundProfilePackage -> ES10b.LoadBoundProfilePackage (segments) -> PIR -> ES9+ handleNotification to the
SM-DP+ -> RemoveNotificationFromList. Optional ES10b.ImmediateEnable afterwards (``ipa.immediate_enable``).

Every failure after the eUICC opened a session ends with ES10b.CancelSession (reason: ``timeout`` when the SM-DP+
could not be reached, ``postponed`` when a confirmation code is needed and none was given, ``loadBppExecutionError``
when the BPP load broke off, ``undefinedReason`` otherwise) and ES9+ cancelSession (best effort); errors the
eUICC or the SM-DP+ reported themselves are sent to the SM-DP+ in the next ES9+ call as SGP.22 requires.

Interrupted (the task cancelled: Ctrl-C in ``ipa download``) after the eUICC opened a session, the procedure still
ends it - ES10b.CancelSession and ES9+ cancelSession with reason ``postponed`` (SGP.22 v2.5 §5.7.14 / §5.6.5: the
end user did not reject the profile, the download was put off; the SM-DP+ keeps the order for a retry with the
same activation code, where ``endUserRejection`` would end it) - reports ``CancelSession`` and ``cancelSession``
progress steps, and re-raises the cancellation.
"""

from __future__ import annotations

import asyncio
import logging

from ipa import messages as m
from ipa.codes import AuthenticateErrorCode, CancelSessionReason, DownloadErrorCode, code_name
from ipa.es9 import Es9Error
from ipa.es10 import Es10Error
from ipa.es10_download import ProfileInstallationResult
from ipa.procedures.context import IpaContext
from ipa.procedures.profile_download import (
    DownloadData,
    DownloadFailed,
    cancel_on_card,
    cc_required,
    ctx_params1,
    hash_confirmation_code,
)
from rsp import tlv

log = logging.getLogger("ipa.procedures.direct_profile_download")


def _es9_cancel_reason(exc: Es9Error) -> int:
    return (
        CancelSessionReason.timeout
        if exc.subject_code is None and exc.http_status is None
        else CancelSessionReason.undefinedReason
    )


async def download(
    ctx: IpaContext, data: DownloadData, confirmation_code: str | None = None
) -> ProfileInstallationResult:
    """Download and install one profile; return the PIR. Raises :class:`DownloadFailed` naming the step."""
    if ctx.es9_factory is None:
        raise DownloadFailed("ES9+", "no ES9+ client configured")
    if not data.smdp_address:
        raise DownloadFailed("activation code", "no SM-DP+ address")
    es9 = ctx.es9_factory()
    addr = data.smdp_address
    txid: bytes | None = None
    try:
        ctx.report("GetEUICCChallenge")
        info1 = await ctx.es10.get_euicc_info1()
        challenge = await ctx.es10.get_euicc_challenge()
        ctx.report("initiateAuthentication", smdpAddress=addr)
        try:
            init = await es9.initiate_authentication(addr, challenge, info1)
        except Es9Error as exc:
            raise DownloadFailed(exc.step, str(exc), code=exc.reason_code, code_name=_es9_code(exc)) from None
        txid = init.transaction_id
        ctx.report("AuthenticateServer", transactionId=txid.hex().upper())
        auth = await ctx.es10.authenticate_server(
            init.server_signed1,
            init.server_signature1,
            init.euicc_ci_pkid_to_be_used,
            init.server_certificate,
            ctx_params1(data.matching_id, ctx.config),
        )
        ctx.report("authenticateClient")
        try:
            client = await es9.authenticate_client(addr, txid, auth.raw)
        except Es9Error as exc:
            reason = _es9_cancel_reason(exc) if auth.ok else None
            if reason is not None:
                await _cancel(ctx, es9, addr, txid, reason)
            raise DownloadFailed(
                exc.step, str(exc), code=exc.reason_code, code_name=_es9_code(exc), cancel_reason=reason
            ) from None
        if not auth.ok:  # the SM-DP+ was told (SGP.22); nothing to cancel
            name = code_name(AuthenticateErrorCode, auth.error or 127)
            raise DownloadFailed("AuthenticateServer", f"eUICC answered {name}", code=auth.error, code_name=name)
        hash_cc = None
        if cc_required(client.smdp_signed2):
            if not confirmation_code:
                await _cancel(ctx, es9, addr, txid, CancelSessionReason.postponed)
                raise DownloadFailed(
                    "PrepareDownload",
                    "the SM-DP+ requires a confirmation code and none was given",
                    cancel_reason=CancelSessionReason.postponed,
                )
            hash_cc = hash_confirmation_code(confirmation_code, txid)
        ctx.report("PrepareDownload")
        prep = await ctx.es10.prepare_download(
            client.smdp_signed2, client.smdp_signature2, client.smdp_certificate, hash_cc
        )
        ctx.report("getBoundProfilePackage")
        try:
            bpp = await es9.get_bound_profile_package(addr, txid, prep.raw)
        except Es9Error as exc:
            reason = _es9_cancel_reason(exc) if prep.ok else None
            if reason is not None:
                await _cancel(ctx, es9, addr, txid, reason)
            raise DownloadFailed(
                exc.step, str(exc), code=exc.reason_code, code_name=_es9_code(exc), cancel_reason=reason
            ) from None
        if not prep.ok:
            name = code_name(DownloadErrorCode, prep.error or 127)
            raise DownloadFailed("PrepareDownload", f"eUICC answered {name}", code=prep.error, code_name=name)
        ctx.report("LoadBoundProfilePackage", bytes=len(bpp))
        try:
            raw_pir = await ctx.es10.load_bound_profile_package(
                bpp, progress=lambda i, n: ctx.report("LoadBoundProfilePackage", segment=i, segments=n)
            )
        except (Es10Error, ValueError) as exc:
            await _cancel(ctx, es9, addr, txid, CancelSessionReason.loadBppExecutionError)
            raise DownloadFailed(
                "LoadBoundProfilePackage",
                str(exc),
                code=getattr(exc, "sw", None),
                cancel_reason=CancelSessionReason.loadBppExecutionError,
            ) from None
        pir = ProfileInstallationResult.parse(raw_pir)
        ctx.report("ProfileInstallationResult", result=pir.describe(), iccid=pir.iccid, seqNumber=pir.seq_number)
        await _deliver_pir(ctx, es9, addr, pir)
        if not pir.success:
            failed = DownloadFailed("LoadBoundProfilePackage", pir.describe(), code=pir.error_reason)
            failed.pir = pir
            raise failed

        if ctx.config.ipa.immediate_enable:
            from ipa.procedures.immediate_enable import immediate_enable

            await immediate_enable(ctx)
        return pir
    except Es10Error as exc:
        reason = None
        if txid is not None:
            reason = CancelSessionReason.undefinedReason
            await _cancel(ctx, es9, addr, txid, reason)
        raise DownloadFailed(
            exc.step,
            str(exc),
            code=exc.code if exc.code is not None else exc.sw,
            code_name=exc.code_name,
            cancel_reason=reason,
        ) from None
    except asyncio.CancelledError:
        if txid is not None:
            sent = await _cancel(ctx, es9, addr, txid, CancelSessionReason.postponed)
            ctx.report("cancelSession", reason="postponed(1)", accepted=sent)
        raise
    finally:
        await es9.close()


def _es9_code(exc: Es9Error) -> str | None:
    if exc.subject_code or exc.reason_code:
        return f"{exc.subject_code}/{exc.reason_code}"
    if exc.http_status:
        return f"HTTP {exc.http_status}"
    return None


async def _cancel(ctx: IpaContext, es9, addr: str, txid: bytes, reason: int) -> bool:
    """ES10b.CancelSession then ES9+ cancelSession; whether the SM-DP+ took it."""
    signed = await cancel_on_card(ctx, txid, reason)
    if signed is None:
        return False
    try:
        await es9.cancel_session(addr, txid, signed)
    except Es9Error as exc:
        log.warning("ES9+ cancelSession failed (the SM-DP+ session will expire): %s", exc)
        return False
    return True


async def _deliver_pir(ctx: IpaContext, es9, addr: str, pir: ProfileInstallationResult) -> None:
    """ES9+ handleNotification to the PIR's notificationAddress (default: the SM-DP+), then remove the PIR from the
    eUICC. On failure it stays pending there and the notification procedure delivers it through the eIM later."""
    target = addr
    md = tlv.find(pir.raw, 0xBF27, 0xBF2F)
    if md is not None:
        target = m.parse_notification_metadata(md)[2] or addr
    try:
        await es9.handle_notification(target, pir.raw)
    except Es9Error as exc:
        log.warning("PIR not delivered to the SM-DP+ (%s); it stays pending on the eUICC", exc)
        return
    ctx.report("handleNotification", seqNumber=pir.seq_number, notificationAddress=target)
    if pir.seq_number is not None:
        try:
            await ctx.es10.remove_notification_from_list(pir.seq_number)
        except Es10Error as exc:
            log.warning("RemoveNotificationFromList(%d) failed: %s", pir.seq_number, exc)
