"""Per-device secrets for ESipa over HTTP(S): the device-secret method of :mod:`eim.esipa.device_auth`.

An alternative to TLS client certificates for devices that cannot keep a certificate: the IPA sends, on every
ESipa request, ``Authorization: Bearer <token>`` where the token is ``<EID>.<secret>`` (the EID, a dot, 43
characters of base64url: 32 random bytes). ``eim device-secret set EID`` makes the secret and prints the whole
token once; the eIM keeps only a salted SHA-256 of it, one line per device, in ``[devices] secret_file``::

    # EID:sha256:<16-byte salt, hex>:<SHA-256(salt || secret), hex>
    89049032123451234512345678901235:sha256:00112233445566778899aabbccddeeff:9f86d0...

* A secret is 256 random bits, so a fast hash is enough (no password stretching, which would cost every
  request): guessing it is hopeless and the file does not reveal it. The secret is never logged.
* :meth:`DeviceSecretFile.verify` compares with :func:`hmac.compare_digest`; an unknown EID is compared against a
  dummy entry, so the answer takes the same work whether the EID is listed or not.
* The token names its EID, so a device that sends another device's token authenticates as *that* device, and
  the dispatcher refuses its messages about itself (``invalidEid``).
* The file is re-read when it changes (:meth:`DeviceSecretFile.watch`, every second, off the event loop);
  editing (``eim device-secret set|remove|list``) reuses the atomic, locked writer of :mod:`eim.bindings.coap_psk`.
* Over plain HTTP the token crosses the network in clear: use it over HTTPS (``[http] tls_cert``), or on a
  network that is already private.

Parsing is pure (``parse_secret_file``, ``parse_token``); only :class:`DeviceSecretFile` touches the disk.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from eim.secret_file_watch import SecretFileWatch

log = logging.getLogger("eim.esipa.device_secret")

SECRET_BYTES = 32
SALT_BYTES = 16
_EID = re.compile(r"[0-9]{32}")
_SECRET = re.compile(r"[A-Za-z0-9_-]{43}")  # base64url of 32 bytes, no padding
_HEX32 = re.compile(r"[0-9a-f]{32}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_DUMMY = (b"\x00" * SALT_BYTES, b"\x00" * 32)


class DeviceSecretError(ValueError):
    """The secret file, a line of it or a token cannot be used; names the file and line, never a secret."""


@dataclass(frozen=True)
class SecretEntry:
    salt: bytes
    digest: bytes

    def __repr__(self) -> str:
        return "SecretEntry(<hidden>)"


def check_eid(eid: str) -> str:
    if not _EID.fullmatch(eid):
        raise DeviceSecretError(f"EID must be 32 decimal digits, got {eid[:40]!r}")
    return eid


def _digest(salt: bytes, secret: str) -> bytes:
    return hashlib.sha256(salt + secret.encode("ascii")).digest()


def parse_token(token: str) -> tuple[str, str]:
    """``<EID>.<secret>`` to ``(EID, secret)``; raises :class:`DeviceSecretError` (without the secret)."""
    # pragma below: rpartition is equivalent (a second dot fails the EID check or the secret check either way)
    eid, dot, secret = token.strip().partition(".")  # pragma: no mutate
    if not dot or not _EID.fullmatch(eid):
        raise DeviceSecretError("device token must be <EID>.<secret> (32 digits, a dot, the secret)")
    if not _SECRET.fullmatch(secret):
        raise DeviceSecretError("device secret must be 43 base64url characters (32 bytes)")
    return eid, secret


def new_token(eid: str) -> tuple[str, SecretEntry]:
    """A fresh token for ``eid`` and the entry the eIM keeps for it."""
    check_eid(eid)
    secret = base64.urlsafe_b64encode(secrets.token_bytes(SECRET_BYTES)).rstrip(b"=").decode("ascii")
    salt = secrets.token_bytes(SALT_BYTES)
    return f"{eid}.{secret}", SecretEntry(salt, _digest(salt, secret))


def format_secret_line(eid: str, entry: SecretEntry) -> str:
    check_eid(eid)
    return f"{eid}:sha256:{entry.salt.hex()}:{entry.digest.hex()}\n"


def _entry(raw: str, number: int, source: str) -> tuple[str, SecretEntry] | None:
    line = raw.split("#", 1)[0].strip()
    if not line:
        return None
    where = f"{source} line {number}"
    parts = line.split(":")
    if len(parts) != 4:
        raise DeviceSecretError(f"{where}: expected EID:sha256:salt:digest")
    eid, algo, salt, digest = (p.strip() for p in parts)
    if not _EID.fullmatch(eid):
        raise DeviceSecretError(f"{where}: the first field must be the EID (32 decimal digits)")
    if algo != "sha256":
        raise DeviceSecretError(f"{where}: unknown hash {algo[:20]!r} (only sha256)")
    if not _HEX32.fullmatch(salt) or not _HEX64.fullmatch(digest):
        raise DeviceSecretError(f"{where}: salt must be 32 and digest 64 lower-case hex digits")
    return eid, SecretEntry(bytes.fromhex(salt), bytes.fromhex(digest))


def parse_secret_file(text: str, source: str = "device secret file") -> dict[str, SecretEntry]:
    """The file's lines to ``{EID: entry}``; ``#`` starts a comment, blank lines are skipped."""
    out: dict[str, SecretEntry] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        entry = _entry(raw, number, source)
        if entry is None:
            continue
        if entry[0] in out:
            raise DeviceSecretError(f"{source} line {number}: EID {entry[0]} is listed twice")
        out[entry[0]] = entry[1]
    return out


def set_secret(text: str, eid: str, entry: SecretEntry, source: str = "device secret file") -> tuple[str, bool]:
    """``text`` with ``eid``'s line replaced (or appended); True if it replaced one. Other lines stay as they are."""
    parse_secret_file(text, source)
    new_line = format_secret_line(eid, entry).rstrip("\n")
    out, replaced = [], False
    for number, raw in enumerate(text.splitlines(), 1):
        owner = _entry(raw, number, source)
        if owner is not None and owner[0] == eid:
            out.append(new_line)
            replaced = True
        else:
            out.append(raw)
    if not replaced:
        out.append(new_line)
    return "\n".join(out) + "\n", replaced


def remove_secret(text: str, eid: str, source: str = "device secret file") -> tuple[str, bool]:
    check_eid(eid)
    parse_secret_file(text, source)
    lines = text.splitlines()
    kept = [raw for n, raw in enumerate(lines, 1) if (_entry(raw, n, source) or ("",))[0] != eid]
    return ("\n".join(kept) + "\n" if kept else ""), len(kept) != len(lines)


class DeviceSecretFile:
    """The device secrets of ``[devices] secret_file``, reloaded when the file changes."""

    def __init__(self, path: str | os.PathLike[str], *, check_interval: float = 1.0) -> None:
        self.path = Path(path)
        self.check_interval = check_interval
        self._entries: dict[str, SecretEntry] = {}
        self._file = SecretFileWatch(
            self.path,
            parse=parse_secret_file,
            error=DeviceSecretError,
            log=log,
            what="device secret file",
            keeping="entries",
            count_key="devices",
        )
        self.reload(strict=True)

    def __len__(self) -> int:
        return len(self._entries)

    def reload(self, *, strict: bool = False) -> bool:
        """Read the file again if it changed; a bad file keeps the previous entries (``strict``: raises)."""
        entries = self._file.read(len(self._entries), strict=strict)
        if entries is None:
            return False
        self._entries = entries
        return True

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(self.check_interval)
            try:
                await asyncio.to_thread(self.reload)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("device secret file check failed", extra={"path": str(self.path)})

    def verify(self, token: str) -> str | None:
        """The EID ``token`` authenticates, or ``None`` (malformed, unknown EID or wrong secret)."""
        try:
            eid, secret = parse_token(token)
        except DeviceSecretError:
            return None
        entry = self._entries.get(eid)
        salt, digest = (entry.salt, entry.digest) if entry is not None else _DUMMY
        ok = hmac.compare_digest(_digest(salt, secret), digest)
        return eid if ok and entry is not None else None
