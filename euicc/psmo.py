"""Profile State Management Operations inside an eUICC Package (SGP.32 v1.2 §2.10.1 / §5.9 LoadEuiccPackage).

Each PSMO returns its EuiccResultData TLV:

=========================  ======  =====================================================================
PSMO (tag)                 result  codes
=========================  ======  =====================================================================
enable ``A3``              ``83``  ok 0, iccidOrAidNotFound 1, profileNotInDisabledState 2,
                                   disallowedByPolicy 3 (the emergency profile)
disable ``A4``             ``84``  ok 0, 1, profileNotInEnabledState 2, disallowedByPolicy 3 (PPR1 or the
                                   emergency profile)
delete ``A5``              ``85``  ok 0, 1, profileNotInDisabledState 2, disallowedByPolicy 3 (PPR2),
                                   rollbackNotAvailable 20 (the profile a granted rollback would return to),
                                   returnFallbackProfile 21 (the profile ReturnFromFallback would return to)
listProfileInfo ``BF2D``   ``BF2D`` ProfileInfoListResponse
getRAT ``A6``              ``A6``  RulesAuthorisationTable
configureImmediateEnable   ``87``  ok 0, commandError 7
``A7``
setFallbackAttribute A8    ``8D``  ok 0, iccidOrAidNotFound 1, fallbackNotAllowed 2 (metadata
                                   fallbackAllowed FALSE), fallbackProfileEnabled 3 (fallback in use)
unsetFallbackAttribute A9  ``8E``  ok 0, noFallbackAttribute 2, fallbackProfileEnabled 3
setDefaultDpAddress BF65   ``BF65`` ``{80 ok 0 | undefinedError 127}``
=========================  ======  =====================================================================

enable/disable raise a pending REFRESH. ``enable`` with ``rollbackFlag`` records the profile enabled before so
that ES10b.ProfileRollback may return to it (the authorisation is stored after the package completes).
"""

from __future__ import annotations

from dataclasses import dataclass

from euicc import der, profiles
from euicc.context import Context
from euicc.es10.get_rat import rat_content
from rsp import tlv
from rsp.errors import DecodeError

OK = 0
ICCID_OR_AID_NOT_FOUND = 1
NOT_IN_DISABLED_STATE = 2
NOT_IN_ENABLED_STATE = 2
DISALLOWED_BY_POLICY = 3
ROLLBACK_NOT_AVAILABLE = 20
RETURN_FALLBACK_PROFILE = 21
FALLBACK_NOT_ALLOWED = 2
NO_FALLBACK_ATTRIBUTE = 2
FALLBACK_PROFILE_ENABLED = 3
COMMAND_ERROR = 7
UNDEFINED_ERROR = 127


class Damaged(Exception):
    """A PSMO/eCO that cannot be decoded: processing stops with processingTerminated unknownOrDamagedCommand."""


@dataclass
class PackageRun:
    """What a package's operations leave for the package as a whole."""

    rollback_from: tuple[bytes | None, bytes] | None = None  # (previously enabled iccid, enabled iccid)


def _iccid(node: tlv.Tlv) -> tuple[bytes, dict[int, tlv.Tlv]]:
    try:
        f = der.fields(node, "PSMO")
    except DecodeError as exc:
        raise Damaged(str(exc)) from None
    iccid = f.get(0x5A)
    if iccid is None or len(iccid.value) != 10:
        raise Damaged("PSMO without a 10-byte ICCID (5A)")
    return iccid.value, f


def enable(ctx: Context, node: tlv.Tlv, run: PackageRun) -> bytes:
    iccid, f = _iccid(node)
    if set(f) - {0x5A, 0x05}:
        raise Damaged("enable: unexpected field")
    p = ctx.state.profile(iccid)
    if p is None:
        return der.integer(0x83, ICCID_OR_AID_NOT_FOUND)
    if p.enabled:
        return der.integer(0x83, NOT_IN_DISABLED_STATE)
    if p.ecall_indication:
        return der.integer(0x83, DISALLOWED_BY_POLICY)
    previous = profiles.enable(ctx, p)
    ctx.state.fallback_active = False
    ctx.state.fallback_from = None
    if 0x05 in f:
        run.rollback_from = (previous.iccid if previous is not None else None, iccid)
    return der.integer(0x83, OK)


def disable(ctx: Context, node: tlv.Tlv, run: PackageRun) -> bytes:
    iccid, _ = _iccid(node)
    p = ctx.state.profile(iccid)
    if p is None:
        return der.integer(0x84, ICCID_OR_AID_NOT_FOUND)
    if not p.enabled:
        return der.integer(0x84, NOT_IN_ENABLED_STATE)
    if 1 in p.ppr_bits() or p.ecall_indication:
        return der.integer(0x84, DISALLOWED_BY_POLICY)
    profiles.disable(ctx, p)
    if p.fallback_attribute:
        ctx.state.fallback_active = False
        ctx.state.fallback_from = None
    return der.integer(0x84, OK)


def delete(ctx: Context, node: tlv.Tlv, run: PackageRun) -> bytes:
    iccid, _ = _iccid(node)
    p = ctx.state.profile(iccid)
    if p is None:
        return der.integer(0x85, ICCID_OR_AID_NOT_FOUND)
    if p.enabled:
        return der.integer(0x85, NOT_IN_DISABLED_STATE)
    if 2 in p.ppr_bits():
        return der.integer(0x85, DISALLOWED_BY_POLICY)
    rb = ctx.state.rollback
    if (rb is not None and rb.previous_iccid == iccid) or (
        run.rollback_from is not None and run.rollback_from[0] == iccid
    ):
        return der.integer(0x85, ROLLBACK_NOT_AVAILABLE)
    if ctx.state.fallback_active and ctx.state.fallback_from == iccid:
        return der.integer(0x85, RETURN_FALLBACK_PROFILE)
    profiles.delete(ctx, p)
    return der.integer(0x85, OK)


def list_profile_info(ctx: Context, node: tlv.Tlv, run: PackageRun) -> bytes:
    return profiles.profile_info_list(ctx, node)


def get_rat(ctx: Context, node: tlv.Tlv, run: PackageRun) -> bytes:
    return tlv.encode(0xA6, rat_content())


def configure_immediate_enable(ctx: Context, node: tlv.Tlv, run: PackageRun) -> bytes:
    try:
        f = der.fields(node, "configureImmediateEnable")
        if set(f) - {0x80, 0x81, 0x82}:
            raise DecodeError("configureImmediateEnable", "unexpected field")
        oid = der.decode_oid(f[0x81].value) if 0x81 in f else None
        address = der.decode_utf8(f[0x82].value) if 0x82 in f else None
    except DecodeError:
        return der.integer(0x87, COMMAND_ERROR)
    cfg = ctx.state.immediate_enable
    cfg.flag = 0x80 in f
    cfg.smdp_oid = oid
    cfg.smdp_address = address
    return der.integer(0x87, OK)


def set_fallback_attribute(ctx: Context, node: tlv.Tlv, run: PackageRun) -> bytes:
    iccid, _ = _iccid(node)
    p = ctx.state.profile(iccid)
    if p is None:
        return der.integer(0x8D, ICCID_OR_AID_NOT_FOUND)
    if p.fallback_allowed is False or p.ecall_indication:
        return der.integer(0x8D, FALLBACK_NOT_ALLOWED)
    if ctx.state.fallback_active:
        return der.integer(0x8D, FALLBACK_PROFILE_ENABLED)
    for other in ctx.state.profiles:
        other.fallback_attribute = other is p
    return der.integer(0x8D, OK)


def unset_fallback_attribute(ctx: Context, node: tlv.Tlv, run: PackageRun) -> bytes:
    holders = [p for p in ctx.state.profiles if p.fallback_attribute]
    if not holders:
        return der.integer(0x8E, NO_FALLBACK_ATTRIBUTE)
    if ctx.state.fallback_active:
        return der.integer(0x8E, FALLBACK_PROFILE_ENABLED)
    for p in holders:
        p.fallback_attribute = False
    return der.integer(0x8E, OK)


def set_default_dp_address(ctx: Context, node: tlv.Tlv, run: PackageRun) -> bytes:
    try:
        f = der.fields(node, "setDefaultDpAddress")
        address = der.decode_utf8(f[0x80].value)
    except (KeyError, DecodeError):
        return tlv.encode(0xBF65, der.integer(0x80, UNDEFINED_ERROR))
    ctx.state.default_dp_address = address or None
    return tlv.encode(0xBF65, der.integer(0x80, OK))


HANDLERS = {
    0xA3: enable,
    0xA4: disable,
    0xA5: delete,
    0xBF2D: list_profile_info,
    0xA6: get_rat,
    0xA7: configure_immediate_enable,
    0xA8: set_fallback_attribute,
    0xA9: unset_fallback_attribute,
    0xBF65: set_default_dp_address,
}
