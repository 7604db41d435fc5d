"""ES10b.GetRAT - SGP.22 v2.5 §5.7.22: ``BF43`` -> ``BF43 {A0 RulesAuthorisationTable}``.

This card's RAT is empty: no Profile Policy Rule is allowed (a profile whose metadata sets PPR1/PPR2 is refused
with pprNotAllowed at StoreMetadata)."""

from __future__ import annotations

from euicc.context import Context
from rsp import tlv

TAG = 0xBF43


def rat_content() -> bytes:
    """The ProfilePolicyAuthorisationRule TLVs of the RAT (none)."""
    return b""


def handle(ctx: Context, request: tlv.Tlv) -> bytes:
    return tlv.encode(TAG, tlv.encode(0xA0, rat_content()))
