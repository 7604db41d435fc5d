"""Modem profiles: what differs between modem families, as data (docs/modems: "Quirks seen on real modems").

A profile never carries code. :class:`firmware_bridge.channel.AtApduChannel` reads these fields in its single
code path. A profile is chosen from ``ATI`` / ``AT+CGMM`` (:func:`match_profile`) or by name in configuration.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from rsp.apdu import DEFAULT_BLOCK_SIZE


@dataclass(frozen=True, slots=True)
class ModemProfile:
    name: str
    description: str
    # Regular expressions (case-insensitive) matched against the ATI and AT+CGMM text.
    match: tuple[str, ...] = ()
    # AT routes in the order they are tried: "cgla" (AT+CCHO/CGLA/CCHC) and "csim" (AT+CSIM).
    routes: tuple[str, ...] = ("cgla", "csim")
    # Recommended ES10 STORE DATA block size (bytes of data per APDU) and the largest the modem takes.
    block_size: int = DEFAULT_BLOCK_SIZE
    max_block_size: int = 255
    # Command-line limits for the hex of one APDU (AT+CSIM / AT+CGLA <len>), None = no known limit.
    max_apdu_hex: int | None = None
    min_apdu_hex: int | None = None
    # CLA class of GET RESPONSE: 0x00 (ISO/IEC 7816-4) or 0x80 (what lpac sends; cards accept both).
    get_response_cla: int = 0x00
    # MANAGE CHANNEL open sent over AT+CSIM.
    manage_channel_open: bytes = bytes.fromhex("0070000001")
    # False: the modem cannot open logical channels over AT+CSIM; ISD-R is selected on the basic channel.
    logical_channels: bool = True
    # The modem does not re-read the SIM after a profile enable/disable: the host cycles AT+CFUN=0 / AT+CFUN=1.
    cfun_cycle_after_enable: bool = False
    # How long to wait for the modem's own SIM reset (a SIM URC) before cycling AT+CFUN, seconds.
    sim_reset_grace: float = 1.0
    # "=?" test commands answer nothing or lie: the probe does not wait long for them and never trusts them.
    test_commands_unreliable: bool = False
    # Deadline for "=?" probes (seconds).
    probe_timeout: float = 3.0
    # Retries of one APDU answered by a bare ERROR (Quectel EC20 on AT+CGLA in the middle of a download).
    bare_error_retries: int = 1
    notes: tuple[str, ...] = field(default=())

    @property
    def recommended_block_size(self) -> int:
        """The STORE DATA block size to give :class:`ipa.es10.Es10Client` for this modem."""
        size = min(self.block_size, self.max_block_size)
        if self.max_apdu_hex is not None:
            size = min(size, self.max_apdu_hex // 2 - 5)
        return max(1, min(size, 255))

    def with_overrides(self, **changes: object) -> ModemProfile:
        return replace(self, **changes)  # type: ignore[arg-type]


GENERIC = ModemProfile(
    "generic",
    "any 3GPP TS 27.007 modem: CCHO/CGLA first, CSIM as fallback, 120-byte blocks",
)

PROFILES: dict[str, ModemProfile] = {
    p.name: p
    for p in (
        ModemProfile(
            "quectel-ec20",
            "Quectel EC20/EC21/EC25-E: bare ERROR on AT+CGLA in the middle of a download, CSIM path works",
            match=(r"\bEC2[015]", r"\bEC200"),
            routes=("csim", "cgla"),
            cfun_cycle_after_enable=True,
            notes=("operator modem configuration may stay active after a profile switch",),
        ),
        ModemProfile(
            "quectel",
            "Quectel EG25-G, EG916Q, BG9x, RM5xx: CCHO/CGLA; re-read the SIM after enable (AT+CFUN=0/1)",
            match=(r"quectel", r"\bEG\d{2,3}", r"\bBG9\d", r"\bRM5\d\d", r"\bEM0[56]"),
            routes=("cgla", "csim"),
            cfun_cycle_after_enable=True,
            notes=("STATUS on a logical channel via AT+CSIM fails", "refreshFlag=0 avoids USB re-enumeration"),
        ),
        ModemProfile(
            "simcom",
            "SIMCom SIM7600/SIM7000/SIM8200: no CCHO/CGLA, AT+CSIM only",
            match=(r"simcom", r"\bSIM7\d{3}", r"\bSIM8\d{3}", r"\bA76\d\d"),
            routes=("csim",),
        ),
        ModemProfile(
            "sierra-em9191",
            "Sierra Wireless EM9191: rejects the ISD-R AID in AT+CCHO, so AT+CSIM first",
            match=(r"\bEM919\d",),
            routes=("csim", "cgla"),
            test_commands_unreliable=True,
        ),
        ModemProfile(
            "sierra",
            "Sierra Wireless MC7455/EM7590: 64-bit hex session handles; AT+CGLA=? fails while AT+CGLA= works",
            match=(r"sierra", r"\bMC7\d{3}", r"\bEM7\d{3}", r"\bEM9\d{3}"),
            routes=("cgla", "csim"),
            test_commands_unreliable=True,
        ),
        ModemProfile(
            "fibocom",
            "Fibocom FM350-GL/L8xx: bare CCHO answer, silent on =? probes, answers sometimes without prefix",
            match=(r"fibocom", r"\bFM350", r"\bFM1\d\d", r"\bL8\d\d-?GL", r"\bFG\d{3}"),
            routes=("cgla", "csim"),
            test_commands_unreliable=True,
            probe_timeout=1.0,
        ),
        ModemProfile(
            "u-blox",
            "u-blox SARA/LARA/TOBY: answers 61xx when the response exceeds its buffer (GET RESPONSE by the host)",
            match=(r"u-?blox", r"\bSARA-", r"\bLARA-", r"\bTOBY-", r"\bLENA-"),
            routes=("cgla", "csim"),
        ),
        ModemProfile(
            "telit",
            "Telit LE910/LN9xx/ME910/FN980",
            match=(r"telit", r"\bLE910", r"\bLN9\d\d", r"\bME910", r"\bFN9\d\d"),
            routes=("cgla", "csim"),
        ),
        ModemProfile(
            "wavecom",
            "Wavecom-class (Moxa G2150I): AT+CSIM only, 10..522 hex characters per line, else +CME ERROR: 3",
            match=(r"wavecom", r"\bmoxa", r"\bG2150"),
            routes=("csim",),
            max_apdu_hex=522,
            min_apdu_hex=10,
            notes=("GET RESPONSE refused by some firmware",),
        ),
        ModemProfile(
            "dell-dw5821e",
            "Dell DW5821e (Foxconn T77W968): AT+CSIM only; MANAGE CHANNEL open as 0070000000",
            match=(r"DW5821e", r"T77W968"),
            routes=("csim",),
            manage_channel_open=bytes.fromhex("0070000000"),
        ),
        ModemProfile(
            "huawei-ms2372",
            "Huawei MS2372h: AT+CSIM on the basic channel only (no logical channels)",
            match=(r"MS2372",),
            routes=("csim",),
            logical_channels=False,
        ),
        GENERIC,
    )
}


def get_profile(name: str) -> ModemProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown modem profile {name!r} (known: {', '.join(PROFILES)})") from None


def _literal_prefix(pattern: str) -> str:
    """The literal text every match of ``pattern`` starts with (after a leading ``\\b``): letters, digits and
    ``-`` up to the first other regex character or the first one a quantifier makes optional."""
    body = pattern[2:] if pattern.startswith("\\b") else pattern
    out = []
    for i, ch in enumerate(body):
        if not (ch.isalnum() or ch == "-") or body[i + 1 : i + 2] in ("?", "*", "{"):
            break
        out.append(ch)
    return "".join(out)


def match_profile(identity: str) -> ModemProfile:
    """The first profile (in :data:`PROFILES` order, most specific first) whose pattern matches ``identity``.

    For ASCII text (what modems answer) a pattern is compiled only when its literal prefix occurs in ``identity``,
    ignoring case: without it the pattern cannot match, and compiling all 36 for an unknown modem cost ~6 M
    instructions of a 330 M ``ipa chip info`` (docs/performance.md, 5b). Other text takes every pattern (Unicode
    case rules). tests/firmware_bridge/test_profiles.py checks the result equals the plain loop's for any text."""
    folded = identity.lower() if identity.isascii() else None
    for profile in PROFILES.values():
        for pat in profile.match:
            if folded is not None and _literal_prefix(pat).lower() not in folded:
                continue
            if re.search(pat, identity, re.IGNORECASE):
                return profile
    return GENERIC
