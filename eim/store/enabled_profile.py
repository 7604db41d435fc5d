"""Which profile an eUICC has enabled and the SM-DP+ it came from, as the eIM learns it (SGP.22 v2.5 §3.5
"Notifications" and §5.7.15 ES10c.GetProfilesInfo; SGP.32 v1.2 listProfileInfo in an eUICC package). Pure
functions: the store writes what they return into ``euiccs.enabled_iccid`` / ``euiccs.enabled_smdp`` (migration
0005), and the fleet overview counts eUICCs by ``enabled_smdp``.

Where it is learned:

1. A verified otherSignedNotification (``NotificationMetadata``: ``profileManagementOperation`` is a BIT STRING
   ``notificationInstall(0) notificationEnable(1) notificationDisable(2) notificationDelete(3)``,
   ``notificationAddress`` the SM-DP+ the profile's notificationConfigurationInfo names, ``iccid`` OPTIONAL):
   enable -> that ICCID and that SM-DP+; disable or delete of the recorded ICCID (or with no ICCID in the
   notification) -> none. An install (a PIR) enables nothing (SGP.22: a profile is installed disabled).
2. A listProfileInfo result (the ``profiles`` the registry keeps): no enabled profile -> none; the same enabled
   ICCID -> unchanged; another one -> that ICCID, with the SM-DP+ its ``notificationConfigurationInfo`` names if
   the list carries it (``smdpAddress`` in :func:`eim.packages.psmo.profile_view`), else unknown (NULL) until a
   notification says.

The SM-DP+ is kept as the notificationAddress says it (an FQDN, maybe with a port), lower-cased and trimmed; the
fleet overview counts by it and the Prometheus gauge keeps only the largest few as labels.
"""

from __future__ import annotations

from typing import Any

MAX_ADDRESS = 255


def smdp_key(address: str | None) -> str | None:
    """The SM-DP+ address as counted: trimmed and lower-cased; ``None`` for nothing usable."""
    if not address:
        return None
    key = address.strip().lower()
    if not key or len(key) > MAX_ADDRESS or not key.isprintable():
        return None
    return key


def enabled_from_notification(
    current_iccid: str | None, event: str | None, iccid: str | None, address: str | None
) -> dict[str, Any]:
    """The ``enabled_iccid`` / ``enabled_smdp`` columns to set after a verified notification ({} = no change)."""
    if event == "enable":
        return {"enabled_iccid": iccid, "enabled_smdp": smdp_key(address)}
    if event in ("disable", "delete") and (iccid is None or current_iccid is None or iccid == current_iccid):
        return {"enabled_iccid": None, "enabled_smdp": None}
    return {}


def enabled_from_profiles(
    current_iccid: str | None, current_smdp: str | None, profiles: list[dict[str, Any]] | None
) -> dict[str, Any]:
    """The columns to set after a listProfileInfo result (``profiles`` as :func:`eim.packages.psmo.profile_view`
    makes them; {} = no change)."""
    if profiles is None:
        return {}
    enabled = [p for p in profiles if isinstance(p, dict) and p.get("state") == "enabled"]
    if not enabled:
        return {} if current_iccid is None and current_smdp is None else {"enabled_iccid": None, "enabled_smdp": None}
    p = enabled[0]
    iccid = p.get("iccid") if isinstance(p.get("iccid"), str) else None
    listed = smdp_key(p.get("smdpAddress")) if isinstance(p.get("smdpAddress"), str) else None
    if iccid is not None and iccid == current_iccid:
        return {"enabled_smdp": listed} if listed is not None and listed != current_smdp else {}
    return {"enabled_iccid": iccid, "enabled_smdp": listed}
