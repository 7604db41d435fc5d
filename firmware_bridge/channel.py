"""``ApduChannel`` to the ISD-R over a modem's AT port: AT+CCHO/CGLA/CCHC or AT+CSIM (3GPP TS 27.007 §8.17, §8.45,
§8.43, §8.46; ISO/IEC 7816-4 §5.1.3 for 61xx/6Cxx; ETSI TS 102 221 §10.1.1 for the CLA channel bits).

One class, :class:`AtApduChannel`, with two routes behind it:

- ``cgla``: ``AT+CCHO="<ISD-R AID>"`` opens a channel and selects; the answer is an opaque session id (``1``,
  ``00000000038aa32f``, or a bare number without prefix) that is only ever passed back to ``AT+CGLA`` /
  ``AT+CCHC``. APDUs go with the basic-channel CLA; the modem puts its channel into CLA.
- ``csim``: ``AT+CSIM`` with MANAGE CHANNEL open (``<ch> 90 00``), SELECT ISD-R on that channel, the channel in CLA
  (:func:`rsp.apdu.cla_for_channel`, channels 0..19).

The route is chosen on :meth:`AtApduChannel.open` by trying the profile's routes in order (a real CCHO on the ISD-R,
never an ``=?`` answer), and kept for the whole life of the channel: one logical channel serves a whole package.
``transmit`` resolves ``61xx`` with GET RESPONSE (CLA ``0x`` or ``8x`` per profile) and ``6Cxx`` by resending with
Le. A REFRESH / SIM reset (a SIM URC, a lost or reopened port, ``6881``, a STORE DATA answered ``6A82``, a session
the modem no longer knows) sets :attr:`reset_detected`; ``transmit`` then raises :class:`ChannelLost` and the next
``open()`` opens and selects again.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from firmware_bridge.at_parser import format_apdu_command, is_sim_reset_urc, parse_apdu_answer, parse_session_id
from firmware_bridge.errors import (
    ApduTooLong,
    AtError,
    AtProtocolError,
    AtTimeout,
    BridgeError,
    ChannelError,
    ChannelLost,
    RouteUnavailable,
)
from firmware_bridge.modem import identify
from firmware_bridge.profiles import ModemProfile, get_profile
from firmware_bridge.state_change import command_tag, profile_state_changed
from rsp import apdu as apdus
from rsp import loopless
from rsp.errors import DecodeError

if TYPE_CHECKING:  # or a firmware_bridge.at_blocking.BlockingAtEngine (no event loop)
    from firmware_bridge.at import AtEngine

log = logging.getLogger("firmware_bridge.channel")

ROUTES = ("cgla", "csim")
MAX_RESPONSE_ROUNDS = 64  # GET RESPONSE / resend rounds for one APDU (a 16 KB answer at 256 bytes per round)
_NO_FREE_CHANNEL = frozenset({0x6A81, 0x6A84, 0x6981, 0x6985})
# +CME ERROR codes that mean "the SIM is not there right now" (10 not inserted, 13 failure, 14 busy, 21 invalid
# index = the session is unknown to the modem).
_SIM_GONE_CME = frozenset({10, 13, 14, 21})
_SIM_GONE_TEXT = ("SIM BUSY", "SIM FAILURE", "SIM NOT INSERTED", "INVALID INDEX", "SIM NOT READY")


def _sim_gone(err: AtError) -> bool:
    cme = err.cme
    if isinstance(cme, int):
        return cme in _SIM_GONE_CME
    return isinstance(cme, str) and any(t in cme.upper() for t in _SIM_GONE_TEXT)


def _sim_busy(err: AtError) -> bool:
    cme = err.cme
    return cme == 14 or (isinstance(cme, str) and "BUSY" in cme.upper())


def _with_le(apdu: bytes, le: int) -> bytes:
    """The same command with Le replaced (or added) - the 6Cxx resend."""
    cmd = apdus.parse_command(apdu)
    return apdus.build(cmd.cla, cmd.ins, cmd.p1, cmd.p2, cmd.data, le)


class _Route:
    name = ""

    def __init__(self, owner: AtApduChannel) -> None:
        self.owner = owner
        self.engine = owner.engine

    @property
    def handle(self) -> str:
        raise NotImplementedError

    @property
    def ident(self) -> str:
        """The channel number or session id, as the AT commands write it."""
        raise NotImplementedError

    async def open(self) -> None:
        raise NotImplementedError

    async def send(self, apdu: bytes, limit: float | None) -> bytes:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    def _check_length(self, apdu: bytes) -> None:
        profile = self.owner.profile
        n = 2 * len(apdu)
        limit = self.owner.line_limit
        if limit is not None and n > limit:
            raise ApduTooLong(
                f"{self.name} APDU",
                f"{n} hex characters exceed the modem's limit of {limit}: use STORE DATA blocks of at most "
                f"{self.owner.recommended_block_size} bytes",
            )
        if profile.min_apdu_hex is not None and n < profile.min_apdu_hex:
            raise ApduTooLong(
                f"{self.name} APDU", f"{n} hex characters below the modem's minimum {profile.min_apdu_hex}"
            )

    async def _at_apdu(self, command: str, prefix: str, apdu: bytes, limit: float | None) -> bytes:
        try:
            resp = await self.engine.command(command, expect=prefix, timeout=limit)
        except AtError as err:
            if err.cme == 3 and len(apdu) > 5 + apdus.DEFAULT_BLOCK_SIZE:
                self.owner._learn_line_limit(2 * len(apdu) - 2)
                raise ApduTooLong(
                    command,
                    f"the modem refused a {2 * len(apdu)}-character APDU ({err.final}): use STORE DATA blocks of at "
                    f"most {self.owner.recommended_block_size} bytes",
                    cause=err,
                ) from err
            raise
        return parse_apdu_answer(resp, prefix)


class _CsimRoute(_Route):
    """AT+CSIM with our own MANAGE CHANNEL and SELECT; the logical channel goes into CLA."""

    name = "csim"

    def __init__(self, owner: AtApduChannel) -> None:
        super().__init__(owner)
        self.channel: int | None = None

    @property
    def handle(self) -> str:
        return f"channel {self.channel}"

    @property
    def ident(self) -> str:
        return str(self.channel)

    def _cla(self, apdu: bytes) -> bytes:
        return bytes([apdus.cla_for_channel(apdu[0] & 0x80, self.channel or 0)]) + apdu[1:]

    async def _csim(self, apdu: bytes, limit: float | None = None) -> bytes:
        self._check_length(apdu)
        return await self._at_apdu(format_apdu_command(apdu), "+CSIM:", apdu, limit)

    async def open(self) -> None:
        profile = self.owner.profile
        if not profile.logical_channels:
            self.channel = 0
        else:
            self.channel = await self._manage_channel_open()
        try:
            await self.owner._select_isdr(self)
        except BaseException:
            await self._close_quietly()
            raise

    async def _manage_channel_open(self) -> int:
        step = "MANAGE CHANNEL open"
        cmd = self.owner.profile.manage_channel_open
        raw = await self._csim(cmd)
        sw = int.from_bytes(raw[-2:], "big")
        if sw == 0x9000 and len(raw) == 3 and 1 <= raw[0] <= apdus.MAX_CHANNEL:
            return raw[0]
        hint = " (no free logical channel)" if sw in _NO_FREE_CHANNEL else ""
        raise ChannelError(
            step,
            f"answered {raw.hex().upper()} ({apdus.sw_name(sw)}), expected <ch> 9000{hint}",
            sw=sw,
            **self.owner._last_at(),
        )

    async def send(self, apdu: bytes, limit: float | None) -> bytes:
        return await self._csim(self._cla(apdu), limit)

    async def _close_quietly(self) -> None:
        ch, self.channel = self.channel, None
        if ch:
            try:
                await self._csim(apdus.manage_channel_close(ch))
            except BridgeError as exc:
                log.info("MANAGE CHANNEL close %d: %s (will retry before the next open)", ch, exc)
                self.owner._stale.append(("csim", str(ch)))

    async def close(self) -> None:
        await self._close_quietly()


class _CglaRoute(_Route):
    """AT+CCHO / AT+CGLA / AT+CCHC; the session id is an opaque handle, the modem handles CLA channel bits."""

    name = "cgla"

    def __init__(self, owner: AtApduChannel) -> None:
        super().__init__(owner)
        self.session: str | None = None

    @property
    def handle(self) -> str:
        return f"session {self.session}"

    @property
    def ident(self) -> str:
        return str(self.session)

    async def open(self) -> None:
        resp = await self.engine.command(f'AT+CCHO="{apdus.ISDR_AID.hex().upper()}"', expect="+CCHO:")
        self.session = parse_session_id(resp)
        log.info("AT+CCHO: ISD-R on session %s", self.session)

    async def send(self, apdu: bytes, limit: float | None) -> bytes:
        if self.session is None:
            raise ChannelError("AT+CGLA", "no session open")
        self._check_length(apdu)
        return await self._at_apdu(format_apdu_command(apdu, self.session), "+CGLA:", apdu, limit)

    async def close(self) -> None:
        sid, self.session = self.session, None
        if sid is None:
            return
        try:
            await self.engine.command(f"AT+CCHC={sid}")
        except BridgeError as exc:
            log.info("AT+CCHC=%s: %s (will retry before the next open)", sid, exc)
            self.owner._stale.append(("cgla", sid))


class AtApduChannel:
    """An :class:`~firmware_bridge.interfaces.ApduChannel` to the ISD-R through an :class:`AtEngine`.

    ``profile``: a :class:`ModemProfile`, a profile name, or ``None`` to pick one from ``ATI``/``AT+CGMM`` on the
    first ``open()``. ``route``: ``"auto"`` (profile order, first that reaches the ISD-R), ``"cgla"`` or ``"csim"``.
    """

    def __init__(
        self,
        engine: AtEngine,
        profile: ModemProfile | str | None = None,
        route: str = "auto",
        *,
        sim_ready_timeout: float = 20.0,
        session_file: str | os.PathLike[str] | None = None,
    ) -> None:
        if route not in ("auto", *ROUTES):
            raise ValueError(f"route must be auto, cgla or csim, not {route!r}")
        self.engine = engine
        self._profile = get_profile(profile) if isinstance(profile, str) else profile
        self.route_setting = route
        self.sim_ready_timeout = sim_ready_timeout
        self._route: _Route | None = None
        self._reset = False
        # Channels/sessions to close before the next open: failed closes, and what a previous run recorded in
        # ``session_file`` and never closed (a crash, a power cut).
        self._stale: list[tuple[str, str]] = []
        self.session_file = Path(session_file) if session_file is not None else None
        self._learned_limit: int | None = None
        self._chain_tag: int | None = None
        self._lock = loopless.Lock()  # an asyncio.Lock under a loop (a one-shot command may run without one)
        self._reset_seen = False  # a SIM reset URC or a port event since the channel was opened
        self._reset_waiter: Any = None  # an asyncio.Event while _sim_reread waits for the modem's own reset
        self.select_response: bytes = b""
        self.sim_refreshes = 0
        self.reopens = 0
        self.route_failures: dict[str, BaseException] = {}
        self._last_route: str | None = None
        self._unsubscribe = [engine.add_urc_listener(self._on_urc), engine.add_port_listener(self._on_port)]

    # ------------------------------------------------------------------ properties
    @property
    def profile(self) -> ModemProfile:
        if self._profile is None:
            raise ChannelError("profile", "not identified yet: call open() first or pass a profile")
        return self._profile

    @property
    def route(self) -> str | None:
        """The route in use (``"cgla"`` / ``"csim"``), ``None`` before ``open()``."""
        return self._route.name if self._route else None

    @property
    def handle(self) -> str | None:
        return self._route.handle if self._route else None

    @property
    def reset_detected(self) -> bool:
        return self._reset

    @property
    def line_limit(self) -> int | None:
        """Largest APDU hex length the modem takes (profile, lowered by what it refused)."""
        limits = [x for x in (self._profile.max_apdu_hex if self._profile else None, self._learned_limit) if x]
        return min(limits) if limits else None

    @property
    def recommended_block_size(self) -> int:
        """STORE DATA block size for :class:`ipa.es10.Es10Client` on this modem."""
        size = self._profile.recommended_block_size if self._profile else apdus.DEFAULT_BLOCK_SIZE
        if self.line_limit is not None:
            size = min(size, self.line_limit // 2 - 5)
        return max(1, size)

    def _last_at(self) -> dict:
        return {"command": self.engine.last_command, "answer": self.engine.last_answer}

    def _learn_line_limit(self, limit: int) -> None:
        self._learned_limit = limit if self._learned_limit is None else min(self._learned_limit, limit)

    # ------------------------------------------------------------------ reset detection
    def _on_urc(self, line: str) -> None:
        if self._route is not None and is_sim_reset_urc(line):
            if not self._reset:
                log.warning("SIM reset URC %r: logical channel %s lost", line, self._route.handle)
            self._reset = True
            self._reset_signal()

    def _on_port(self, event: str) -> None:
        if self._route is not None:
            log.warning("port %s: logical channel %s lost", event, self._route.handle)
            self._reset = True
            self._reset_signal()

    def _reset_signal(self) -> None:
        self._reset_seen = True
        if self._reset_waiter is not None:
            self._reset_waiter.set()

    def _lost(self, step: str, reason: str, sw: int | None = None, cause: BaseException | None = None) -> ChannelLost:
        self._reset = True
        return ChannelLost(
            step, reason + "; call open() to re-open and re-select ISD-R", sw=sw, cause=cause, **self._last_at()
        )

    # ------------------------------------------------------------------ open / close
    async def open(self) -> None:
        """Open a logical channel to the ISD-R (no-op when one is open and no reset was detected)."""
        async with self._lock:
            if self._route is not None and not self._reset:
                return
            after_reset = self._route is not None
            if after_reset:
                log.info("re-opening the ISD-R channel after a reset (%s was lost)", self._route.handle)
                self._route = None
                self.reopens += 1
                await self._record(None)  # gone with the reset: nothing to close
            await self._close_stale()
            await self._error_codes_on()
            if self._profile is None:
                ident = await identify(self.engine)
                self._profile = ident.profile
                log.info("modem %r: profile %s", ident.text, ident.profile.name)
            names = self.profile.routes if self.route_setting == "auto" else (self.route_setting,)
            if self._last_route in names:  # keep the route that worked before a reset
                names = (self._last_route, *[n for n in names if n != self._last_route])
            self.route_failures = {}
            for name in names:
                route = _CsimRoute(self) if name == "csim" else _CglaRoute(self)
                try:
                    await self._open_route(route, after_reset)
                except (AtError, AtProtocolError, AtTimeout, ChannelError) as exc:
                    log.info("route %s failed: %s", name, exc)
                    self.route_failures[name] = exc
                    continue
                self._route = route
                self._last_route = name
                self._reset = False
                self._reset_seen = False
                await self._record(route)
                self._chain_tag = None
                log.info("ISD-R open over %s (%s)", name, route.handle)
                return
            raise RouteUnavailable(self.route_failures)

    async def _error_codes_on(self) -> None:
        """``AT+CMEE=1`` before opening: the SIM-busy and SIM-failure answers after a reset (``+CME ERROR: 14`` /
        ``13``) are told from other errors only with result codes on, and modems start with their own setting (docs:
        "Error format at power-up"; some answer a bare ERROR). Best effort: a modem that refuses keeps its format."""
        try:
            await self.engine.command("AT+CMEE=1", timeout=3.0)
        except (AtError, AtProtocolError, AtTimeout) as exc:
            log.info("AT+CMEE=1 refused (%s): SIM-busy answers look like any other error", exc)

    async def _open_route(self, route: _Route, after_reset: bool) -> None:
        """Open ``route``; while the SIM is busy (or, after a reset, not back yet) retry with backoff."""
        deadline = time.monotonic() + self.sim_ready_timeout
        delay = 0.1
        while True:
            try:
                await route.open()
                return
            except AtError as err:
                waiting = _sim_busy(err) or (after_reset and _sim_gone(err))
                if not waiting or time.monotonic() + delay > deadline:
                    raise
                log.info("%s: SIM not ready (%s), retrying in %.1f s", err.command, err.final, delay)
            await loopless.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _select_isdr(self, route: _CsimRoute) -> None:
        """SELECT ISD-R by AID on the route's channel; fetch (and keep) the FCI if the card offers one."""
        select = apdus.select_aid(apdus.ISDR_AID)
        raw = await route.send(select, None)
        sw = int.from_bytes(raw[-2:], "big")
        if raw[-2] == 0x61:
            try:
                raw = await self._resolve(route, select, raw, None)
            except BridgeError as exc:  # some modems refuse GET RESPONSE; the FCI is not needed
                log.info("SELECT ISD-R: FCI not fetched (%s)", exc)
                raw = b"\x90\x00"
            sw = int.from_bytes(raw[-2:], "big")
        if sw != 0x9000:
            raise ChannelError("SELECT ISD-R", f"answered {sw:04X} ({apdus.sw_name(sw)})", sw=sw, **self._last_at())
        self.select_response = raw[:-2]

    # ------------------------------------------------------------------ stale channels
    def _read_session_file(self) -> tuple[str, str] | None:
        try:
            rec = json.loads(self.session_file.read_text()) if self.session_file else None
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("session file %s unreadable: %s", self.session_file, exc)
            return None
        if isinstance(rec, dict) and rec.get("route") in ROUTES and isinstance(rec.get("id"), str):
            return rec["route"], rec["id"]
        return None

    def _write_session_file(self, record: dict | None) -> None:
        if self.session_file is None:
            return
        if record is None:
            self.session_file.unlink(missing_ok=True)
            return
        tmp = self.session_file.with_name(self.session_file.name + ".tmp")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, self.session_file)

    async def _record(self, route: _Route | None) -> None:
        record = None if route is None else {"route": route.name, "id": route.ident, "port": self.engine.port}
        await loopless.blocking(self._write_session_file, record)

    async def _close_stale(self) -> None:
        """Close what an earlier run left open (recorded in ``session_file``) and what failed to close."""
        previous = await loopless.blocking(self._read_session_file)
        if previous is not None and previous not in self._stale:
            log.info("closing the %s %s a previous run left open", *previous)
            self._stale.append(previous)
        while self._stale:
            route, ident = self._stale.pop(0)
            if route == "cgla":
                command, expect = f"AT+CCHC={ident}", None
            else:
                command, expect = format_apdu_command(apdus.manage_channel_close(int(ident))), "+CSIM:"
            try:
                await self.engine.command(command, expect=expect)
            except BridgeError as exc:
                log.info("closing stale %s %s: %s", route, ident, exc)
        await self._record(None)

    async def close(self) -> None:
        """Close the logical channel (nothing to close after a reset: the modem already dropped it)."""
        async with self._lock:
            route, self._route = self._route, None
            if route is not None and not self._reset:
                record = (route.name, route.ident)
                await route.close()
                if record in self._stale:
                    return  # not closed: the session file keeps it for the next run
            await self._record(None)

    def detach(self) -> None:
        """Stop listening to the engine (the channel object is being discarded)."""
        for unsub in self._unsubscribe:
            unsub()
        self._unsubscribe = []

    # ------------------------------------------------------------------ APDUs
    async def transmit(self, apdu: bytes) -> bytes:
        """Send one basic-channel command APDU; answer data || SW with 61xx/6Cxx resolved."""
        async with self._lock:
            route = self._route
            if route is None:
                raise ChannelError("transmit", "channel not open: call open() first")
            if self._reset:
                raise self._lost("transmit", f"the card was reset since {route.handle} was opened")
            try:
                cmd = apdus.parse_command(apdu)
            except DecodeError as exc:
                raise ValueError(f"not a command APDU: {exc}") from exc
            if cmd.cla & 0x7F:
                raise ValueError(f"transmit takes basic-channel APDUs of class 00 or 80, not CLA {cmd.cla:02X}")
            is_store_data = cmd.ins == apdus.INS_STORE_DATA
            last_block = is_store_data and bool(cmd.p1 & 0x80)
            if is_store_data and cmd.p2 == 0:
                self._chain_tag = command_tag(cmd.data)
            # The card executes the ES10 command on the last block: that one may take long.
            limit = self.engine.long_timeout if last_block else None
            raw = await self._send(route, apdu, limit)
            if raw[-2] in (0x61, 0x6C):
                raw = await self._resolve(route, apdu, raw, limit)
            sw = int.from_bytes(raw[-2:], "big")
            if sw == 0x6881 or (sw == 0x6A82 and cmd.ins not in (apdus.INS_SELECT, apdus.INS_MANAGE_CHANNEL)):
                raise self._lost(f"APDU {apdu[:4].hex().upper()}", f"answered {sw:04X} ({apdus.sw_name(sw)})", sw)
            if (
                last_block
                and sw == 0x9000
                and self.profile.cfun_cycle_after_enable
                and profile_state_changed(self._chain_tag, raw[:-2])
            ):
                await self._sim_reread()
            return raw

    async def _sim_reread(self) -> None:
        """After a profile change: unless the modem resets the SIM by itself (a SIM URC within the grace
        period), make it re-read the SIM."""
        import asyncio

        if not self._reset_seen:
            self._reset_waiter = asyncio.Event()
            try:
                await asyncio.wait_for(self._reset_waiter.wait(), self.profile.sim_reset_grace)
            except TimeoutError:
                await self._refresh_sim_locked()
                return
            finally:
                self._reset_waiter = None
        log.info("the modem reset the SIM by itself after the profile change")

    async def _send(self, route: _Route, apdu: bytes, limit: float | None) -> bytes:
        retries = self.profile.bare_error_retries
        while True:
            try:
                return await route.send(apdu, limit)
            except AtError as err:
                if _sim_gone(err):
                    raise self._lost(err.command, f"modem answered {err.final}", cause=err) from err
                if err.bare and retries > 0:
                    retries -= 1
                    log.warning("%s answered a bare ERROR: sending the same APDU again", err.command)
                    continue
                raise

    async def _resolve(self, route: _Route, apdu: bytes, raw: bytes, limit: float | None) -> bytes:
        """GET RESPONSE while 61xx, resend with Le on 6Cxx (ISO/IEC 7816-4 §5.1.3)."""
        data = b""
        last = apdu
        proprietary = self.profile.get_response_cla == 0x80
        for _ in range(MAX_RESPONSE_ROUNDS):
            sw1, sw2 = raw[-2], raw[-1]
            if sw1 == 0x61:
                data += raw[:-2]
                last = apdus.get_response(sw2, 0, proprietary=proprietary)
            elif sw1 == 0x6C:
                last = _with_le(last, sw2)
            else:
                return data + raw
            raw = await self._send(route, last, limit)
        raise ChannelError("GET RESPONSE", f"still {raw[-2:].hex().upper()} after {MAX_RESPONSE_ROUNDS} rounds")

    # ------------------------------------------------------------------ SIM refresh
    async def refresh_sim(self) -> None:
        """Make the modem re-read the SIM (``AT+CFUN=0`` then ``AT+CFUN=1``); the channel must be re-opened."""
        async with self._lock:
            await self._refresh_sim_locked()

    async def _refresh_sim_locked(self) -> None:
        log.info("profile state changed and %s needs a SIM re-read: AT+CFUN=0 / AT+CFUN=1", self.profile.name)
        timeout = max(self.engine.timeout, 30.0)
        await self.engine.command("AT+CFUN=0", timeout=timeout)
        await self.engine.command("AT+CFUN=1", timeout=timeout)
        self.sim_refreshes += 1
        self._reset = True
