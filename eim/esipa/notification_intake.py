"""Taking an eUICC notification from an IPA for its SM-DP+ (SGP.32 v1.2 ESipa.HandleNotification and
``ePRAndNotifications``; SGP.22 v2.5 §3.5 Notifications): verify, attribute, admit, or refuse - never forward
what the eUICC did not sign.

1. Cut the notification into its parts (:func:`eim.packages.notification.parse`): malformed or compact ones stop.
2. Attribute it to an eUICC. An otherSignedNotification: the EID the caller attributes it to (the eUICC of the
   verified EuiccPackageResult it came with, the eUICC of the data request), else the EID the binding
   authenticated (``RequestContext.eid_hint``), else the EID in its own eUICC certificate; when both the caller
   and the binding name one, they must agree. A PIR: the EID of the download it ends (the caller finds it).
   The eUICC must be registered with this eIM (``unknown_euicc``).
3. Verify: otherSignedNotification - the certificate chains to a trusted CI, names that EID, and its key
   verifies ``euiccNotificationSignature`` over the received ``BF2F``; PIR - ``euiccSignPIR`` over the received
   ``BF27`` with the key of the eUICC's stored certificate (none stored: ``certificate``).
4. Admit it to the outbox (``eim.relay.outbox``: address policy, per-EID cap and rate).

Every refusal is audited (``action`` ``notification``, ``outcome`` ``refused`` or ``dropped``, ``detail.cause``),
counted (``eim_notifications_refused_total{cause}``) and logged at warning level at most once per cause per
``LOG_EVERY_S`` (with how many were not logged in between).

What the IPA is told (:class:`Taken`): queued or already queued -> acknowledged (HTTP 204 / the seqNumber in
``eimAcknowledgements``); genuine but never forwardable by this eIM's policy (``address``, ``unforwardable``) ->
acknowledged and dropped, so the IPA does not send it forever; forged, unverifiable or malformed -> not
acknowledged (HTTP 403 / 400); over the cap or the rate -> not acknowledged (HTTP 429): the eUICC keeps it and
the IPA sends it again later.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from eim.interfaces import NotificationRefused
from eim.logs import RateLimitedLog
from eim.packages import notification as nv
from eim.packages.notification import NotificationParts, NotificationRejected, VerifiedNotification

log = logging.getLogger("eim.esipa.notifications")

LOG_EVERY_S = 60.0
DROP_CAUSES = frozenset({"address", "unforwardable"})  # genuine, but this eIM never forwards it: acknowledged
RETRY_CAUSES = frozenset({"cap", "rate"})  # genuine, try again later
HTTP_STATUS = {"malformed": 400, "compact": 400, "cap": 429, "rate": 429}  # everything else refused: 403


@dataclass(frozen=True)
class Taken:
    """What became of one notification: ``acknowledged`` (the IPA may delete it), or refused with a ``cause``."""

    acknowledged: bool
    cause: str | None = None
    reason: str | None = None
    verified: VerifiedNotification | None = None

    @property
    def http_status(self) -> int:
        return HTTP_STATUS.get(self.cause or "", 403)


class NotificationIntake:
    """Steps 1-4 of the module docstring over the store, the eUICC keys and the outbox (``None``: relay off)."""

    def __init__(
        self,
        store: Any,
        keys: nv.KeyRing,
        outbox: Any = None,
        *,
        metrics: Any = None,
        public_key_of: Callable[[Any], Any] | None = None,
        limiter: RateLimitedLog | None = None,
    ) -> None:
        self.store = store
        self.keys = keys
        self.outbox = outbox
        self.metrics = metrics
        self.public_key_of = public_key_of
        self.limiter = limiter or RateLimitedLog(log, LOG_EVERY_S)

    async def refuse(
        self,
        cause: str,
        reason: str,
        *,
        eid: str | None,
        kind: str | None = None,
        operation_id: str | None = None,
        claimed_eid: str | None = None,
    ) -> Taken:
        dropped = cause in DROP_CAUSES
        detail: dict[str, Any] = {"cause": cause, "reason": reason}
        if kind:
            detail["kind"] = kind
        if claimed_eid and claimed_eid != eid:
            detail["claimed_eid"] = claimed_eid
        await self.store.add_audit(
            who="ipa",
            action="notification",
            outcome="dropped" if dropped else "refused",
            eid=eid,
            operation_id=operation_id,
            detail=detail,
        )
        if self.metrics is not None:
            self.metrics.notification_refused(cause)
        self.limiter.warning(
            cause,
            "notification dropped" if dropped else "notification refused",
            {"reason": reason, "eid": eid},
        )
        return Taken(acknowledged=dropped, cause=cause, reason=reason)

    # ------------------------------------------------------------------ steps 1-3
    async def verify_other(
        self, parts: NotificationParts, eid: str | None, binding_eid: str | None
    ) -> VerifiedNotification:
        """Attribute and verify an otherSignedNotification (raises :class:`NotificationRejected`)."""
        if eid is not None and binding_eid is not None and eid.upper() != binding_eid.upper():
            raise NotificationRejected(
                "eid_mismatch", f"attributed to {eid} but the binding authenticated {binding_eid}"
            )
        who = eid or binding_eid or nv.certificate_eid(parts)
        if await self.store.get_euicc(who.upper()) is None:
            raise NotificationRejected("unknown_euicc", f"eUICC {who} is not registered with this eIM")
        return nv.verify_other(parts, self.keys, who.upper())

    async def verify_pir(self, parts: NotificationParts, eid: str) -> VerifiedNotification:
        """Verify a PIR attributed to ``eid`` with the eUICC's stored certificate."""
        euicc = await self.store.get_euicc(eid)
        if euicc is None:
            raise NotificationRejected("unknown_euicc", f"eUICC {eid} is not registered with this eIM")
        if euicc.euicc_certificate is None or self.public_key_of is None:
            raise NotificationRejected(
                "certificate", f"the certificate of eUICC {eid} is not known (run an eUICC data request)"
            )
        try:
            key = self.public_key_of(euicc)
        except Exception as exc:  # ResultRejected: the stored chain does not hold
            raise NotificationRejected("certificate", str(exc)) from None  # ResultRejected: str is its reason
        return nv.verify_pir(parts, key, eid)

    # ------------------------------------------------------------------ step 4
    async def admit(self, note: VerifiedNotification, *, operation_id: str | None = None) -> Taken:
        if self.outbox is None:
            log.info("notification not forwarded: no relay configured", extra={"eid": note.eid})
            return Taken(acknowledged=True, verified=note)
        try:
            await self.outbox.accept(note, operation_id=operation_id)
        except NotificationRefused as exc:
            if self.metrics is not None:
                self.metrics.notification_forwarded("refused")
            return await self.refuse(exc.cause, exc.reason, eid=note.eid, kind=note.kind, operation_id=operation_id)
        return Taken(acknowledged=True, verified=note)

    async def take_other(self, raw: bytes, eid: str | None, binding_eid: str | None = None) -> Taken:
        """Steps 1-4 for anything but a PIR (the caller routes ``BF37`` to its PIR handling)."""
        claimed = None
        try:
            parts = nv.parse(raw)
            if parts.kind != "other":
                raise NotificationRejected("malformed", "a ProfileInstallationResult is handled as a PIR")
            try:
                claimed = nv.certificate_eid(parts)
            except NotificationRejected:
                claimed = None
            note = await self.verify_other(parts, eid, binding_eid)
        except NotificationRejected as exc:
            return await self.refuse(exc.cause, exc.reason, eid=eid or binding_eid, kind="other", claimed_eid=claimed)
        if note.event is not None and hasattr(self.store, "note_profile_event"):
            # genuine (verified): what it says about the enabled profile holds whether or not it is forwarded
            await self.store.note_profile_event(note.eid, note.event, note.iccid, note.address)
        return await self.admit(note)
