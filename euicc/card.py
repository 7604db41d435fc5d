"""The software eUICC at the APDU level (ETSI TS 102 221 §10-11, ISO/IEC 7816-4, SGP.22 v2.5 §5.7.1,
SGP.32 v1.2 §5.9): logical channels, SELECT, STORE DATA chains, GET RESPONSE, TERMINAL CAPABILITY, STATUS.

:class:`SoftEuicc` implements :class:`firmware_bridge.interfaces.CardLink`. ``process`` never raises: every
malformed or unsupported APDU is answered with a status word:

=======  ==========================================================================================
``6700`` wrong length (Lc/Le inconsistent, STORE DATA without data, GET RESPONSE without Le)
``6881`` logical channel not open / not supported (CLA names a closed channel, MANAGE CHANNEL beyond 19)
``6882`` secure messaging indicated in CLA; ``6884`` command chaining indicated in CLA
``6985`` conditions of use not satisfied (STORE DATA with no ISD-R selected, GET RESPONSE with nothing
         waiting, explicit MANAGE CHANNEL open of an open channel, a BPP segment without a session)
``6A80`` ES10 command not a well-formed TLV, or malformed request fields
``6A81`` no free logical channel
``6A82`` SELECT of an unknown AID
``6A84`` STORE DATA chain longer than the card accepts
``6A86`` incorrect P1/P2 (including a STORE DATA block number out of sequence)
``6A88`` unknown ES10 function tag
``6Cxx`` GET RESPONSE with an Le larger than what is waiting (resend with Le = xx)
``6D00`` instruction not supported; ``6E00`` class not supported (CLA/INS mismatch)
``6581`` the state could not be written (the command is rolled back); ``6F00`` internal error
=======  ==========================================================================================
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from euicc import isdr
from euicc import state as state_mod
from euicc.context import Context, Es10Reject, Session
from euicc.identity import Identity
from euicc.state import EuiccState, StateError
from rsp import apdu, tlv
from rsp.errors import DecodeError, RspError

log = logging.getLogger("euicc.card")

MAX_CHANNELS = 20  # basic channel 0 + 19 logical channels
MAX_COMMAND = 64 * 1024  # the largest ES10 command a STORE DATA chain may carry

SW_OK = 0x9000
SW_WRONG_LENGTH = 0x6700
SW_CHANNEL = 0x6881
SW_SM = 0x6882
SW_CHAINING = 0x6884
SW_CONDITIONS = 0x6985
SW_WRONG_DATA = 0x6A80
SW_FUNC = 0x6A81
SW_NOT_FOUND = 0x6A82
SW_MEMORY = 0x6A84
SW_P1P2 = 0x6A86
SW_INS = 0x6D00
SW_CLA = 0x6E00
SW_MEMORY_FAILURE = 0x6581
SW_UNKNOWN = 0x6F00


@dataclass
class _Channel:
    selected: bytes | None = None
    pending: bytes = b""
    chain: bytearray | None = None
    next_block: int = 0


def _sw(sw: int, data: bytes = b"") -> bytes:
    return data + sw.to_bytes(2, "big")


class SoftEuicc:
    """A complete SGP.32 v1.2 IoT eUICC in software. Construct with :meth:`create`, :meth:`load` or
    :meth:`in_memory`."""

    def __init__(self, state: EuiccState, state_path: str | os.PathLike[str] | None = None) -> None:
        self.state_path = Path(state_path) if state_path is not None else None
        self.identity = Identity.from_state(state)
        self.session = Session()
        self._refresh_pending = False
        self._refresh_in_command = False
        self._channels: dict[int, _Channel] = {0: _Channel()}
        self.terminal_capability: bytes | None = None
        self._lock = threading.RLock()  # a carrier may call from several threads (virtual modem, CLI, tests)
        self.ctx = Context(state, self.identity, self.session, self._request_refresh)

    # ------------------------------------------------------------------------------------------ construction
    @property
    def state(self) -> EuiccState:
        return self.ctx.state

    @classmethod
    def create(
        cls,
        pki_dir: str | os.PathLike[str],
        eid: str | bytes,
        state_path: str | os.PathLike[str] | None,
        curve: str = "nist",
        trusted_ci_paths: tuple[str | os.PathLike[str], ...] | list = (),
        default_dp_address: str | None = None,
    ) -> SoftEuicc:
        """A new card with its identity issued by the lab PKI in ``pki_dir`` (``rsp.pki.LabPki``); trusts the
        lab CIs plus the CI certificates in ``trusted_ci_paths`` (e.g. the SGP.26 test CI). With a
        ``state_path`` the state file is written now and after every state-changing command."""
        from euicc.provision import new_state

        st = new_state(
            pki_dir, eid, curve=curve, trusted_ci_paths=trusted_ci_paths, default_dp_address=default_dp_address
        )
        card = cls(st, state_path)
        if card.state_path is not None:
            state_mod.save(st, card.state_path)
        return card

    @classmethod
    def load(cls, state_path: str | os.PathLike[str]) -> SoftEuicc:
        st = state_mod.load(state_path)
        try:
            return cls(st, state_path)
        except RspError as exc:
            raise StateError(f"load state {state_path}: identity unusable: {exc}") from None

    @classmethod
    def in_memory(cls, state: EuiccState) -> SoftEuicc:
        """A card that keeps its state in memory only (unit tests, benchmarks)."""
        return cls(state, None)

    # ------------------------------------------------------------------------------------------ CardLink
    def reset(self) -> None:
        """SIM reset (ATR): every logical channel closed, selections, pending responses and the RSP session
        (RAM) cleared. Persistent state is untouched."""
        with self._lock:
            self._channels = {0: _Channel()}
            self.terminal_capability = None
            self.session.clear()
        log.debug("card reset")

    def take_refresh(self) -> bool:
        with self._lock:
            pending = self._refresh_pending
            self._refresh_pending = False
            return pending

    def _request_refresh(self) -> None:
        self._refresh_in_command = True

    def process(self, raw: bytes) -> bytes:
        try:
            with self._lock:
                return self._process(bytes(raw))
        except Exception:  # never let a malformed APDU take the card down
            log.exception("internal error while processing an APDU")
            return _sw(SW_UNKNOWN)

    # ------------------------------------------------------------------------------------------ dispatch
    def _process(self, raw: bytes) -> bytes:
        try:
            cmd = apdu.parse_command(raw)
        except DecodeError:
            return _sw(SW_WRONG_LENGTH)
        cla = cmd.cla
        if cla == 0xFF:
            return _sw(SW_CLA)
        if cla & 0x40:  # further interindustry form (channels 4..19): b6 = SM, b5 = chaining
            if cla & 0x20:
                return _sw(SW_SM)
        else:
            if cla & 0x20:  # 0x20-0x3F, 0xA0-0xBF: RFU
                return _sw(SW_CLA)
            if cla & 0x0C:
                return _sw(SW_SM)
        if cla & 0x10:
            return _sw(SW_CHAINING)
        proprietary = bool(cla & 0x80)
        number = apdu.channel_from_cla(cla)
        channel = self._channels.get(number)
        if channel is None:
            return _sw(SW_CHANNEL)
        ins = cmd.ins
        if ins != apdu.INS_GET_RESPONSE:
            channel.pending = b""  # a response is only available to the command right after it
        if ins == apdu.INS_MANAGE_CHANNEL:
            return _sw(SW_CLA) if proprietary else self._manage_channel(cmd, number)
        if ins == apdu.INS_SELECT:
            return _sw(SW_CLA) if proprietary else self._select(cmd, channel)
        if ins == apdu.INS_GET_RESPONSE:
            return self._get_response(cmd, channel)
        if ins == apdu.INS_STORE_DATA:
            return self._store_data(cmd, channel) if proprietary else _sw(SW_CLA)
        if ins == apdu.INS_TERMINAL_CAPABILITY:
            return self._terminal_capability(cmd) if proprietary else _sw(SW_CLA)
        if ins == 0xF2:  # STATUS
            return self._status(cmd, channel) if proprietary else _sw(SW_CLA)
        return _sw(SW_INS)

    # ------------------------------------------------------------------------------------------ commands
    def _manage_channel(self, cmd: apdu.Command, origin: int) -> bytes:
        if cmd.data:
            return _sw(SW_WRONG_LENGTH)
        if cmd.p1 == 0x00:  # open
            if cmd.p2 == 0x00:
                for n in range(1, MAX_CHANNELS):
                    if n not in self._channels:
                        self._channels[n] = _Channel()
                        log.debug("channel %d opened (card assigned)", n)
                        return _sw(SW_OK, bytes([n]))
                return _sw(SW_FUNC)
            if cmd.p2 >= MAX_CHANNELS:
                return _sw(SW_CHANNEL)
            if cmd.p2 in self._channels:
                return _sw(SW_CONDITIONS)
            self._channels[cmd.p2] = _Channel()
            log.debug("channel %d opened (explicit)", cmd.p2)
            return _sw(SW_OK)
        if cmd.p1 == 0x80:  # close
            target = cmd.p2 if cmd.p2 else origin
            if target == 0:
                return _sw(SW_P1P2)
            if target >= MAX_CHANNELS:
                return _sw(SW_CHANNEL)
            if target not in self._channels:
                return _sw(SW_CHANNEL)
            del self._channels[target]
            log.debug("channel %d closed", target)
            return _sw(SW_OK)
        return _sw(SW_P1P2)

    def _select(self, cmd: apdu.Command, channel: _Channel) -> bytes:
        if cmd.p1 == 0x00 and cmd.data in (b"", b"\x3f\x00"):  # MF: no file system, accepted
            channel.selected = None
            return _sw(SW_OK)
        if cmd.p1 != 0x04:
            return _sw(SW_NOT_FOUND)
        if cmd.p2 & 0x03 or cmd.p2 & 0xF0:
            return _sw(SW_P1P2)
        if not cmd.data:
            return _sw(SW_WRONG_LENGTH)
        if cmd.data not in (apdu.ISDR_AID, apdu.ECASD_AID):
            return _sw(SW_NOT_FOUND)
        channel.selected = cmd.data
        channel.chain = None
        if cmd.p2 & 0x0C == 0x0C:  # no response data
            return _sw(SW_OK)
        return self._answer(channel, self._fci(cmd.data))

    def _fci(self, aid: bytes) -> bytes:
        """FCI template ``6F {84 AID, A5 {9F65 max command length, [E0 ISD-R template], [E1 IoT template]}}``."""
        prop = tlv.encode(0x9F65, b"\xff")
        if aid == apdu.ISDR_AID:
            prop += tlv.encode(0xE0, tlv.encode(0x82, isdr.SVN))
            bits = {1} if self.state.enabled_profile() is not None else set()
            from euicc.der import bit_string

            prop += tlv.encode(0xE1, bit_string(0x80, bits))
        return tlv.encode(0x6F, tlv.encode(0x84, aid) + tlv.encode(0xA5, prop))

    def _answer(self, channel: _Channel, data: bytes) -> bytes:
        if not data:
            return _sw(SW_OK)
        channel.pending = data
        return _sw(0x6100 | (min(len(data), 256) & 0xFF))

    def _get_response(self, cmd: apdu.Command, channel: _Channel) -> bytes:
        if cmd.p1 or cmd.p2:
            channel.pending = b""
            return _sw(SW_P1P2)
        if cmd.data or cmd.le is None:
            channel.pending = b""
            return _sw(SW_WRONG_LENGTH)
        if not channel.pending:
            return _sw(SW_CONDITIONS)
        wanted = cmd.le or 256
        available = len(channel.pending)
        if wanted > available:
            return _sw(0x6C00 | available)  # available < 256 here; pending kept
        out, rest = channel.pending[:wanted], channel.pending[wanted:]
        channel.pending = rest
        if rest:
            return _sw(0x6100 | (min(len(rest), 256) & 0xFF), out)
        return _sw(SW_OK, out)

    def _terminal_capability(self, cmd: apdu.Command) -> bytes:
        if cmd.p1 or cmd.p2:
            return _sw(SW_P1P2)
        if not cmd.data:
            return _sw(SW_WRONG_LENGTH)
        try:
            list(tlv.iter_tlvs(cmd.data, what="TERMINAL CAPABILITY"))
        except DecodeError:
            return _sw(SW_WRONG_DATA)
        self.terminal_capability = cmd.data
        return _sw(SW_OK)

    def _status(self, cmd: apdu.Command, channel: _Channel) -> bytes:
        if cmd.p1 not in (0x00, 0x01, 0x02) or cmd.p2 not in (0x00, 0x0C):
            return _sw(SW_P1P2)
        if cmd.p2 == 0x0C or channel.selected is None:
            return _sw(SW_OK)
        return self._answer(channel, self._fci(channel.selected))

    def _store_data(self, cmd: apdu.Command, channel: _Channel) -> bytes:
        if channel.selected != apdu.ISDR_AID:
            channel.chain = None
            return _sw(SW_CONDITIONS)
        if cmd.p1 not in (0x11, 0x91):
            channel.chain = None
            return _sw(SW_P1P2)
        if not cmd.data:
            channel.chain = None
            return _sw(SW_WRONG_LENGTH)
        if cmd.p2 == 0:
            channel.chain = bytearray()
            channel.next_block = 0
        elif channel.chain is None or cmd.p2 != channel.next_block:
            channel.chain = None
            return _sw(SW_P1P2)
        channel.chain += cmd.data
        channel.next_block += 1
        if len(channel.chain) > MAX_COMMAND:
            channel.chain = None
            return _sw(SW_MEMORY)
        if cmd.p1 == 0x11:
            return _sw(SW_OK)
        command = bytes(channel.chain)
        channel.chain = None
        data, sw = self.execute(command)
        if sw != SW_OK:
            return _sw(sw)
        return self._answer(channel, data)

    # ------------------------------------------------------------------------------------------ ES10
    def execute(self, command: bytes) -> tuple[bytes, int]:
        """Run one ES10 command (a reassembled STORE DATA payload) as a transaction: on success the state is
        persisted if it changed; on any failure it is rolled back and nothing is written."""
        before = self.ctx.state
        snapshot = before.snapshot()
        self._refresh_in_command = False
        try:
            data = isdr.dispatch(self.ctx, command)
        except Es10Reject as exc:
            log.info("ES10 refused: %s (SW %04X)", exc, exc.sw)
            self._rollback(snapshot)
            return b"", exc.sw
        except RspError as exc:
            log.info("ES10 refused: %s", exc)
            self._rollback(snapshot)
            return b"", SW_WRONG_DATA
        except Exception:
            log.exception("ES10 internal error")
            self._rollback(snapshot)
            return b"", SW_UNKNOWN
        if self.ctx.state != snapshot:
            try:
                self._persist()
            except StateError as exc:
                log.error("%s; command rolled back", exc)
                self._rollback(snapshot)
                return b"", SW_MEMORY_FAILURE
        if self._refresh_in_command:
            self._refresh_pending = True
        self._refresh_in_command = False
        return data, SW_OK

    def _rollback(self, snapshot: EuiccState) -> None:
        self.ctx.state = snapshot
        self._refresh_in_command = False

    def _persist(self) -> None:
        if self.state_path is not None:
            state_mod.save(self.ctx.state, self.state_path)

    def save(self) -> None:
        """Write the state file now (no-op in memory mode)."""
        self._persist()

    def __repr__(self) -> str:
        return f"SoftEuicc(eid={self.state.eid.hex().upper()}, state_path={self.state_path})"
