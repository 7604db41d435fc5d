"""A small honest card for the firmware-bridge tests (a ``CardLink``): it really parses every APDU.

What it implements (ISO/IEC 7816-4, ETSI TS 102 221, SGP.22 §5.7.1):
- MANAGE CHANNEL open (card-assigned ``00 70 00 00 01`` / ``.. 00 00 00`` or explicit ``00 70 00 0n 00``) and close;
  channels 1..3 (a small card); APDUs on a closed channel answer ``6881``;
- SELECT by AID: ISD-R answers ``61xx`` with an FCI, any other AID ``6A82``;
- STORE DATA chains (P1 ``11``/``91``, block numbers checked, ``6A86`` out of sequence, ``6985`` without ISD-R);
- GET RESPONSE (CLA ``0x`` or ``8x``), ``6Cxx`` when Le is larger than what waits, ``61xx`` for the rest;
- ES10 ``GetEuiccData`` (``BF3E 03 5C 01 5A`` -> ``BF3E 12 5A 10 <EID>``), ``EnableProfile`` (BF31, one of two
  ICCIDs, REFRESH when refreshFlag is set) and a test-only ``BF7E`` echo that answers the SHA-256 and the bytes
  of whatever command arrived (to check long chains in both directions);
- GET DATA ``00 CA 00 5A Le`` for the EID (answers ``6Cxx`` on a wrong Le).

Every APDU received is logged in ``log`` so tests can assert the bytes on the wire.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from rsp import apdu as apdus
from rsp import tlv
from rsp.errors import DecodeError

EID = bytes.fromhex("89049032123451234512345678901235")
ICCIDS = (bytes.fromhex("989410000000000001F2"), bytes.fromhex("989410000000000002F4"))
ECHO_TAG = 0xBF7E
FCI = bytes.fromhex("6F1A8410A0000005591010FFFFFFFF8900000100A5049F6501FF")


@dataclass
class _Ch:
    selected: bytes | None = None
    pending: bytes = b""
    chain: bytearray | None = None
    next_block: int = 0


class MiniCard:
    MAX_CHANNEL = 3

    def __init__(self, eid: bytes = EID) -> None:
        self.eid = eid
        self.channels: dict[int, _Ch] = {0: _Ch()}
        self.enabled = ICCIDS[0]
        self.refresh_pending = False
        self.resets = 0
        self.log: list[bytes] = []
        self.commands: list[bytes] = []  # ES10 commands assembled from chains

    # CardLink ---------------------------------------------------------------
    def reset(self) -> None:
        self.channels = {0: _Ch()}
        self.resets += 1

    def take_refresh(self) -> bool:
        pending, self.refresh_pending = self.refresh_pending, False
        return pending

    def process(self, raw: bytes) -> bytes:
        self.log.append(bytes(raw))
        try:
            cmd = apdus.parse_command(raw)
        except DecodeError:
            return b"\x67\x00"
        ch = self.channels.get(cmd.channel)
        if ch is None:
            return b"\x68\x81"
        if cmd.ins == 0x70:
            return self._manage_channel(cmd)
        if cmd.ins == 0xC0:
            return self._get_response(cmd, ch)
        ch.pending = b""
        if cmd.ins == 0xA4:
            return self._select(cmd, ch)
        if cmd.ins == 0xE2 and cmd.cla & 0x80:
            return self._store_data(cmd, ch)
        if cmd.ins == 0xCA and cmd.p1 == 0x00 and cmd.p2 == 0x5A:
            if cmd.le != len(self.eid):
                return bytes([0x6C, len(self.eid)])
            return self.eid + b"\x90\x00"
        return b"\x6d\x00"

    # ------------------------------------------------------------------------
    def _manage_channel(self, cmd: apdus.Command) -> bytes:
        if cmd.p1 == 0x00:
            if cmd.p2 == 0:
                free = [n for n in range(1, self.MAX_CHANNEL + 1) if n not in self.channels]
                if not free:
                    return b"\x6a\x81"
                self.channels[free[0]] = _Ch()
                return bytes([free[0]]) + b"\x90\x00"
            if cmd.p2 > self.MAX_CHANNEL or cmd.p2 in self.channels:
                return b"\x6a\x81" if cmd.p2 > self.MAX_CHANNEL else b"\x69\x85"
            self.channels[cmd.p2] = _Ch()
            return b"\x90\x00"
        if cmd.p1 == 0x80 and cmd.p2 != 0:
            if self.channels.pop(cmd.p2, None) is None:
                return b"\x68\x81"
            return b"\x90\x00"
        return b"\x6a\x86"

    def _select(self, cmd: apdus.Command, ch: _Ch) -> bytes:
        if cmd.p1 != 0x04:
            return b"\x6a\x86"
        if cmd.data != apdus.ISDR_AID:
            return b"\x6a\x82"
        ch.selected = cmd.data
        ch.chain = None
        return self._answer(ch, FCI)

    def _answer(self, ch: _Ch, data: bytes) -> bytes:
        if not data:
            return b"\x90\x00"
        ch.pending = data
        return bytes([0x61, min(len(data), 256) & 0xFF])

    def _get_response(self, cmd: apdus.Command, ch: _Ch) -> bytes:
        if not ch.pending:
            return b"\x69\x85"
        le = 256 if not cmd.le else cmd.le
        if cmd.le and cmd.le > len(ch.pending):
            return bytes([0x6C, len(ch.pending)])
        out, ch.pending = ch.pending[:le], ch.pending[le:]
        if ch.pending:
            return out + bytes([0x61, min(len(ch.pending), 256) & 0xFF])
        return out + b"\x90\x00"

    def _store_data(self, cmd: apdus.Command, ch: _Ch) -> bytes:
        if ch.selected != apdus.ISDR_AID:
            return b"\x69\x85"
        if cmd.p1 not in (0x11, 0x91) or not cmd.data:
            return b"\x6a\x86"
        if cmd.p2 == 0:
            ch.chain = bytearray()
            ch.next_block = 0
        if ch.chain is None or cmd.p2 != ch.next_block:
            ch.chain = None
            return b"\x6a\x86"
        ch.chain += cmd.data
        ch.next_block += 1
        if cmd.p1 == 0x11:
            return b"\x90\x00"
        command, ch.chain = bytes(ch.chain), None
        self.commands.append(command)
        return self._answer(ch, self._es10(command))

    def _es10(self, command: bytes) -> bytes:
        try:
            top = tlv.parse_exact(command)
        except DecodeError:
            return tlv.encode(0xBF7F, b"")  # not a TLV: an empty "error" answer
        if top.tag == 0xBF3E:
            return tlv.encode(0xBF3E, tlv.encode(0x5A, self.eid))
        if top.tag == ECHO_TAG:
            digest = hashlib.sha256(top.value).digest()
            return tlv.encode(ECHO_TAG, tlv.encode(0x80, digest) + tlv.encode(0x81, top.value))
        if top.tag == 0xBF31:
            iccid = tlv.find(top, 0xA0, 0x5A)
            refresh = tlv.find(top, 0x81)
            if iccid is None or iccid.value not in ICCIDS:
                return tlv.encode(0xBF31, tlv.encode(0x80, b"\x01"))
            if iccid.value == self.enabled:
                return tlv.encode(0xBF31, tlv.encode(0x80, b"\x02"))
            self.enabled = iccid.value
            self.refresh_pending = refresh is not None and refresh.value != b"\x00"
            return tlv.encode(0xBF31, tlv.encode(0x80, b"\x00"))
        return tlv.encode(top.tag, tlv.encode(0x80, b"\x7f"))


def echo_command(payload: bytes) -> bytes:
    return tlv.encode(ECHO_TAG, payload)


def enable_command(iccid: bytes, refresh: bool = True) -> bytes:
    return tlv.encode(
        0xBF31, tlv.encode(0xA0, tlv.encode(0x5A, iccid)) + tlv.encode(0x81, b"\xff" if refresh else b"\x00")
    )


def from_file(path: str) -> MiniCard:
    """A ``--card-factory`` for ``fwbridge virtual-modem``: the file holds the EID in hex."""
    with open(path) as f:
        return MiniCard(bytes.fromhex(f.read().strip()))
