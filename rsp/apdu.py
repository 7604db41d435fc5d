"""APDU framing for ES10 over ISO/IEC 7816-4 (SGP.22 §5.7 / protocol brief §8).

Pure functions: build MANAGE CHANNEL, SELECT, STORE DATA chains, GET RESPONSE; encode logical-channel CLA
bytes (channels 0..19, ETSI TS 102 221 §10.1.1); parse and name status words.
"""

from __future__ import annotations

from dataclasses import dataclass

from rsp.errors import DecodeError

ISDR_AID = bytes.fromhex("A0000005591010FFFFFFFF8900000100")
ECASD_AID = bytes.fromhex("A0000005591010FFFFFFFF8900000200")

MAX_CHANNEL = 19
DEFAULT_BLOCK_SIZE = 120

INS_MANAGE_CHANNEL = 0x70
INS_SELECT = 0xA4
INS_STORE_DATA = 0xE2
INS_GET_RESPONSE = 0xC0
INS_TERMINAL_CAPABILITY = 0xAA

SW_NAMES: dict[int, str] = {
    0x9000: "success",
    0x6283: "selected file invalidated",
    0x6581: "memory failure",
    0x6700: "wrong length",
    0x6881: "logical channel not supported",
    0x6882: "secure messaging not supported",
    0x6982: "security status not satisfied",
    0x6985: "conditions of use not satisfied",
    0x6A80: "incorrect parameters in the data field",
    0x6A81: "function not supported",
    0x6A82: "file or application not found",
    0x6A84: "not enough memory space",
    0x6A86: "incorrect P1 or P2",
    0x6A88: "referenced data not found",
    0x6D00: "instruction not supported",
    0x6E00: "class not supported",
    0x6F00: "no precise diagnosis",
}


def sw_name(sw: int) -> str:
    if sw in SW_NAMES:
        return SW_NAMES[sw]
    hi, lo = sw >> 8, sw & 0xFF
    if hi == 0x61:
        return f"{lo or 256} bytes available (GET RESPONSE)"
    if hi == 0x6C:
        return f"wrong Le, exact length {lo or 256}"
    if hi == 0x63 and lo & 0xF0 == 0xC0:
        return f"verification failed, {lo & 0x0F} retries left"
    return "unknown status"


class ApduError(Exception):
    """A card answered with an error status word."""

    def __init__(self, step: str, sw: int) -> None:
        self.step = step
        self.sw = sw
        super().__init__(f"{step}: card answered {sw:04X} ({sw_name(sw)})")


@dataclass(frozen=True, slots=True)
class Response:
    data: bytes
    sw: int

    @property
    def sw1(self) -> int:
        return self.sw >> 8

    @property
    def sw2(self) -> int:
        return self.sw & 0xFF

    @property
    def ok(self) -> bool:
        return self.sw == 0x9000

    def to_bytes(self) -> bytes:
        return self.data + self.sw.to_bytes(2, "big")


def parse_response(raw: bytes) -> Response:
    """Split ``data || SW1 SW2``."""
    if len(raw) < 2:
        raise DecodeError("APDU response", f"{len(raw)} bytes, need at least SW1 SW2", 0)
    return Response(bytes(raw[:-2]), int.from_bytes(raw[-2:], "big"))


def cla_for_channel(cla: int, channel: int) -> int:
    """Put logical channel ``channel`` into class byte ``cla`` (0x00 interindustry or 0x80 proprietary).

    Channels 0..3: first interindustry form (b1-b2). Channels 4..19: further interindustry form
    (b7 set, b1-b4 = channel - 4); the proprietary bit b8 is kept.
    """
    if not 0 <= channel <= MAX_CHANNEL:
        raise ValueError(f"logical channel {channel} out of range 0..{MAX_CHANNEL}")
    proprietary = cla & 0x80
    if channel <= 3:
        return proprietary | channel
    return proprietary | 0x40 | (channel - 4)


def channel_from_cla(cla: int) -> int:
    """Logical channel encoded in a CLA byte."""
    if cla & 0x40:
        return 4 + (cla & 0x0F)
    return cla & 0x03


def is_proprietary_cla(cla: int) -> bool:
    return bool(cla & 0x80)


def build(cla: int, ins: int, p1: int, p2: int, data: bytes = b"", le: int | None = None) -> bytes:
    """A short APDU (case 1..4)."""
    if len(data) > 255:
        raise ValueError("short APDU data longer than 255 bytes")
    out = bytes([cla, ins, p1, p2])
    if data:
        out += bytes([len(data)]) + data
    if le is not None:
        out += bytes([le & 0xFF])
    return out


def manage_channel_open(channel: int | None = None) -> bytes:
    """MANAGE CHANNEL open: card assigns (``00 70 00 00 01``) or explicit channel (``00 70 00 0n 00``)."""
    if channel is None:
        return bytes.fromhex("0070000001")
    return bytes([0x00, 0x70, 0x00, channel, 0x00])


def manage_channel_close(channel: int) -> bytes:
    return bytes([0x00, 0x70, 0x80, channel, 0x00])


def select_aid(aid: bytes = ISDR_AID, channel: int = 0, p2: int = 0x00) -> bytes:
    return build(cla_for_channel(0x00, channel), INS_SELECT, 0x04, p2, aid)


def get_response(le: int, channel: int = 0, proprietary: bool = False) -> bytes:
    cla = cla_for_channel(0x80 if proprietary else 0x00, channel)
    return bytes([cla, INS_GET_RESPONSE, 0x00, 0x00, le & 0xFF])


def store_data_chain(command: bytes, channel: int = 0, block_size: int = DEFAULT_BLOCK_SIZE) -> list[bytes]:
    """Split one ES10 command into STORE DATA APDUs (P1 11 more / 91 last, P2 block number)."""
    if not 1 <= block_size <= 255:
        raise ValueError(f"block size {block_size} out of range 1..255")
    if not command:
        raise ValueError("empty ES10 command")
    cla = cla_for_channel(0x80, channel)
    blocks = [command[i : i + block_size] for i in range(0, len(command), block_size)]
    if len(blocks) > 256:
        raise ValueError(f"command of {len(command)} bytes needs {len(blocks)} blocks (max 256)")
    out = []
    for i, blk in enumerate(blocks):
        p1 = 0x91 if i == len(blocks) - 1 else 0x11
        out.append(build(cla, INS_STORE_DATA, p1, i, blk))
    return out


@dataclass(frozen=True, slots=True)
class Command:
    """A parsed command APDU (short form)."""

    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes
    le: int | None

    @property
    def channel(self) -> int:
        return channel_from_cla(self.cla)


def parse_command(apdu: bytes) -> Command:
    """Parse a short command APDU (cases 1-4). Raises :class:`DecodeError` on a malformed length."""
    n = len(apdu)
    if n < 4:
        raise DecodeError("command APDU", f"{n} bytes, header needs 4", 0)
    cla, ins, p1, p2 = apdu[0], apdu[1], apdu[2], apdu[3]
    if n == 4:
        return Command(cla, ins, p1, p2, b"", None)
    if n == 5:
        return Command(cla, ins, p1, p2, b"", apdu[4])
    lc = apdu[4]
    if lc == 0:
        raise DecodeError("command APDU", "extended length not supported", 4)
    if n == 5 + lc:
        return Command(cla, ins, p1, p2, bytes(apdu[5:]), None)
    if n == 6 + lc:
        return Command(cla, ins, p1, p2, bytes(apdu[5:-1]), apdu[-1])
    raise DecodeError("command APDU", f"Lc={lc} does not match {n - 5} bytes after the header", 4)
