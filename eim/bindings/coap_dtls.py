"""The DTLS sessions of the CoAPS binding (RFC 6347 DTLS 1.2 under RFC 7252 §9 CoAPS, PSK mode).

aiocoap's ``tinydtls_server`` transport keeps one tinydtls context per client address in a table it never
shrinks (it defines a purge and never calls it), logs every client's ``close_notify`` as an unhandled alert, and
does not say when a handshake fails. :class:`DtlsSessionTable` takes over that table on a running server:

* **Bounded**: at most ``max_sessions`` entries. A new client first pushes out the oldest session whose handshake
  has not finished (a scanner, a device with a wrong key, spoofed ClientHellos), and only when there is none the
  least recently active established session. An established session that is pushed out is sent a
  ``close_notify``: a client that keeps its session then starts a new handshake with its next request instead of
  waiting for answers that cannot come.
* **Only handshakes open a session**: a datagram from an unknown address that is not a DTLS ClientHello
  (garbage, a stale session's records) is dropped before tinydtls or the table see it.
* **close_notify** from a device ends its session at once (tinydtls has already answered it).
* **Failed handshakes are named**: an unknown identity is logged by :class:`eim.bindings.coap_psk.PskFile`; a
  wrong key shows as the device's encrypted Finished message arriving without the handshake completing, logged
  once per session with the EID and the peer address (tinydtls drops that record silently and the device sees no
  answer at all).
* A datagram that makes tinydtls or aiocoap raise ends that session only; the server keeps serving.

The record parsing at the top is pure; the rest adapts aiocoap internals (``_DatagramServerSocketSimpleDTLS``,
``_AddressDTLS``), checked for presence when the binding starts.
"""

from __future__ import annotations

import contextlib
import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from eim.bindings.coap_psk import MAX_KEY_BYTES

log = logging.getLogger("eim.esipa.coaps")

CHANGE_CIPHER_SPEC, ALERT, HANDSHAKE, APPLICATION_DATA = 20, 21, 22, 23
CLIENT_HELLO = 1
DTLS_VERSIONS = (b"\xfe\xff", b"\xfe\xfd")  # DTLS 1.0, 1.2 (a ClientHello's record may carry either)
RECORD_HEADER = 13  # type(1) version(2) epoch(2) sequence_number(6) length(2), RFC 6347 §4.1


@dataclass(frozen=True)
class DtlsRecord:
    content_type: int
    version: bytes
    epoch: int
    length: int
    handshake_type: int | None  # first byte of an unencrypted (epoch 0) handshake record


def dtls_records(datagram: bytes) -> tuple[DtlsRecord, ...]:
    """The complete records at the start of a datagram (a truncated or malformed tail is ignored). Never raises."""
    out: list[DtlsRecord] = []
    pos = 0
    while pos + RECORD_HEADER <= len(datagram):
        length = int.from_bytes(datagram[pos + 11 : pos + 13], "big")
        end = pos + RECORD_HEADER + length
        if end > len(datagram):
            break
        content_type = datagram[pos]
        epoch = int.from_bytes(datagram[pos + 3 : pos + 5], "big")
        hs = datagram[pos + RECORD_HEADER] if content_type == HANDSHAKE and epoch == 0 and length else None
        out.append(DtlsRecord(content_type, bytes(datagram[pos + 1 : pos + 3]), epoch, length, hs))
        pos = end
    return tuple(out)


def starts_handshake(datagram: bytes) -> bool:
    """Whether the datagram begins with a DTLS ClientHello (the only thing that may open a session)."""
    records = dtls_records(datagram)
    if not records:
        return False
    first = records[0]
    return (
        first.content_type == HANDSHAKE
        and first.epoch == 0
        and first.version in DTLS_VERSIONS
        and first.handshake_type == CLIENT_HELLO
    )


def carries_finished(datagram: bytes) -> bool:
    """Whether the datagram holds an encrypted handshake record (epoch >= 1): the client's Finished message."""
    return any(r.content_type == HANDSHAKE and r.epoch >= 1 for r in dtls_records(datagram))


class DtlsSessionTable:
    """Takes over the session table of one ``tinydtls_server`` socket (see the module docstring)."""

    def __init__(self, pool: Any, max_sessions: int, credentials: Any) -> None:
        if max_sessions < 1:
            raise ValueError("dtls_max_sessions must be at least 1")
        self.pool = pool
        self.max_sessions = max_sessions
        self.credentials = credentials
        self.sessions: OrderedDict[Any, Any] = pool._connections  # aiocoap's: sockaddr -> address, LRU order
        self.pending: OrderedDict[Any, Any] = OrderedDict()  # handshake not finished yet, oldest first
        self.established = 0
        self.failed = 0  # handshakes whose Finished did not verify (wrong key)
        self.evicted = 0
        self.dropped = 0  # datagrams from unknown addresses that were not a ClientHello
        self.errors = 0
        self._received = pool.datagram_received
        pool._Address = _address_class(self)
        pool.max_sockets = max_sessions
        pool.datagram_received = self.datagram_received
        pool.error_received = self.error_received

    def __len__(self) -> int:
        return len(self.sessions)

    # -------------------------------------------------------------------------------------- socket callbacks
    def datagram_received(self, data: bytes, sockaddr: Any) -> None:
        address = self.sessions.get(sockaddr)
        if address is None:
            if not starts_handshake(data):
                self.dropped += 1
                return
            self._make_room()
        try:
            self._received(data, sockaddr)  # aiocoap's: finds/creates the address, tinydtls handles the records
        except Exception as exc:
            # e.g. aiocoap's "DTLS stack tried accessing different keys": a new handshake with another identity
            # from the address of an existing session (a NAT mapping handed to another device). The session goes,
            # without a close_notify (its state is unknown); the device's next handshake starts afresh.
            self.errors += 1
            current = self.sessions.get(sockaddr)
            log.warning(
                "DTLS datagram not handled, session dropped",
                extra={
                    "peer": _hostinfo(current) if current else str(sockaddr),
                    "error": f"{type(exc).__name__}: {str(exc)[:200]}",
                },
            )
            if current is not None:
                self.evict(current, "error", notify=False)
            return
        if address is None:
            created = self.sessions.get(sockaddr)
            if created is not None and not created.connected and not created.gone:
                self.pending[sockaddr] = created
        elif not address.connected and not address.gone and not address.warned and carries_finished(data):
            eid = address.eid
            if eid is not None:
                address.warned = True
                self.failed += 1
                log.warning(
                    "DTLS handshake failed: the device's Finished message did not verify, "
                    "its key differs from the one in the PSK file",
                    extra={"eid": eid, "peer": _hostinfo(address)},
                )

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (a device gone after its session): the simple server cannot map them to a session anyway
        log.debug("ICMP error on the DTLS socket", extra={"error": str(exc)})

    # -------------------------------------------------------------------------------------- table
    def _make_room(self) -> None:
        while len(self.sessions) >= self.max_sessions:
            victims = self.pending if self.pending else self.sessions
            key, victim = next(iter(victims.items()))
            self.evict(victim, "session table full")
            victims.pop(key, None)  # progress even if the address was already out of aiocoap's table

    def evict(self, address: Any, why: str, *, notify: bool = True) -> None:
        if notify and address.connected and not address.gone:
            with contextlib.suppress(Exception):  # close_notify: a device holding the session handshakes again
                address._dtls_socket.close(address._dtls_session)
        self.evicted += 1
        address._drop(why)

    def forget(self, address: Any) -> None:
        key = address._underlying_address.address
        if self.sessions.get(key) is address:
            del self.sessions[key]
        if self.pending.get(key) is address:
            del self.pending[key]

    def connected(self, address: Any) -> None:
        key = address._underlying_address.address
        if self.pending.get(key) is address:
            del self.pending[key]
        self.established += 1
        log.debug("DTLS session established", extra={"eid": address.eid, "peer": _hostinfo(address)})

    def close_all(self) -> None:
        """At shutdown: close_notify to every established session, then an empty table (aiocoap's own shutdown
        would report each session as an error to a message manager that is already gone)."""
        for address in list(self.sessions.values()):
            self.evict(address, "shutting down")
        self.sessions.clear()
        self.pending.clear()


def _hostinfo(address: Any) -> str | None:
    try:
        return str(address.hostinfo)
    except Exception:
        return None


class _PeerCredentials:
    """What one session's tinydtls asks for keys: the shared key table, told which peer is asking."""

    def __init__(self, credentials: Any, peer: str | None) -> None:
        self.credentials = credentials
        self.peer = peer

    def find_dtls_psk(self, identity: bytes) -> tuple[bytes, Any]:
        lookup = getattr(self.credentials, "lookup", None)
        key, claims = lookup(identity, self.peer) if lookup is not None else self.credentials.find_dtls_psk(identity)
        if len(key) > MAX_KEY_BYTES:  # DTLSSocket would copy it past tinydtls' 16-byte buffer
            log.error("PSK longer than tinydtls takes, handshake refused", extra={"peer": self.peer})
            raise KeyError(identity)
        return key, claims


def _address_class(table: DtlsSessionTable) -> type:
    from aiocoap import error
    from aiocoap.transports.tinydtls import (
        CODE_CLOSE_NOTIFY,
        DTLS_EVENT_CONNECTED,
        LEVEL_NOALERT,
        LEVEL_WARNING,
        CloseNotifyReceived,
    )
    from aiocoap.transports.tinydtls_server import _AddressDTLS

    class EsipaDtlsAddress(_AddressDTLS):
        """One client's DTLS session: aiocoap's, plus connection state and an idempotent, quiet teardown."""

        def __init__(self, protocol: Any, underlying_address: Any) -> None:
            self.connected = False
            self.gone = False
            self.warned = False
            super().__init__(protocol, underlying_address)
            self._psk_store._server_credentials = _PeerCredentials(protocol._server_credentials, self.hostinfo)

        @property
        def eid(self) -> str | None:
            claims = self._psk_store._claims
            return claims if isinstance(claims, str) else None

        def _event(self, level: int, code: int) -> None:
            if (level, code) == (LEVEL_NOALERT, DTLS_EVENT_CONNECTED):
                self.connected = True
                table.connected(self)
            elif (level, code) == (LEVEL_WARNING, CODE_CLOSE_NOTIFY):
                # the device closed its session; tinydtls has answered and forgotten the peer
                self._inject_error(CloseNotifyReceived())
            else:
                super()._event(level, code)  # fatal alerts end the session through _inject_error

        def _inject_error(self, e: Exception) -> None:
            if self.gone:
                return
            self.gone = True
            self._retransmission_task.cancel()
            table.forget(self)
            self._protocol._message_interface._received_exception(self, e)

        def _drop(self, why: str) -> None:
            self._inject_error(error.LibraryShutdown(f"DTLS session dropped: {why}"))

    return EsipaDtlsAddress


def check_supported() -> None:
    """Raise RuntimeError when this aiocoap's DTLS server lacks what :class:`DtlsSessionTable` adapts."""
    from aiocoap.transports import tinydtls_server

    sock = tinydtls_server._DatagramServerSocketSimpleDTLS
    addr = tinydtls_server._AddressDTLS
    missing = [
        name
        for owner, name in (
            (sock, "datagram_received"),
            (sock, "_Address"),
            (addr, "_event"),
            (addr, "_inject_error"),
            (tinydtls_server.SecurityStore, "__getitem__"),
        )
        if not hasattr(owner, name)
    ]
    if missing:
        raise RuntimeError(f"this aiocoap's DTLS server lacks {', '.join(missing)}; CoAPS needs aiocoap 0.4.x")
