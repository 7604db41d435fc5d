"""Compile the schemas in ``schemas/`` once and cache the result.

asn1tools needs ~0.35 s to parse and compile our four modules. The compiled specification is pickled into a cache
directory, keyed by a SHA-256 over the schema files, the asn1tools version, the Python version and this file's
patch level, so a warm start costs a few milliseconds. Cache location, first match wins:

* ``$SGP32_STACK_CACHE_DIR``
* ``$XDG_CACHE_HOME/sgp32-stack``
* ``~/.cache/sgp32-stack``

If the directory cannot be written the specification is simply compiled in memory (nothing fails). The pickle is
only ever read from the user's own cache directory, and a file that does not load is ignored and rewritten.

After compiling we swap the class of every CHOICE node for :class:`PreservingChoice`: an alternative with a tag
that this schema does not know (a newer spec version) decodes to ``(None, <the alternative's TLV bytes>)`` instead of
asn1tools' ``(None, None)``, and encoding such a value writes the bytes back, so unknown alternatives survive a
decode/encode round trip.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import sys
import tempfile
from functools import lru_cache
from pathlib import Path

import asn1tools
from asn1tools.codecs import ber as _ber
from asn1tools.codecs import der as _der
from asn1tools.codecs import type_checker as _type_checker

log = logging.getLogger("rsp.asn1")

SCHEMA_DIR = Path(__file__).with_name("schemas")
# Bump when the post-compile patching below changes (invalidates old caches).
_PATCH_LEVEL = "6+oid+bitstring"
CODEC = "der"


class PreservingChoice(_ber.Choice):
    """A CHOICE that keeps alternatives it does not know as raw TLV bytes: ``(None, b'...')``."""

    def decode(self, data, offset, values=None):
        start = offset
        tag = bytes(_ber.read_tag(data, offset))
        if tag not in self.tag_to_member and self.has_extension_marker:
            end = _ber.skip_tag_length_contents(data, offset)
            if end > len(data):
                raise _ber.OutOfByteDataError("Ran out of data in an unknown CHOICE alternative", offset=start)
            return (None, bytes(data[start:end])), end
        return super().decode(data, offset, values)

    def encode(self, data, encoded, values=None):
        if isinstance(data, tuple) and len(data) == 2 and data[0] is None:
            raw = data[1]
            if not isinstance(raw, bytes | bytearray):
                raise asn1tools.EncodeError(
                    f"{self.name}: unknown alternative needs its raw TLV bytes, got {type(raw).__name__}"
                )
            encoded.extend(raw)
            return
        super().encode(data, encoded, values)


class _SafeArrayMixin:
    """SEQUENCE OF / SET OF decoding that cannot loop forever.

    asn1tools 0.169 appends its internal TAG_MISMATCH marker without advancing when an element has the wrong tag,
    so a corrupted SEQUENCE OF spins forever eating memory. We stop with a DecodeError instead.
    """

    def decode_content(self, data, offset, length):
        decoded = []
        start = offset
        while offset - start < length:
            element, new_offset = self.element_type.decode(data, offset)
            if element is _ber.TAG_MISMATCH or new_offset <= offset:
                tag = bytes(data[offset : offset + 3]).hex().upper()
                raise _ber.DecodeError(f"unexpected element starting {tag} in SEQUENCE OF", offset=offset)
            decoded.append(element)
            offset = new_offset
        if offset - start != length:
            raise _ber.DecodeError("SEQUENCE OF element runs past the end of its container", offset=offset)
        return decoded, offset


class CheckedBitString(_der.BitString):
    """X.690 §8.6.2: the initial octet (unused bits) is 0..7, and 0 when there are no subsequent octets.
    asn1tools takes any value and decodes ``03 01 01`` to a negative bit count that cannot be encoded again
    (found by the round-trip property in tests/rsp/test_asn1_properties.py). Unused bits set to 1 are cleared."""

    def decode_content(self, data, offset, length):
        if length < 1:
            raise _ber.DecodeError("BIT STRING without its unused-bits octet", offset=offset)
        unused = data[offset]
        if unused > 7 or (length == 1 and unused):
            raise _ber.DecodeError(f"BIT STRING with {unused} unused bits in {length - 1} octets", offset=offset)
        (value, bits), end = super().decode_content(data, offset, length)
        if unused and value[-1] & ((1 << unused) - 1):
            # DER wants the unused bits zero (§11.2.1); a BER sender may set them. They carry nothing: drop them,
            # so the value is what the bits say (and encodes back the same).
            value = value[:-1] + bytes([value[-1] & (0xFF << unused) & 0xFF])
        return (value, bits), end


class CorrectObjectIdentifier(_ber.ObjectIdentifier):
    """X.690 §8.19.4: the first subidentifier is 40*X + Y with X in 0..2, so a value of 80 or more is X = 2,
    Y = value - 80 (2.999.32.10 starts 88 37). asn1tools divides by 40 and decodes it as 26.39.32.10."""

    def decode_content(self, data, offset, length):
        end = offset + length
        arcs: list[int] = []
        value = 0
        started = False
        for pos in range(offset, end):
            byte = data[pos]
            if not started and byte == 0x80:
                raise _ber.DecodeError("OBJECT IDENTIFIER subidentifier with a leading 0x80 byte")
            started = True
            value = (value << 7) | (byte & 0x7F)
            if not byte & 0x80:
                arcs.append(value)
                value = 0
                started = False
        if started or not arcs:
            raise _ber.DecodeError("OBJECT IDENTIFIER truncated or empty")
        first = arcs[0]
        head = [first // 40, first % 40] if first < 80 else [2, first - 80]
        return ".".join(str(v) for v in head + arcs[1:]), end


class SafeSequenceOf(_SafeArrayMixin, _der.SequenceOf):
    pass


class SafeSetOf(_SafeArrayMixin, _der.SetOf):
    pass


class PreservingChoiceChecker(_type_checker.Choice):
    """Type checker counterpart of :class:`PreservingChoice`: accepts ``(None, raw_bytes)``."""

    def encode(self, data):
        if isinstance(data, tuple) and len(data) == 2 and data[0] is None and isinstance(data[1], bytes | bytearray):
            return
        super().encode(data)


def schema_files() -> list[Path]:
    return sorted(SCHEMA_DIR.glob("*.asn"))


def _cache_key(files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    h.update(asn1tools.__version__.encode())
    h.update(sys.version.encode())
    h.update(_PATCH_LEVEL.encode())
    return h.hexdigest()[:24]


def cache_dir() -> Path:
    env = os.environ.get("SGP32_STACK_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "sgp32-stack"


def _is_node(obj) -> bool:
    module = type(obj).__module__
    return module.startswith("asn1tools.codecs") or module == __name__


def walk_types(root):
    """Yield every asn1tools node (codec, type checker ...) reachable from ``root``, each once."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        yield node
        for value in vars(node).values():
            if isinstance(value, list):
                stack.extend(v for v in value if _is_node(v))
            elif _is_node(value):
                stack.append(value)


def _named_numbers(parsed: dict) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for module in parsed.values():
        for name, definition in module.get("types", {}).items():
            if definition.get("named-numbers"):
                out[name] = definition["named-numbers"]
    return out


def _patch(spec, named_numbers: dict[str, dict[str, int]]) -> None:
    for compiled in spec.types.values():
        for node in walk_types(compiled.type):
            if type(node) is _ber.Choice:
                node.__class__ = PreservingChoice
            elif type(node) is _ber.ObjectIdentifier:
                node.__class__ = CorrectObjectIdentifier
            elif type(node) is _der.BitString:
                node.__class__ = CheckedBitString
            elif type(node) is _der.SequenceOf:
                node.__class__ = SafeSequenceOf
            elif type(node) is _der.SetOf:
                node.__class__ = SafeSetOf
            elif isinstance(node, _der.Integer) and isinstance(getattr(node, "default", None), str):
                # asn1tools keeps `DEFAULT operational` as the identifier and hands it out on decode; we want
                # the number (profileClass DEFAULT operational -> 2).
                numbers = named_numbers.get(getattr(node, "type_name", None) or "", {})
                if node.default in numbers:
                    node.default = numbers[node.default]
        for node in walk_types(compiled.type_checker._type):
            if type(node) is _type_checker.Choice:
                node.__class__ = PreservingChoiceChecker


def _compile():
    parsed = asn1tools.parse_files([str(f) for f in schema_files()])
    spec = asn1tools.compile_dict(parsed, CODEC)
    _patch(spec, _named_numbers(parsed))
    return spec


@lru_cache(maxsize=1)
def specification():
    """The compiled specification (cached on disk, compiled at most once per process)."""
    files = schema_files()
    key = _cache_key(files)
    directory = cache_dir()
    path = directory / f"asn1-{key}.pickle"
    try:
        with path.open("rb") as fh:
            spec = pickle.load(fh)
        log.debug("loaded compiled ASN.1 from %s", path)
        return spec
    except FileNotFoundError:
        pass
    except Exception as exc:  # a stale or damaged cache file: recompile and overwrite
        log.warning("ignoring unreadable ASN.1 cache %s: %s", path, exc)
    spec = _compile()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        data = pickle.dumps(spec, protocol=pickle.HIGHEST_PROTOCOL)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".asn1-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        log.debug("cached compiled ASN.1 at %s", path)
    except Exception as exc:  # read-only home, full disk, unpicklable: just keep the in-memory spec
        log.info("not caching compiled ASN.1 (%s)", exc)
    return spec
