"""Profile state rules shared by PSMOs and the SGP.32 ES10b local functions (SGP.22 v2.5 §3.2, SGP.32 v1.2).

* At most one profile is enabled. Enabling one disables the enabled one first.
* Every enable/disable raises a pending REFRESH when asked to (``refresh``): the carrier (modem) then resets the
  card and all logical channels are gone.
* Enable/disable/delete emit the notifications configured in the profile's metadata.
* ProfileInfo (``E3``) and ProfileInfoListResponse (``BF2D``) encodings live here because both
  ES10c.GetProfilesInfo and the listProfileInfo PSMO return them.
"""

from __future__ import annotations

from euicc import der, notifications
from euicc.context import Context
from euicc.state import EVENT_DELETE, EVENT_DISABLE, EVENT_ENABLE, PROFILE_DISABLED, PROFILE_ENABLED, Profile
from rsp import tlv
from rsp.errors import DecodeError


def disable(ctx: Context, profile: Profile, *, refresh: bool = True) -> None:
    profile.state = PROFILE_DISABLED
    notifications.profile_event(ctx, profile, EVENT_DISABLE)
    if refresh:
        ctx.request_refresh()


def enable(ctx: Context, profile: Profile, *, refresh: bool = True) -> Profile | None:
    """Enable ``profile`` (disabling the enabled one); returns the profile that was enabled before."""
    previous = ctx.state.enabled_profile()
    if previous is not None and previous is not profile:
        disable(ctx, previous, refresh=False)
    profile.state = PROFILE_ENABLED
    notifications.profile_event(ctx, profile, EVENT_ENABLE)
    if refresh:
        ctx.request_refresh()
    return previous


def delete(ctx: Context, profile: Profile) -> None:
    notifications.profile_event(ctx, profile, EVENT_DELETE)
    ctx.state.profiles.remove(profile)
    if ctx.state.last_download is not None and ctx.state.last_download.iccid == profile.iccid:
        ctx.state.last_download = None
    if ctx.state.fallback_from == profile.iccid:
        ctx.state.fallback_from = None
    if ctx.state.emergency_from == profile.iccid:
        ctx.state.emergency_from = None


# ---------------------------------------------------------------------------------------------------------------
# ProfileInfo


def _tags_of(tag_list: bytes) -> list[int]:
    """Split a tagList (5C) value into tags."""
    return list(tlv.parse_tag_list(tag_list))


def profile_info(profile: Profile, tags: list[int] | None = None) -> bytes:
    """SGP32-ProfileInfo ``E3`` with the fields named in ``tags`` (all when None), in schema order."""
    items: list[tuple[int, bytes]] = [
        (0x5A, tlv.encode(0x5A, profile.iccid)),
        (0x4F, tlv.encode(0x4F, profile.isdp_aid)),
        (0x9F70, der.integer(0x9F70, profile.state)),
    ]
    if profile.nickname is not None:
        items.append((0x90, der.utf8(0x90, profile.nickname)))
    items.append((0x91, der.utf8(0x91, profile.service_provider_name)))
    items.append((0x92, der.utf8(0x92, profile.profile_name)))
    if profile.icon_type is not None:
        items.append((0x93, der.integer(0x93, profile.icon_type)))
    if profile.icon is not None:
        items.append((0x94, tlv.encode(0x94, profile.icon)))
    items.append((0x95, der.integer(0x95, profile.profile_class)))
    if profile.notification_config:
        body = b"".join(
            tlv.encode(0x30, der.bit_string(0x80, set(ev)) + der.utf8(0x81, addr))
            for ev, addr in profile.notification_config
        )
        items.append((0xB6, tlv.encode(0xB6, body)))
    if profile.profile_owner is not None:
        items.append((0xB7, tlv.encode(0xB7, profile.profile_owner)))
    if profile.dp_proprietary_data is not None:
        items.append((0xB8, tlv.encode(0xB8, profile.dp_proprietary_data)))
    if profile.ppr is not None:
        items.append((0x99, tlv.encode(0x99, profile.ppr)))
    if profile.ecall_indication:
        items.append((0x9F7B, der.boolean(0x9F7B, True)))
    if profile.fallback_attribute:
        items.append((0x9F26, der.boolean(0x9F26, True)))
    if profile.fallback_allowed is not None:
        items.append((0x9F67, der.boolean(0x9F67, profile.fallback_allowed)))
    wanted = None if tags is None else set(tags)
    return tlv.encode(0xE3, b"".join(raw for tag, raw in items if wanted is None or tag in wanted))


def profile_info_list(ctx: Context, request: tlv.Tlv) -> bytes:
    """ProfileInfoListResponse ``BF2D`` for a ProfileInfoListRequest ``BF2D`` (SGP.22 §5.7.15).

    Errors in the request give ``profileInfoListError incorrectInputValues(1)``."""
    try:
        f = der.fields(request, "ProfileInfoListRequest")
        unknown = set(f) - {0xA0, 0x5C}
        if unknown:
            raise DecodeError("ProfileInfoListRequest", f"unexpected tag {min(unknown):X}")
        tags = _tags_of(f[0x5C].value) if 0x5C in f else None
        selected = list(ctx.state.profiles)
        if 0xA0 in f:
            crit = tlv.children(f[0xA0], what="searchCriteria")
            if len(crit) != 1:
                raise DecodeError("searchCriteria", "needs exactly one criterion")
            c = crit[0]
            if c.tag == 0x4F:
                selected = [p for p in selected if p.isdp_aid == c.value]
            elif c.tag == 0x5A:
                if len(c.value) != 10:
                    raise DecodeError("searchCriteria", "ICCID must be 10 bytes")
                selected = [p for p in selected if p.iccid == c.value]
            elif c.tag == 0x95:
                cls = der.decode_int(c.value, "profileClass")
                selected = [p for p in selected if p.profile_class == cls]
            else:
                raise DecodeError("searchCriteria", f"unknown criterion tag {c.tag:X}")
    except DecodeError:
        return tlv.encode(0xBF2D, der.integer(0x81, 1))
    return tlv.encode(0xBF2D, tlv.encode(0xA0, b"".join(profile_info(p, tags) for p in selected)))
