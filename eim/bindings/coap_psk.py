"""Pre-shared keys for ESipa over CoAPS (SGP.32 v1.2 §6.1 CoAP binding secured with DTLS 1.2 PSK, RFC 7252 §9.1.3.1).

The eIM keeps one key per device in a text file in the format of Mosquitto's ``psk_file``, so an operator who
already runs a broker with PSKs knows it::

    # EID:key (hex, 16 bytes)
    89049032123451234512345678901235:00112233445566778899aabbccddeeff

* **The PSK identity is the EID** (32 decimal digits, as the IPA sends it). A request that arrives over a DTLS
  session is handled with that EID as the authenticated peer: a device can only poll, report and download as
  itself (the dispatcher refuses a message whose EID differs, as it does for the MQTT topic EID).
* **Keys** are 16 bytes (128 bits, the strength of the cipher suite TLS_PSK_WITH_AES_128_CCM_8). Not longer:
  tinydtls' ``DTLS_PSK_MAX_KEY_LEN`` is 16 and DTLSSocket 0.2.3 copies the key into that 16-byte buffer without
  checking its length, so a longer key corrupts memory and its handshakes fail (tried: 17 bytes happened to work,
  20 to 32 bytes never did). Not shorter: less than 128 bits.
* **Reload without a restart**: :meth:`PskFile.watch` (run by the CoAPS binding) looks at the file's size and
  modification time every ``check_interval`` seconds (1 s) and parses it again, off the event loop, when they
  changed; a file that no longer parses keeps the previous keys and logs the line that is wrong, once per change.
  A handshake only looks a key up in memory.
* **Editing** (``eim psk set|remove|list``): :func:`set_psk` / :func:`remove_psk` edit the text (comments and the
  other lines stay as they are), :func:`write_psk_file` replaces the file atomically with mode 0600.

Parsing and editing are pure; :class:`PskFile` adds the reload and the lookup aiocoap's ``tinydtls_server``
transport asks for (``find_dtls_psk``). Keys never reach a log line or an exception message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eim.secret_file_watch import SecretFileWatch
from rsp import files

log = logging.getLogger("eim.esipa.coaps")

MIN_KEY_BYTES = 16  # 128 bits
MAX_KEY_BYTES = 16  # tinydtls DTLS_PSK_MAX_KEY_LEN: DTLSSocket overflows that buffer with a longer key
GENERATED_KEY_BYTES = 16  # 128 bits, the strength of TLS_PSK_WITH_AES_128_CCM_8


def _length_rule() -> str:
    if MIN_KEY_BYTES == MAX_KEY_BYTES:
        return f"must be {MIN_KEY_BYTES} bytes ({2 * MIN_KEY_BYTES} hex digits)"
    return f"must be {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes"


_EID = re.compile(r"[0-9]{32}")
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})+")


class PskFileError(ValueError):
    """The PSK file (or a value for it) cannot be used; the message names the file and line, never a key."""


@dataclass(frozen=True)
class PskEntry:
    eid: str
    key: bytes

    def __repr__(self) -> str:  # never show the key
        return f"PskEntry(eid={self.eid!r}, key=<{len(self.key)} bytes>)"


def check_eid(eid: str) -> str:
    if not _EID.fullmatch(eid):
        raise PskFileError(f"EID must be 32 decimal digits, got {eid[:40]!r}")
    return eid


def key_from_hex(text: str) -> bytes:
    """A key written in hex (16 bytes). The message never repeats the text (it may be a key)."""
    text = text.strip()
    if not _HEX.fullmatch(text):
        raise PskFileError("key must be hex digits (an even number)")
    key = bytes.fromhex(text)
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise PskFileError(f"key is {len(key)} bytes, {_length_rule()}")
    return key


def generate_key(length: int = GENERATED_KEY_BYTES) -> bytes:
    if not MIN_KEY_BYTES <= length <= MAX_KEY_BYTES:
        raise PskFileError(f"key length {_length_rule()}")
    return secrets.token_bytes(length)


def _entry(raw: str, number: int, source: str) -> tuple[str, bytes] | None:
    """One line: ``None`` for a blank or comment line, else (EID, key)."""
    line = raw.split("#", 1)[0].strip()
    if not line:
        return None
    identity, sep, key_hex = line.partition(":")
    identity = identity.strip()
    where = f"{source} line {number}"
    if not sep:
        raise PskFileError(f"{where}: expected EID:hexkey")
    if not _EID.fullmatch(identity):
        raise PskFileError(f"{where}: identity must be the EID (32 decimal digits)")
    try:
        return identity, key_from_hex(key_hex)
    except PskFileError as exc:
        raise PskFileError(f"{where}: {exc}") from None


def parse_psk_file(text: str, source: str = "psk file") -> dict[str, bytes]:
    """``EID:hexkey`` lines to ``{EID: key}``; ``#`` starts a comment, blank lines are skipped."""
    keys: dict[str, bytes] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        entry = _entry(raw, number, source)
        if entry is None:
            continue
        if entry[0] in keys:
            raise PskFileError(f"{source} line {number}: EID {entry[0]} is listed twice")
        keys[entry[0]] = entry[1]
    return keys


def format_psk_line(eid: str, key: bytes) -> str:
    if not _EID.fullmatch(eid) or not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise PskFileError(f"cannot write a PSK line for {eid[:40]!r} with a {len(key)}-byte key")
    return f"{eid}:{key.hex()}\n"


def _lines(text: str, source: str) -> list[tuple[str, str | None]]:
    """Each line with the EID it holds (``None`` for comments and blank lines); checks the whole file first."""
    parse_psk_file(text, source)
    out: list[tuple[str, str | None]] = []
    for number, raw in enumerate(text.splitlines(), 1):
        entry = _entry(raw, number, source)
        out.append((raw, entry[0] if entry else None))
    return out


def set_psk(text: str, eid: str, key: bytes, source: str = "psk file") -> tuple[str, bool]:
    """``text`` with ``eid``'s key set (its line replaced in place, else appended); True if it replaced one."""
    new_line = format_psk_line(check_eid(eid), key).rstrip("\n")
    replaced = False
    out: list[str] = []
    for raw, owner in _lines(text, source):
        if owner == eid:
            out.append(new_line)
            replaced = True
        else:
            out.append(raw)
    if not replaced:
        out.append(new_line)
    return "\n".join(out) + "\n", replaced


def remove_psk(text: str, eid: str, source: str = "psk file") -> tuple[str, bool]:
    """``text`` without ``eid``'s line; True if there was one."""
    check_eid(eid)
    kept = [raw for raw, owner in _lines(text, source) if owner != eid]
    removed = len(kept) != len(text.splitlines())
    return ("\n".join(kept) + "\n" if kept else ""), removed


def read_psk_text(path: str | os.PathLike[str], *, missing_ok: bool = False) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        if missing_ok:
            return ""
        raise PskFileError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PskFileError(f"{path}: cannot read: {exc}") from None


@contextlib.contextmanager
def locked(path: str | os.PathLike[str]) -> Iterator[None]:
    """An exclusive lock on ``<path>.lock`` so that two ``eim psk`` runs do not lose each other's change."""
    try:
        with files.locked(path):
            yield
    except OSError as exc:
        raise PskFileError(f"{path}.lock: cannot lock: {exc}") from None


def write_psk_file(path: str | os.PathLike[str], text: str, *, check: Any = parse_psk_file) -> list[str]:
    """Replace the file atomically (:func:`rsp.files.replace_private`: mode 0600, fsync'ed, renamed), keeping the
    old file's owner and group when allowed. Returns warnings (e.g. the owner could not be kept). ``check``
    parses the text first (another key file's parser for files of the same kind, e.g. device secrets)."""
    check(text, str(path))  # never write a file the eIM would refuse
    try:
        return files.replace_private(path, text, keep_owner=True)
    except OSError as exc:
        raise PskFileError(f"{path}: cannot write: {exc}") from None


class PskFile:
    """The device keys, reloaded when the file changes; the ``server_credentials`` of the DTLS server.

    aiocoap's ``CredentialsMap.find_dtls_psk`` walks every entry; this looks the identity up in a dict, so a
    handshake costs the same with a million devices as with ten.
    """

    def __init__(self, path: str | os.PathLike[str], *, check_interval: float = 1.0) -> None:
        self.path = Path(path)
        self.check_interval = check_interval
        self._keys: dict[str, bytes] = {}
        self._file = SecretFileWatch(
            self.path,
            parse=parse_psk_file,
            error=PskFileError,
            log=log,
            what="PSK file",
            keeping="keys",
            count_key="devices",
        )
        self.reload(strict=True)

    def __len__(self) -> int:
        return len(self._keys)

    def __bool__(self) -> bool:  # aiocoap replaces falsy server_credentials by an empty map
        return True

    def __contains__(self, eid: object) -> bool:
        return eid in self._keys

    def eids(self) -> list[str]:
        return list(self._keys)

    def reload(self, *, strict: bool = False) -> bool:
        """Read the file again if it changed. ``strict``: raise on a bad file instead of keeping the old keys.
        Safe to run in a worker thread: the key table is replaced in one assignment."""
        keys = self._file.read(len(self._keys), strict=strict)
        if keys is None:
            return False
        self._keys = keys
        return True

    async def watch(self) -> None:
        """Reload every ``check_interval`` seconds, in a worker thread (a large file never stalls the loop)."""
        while True:
            await asyncio.sleep(self.check_interval)
            try:
                await asyncio.to_thread(self.reload)
            except asyncio.CancelledError:
                raise
            except Exception:  # never end the watch: a bug here must not freeze the keys silently
                log.exception("PSK file check failed", extra={"path": str(self.path)})

    def key_for(self, eid: str) -> bytes | None:
        return self._keys.get(eid)

    def lookup(self, identity: bytes, peer: str | None = None) -> tuple[bytes, str]:
        """(key, EID) for a PSK identity; ``KeyError`` (logged with the peer) when no device has it."""
        if not isinstance(identity, bytes | bytearray):
            raise KeyError(identity)  # pragma: no mutate - the argument is only what a log shows; the type refuses
        eid = identity.decode("ascii", "replace")
        key = self._keys.get(eid)
        if key is None:
            log.info(
                "DTLS handshake with an unknown PSK identity",
                extra={"identity": eid[:64], "peer": peer},
            )
            raise KeyError(identity)  # pragma: no mutate - as above
        return key, eid

    # aiocoap's tinydtls_server asks this (identity as bytes) during the handshake; the second value becomes the
    # remote's ``authenticated_claims``.
    def find_dtls_psk(self, identity: bytes) -> tuple[bytes, str]:
        return self.lookup(identity)
