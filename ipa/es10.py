"""ES10 client: ES10a/b/c and SGP.32 ES10b functions over any :class:`ApduChannel` (SGP.22 §5.7, SGP.32 §5.9).

``Es10Client.call`` sends one ES10 command (a DER TLV) as a STORE DATA chain and returns the card's DER answer.
Typed functions build on it.
"""

from __future__ import annotations

import logging

from firmware_bridge.interfaces import ApduChannel
from rsp import apdu

log = logging.getLogger("ipa.es10")


class Es10Error(Exception):
    """An ES10 command failed at the APDU level; ``step`` names the ES10 function."""

    def __init__(self, step: str, message: str, sw: int | None = None) -> None:
        self.step = step
        self.sw = sw
        super().__init__(f"{step}: {message}")


class Es10Client:
    def __init__(self, channel: ApduChannel, block_size: int = apdu.DEFAULT_BLOCK_SIZE) -> None:
        if not 1 <= block_size <= 255:
            raise ValueError("block size must be 1..255")
        self.channel = channel
        self.block_size = block_size

    async def call(self, command: bytes, step: str = "ES10") -> bytes:
        """Send one ES10 command; return the response data (may be empty)."""
        blocks = apdu.store_data_chain(command, 0, self.block_size)
        for i, blk in enumerate(blocks):
            raw = await self.channel.transmit(blk)
            resp = apdu.parse_response(raw)
            if not resp.ok:
                raise Es10Error(step, f"block {i} answered {resp.sw:04X} ({apdu.sw_name(resp.sw)})", resp.sw)
            if i < len(blocks) - 1 and resp.data:
                raise Es10Error(step, f"intermediate block {i} answered {len(resp.data)} data bytes")
            if i == len(blocks) - 1:
                return resp.data
        raise AssertionError("unreachable")
