"""Pre-shared keys for ESipa over CoAPS (SGP.32 v1.2 §6.1 CoAP binding secured with DTLS 1.2 PSK, RFC 7252 §9.1.3.1).

The eIM keeps one key per device in a text file in the format of Mosquitto's ``psk_file``, so an operator who
already runs a broker with PSKs knows it::

    # EID:key (hex, 16 to 32 bytes)
    89049032123451234512345678901235:00112233445566778899aabbccddeeff

* **The PSK identity is the EID** (32 decimal digits, as the IPA sends it). A request that arrives over a DTLS
  session is handled with that EID as the authenticated peer: a device can only poll, report and download as
  itself (the dispatcher refuses a message whose EID differs, as it does for the MQTT topic EID).
* **Keys** are 16 to 32 bytes: 128 bits at least, 32 bytes at most (tinydtls' ``DTLS_PSK_MAX_KEY_LEN``).
* **Reload without a restart**: the file is checked for changes at most once a second, when a handshake looks a
  key up; a file that no longer parses keeps the previous keys and logs the line that is wrong.

Parsing is pure (:func:`parse_psk_file`); :class:`PskFile` adds the reload and the lookup aiocoap's
``tinydtls_server`` transport asks for (``find_dtls_psk``). Keys never reach a log line.
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("eim.esipa.coaps")

MIN_KEY_BYTES = 16
MAX_KEY_BYTES = 32  # tinydtls DTLS_PSK_MAX_KEY_LEN
_EID = re.compile(r"[0-9]{32}")
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})+")


class PskFileError(ValueError):
    """The PSK file cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class PskEntry:
    eid: str
    key: bytes

    def __repr__(self) -> str:  # never show the key
        return f"PskEntry(eid={self.eid!r}, key=<{len(self.key)} bytes>)"


def parse_psk_file(text: str, source: str = "psk file") -> dict[str, bytes]:
    """``EID:hexkey`` lines to ``{EID: key}``; ``#`` starts a comment, blank lines are skipped."""
    keys: dict[str, bytes] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        identity, sep, key_hex = line.partition(":")
        identity, key_hex = identity.strip(), key_hex.strip()
        where = f"{source} line {number}"
        if not sep:
            raise PskFileError(f"{where}: expected EID:hexkey")
        if not _EID.fullmatch(identity):
            raise PskFileError(f"{where}: identity must be the EID (32 decimal digits)")
        if not _HEX.fullmatch(key_hex):
            raise PskFileError(f"{where}: key must be hex digits (an even number)")
        key = bytes.fromhex(key_hex)
        if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
            raise PskFileError(f"{where}: key is {len(key)} bytes, must be {MIN_KEY_BYTES} to {MAX_KEY_BYTES}")
        if identity in keys:
            raise PskFileError(f"{where}: EID {identity} is listed twice")
        keys[identity] = key
    return keys


def format_psk_line(eid: str, key: bytes) -> str:
    if not _EID.fullmatch(eid) or not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise PskFileError(f"cannot write a PSK line for {eid!r} with a {len(key)}-byte key")
    return f"{eid}:{key.hex()}\n"


def _credentials_base() -> type:
    try:
        from aiocoap.credentials import CredentialsMap
    except ImportError:  # pragma: no cover - aiocoap is in the server extra
        return dict
    return CredentialsMap


class PskFile(_credentials_base()):  # type: ignore[misc]
    """The device keys, reloaded when the file changes; the ``server_credentials`` of the DTLS server.

    aiocoap's ``CredentialsMap.find_dtls_psk`` walks every entry; this looks the identity up in a dict, so a
    handshake costs the same with a million devices as with ten.
    """

    def __init__(self, path: str | os.PathLike[str], *, check_interval: float = 1.0) -> None:
        super().__init__()
        self.path = Path(path)
        self.check_interval = check_interval
        self._keys: dict[str, bytes] = {}
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0
        self.reload(strict=True)

    def __len__(self) -> int:
        return len(self._keys)

    def __bool__(self) -> bool:
        return True

    def reload(self, *, strict: bool = False) -> bool:
        """Read the file again if it changed. ``strict``: raise on a bad file instead of keeping the old keys."""
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
            if stamp == self._stamp:
                return False
            keys = parse_psk_file(self.path.read_text(encoding="utf-8"), str(self.path))
        except (OSError, UnicodeDecodeError, PskFileError) as exc:
            if strict:
                if isinstance(exc, PskFileError):
                    raise
                raise PskFileError(f"{self.path}: {exc}") from None
            log.error("PSK file not reloaded, keeping %d keys", len(self._keys), extra={"error": str(exc)})
            return False
        self._keys, self._stamp = keys, stamp
        log.info("PSK file loaded", extra={"path": str(self.path), "devices": len(keys)})
        return True

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if now - self._checked >= self.check_interval:
            self._checked = now
            self.reload()

    def key_for(self, eid: str) -> bytes | None:
        self._maybe_reload()
        return self._keys.get(eid)

    # aiocoap's tinydtls_server asks this (identity as bytes) during the handshake; the second value becomes the
    # remote's ``authenticated_claims``.
    def find_dtls_psk(self, identity: bytes) -> tuple[bytes, Any]:
        try:
            eid = identity.decode("ascii")
        except (UnicodeDecodeError, AttributeError):
            raise KeyError(identity) from None
        key = self.key_for(eid)
        if key is None:
            log.info("DTLS handshake with an unknown PSK identity", extra={"identity": eid[:40]})
            raise KeyError(identity)
        return key, eid

    def find_oscore(self, unprotected: Any) -> Any:  # no OSCORE on this binding
        raise KeyError(unprotected)

    def find_edhoc_by_id_cred_peer(self, id_cred_peer: Any) -> Any:
        raise KeyError(id_cred_peer)
