"""Notification delivery: every pending eUICC notification (PIR, enable/disable/delete notifications) is sent
to the eIM with ESipa.HandleNotification (SGP.32 §5.14.7; the eIM forwards it to the notificationAddress over
ES9+), then removed from the eUICC with ES10b.RemoveNotificationFromList (SGP.22 §5.7.10).

A notification is removed only after the eIM took it (HTTP 200/204, CoAP 2.xx, MQTT answer or PUBACK), and
sequence number 0 is a sequence number like any other. Notifications that travel inside an undelivered
ProvideEimPackageResult (ePRAndNotifications) are left to that result.
"""

from __future__ import annotations

import logging

from ipa import messages as m
from ipa.es10 import Es10Error
from ipa.esipa import EsipaError
from ipa.procedures.context import IpaContext
from ipa.procedures.result_delivery import remove_acknowledged

log = logging.getLogger("ipa.procedures.notification_delivery")


async def deliver_notifications(ctx: IpaContext) -> tuple[int, int]:
    """Deliver pending notifications. Returns ``(delivered, still_pending)``."""
    await remove_acknowledged(ctx)
    notifs = await ctx.es10.retrieve_notifications_list()
    carried = {s for r in ctx.store.state.results for s in r.seq_numbers}
    todo = [
        n
        for n in sorted(notifs, key=lambda n: n.seq_number)
        if n.seq_number not in carried and n.seq_number not in ctx.store.state.remove_seqs
    ]
    delivered = 0
    for i, n in enumerate(todo):
        try:
            await ctx.send(m.handle_notification(n.raw))
        except EsipaError as exc:
            log.warning("HandleNotification(seq %d) not delivered: %s", n.seq_number, exc)
            await ctx.close_transport()
            return delivered, len(todo) - i
        ctx.store.state.remove_seqs.append(n.seq_number)
        await ctx.store.commit()
        delivered += 1
        ctx.report("HandleNotification", seqNumber=n.seq_number, events=sorted(n.events))
        try:
            await remove_acknowledged(ctx)
        except Es10Error as exc:
            log.warning("RemoveNotificationFromList(%d) failed, will retry: %s", n.seq_number, exc)
    return delivered, 0
