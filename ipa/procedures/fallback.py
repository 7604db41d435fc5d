"""Fallback Mechanism and Return from Fallback (SGP.32 v1.2 §3.5 [section number unverified]).

When the IPA has had no connectivity to the eIM for ``poll.fallback_after`` seconds, it calls
ES10b.ExecuteFallbackMechanism: the eUICC enables the profile with the Fallback Attribute. After
``poll.return_from_fallback_after`` seconds in fallback (or on request), ES10b.ReturnFromFallback goes back to the
previous profile. Either change is a local one: the card REFRESHes (channel re-opened), the transport reconnects,
and the next GetEimPackage carries notifyStateChange + stateChangeCause fallback(1).
"""

from __future__ import annotations

import logging

from ipa.codes import StateChangeCause
from ipa.es10 import Es10Error
from ipa.procedures.context import IpaContext, ProcedureError

log = logging.getLogger("ipa.procedures.fallback")


async def execute_fallback(ctx: IpaContext, refresh: bool = True) -> None:
    ctx.report("ExecuteFallbackMechanism")
    try:
        await ctx.es10.execute_fallback_mechanism(refresh)
    except Es10Error as exc:
        raise ProcedureError("fallback", exc.step, str(exc), exc.code, exc.code_name) from None
    await ctx.es10.ensure_open()
    await ctx.close_transport()
    ctx.store.state.fallback = {"active": True, "since": ctx.clock()}
    await ctx.set_state_change(StateChangeCause.fallback)


async def return_from_fallback(ctx: IpaContext, refresh: bool = True) -> None:
    ctx.report("ReturnFromFallback")
    try:
        await ctx.es10.return_from_fallback(refresh)
    except Es10Error as exc:
        raise ProcedureError("return from fallback", exc.step, str(exc), exc.code, exc.code_name) from None
    await ctx.es10.ensure_open()
    await ctx.close_transport()
    ctx.store.state.fallback = None
    await ctx.set_state_change(StateChangeCause.fallback)


async def check(ctx: IpaContext) -> None:
    """Apply the fallback policy (called by the agent after each poll)."""
    cfg = ctx.config.poll
    now = ctx.clock()
    fb = ctx.store.state.fallback
    if fb and fb.get("active"):
        if cfg.return_from_fallback_after > 0 and now - float(fb.get("since", now)) >= cfg.return_from_fallback_after:
            try:
                await return_from_fallback(ctx)
            except ProcedureError as exc:
                log.error("%s", exc)
                ctx.store.state.fallback = {"active": True, "since": now}
                await ctx.store.commit()
        return
    last = ctx.store.state.last_contact
    if cfg.fallback_after > 0 and last > 0 and now - last >= cfg.fallback_after:
        try:
            await execute_fallback(ctx)
        except ProcedureError as exc:
            log.error("%s", exc)
            ctx.store.state.last_contact = now  # do not retry on every poll
            await ctx.store.commit()
