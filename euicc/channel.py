"""In-process :class:`firmware_bridge.interfaces.ApduChannel` to a :class:`~firmware_bridge.interfaces.CardLink`
(the software eUICC), speaking exactly what an IPA/LPA sends through a modem (protocol brief §8).

``block_style`` picks the APDU habits of a real implementation:

* ``"lpac"`` (default): MANAGE CHANNEL open with P2=00 (the card assigns the channel), SELECT ISD-R with
  P2=00, GET RESPONSE with the proprietary class ``8n``;
* ``"onomondo"``: TERMINAL CAPABILITY ``80AA000005A903830107`` first, MANAGE CHANNEL open of channel 1 explicitly
  (``0070000100``), SELECT with P2=04, GET RESPONSE with the interindustry class ``0n``.

``transmit(apdu)`` takes a command written for the basic channel, puts the logical channel into CLA (channels
0..3 ``CLA|n``, 4..19 the further interindustry form, ETSI TS 102 221 §10.1.1), fetches ``61xx`` data with GET
RESPONSE and resends on ``6Cxx`` with the right Le. After the card raised a REFRESH (an enable, disable,
rollback, fallback...), the channel resets the card as a modem does: every logical channel is closed and
``reset_detected`` is true until the next :meth:`open`.
"""

from __future__ import annotations

import logging

from firmware_bridge.interfaces import CardLink
from rsp import apdu

log = logging.getLogger("euicc.channel")

STYLES = ("lpac", "onomondo")
TERMINAL_CAPABILITY = bytes.fromhex("80AA000005A903830107")


class ChannelError(Exception):
    """Opening or using the channel failed; names the step and the status word."""

    def __init__(self, step: str, sw: int) -> None:
        self.step = step
        self.sw = sw
        super().__init__(f"{step}: card answered {sw:04X} ({apdu.sw_name(sw)})")


class LocalApduChannel:
    def __init__(
        self, card: CardLink, block_style: str = "lpac", *, channel: int | None = None, max_get_response: int = 64
    ) -> None:
        if block_style not in STYLES:
            raise ValueError(f"block_style must be one of {STYLES}, got {block_style!r}")
        self.card = card
        self.style = block_style
        self.explicit_channel = channel if channel is not None else (1 if block_style == "onomondo" else None)
        self.channel: int | None = None
        self.fci: bytes | None = None
        self._reset = False
        self._max_get_response = max_get_response
        self.trace: list[tuple[bytes, bytes]] | None = None  # set to [] to record (command, response) pairs

    @property
    def reset_detected(self) -> bool:
        return self._reset

    @property
    def is_open(self) -> bool:
        return self.channel is not None

    # --------------------------------------------------------------------------------------------- raw I/O
    def _raw(self, command: bytes) -> bytes:
        response = self.card.process(command)
        if self.trace is not None:
            self.trace.append((command, response))
        return response

    def _exchange(self, command: bytes, channel: int) -> apdu.Response:
        """Send one command; resolve 6Cxx and 61xx. Then apply a pending REFRESH."""
        resp = apdu.parse_response(self._raw(command))
        if resp.sw1 == 0x6C:
            resp = apdu.parse_response(self._raw(_with_le(command, resp.sw2)))
        data = resp.data
        rounds = 0
        while resp.sw1 == 0x61:
            rounds += 1
            if rounds > self._max_get_response:
                raise ChannelError("GET RESPONSE loop", resp.sw)
            get = apdu.get_response(resp.sw2, channel, proprietary=self.style == "lpac")
            resp = apdu.parse_response(self._raw(get))
            if resp.sw1 == 0x6C:
                resp = apdu.parse_response(self._raw(_with_le(get, resp.sw2)))
            data += resp.data
        if self.card.take_refresh():
            log.info("card raised REFRESH: resetting the card, all logical channels closed")
            self.card.reset()
            self.channel = None
            self._reset = True
        return apdu.Response(data, resp.sw)

    # --------------------------------------------------------------------------------------------- ApduChannel
    def open_sync(self) -> None:
        if self.style == "onomondo":
            self._exchange(TERMINAL_CAPABILITY, 0)  # accepted or not, like a modem that already sent it
        if self.explicit_channel is None:
            resp = self._exchange(apdu.manage_channel_open(), 0)
            if not resp.ok or len(resp.data) != 1:
                raise ChannelError("MANAGE CHANNEL open", resp.sw)
            number = resp.data[0]
        else:
            number = self.explicit_channel
            resp = self._exchange(apdu.manage_channel_open(number), 0)
            if resp.sw == 0x6985:  # still open from before: close and reopen
                self._exchange(apdu.manage_channel_close(number), 0)
                resp = self._exchange(apdu.manage_channel_open(number), 0)
            if not resp.ok:
                raise ChannelError(f"MANAGE CHANNEL open {number}", resp.sw)
        p2 = 0x04 if self.style == "onomondo" else 0x00
        resp = self._exchange(apdu.select_aid(apdu.ISDR_AID, number, p2=p2), number)
        if not resp.ok:
            raise ChannelError("SELECT ISD-R", resp.sw)
        self.fci = resp.data
        self.channel = number
        self._reset = False
        log.debug("channel %d open, ISD-R selected", number)

    def transmit_sync(self, command: bytes) -> bytes:
        if self.channel is None:
            # like a modem after a SIM reset: the channel is gone, the card answers for a closed channel
            number = self.explicit_channel or 1
        else:
            number = self.channel
        command = bytes(command)
        if len(command) < 4:
            raise ValueError("command APDU shorter than 4 bytes")
        cla = apdu.cla_for_channel(command[0] & 0x80, number)
        resp = self._exchange(bytes([cla]) + command[1:], number)
        return resp.to_bytes()

    def close_sync(self) -> None:
        if self.channel is not None:
            number = self.channel
            self.channel = None
            self._exchange(apdu.manage_channel_close(number), 0)

    async def open(self) -> None:
        self.open_sync()

    async def transmit(self, apdu_bytes: bytes) -> bytes:
        return self.transmit_sync(apdu_bytes)

    async def close(self) -> None:
        self.close_sync()


def _with_le(command: bytes, le: int) -> bytes:
    """The same command with its Le replaced (or appended)."""
    parsed = apdu.parse_command(command)
    return apdu.build(parsed.cla, parsed.ins, parsed.p1, parsed.p2, parsed.data, le)
