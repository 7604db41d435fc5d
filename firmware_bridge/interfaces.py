"""The small interfaces that the IPA depends on (architecture: ``ipa`` imports only these from us)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class ApduChannel(Protocol):
    """A logical channel to the eUICC's ISD-R.

    ``transmit`` takes a command APDU written for the basic channel (CLA low bits 0) and answers the full
    response (data || SW1 SW2) after the channel has resolved ``61xx`` (GET RESPONSE) and ``6Cxx`` (resend
    with Le). The implementation puts its logical channel into CLA (AT+CSIM, in-process) or lets the modem
    do it (AT+CGLA). ``open`` opens the channel and selects ISD-R; ``reset_detected`` is true when the card
    was reset (REFRESH) since the last ``open``, after which the caller re-opens.
    """

    async def open(self) -> None: ...

    async def transmit(self, apdu: bytes) -> bytes: ...

    async def close(self) -> None: ...

    @property
    def reset_detected(self) -> bool: ...


class CardLink(Protocol):
    """What a card (the software eUICC) offers to whatever carries its APDUs (virtual modem, in-process).

    ``process(apdu)`` answers one command APDU with ``data || SW``. ``reset()`` is a SIM reset (ATR): all
    logical channels closed. ``take_refresh()`` returns and clears a pending REFRESH raised by a profile
    state change; the carrier then resets the card (as a modem does).
    """

    def process(self, apdu: bytes) -> bytes: ...

    def reset(self) -> None: ...

    def take_refresh(self) -> bool: ...
