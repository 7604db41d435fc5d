"""eIM Package Retrieval (SGP.32 v1.2 §3.1.1.1) and eIM Package Injection (§3.1.1.2), as one poll step.

One call to :func:`poll_once` (the caller owns the loop, like onomondo-ipa's ``poll()``):
0. finish what a crash interrupted (``inflight``) and deliver queued results first (state file, then the card's
   pending EPR list through the recovery of the procedure in flight);
1. deliver pending notifications (HandleNotification);
2. ESipa.GetEimPackage ``{eidValue [, notifyStateChange, stateChangeCause] }`` - the state change is announced once
   the eIM has answered;
3. dispatch the package: EuiccPackageRequest -> §3.3.1, IpaEuiccDataRequest -> eUICC data request,
   ProfileDownloadTriggerRequest -> §3.2.3; eimPackageError noEimPackageAvailable -> idle.
   Anything undecodable -> ProvideEimPackageResult(eimPackageResultResponseError invalidPackageFormat), a
   well-formed but unknown package -> unknownPackage; the agent keeps running.

The result says whether to poll again at once (work was done) or to back off. :func:`next_delay` computes the
delay with exponential backoff on failures and +-jitter.
"""

from __future__ import annotations

import enum
import logging
import random
from dataclasses import dataclass

from ipa import messages as m
from ipa.codes import EimPackageError, EimPackageResultErrorCode, code_name
from ipa.config import PollConfig
from ipa.es10 import Es10Error
from ipa.esipa import EsipaError, PushedPackage
from ipa.procedures import euicc_data_request, euicc_package, profile_download
from ipa.procedures.context import IpaContext
from ipa.procedures.notification_delivery import deliver_notifications
from ipa.procedures.result_delivery import deliver_results, queue_provide_result, remove_acknowledged
from rsp.errors import DecodeError

log = logging.getLogger("ipa.procedures.eim_package_retrieval")


class Outcome(enum.Enum):
    WORK = "work"  # a package was processed: poll again at once
    IDLE = "idle"  # noEimPackageAvailable: wait poll.interval
    FAILED = "failed"  # eIM unreachable / error: back off


@dataclass(frozen=True)
class PollResult:
    outcome: Outcome
    detail: str = ""
    package: str | None = None


def next_delay(cfg: PollConfig, outcome: Outcome, failures: int, rng: random.Random | None = None) -> float:
    """Seconds to wait before the next poll: 0 after work, ``interval`` when idle, exponential backoff
    ``min_interval * 2**(failures-1)`` capped at ``max_backoff`` after failures; +-``jitter`` on both."""
    r = rng or random
    if outcome is Outcome.WORK:
        return 0.0
    base = (
        cfg.interval if outcome is Outcome.IDLE else min(cfg.max_backoff, cfg.min_interval * 2 ** max(0, failures - 1))
    )
    return max(0.0, base * (1 + r.uniform(-cfg.jitter, cfg.jitter)))


async def handle_package(ctx: IpaContext, pkg_or_error: m.EimPackage | Exception, raw: bytes) -> str:
    """Run the procedure for one package (or report the decode error). Returns a short description."""
    if isinstance(pkg_or_error, m.UnknownPackage | DecodeError):
        code = (
            EimPackageResultErrorCode.unknownPackage
            if isinstance(pkg_or_error, m.UnknownPackage)
            else EimPackageResultErrorCode.invalidPackageFormat
        )
        log.error("eIM package refused (%s): %s", code.name, pkg_or_error)
        await queue_provide_result(ctx, m.eim_package_result_error(code, m.package_transaction_id(raw)))
        await deliver_results(ctx)
        return f"error {code.name}"
    pkg = pkg_or_error
    if isinstance(pkg, m.EuiccPackageRequest):
        await euicc_package.execute(ctx, pkg)
        return "euiccPackageRequest"
    if isinstance(pkg, m.IpaEuiccDataRequest):
        await euicc_data_request.run(ctx, pkg)
        return "ipaEuiccDataRequest"
    if isinstance(pkg, m.ProfileDownloadTriggerRequest):
        await profile_download.run(ctx, pkg)
        return "profileDownloadTriggerRequest"
    if isinstance(pkg, m.EimAcknowledgements):
        for s in pkg.seq_numbers:
            if s not in ctx.store.state.remove_seqs:
                ctx.store.state.remove_seqs.append(s)
        await ctx.store.commit()
        await remove_acknowledged(ctx)
        return "eimAcknowledgements"
    raise AssertionError(f"unhandled package {pkg!r}")


async def recover_and_flush(ctx: IpaContext) -> bool:
    """Step 0: recover the procedure in flight, sweep the card's pending EPR list (once per start) and deliver
    queued results. True when nothing is left queued."""
    if ctx.store.state.inflight:
        proc = ctx.store.state.inflight.get("procedure")
        if proc == euicc_package.PROCEDURE:
            await euicc_package.recover(ctx)
        else:
            log.warning("dropping unknown procedure in flight %r", proc)
            await ctx.store.set_inflight(None)
    if not ctx.swept and not ctx.store.state.inflight:
        await euicc_package.sweep_card_results(ctx)
        ctx.swept = True
    if ctx.store.state.results or ctx.store.state.remove_seqs:
        return await deliver_results(ctx)
    return True


async def poll_once(ctx: IpaContext) -> PollResult:
    try:
        if not await recover_and_flush(ctx):
            await _failed(ctx)
            return PollResult(Outcome.FAILED, "queued results not delivered yet")
        await deliver_notifications(ctx)
        cause = ctx.store.state.state_change
        request = m.get_eim_package_request(ctx.eid, notify_state_change=cause is not None, state_change_cause=cause)
        answer = await ctx.send(request)
    except EsipaError as exc:
        log.warning("eIM not reachable: %s", exc)
        await ctx.close_transport()
        await _failed(ctx)
        return PollResult(Outcome.FAILED, str(exc))
    except Es10Error as exc:
        log.error("eUICC error: %s", exc)
        await _failed(ctx)
        return PollResult(Outcome.FAILED, str(exc))
    await _contact(ctx, clear_state_change=True)
    if not answer:
        return PollResult(Outcome.IDLE, "empty answer")
    try:
        pkg: m.EimPackage | Exception = m.parse_get_eim_package_response(answer)
    except (DecodeError, m.UnknownPackage) as exc:
        pkg = exc
    if isinstance(pkg, m.NoPackage):
        if pkg.code == EimPackageError.noEimPackageAvailable:
            return PollResult(Outcome.IDLE, "noEimPackageAvailable")
        log.error("GetEimPackage: eIM answered eimPackageError %s", code_name(EimPackageError, pkg.code))
        await _failed(ctx)
        return PollResult(Outcome.FAILED, f"eimPackageError {code_name(EimPackageError, pkg.code)}")
    try:
        what = await handle_package(ctx, pkg, answer)
    except EsipaError as exc:
        log.warning("eIM lost during the procedure: %s", exc)
        await ctx.close_transport()
        await _failed(ctx)
        return PollResult(Outcome.FAILED, str(exc))
    except Es10Error as exc:
        log.error("eUICC error during the procedure: %s", exc)
        await _failed(ctx)
        return PollResult(Outcome.FAILED, str(exc))
    if ctx.store.state.results:  # processed, but the result could not be delivered: the eIM is not reachable
        await _failed(ctx)
        return PollResult(Outcome.FAILED, f"{what}: result queued, not delivered yet", what)
    ctx.store.state.failures = 0
    await ctx.store.commit()
    return PollResult(Outcome.WORK, what, what)


async def handle_push(ctx: IpaContext, push: PushedPackage, answer) -> str:
    """eIM Package Injection (§3.1.1.2): answer the TransferEimPackageRequest at once (eimPackageReceived, or
    eimPackageError for a malformed/unknown one), then run the procedure; its result goes out with
    ProvideEimPackageResult through the state queue (exactly once, like a polled package)."""
    try:
        pkg: m.EimPackage | Exception = m.parse_transfer_eim_package_request(push.der)
    except (DecodeError, m.UnknownPackage) as exc:
        pkg = exc
    if isinstance(pkg, Exception):
        code = (
            EimPackageResultErrorCode.unknownPackage
            if isinstance(pkg, m.UnknownPackage)
            else EimPackageResultErrorCode.invalidPackageFormat
        )
        log.error("pushed package refused (%s): %s", code.name, pkg)
        await answer(push, m.transfer_eim_package_response(m.transfer_error(code)))
        return f"error {code.name}"
    await answer(push, m.transfer_eim_package_response(m.EIM_PACKAGE_RECEIVED))
    await _contact(ctx, clear_state_change=False)
    return await handle_package(ctx, pkg, push.der)


async def _failed(ctx: IpaContext) -> None:
    ctx.store.state.failures += 1
    await ctx.store.commit()


async def _contact(ctx: IpaContext, *, clear_state_change: bool) -> None:
    st = ctx.store.state
    st.last_contact = ctx.clock()
    st.failures = 0
    if clear_state_change:
        st.state_change = None
    await ctx.store.commit()
