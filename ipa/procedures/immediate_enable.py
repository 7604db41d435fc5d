"""Immediate Profile Enabling (SGP.32 v1.2 §3.2.4 [section number unverified]): after a successful download the
IPA may enable the new profile with ES10b.ImmediateEnable if the eIM allowed it (configureImmediateEnable PSMO /
ES10b.ConfigureImmediateProfileEnabling). The eUICC issues REFRESH (the channel is re-opened) and the IPA announces
the change in its next GetEimPackage with notifyStateChange + stateChangeCause immediateEnableProfile(5).
"""

from __future__ import annotations

import logging

from ipa.codes import StateChangeCause
from ipa.es10 import Es10Error
from ipa.procedures.context import IpaContext

log = logging.getLogger("ipa.procedures.immediate_enable")


async def immediate_enable(ctx: IpaContext, refresh: bool = True) -> bool:
    ctx.report("ImmediateEnable")
    try:
        await ctx.es10.immediate_enable(refresh)
    except Es10Error as exc:
        log.warning("ImmediateEnable refused: %s", exc)
        return False
    await ctx.es10.ensure_open()
    await ctx.close_transport()
    await ctx.set_state_change(StateChangeCause.immediateEnableProfile)
    return True
