"""ES10c.GetProfilesInfo - SGP.22 v2.5 §5.7.15 (SGP32-ProfileInfo): ``BF2D {[A0 searchCriteria], [5C tagList]}``
-> ``BF2D {A0 {E3 ProfileInfo ...}}`` or ``BF2D {81 incorrectInputValues(1)}``."""

from __future__ import annotations

from euicc import profiles
from euicc.context import Context
from rsp import tlv

TAG = 0xBF2D


def handle(ctx: Context, request: tlv.Tlv) -> bytes:
    return profiles.profile_info_list(ctx, request)
