"""Notifications kept by the eUICC (SGP.22 v2.5 §3.5 / §5.7.9-5.7.11, SGP.32 v1.2 §2.9 / §5.9).

* ``NotificationMetadata`` ``BF2F {80 seqNumber, 81 profileManagementOperation, 0C notificationAddress,
  [5A iccid]}``.
* ``OtherSignedNotification`` ``30 {BF2F, 5F37 sig over the BF2F TLV, CERT.EUICC, CERT.EUM}`` for enable,
  disable and delete (and install, besides the PIR) to each address the profile's
  ``notificationConfigurationInfo`` lists for that event.
* Sequence numbers come from the persistent counter ``EuiccState.next_seq`` and are never reused; ProfileInstall
  results (PIR, ``BF37``) and eUICC Package Results (``BF51``) take theirs from the same counter.
"""

from __future__ import annotations

from euicc import der
from euicc.context import Context
from euicc.state import EVENT_INSTALL, Notification, Profile
from rsp import tlv


def metadata(seq: int, event: int, address: str, iccid: bytes | None) -> bytes:
    """NotificationMetadata ``BF2F``."""
    body = der.integer(0x80, seq) + der.bit_string(0x81, {event}) + der.utf8(0x0C, address)
    if iccid is not None:
        body += tlv.encode(0x5A, iccid)
    return tlv.encode(0xBF2F, body)


def other_signed(ctx: Context, event: int, address: str, iccid: bytes | None) -> Notification:
    """Build, sign and store one OtherSignedNotification; returns the stored entry."""
    seq = ctx.state.take_seq()
    tbs = metadata(seq, event, address, iccid)
    sig = ctx.identity.sign(tbs)
    data = tlv.encode(0x30, tbs + tlv.encode(0x5F37, sig) + ctx.identity.euicc_cert_der + ctx.identity.eum_cert_der)
    n = Notification(seq=seq, kind="other", data=data, event=event, address=address, iccid=iccid)
    ctx.state.notifications.append(n)
    return n


def profile_event(ctx: Context, profile: Profile, event: int, *, skip_address: str | None = None) -> list[int]:
    """Emit the notifications that ``profile``'s notificationConfigurationInfo asks for ``event``.

    ``skip_address``: for the install event, the SM-DP+ address already gets the PIR."""
    seqs = []
    for events, address in profile.notification_config:
        if event not in events:
            continue
        if event == EVENT_INSTALL and skip_address is not None and address == skip_address:
            continue
        seqs.append(other_signed(ctx, event, address, profile.iccid).seq)
    return seqs


def store_pir(ctx: Context, seq: int, data: bytes, address: str, iccid: bytes | None) -> Notification:
    n = Notification(seq=seq, kind="pir", data=data, event=EVENT_INSTALL, address=address, iccid=iccid)
    ctx.state.notifications.append(n)
    return n


def store_epr(ctx: Context, seq: int, data: bytes, eim_id: str) -> Notification:
    n = Notification(seq=seq, kind="epr", data=data, eim_id=eim_id)
    ctx.state.notifications.append(n)
    return n


def pending(ctx: Context, kinds: tuple[str, ...] = ("pir", "other")) -> list[Notification]:
    return sorted((n for n in ctx.state.notifications if n.kind in kinds), key=lambda n: n.seq)
