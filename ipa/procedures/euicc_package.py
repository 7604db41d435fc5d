"""Generic eUICC Package Download and Execution (SGP.32 v1.2 §3.3.1).

1. The eIM's EuiccPackageRequest (BF51) is forwarded **verbatim** to ES10b.LoadEuiccPackage.
2. Before that, the procedure is recorded in the state file (``inflight``: the BF51 bytes, eimId, counterValue,
   eimTransactionId and the notification sequence numbers present before), so a crash at any point can be
   recovered: the card's pending EPR list (RetrieveNotificationsList ``euiccPackageResults``) tells whether the
   package ran; if it did not, it is loaded again (the eUICC's counter check makes a second execution impossible).
3. After a profile state change the eUICC issues REFRESH and the modem resets the card: the channel is re-opened.
4. The notifications the package produced (new sequence numbers) are retrieved, and the result goes to the eIM in
   ProvideEimPackageResult (``ePRAndNotifications`` when there are notifications, else ``euiccPackageResult``).
   The result is queued in the state file in the same write that ends ``inflight``.
5. The eIM's eimAcknowledgements are removed from the card (ES10b.RemoveNotificationFromList).
6. An enable with ``rollbackFlag`` whose result cannot be delivered leads to ES10b.ProfileRollback
   (:mod:`ipa.procedures.result_delivery`).
"""

from __future__ import annotations

import logging
from typing import Any

from ipa import codes
from ipa import messages as m
from ipa.codes import EimPackageResultErrorCode
from ipa.es10 import Es10Error, ProfileInfo
from ipa.procedures.context import IpaContext
from ipa.procedures.result_delivery import deliver_results, queue_provide_result
from rsp import tlv

log = logging.getLogger("ipa.procedures.euicc_package")

PROCEDURE = "euicc_package"
MAX_RECOVERY_ATTEMPTS = 3


class CrashPoint(BaseException):
    """Raised by test hooks to simulate a crash (the process dying) at a named point: a BaseException, so that no
    error handling of the agent catches it, as nothing would run after a kill."""


# test hook: a callable(point_name) that may raise to simulate a crash (kill) at that point
crash_hook = None


def _crash(point: str) -> None:
    if crash_hook is not None:
        crash_hook(point)


async def new_notifications(ctx: IpaContext, before: list[int] | set[int]) -> list[m.PendingNotification]:
    before_set = set(before)
    notifs = await ctx.es10.retrieve_notifications_list()
    return [n for n in sorted(notifs, key=lambda n: n.seq_number) if n.seq_number not in before_set]


async def execute(ctx: IpaContext, pkg: m.EuiccPackageRequest, *, deliver: bool = True) -> m.EuiccPackageResult | None:
    """Run one eUICC package; queue (and by default deliver) its result."""
    ctx.report(
        "LoadEuiccPackage",
        eimId=pkg.eim_id,
        counterValue=pkg.counter_value,
        operations=[o.kind for o in pkg.operations],
    )
    if pkg.eid != ctx.eid:
        log.warning("package for EID %s, this eUICC is %s: the eUICC will refuse it", pkg.eid.hex(), ctx.eid.hex())
    before = [n.seq_number for n in await ctx.es10.retrieve_notifications_list()]
    await ctx.store.set_inflight(
        PROCEDURE,
        package=pkg.raw,
        eim=pkg.eim_id,
        counter=pkg.counter_value,
        txid=pkg.eim_transaction_id,
        before=before,
        rollback_flag=pkg.enable_with_rollback,
        attempts=0,
    )
    _crash("before_load")
    try:
        epr = await ctx.es10.load_euicc_package(pkg.raw)
    except Exception as exc:  # card link lost mid-command (reset, modem gone): recover from the card's EPR list
        log.warning("LoadEuiccPackage interrupted (%s): recovering from the eUICC", exc)
        await recover(ctx)
        if deliver:
            await deliver_results(ctx)
        return None
    _crash("after_load")
    await finish(ctx, ctx.store.state.inflight or {}, epr)
    _crash("after_queue")
    if deliver:
        await deliver_results(ctx)
    return epr


_RESULT_CODES = {
    "enableResult": codes.EnableProfileResult,
    "disableResult": codes.DisableProfileResult,
    "deleteResult": codes.DeleteProfileResult,
    "rollbackResult": codes.RollbackProfileResult,
    "configureImmediateEnableResult": codes.ConfigImmediateEnableResult,
}


def result_entries(epr: m.EuiccPackageResult) -> list[dict[str, Any]]:
    """The card's answer per operation, for people (SGP.32 §2.11.2.1 EuiccResultData): the code with its name
    (``iccidOrAidNotFound(1)``), and the profiles of a listProfileInfoResult."""
    out: list[dict[str, Any]] = []
    for r in epr.results:
        entry: dict[str, Any] = {"name": r.name, "code": r.code}
        enum = _RESULT_CODES.get(r.name)
        if r.code is not None:
            entry["codeName"] = codes.code_name(enum, r.code) if enum else str(r.code)
        if r.name == "listProfileInfoResult":
            entry.update(_profile_list(r.raw))
        out.append(entry)
    return out


def _profile_list(raw: bytes) -> dict[str, Any]:
    try:
        kids = tlv.children(tlv.parse_exact(raw))
        if kids and kids[0].tag == 0x81:
            code = m.dec_int(kids[0].value, "listProfileInfoResult")
            return {"code": code, "codeName": codes.code_name(codes.ProfileInfoListError, code)}
        if kids and kids[0].tag == 0xA0:
            return {
                "code": 0,
                "profiles": [ProfileInfo.parse(p).to_json() for p in tlv.children(kids[0]) if p.tag == 0xE3],
            }
    except Exception as exc:  # shown to a person; the result itself is forwarded to the eIM verbatim
        return {"decodeError": str(exc)}
    return {}


async def finish(ctx: IpaContext, inflight: dict[str, Any], epr: m.EuiccPackageResult) -> None:
    """Queue the ProvideEimPackageResult for ``epr`` (steps 3-4) and end ``inflight`` in the same write."""
    ctx.report(
        "EuiccPackageResult",
        kind=epr.kind,
        seqNumber=epr.seq_number,
        results={r.name: r.code for r in epr.results} or None,
        error=epr.error_code,
        entries=result_entries(epr) or None,
    )
    if epr.profile_changed or ctx.es10.channel.reset_detected:
        await ctx.es10.ensure_open()  # REFRESH recovery: the modem reset the card after the state change
        await ctx.close_transport()  # the profile (and so the data connection) changed
    notifs = await new_notifications(ctx, inflight.get("before", []))
    alt = m.epr_and_notifications(epr.raw, [n.raw for n in notifs]) if notifs else epr.raw
    enable_ok = any(r.name == "enableResult" and r.code == 0 for r in epr.results)
    rollback = {"allowed": True, "done": False} if inflight.get("rollback_flag") and enable_ok else None
    seqs = [s for s in [epr.seq_number, *[n.seq_number for n in notifs]] if s is not None]
    await queue_provide_result(ctx, alt, seq_numbers=seqs, rollback=rollback, clear_inflight=True)


async def recover(ctx: IpaContext) -> bool:
    """Recover an interrupted eUICC package (after a crash or a lost card link). True if a result was queued."""
    inflight = ctx.store.state.inflight
    if not inflight or inflight.get("procedure") != PROCEDURE:
        return False
    attempts = int(inflight.get("attempts", 0)) + 1
    inflight["attempts"] = attempts
    await ctx.store.commit()
    try:
        await ctx.es10.reopen()
        eprs = await ctx.es10.retrieve_euicc_package_results()
    except Exception as exc:
        log.error("recovery of the eUICC package failed (attempt %d): %s", attempts, exc)
        if attempts >= MAX_RECOVERY_ATTEMPTS:
            await _give_up(ctx, inflight)
        return False
    st = ctx.store.state
    already = {s for r in st.results for s in r.seq_numbers} | set(st.remove_seqs) | set(st.delivered_seqs)
    # The package's own result only: same eIM, same counterValue (unique per eIM: the eUICC refuses a counter that
    # is not higher than the last) and same eimTransactionId (OPTIONAL: both None when the package has none). Without
    # a transaction id the counter alone tells this result from an OLDER undelivered one of the same eIM.
    for epr in eprs:
        if (
            epr.eim_id == inflight.get("eim")
            and epr.counter_value == inflight.get("counter")
            and epr.eim_transaction_id == inflight.get("txid")
            and epr.seq_number not in already
        ):
            log.info("recovered the result of the interrupted package from the eUICC (seq %s)", epr.seq_number)
            await finish(ctx, inflight, epr)
            return True
    # Not executed (or its result was not kept): load it again. A package that did run is refused by the
    # eUICC's counter check (replayError), which is then the result the eIM gets.
    try:
        epr = await ctx.es10.load_euicc_package(inflight["package"])
    except Exception as exc:
        log.error("re-loading the interrupted package failed (attempt %d): %s", attempts, exc)
        if attempts >= MAX_RECOVERY_ATTEMPTS:
            await _give_up(ctx, inflight)
        return False
    await finish(ctx, inflight, epr)
    return True


async def sweep_card_results(ctx: IpaContext) -> int:
    """The card's pending EPR list as the second source of truth (after a lost or damaged state file): queue every
    EuiccPackageResult of this IPA's eIM that was neither delivered, nor queued, nor acknowledged. Returns how many."""
    if ctx.eim_id is None:
        return 0
    st = ctx.store.state
    known = set(st.delivered_seqs) | set(st.remove_seqs) | {s for r in st.results for s in r.seq_numbers}
    eprs = await ctx.es10.retrieve_euicc_package_results()  # errors go up: the sweep is retried next poll
    found = 0
    for epr in sorted(eprs, key=lambda e: e.seq_number if e.seq_number is not None else -1):
        if epr.eim_id != ctx.eim_id or epr.seq_number is None or epr.seq_number in known:
            continue
        log.warning("the eUICC holds an undelivered result (seq %d): queued for delivery", epr.seq_number)
        await queue_provide_result(ctx, epr.raw, seq_numbers=[epr.seq_number])
        found += 1
    return found


async def _give_up(ctx: IpaContext, inflight: dict[str, Any]) -> None:
    log.error(
        "giving up on the interrupted package (eIM %s counter %s): reporting undefinedError",
        inflight.get("eim"),
        inflight.get("counter"),
    )
    await queue_provide_result(
        ctx,
        m.eim_package_result_error(EimPackageResultErrorCode.undefinedError, inflight.get("txid")),
        clear_inflight=True,
    )


__all__ = ["Es10Error", "execute", "finish", "new_notifications", "recover", "sweep_card_results"]
