"""Who is on the port: ``ATI`` and ``AT+CGMM``, and the modem profile they select."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from firmware_bridge.errors import AtError, AtProtocolError, AtTimeout
from firmware_bridge.profiles import ModemProfile, match_profile

if TYPE_CHECKING:
    from firmware_bridge.at import AtEngine

log = logging.getLogger("firmware_bridge.modem")


@dataclass(frozen=True, slots=True)
class ModemIdentity:
    ati: tuple[str, ...]
    model: str | None  # AT+CGMM
    profile: ModemProfile

    @property
    def text(self) -> str:
        return " ".join((*self.ati, self.model or ""))


async def identify(engine: AtEngine, timeout: float | None = None) -> ModemIdentity:  # noqa: ASYNC109
    """Ask ``ATI`` and ``AT+CGMM`` (either may fail) and pick the profile from their text."""
    ati: tuple[str, ...] = ()
    model: str | None = None
    try:
        ati = (await engine.command("ATI", timeout=timeout)).lines
    except (AtError, AtProtocolError, AtTimeout) as exc:
        log.info("ATI failed: %s", exc)
    try:
        lines = (await engine.command("AT+CGMM", expect="+CGMM:", timeout=timeout)).lines
        if lines:
            model = lines[0].split(":", 1)[1].strip() if lines[0].upper().startswith("+CGMM:") else lines[0]
    except (AtError, AtProtocolError, AtTimeout) as exc:
        log.info("AT+CGMM failed: %s", exc)
    text = " ".join((*ati, model or ""))
    return ModemIdentity(ati, model, match_profile(text))
