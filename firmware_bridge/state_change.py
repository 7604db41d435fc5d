"""Did an ES10 command change which profile is enabled? (For modems that must re-read the SIM afterwards.)

Some modems (Quectel EG25-G/EG916Q, docs/modems) do not reset the SIM session when the eUICC changes the enabled
profile without REFRESH; the host then cycles ``AT+CFUN=0`` / ``AT+CFUN=1``. The bridge sees only APDUs, so it
recognises the commands that change the enabled profile and their success results:

- SGP.22 ES10c EnableProfile (BF31) / DisableProfile (BF32): ``{80 result}``, 0 = ok;
- SGP.32 ES10b ProfileRollback (BF58): ``{02 cmdResult, ...}``; ImmediateEnable (BF5A), Enable/DisableEmergencyProfile
  (BF5B/BF5C), ExecuteFallbackMechanism (BF5D), ReturnFromFallback (BF5E): ``{80 result}``;
- SGP.32 ES10b LoadEuiccPackage (BF51): an ``euiccPackageResultSigned`` whose ``euiccResult`` holds an
  ``enableResult`` (83), ``disableResult`` (84) or ``rollbackResult`` (8C) equal to ok (0) (SGP.32 §2.11.2.1).

Pure functions; anything that does not parse counts as "no change".
"""

from __future__ import annotations

from rsp import tlv
from rsp.errors import DecodeError

DIRECT_STATE_COMMANDS = frozenset({0xBF31, 0xBF32, 0xBF58, 0xBF5A, 0xBF5B, 0xBF5C, 0xBF5D, 0xBF5E})
LOAD_EUICC_PACKAGE = 0xBF51
STATE_COMMANDS = DIRECT_STATE_COMMANDS | {LOAD_EUICC_PACKAGE}
_CHANGING_RESULTS = frozenset({0x83, 0x84, 0x8C})


def command_tag(first_block: bytes) -> int | None:
    """The outer tag of an ES10 command from its first STORE DATA block (``None`` when not a tag)."""
    if not first_block:
        return None
    tag = first_block[0]
    if tag & 0x1F != 0x1F:
        return tag
    for b in first_block[1:4]:
        tag = (tag << 8) | b
        if not b & 0x80:
            return tag
    return None


def profile_state_changed(tag: int | None, response: bytes) -> bool:
    """True when ``response`` (the ES10 answer, SW removed) reports a successful profile state change."""
    if tag not in STATE_COMMANDS:
        return False
    try:
        top = tlv.parse_exact(response)
        if top.tag != tag:
            return False
        if tag in DIRECT_STATE_COMMANDS:
            first = next(iter(tlv.iter_tlvs(top.value)), None)
            return first is not None and first.tag in (0x80, 0x02) and first.value == b"\x00"
        signed = tlv.parse_exact(top.value)  # A0 euiccPackageResultSigned (A1/A2 are errors)
        if signed.tag != 0xA0:
            return False
        data = next(iter(tlv.iter_tlvs(signed.value)), None)  # 30 EuiccPackageResultDataSigned
        if data is None or data.tag != 0x30:
            return False
        results = [t for t in tlv.iter_tlvs(data.value) if t.tag == 0x30]  # euiccResult
        if not results:
            return False
        return any(r.tag in _CHANGING_RESULTS and r.value == b"\x00" for r in tlv.iter_tlvs(results[-1].value))
    except DecodeError:
        return False
