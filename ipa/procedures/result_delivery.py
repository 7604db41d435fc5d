"""Delivery of queued results to the eIM: ESipa.ProvideEimPackageResult (SGP.32 §5.14.6) and the removal of
acknowledged sequence numbers from the eUICC (ES10b.RemoveNotificationFromList), as used by
"Generic eUICC Package Download and Execution" (SGP.32 §3.3.1) and the other eIM package procedures.

Exactly-once towards the eIM: a result is queued in the state file before it is sent; it leaves the queue in the
same atomic write that records the acknowledged sequence numbers; those are removed from the card afterwards
(a crash in between only repeats an idempotent removal: ``nothingToDelete`` counts as done).

ProfileRollback (SGP.32 §5.9.x ES10b.ProfileRollback): when a result of an enable with ``rollbackFlag`` cannot be
delivered ``poll.rollback_after`` times (the new profile has no connectivity to the eIM), the IPA rolls back to the
previous profile and delivers the rollback's EuiccPackageResult instead.
"""

from __future__ import annotations

import logging

from ipa import messages as m
from ipa.codes import ProvideEimPackageResultError, code_name
from ipa.es10 import Es10Error
from ipa.esipa import EsipaError
from ipa.procedures.context import IpaContext
from ipa.state import PendingResult
from rsp.errors import DecodeError

log = logging.getLogger("ipa.procedures.result_delivery")

MAX_ATTEMPTS_ON_EIM_ERROR = 10


async def remove_acknowledged(ctx: IpaContext) -> list[int]:
    """Remove every acknowledged sequence number still on the card (seq 0 included)."""
    done = []
    for seq in list(ctx.store.state.remove_seqs):
        try:
            code = await ctx.es10.remove_notification_from_list(seq)
        except Es10Error as exc:
            log.warning("RemoveNotificationFromList(%d) failed, will retry: %s", seq, exc)
            break
        if code == 1:
            log.info("seq %d was already removed", seq)
        ctx.store.state.remove_seqs.remove(seq)
        await ctx.store.commit()
        done.append(seq)
    return done


async def profile_rollback(ctx: IpaContext, result: PendingResult) -> None:
    """ES10b.ProfileRollback after an undeliverable enable-with-rollbackFlag result; queue the rollback result."""
    from ipa.procedures.euicc_package import new_notifications

    assert result.rollback is not None
    before = await _notification_seqs(ctx)
    ctx.report("ProfileRollback", attempts=result.attempts)
    try:
        rb = await ctx.es10.profile_rollback(refresh=True)
    except Es10Error as exc:
        log.error("ProfileRollback refused: %s; keeping the enable result for delivery", exc)
        result.rollback["done"] = True
        result.rollback["error"] = exc.code_name or str(exc)
        await ctx.store.commit()
        return
    await ctx.es10.ensure_open()  # REFRESH: the card was reset, re-open before anything else
    await ctx.close_transport()  # connectivity changes with the profile: reconnect
    epr = rb.euicc_package_result
    if epr is None:
        log.warning("ProfileRollback ok but no EuiccPackageResult returned; delivering the enable result")
        result.rollback["done"] = True
        await ctx.store.commit()
        return
    notifs = await new_notifications(ctx, before)
    alt = m.epr_and_notifications(epr.raw, [n.raw for n in notifs]) if notifs else epr.raw
    result.der = m.provide_eim_package_result(ctx.eid, alt)
    result.seq_numbers = [s for s in [epr.seq_number, *[n.seq_number for n in notifs]] if s is not None]
    result.rollback = {"allowed": False, "done": True, "rolled_back": True}
    result.attempts = 0
    await ctx.store.commit()
    ctx.report("ProfileRollback", result="ok", seqNumber=epr.seq_number)


async def _notification_seqs(ctx: IpaContext) -> list[int]:
    try:
        return [n.seq_number for n in await ctx.es10.retrieve_notifications_list()]
    except Es10Error:
        return []


async def deliver_results(ctx: IpaContext) -> bool:
    """Deliver every queued result in order. Returns True when the queue is empty afterwards."""
    await remove_acknowledged(ctx)
    for r in list(ctx.store.state.results):
        if r.kind == "handle_notification":
            ok = await _deliver_notification_result(ctx, r)
        else:
            ok = await _deliver_provide_result(ctx, r)
        if not ok:
            return False
    await remove_acknowledged(ctx)
    return not ctx.store.state.results


async def _deliver_notification_result(ctx: IpaContext, r: PendingResult) -> bool:
    try:
        await ctx.send(r.der)
    except EsipaError as exc:
        r.attempts += 1
        await ctx.store.commit()
        log.warning("HandleNotification not delivered (attempt %d): %s", r.attempts, exc)
        await ctx.close_transport()
        return False
    await ctx.store.result_delivered(r.id, r.seq_numbers)
    return True


async def _deliver_provide_result(ctx: IpaContext, r: PendingResult) -> bool:
    try:
        answer_der = await ctx.send(r.der)
    except EsipaError as exc:
        r.attempts += 1
        await ctx.store.commit()
        log.warning("ProvideEimPackageResult not delivered (attempt %d): %s", r.attempts, exc)
        await ctx.close_transport()
        rb = r.rollback
        if rb and rb.get("allowed") and not rb.get("done") and r.attempts >= ctx.config.poll.rollback_after:
            await profile_rollback(ctx, r)
        return False
    try:
        answer = m.parse_provide_eim_package_result_response(answer_der)
    except DecodeError as exc:
        # The eIM has the result (it answered); a garbled answer must not make us send it twice.
        log.error(
            "ProvideEimPackageResult answer unreadable (%s); result counted as delivered, nothing acknowledged", exc
        )
        await ctx.store.result_delivered(r.id, [])
        return True
    if answer.error is not None:
        name = code_name(ProvideEimPackageResultError, answer.error)
        if answer.error == ProvideEimPackageResultError.undefinedError and r.attempts < MAX_ATTEMPTS_ON_EIM_ERROR:
            r.attempts += 1
            await ctx.store.commit()
            log.warning("eIM answered provideEimPackageResultError %s; will retry", name)
            return False
        log.error("eIM refused the result: provideEimPackageResultError %s; dropping it", name)
        await ctx.store.result_delivered(r.id, [])
        return True
    await ctx.store.result_delivered(r.id, list(answer.acknowledgements))
    ctx.report("ProvideEimPackageResult", delivered=True, acknowledged=list(answer.acknowledgements))
    return True


async def queue_provide_result(
    ctx: IpaContext,
    eim_package_result: bytes,
    *,
    seq_numbers: list[int] | None = None,
    rollback: dict | None = None,
    clear_inflight: bool = False,
) -> PendingResult:
    der = m.provide_eim_package_result(ctx.eid, eim_package_result)
    return await ctx.store.add_result(
        "provide_eim_package_result",
        der,
        eim_id=ctx.eim_id,
        seq_numbers=seq_numbers,
        rollback=rollback,
        clear_inflight=clear_inflight,
    )
