"""BPP protection protocol (BSP, formerly SCP03t) - SGP.22 v2.5 §5.5 (ES8+), crypto in §2.6.4.

Key agreement: ECKA-DH on the curve of CERT.DPpb between otSK.DP.ECKA and otPK.EUICC.ECKA (or the reverse on the
eUICC) gives ShS (x coordinate, :func:`rsp.crypto.ecdh`). The X9.63 KDF (SHA-256) with
``sharedInfo = keyType || keyLength || len(hostId) || hostId || len(EID) || EID`` yields 48 bytes:
``initial MAC chaining value (16) || S-ENC (16) || S-MAC (16)`` (:func:`derive_session_keys`).

Segments (max :data:`MAX_SEGMENT_SIZE` = 1020 bytes including tag, length and MAC):

* ``87`` (ConfigureISDP BF24, ReplaceSessionKeys BF26) and ``86`` (profile elements): encrypt with
  AES-128-CBC under S-ENC, ICV = AES(S-ENC, block counter as 16-byte big-endian), padding ``80 00..`` to a
  multiple of 16 (always at least one byte), then MAC;
* ``88`` (StoreMetadata BF25): MAC only (the block counter is incremented all the same);
* MAC = first 8 bytes of AES-CMAC(S-MAC, MCV || tag || length || data), where length is the BER length of
  ``len(data) + 8``; the full 16-byte CMAC becomes the next MCV. Output: ``tag || length || data || MAC``.

The block counter starts at 1 and counts every segment, in both directions' views (SM-DP+ protects, eUICC
unprotects). ReplaceSessionKeys (``BF26 {80 initialMacChainingValue, 81 ppkEnc, 82 ppkCmac}``) switches both
sides to the new keys and MCV for the following segments (the ``86`` ones), with the block counter restarting
at 1 (as a fresh BSP instance, the behaviour of the osmocom pySim implementation; SGP.22 §2.6.4.? wording not
re-checked here).
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC
from cryptography.hazmat.primitives.constant_time import bytes_eq
from cryptography.hazmat.primitives.kdf.x963kdf import X963KDF

from rsp import tlv
from rsp.errors import DecodeError, RspError

__all__ = [
    "ENCRYPTED_TAGS",
    "MAC_ONLY_TAGS",
    "MAX_SEGMENT_SIZE",
    "BspError",
    "BspProtector",
    "BspUnprotector",
    "SessionKeys",
    "control_ref_template",
    "decode_replace_session_keys",
    "derive_session_keys",
    "encode_replace_session_keys",
    "initialise_secure_channel",
    "initialise_secure_channel_signed_part",
    "max_plaintext",
    "smdp_sign_input",
    "x963_kdf",
]

MAX_SEGMENT_SIZE = 1020
MAC_LEN = 8
BLOCK = 16
ENCRYPTED_TAGS = frozenset({0x86, 0x87})
MAC_ONLY_TAGS = frozenset({0x88})
KEY_TYPE_AES = 0x88
KEY_LENGTH_AES128 = 0x10


class BspError(RspError):
    """A BSP segment was refused. ``kind`` is ``"mac"`` (MAC does not verify), ``"padding"`` (decrypted data
    not padded ``80 00..``), ``"structure"`` (not a well-formed segment: tag, length, size) or ``"usage"``
    (wrong call, e.g. unknown tag for protection)."""

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        self.reason = message
        super().__init__(f"BSP {kind} error: {message}")


@dataclass(frozen=True)
class SessionKeys:
    """The BSP key set: initial MAC chaining value, S-ENC, S-MAC (each 16 bytes for AES-128)."""

    initial_mcv: bytes
    s_enc: bytes
    s_mac: bytes

    def __post_init__(self) -> None:
        for name in ("initial_mcv", "s_enc", "s_mac"):
            value = getattr(self, name)
            if not isinstance(value, bytes) or len(value) != 16:
                raise BspError("usage", f"{name} must be 16 bytes")

    def __repr__(self) -> str:  # never print key material
        return "SessionKeys(<redacted>)"


def x963_kdf(shared_secret: bytes, shared_info: bytes, length: int) -> bytes:
    """ANSI X9.63 KDF with SHA-256."""
    return X963KDF(algorithm=hashes.SHA256(), length=length, sharedinfo=shared_info).derive(bytes(shared_secret))


def derive_session_keys(
    shared_secret: bytes,
    host_id: bytes,
    eid: bytes,
    *,
    key_type: int = KEY_TYPE_AES,
    key_length: int = KEY_LENGTH_AES128,
) -> SessionKeys:
    """SGP.22 §2.6.4.2 key derivation: ShS + (keyType, keyLength, hostId, EID) -> :class:`SessionKeys`.

    ``host_id`` is the hostId of the InitialiseSecureChannel control reference template, ``eid`` the 16-byte
    EID. Lengths are BER-encoded as in the CRT.
    """
    if not (0 <= key_type <= 255 and 0 <= key_length <= 255):
        raise BspError("usage", "keyType and keyLength are single bytes")
    if key_length != 16:
        raise BspError("usage", f"only AES-128 (key length 16) is supported, got {key_length}")
    host_id = bytes(host_id)
    eid = bytes(eid)
    shared_info = (
        bytes([key_type, key_length]) + tlv.encode_length(len(host_id)) + host_id + tlv.encode_length(len(eid)) + eid
    )
    out = x963_kdf(shared_secret, shared_info, 3 * key_length)
    return SessionKeys(initial_mcv=out[0:16], s_enc=out[16:32], s_mac=out[32:48])


def max_plaintext(tag: int) -> int:
    """The largest plaintext that fits one segment of ``tag`` within :data:`MAX_SEGMENT_SIZE`."""
    if tag in ENCRYPTED_TAGS:
        # tag(1) + length(3: 82 xx xx) + ciphertext + MAC(8) <= 1020 -> ciphertext <= 1008 = 63 blocks,
        # padding is at least one byte
        return (MAX_SEGMENT_SIZE - 1 - 3 - MAC_LEN) // BLOCK * BLOCK - 1
    if tag in MAC_ONLY_TAGS:
        return MAX_SEGMENT_SIZE - 1 - 3 - MAC_LEN
    raise BspError("usage", f"tag {tag:02X} is not a BSP segment tag (86, 87 or 88)")


class _State:
    """Keys, MAC chaining value and block counter shared by both directions' engines."""

    def __init__(self, keys: SessionKeys) -> None:
        self._set(keys)

    def _set(self, keys: SessionKeys) -> None:
        if not isinstance(keys, SessionKeys):
            raise BspError("usage", "keys must be a SessionKeys")
        self._keys = keys
        self.mcv = keys.initial_mcv
        self.block_counter = 1

    def replace_session_keys(self, keys: SessionKeys) -> None:
        """ReplaceSessionKeys: the following segments use the new keys and MCV; block counter back to 1."""
        self._set(keys)

    def _icv(self, counter: int) -> bytes:
        enc = Cipher(algorithms.AES(self._keys.s_enc), modes.ECB()).encryptor()
        return enc.update(counter.to_bytes(BLOCK, "big")) + enc.finalize()

    def _cmac(self, mcv: bytes, tag: int, length_field: bytes, data: bytes) -> bytes:
        c = CMAC(algorithms.AES(self._keys.s_mac))
        c.update(mcv + bytes([tag]) + length_field + data)
        return c.finalize()

    def _encrypt(self, counter: int, padded: bytes) -> bytes:
        enc = Cipher(algorithms.AES(self._keys.s_enc), modes.CBC(self._icv(counter))).encryptor()
        return enc.update(padded) + enc.finalize()

    def _decrypt(self, counter: int, ciphertext: bytes) -> bytes:
        dec = Cipher(algorithms.AES(self._keys.s_enc), modes.CBC(self._icv(counter))).decryptor()
        return dec.update(ciphertext) + dec.finalize()


class BspProtector(_State):
    """SM-DP+ side: protects plaintext into BSP segments.

    >>> p = BspProtector(keys)
    >>> p.protect(0x87, configure_isdp_bytes)   # -> [b'\\x87...']
    """

    def protect(self, tag: int, plaintext: bytes) -> list[bytes]:
        """Protect ``plaintext`` as one or more segments of ``tag`` (0x86/0x87 encrypt+MAC, 0x88 MAC-only),
        each at most 1020 bytes. Empty plaintext gives one segment (padding only / empty data)."""
        plaintext = bytes(plaintext)
        size = max_plaintext(tag)
        chunks = [plaintext[i : i + size] for i in range(0, len(plaintext), size)] or [b""]
        return [self.protect_segment(tag, chunk) for chunk in chunks]

    def protect_segment(self, tag: int, chunk: bytes) -> bytes:
        """Protect one chunk that fits a single segment."""
        chunk = bytes(chunk)
        if len(chunk) > max_plaintext(tag):
            raise BspError("usage", f"{len(chunk)} bytes do not fit one {tag:02X} segment")
        counter = self.block_counter
        if tag in ENCRYPTED_TAGS:
            padded = chunk + b"\x80" + b"\x00" * ((-len(chunk) - 1) % BLOCK)
            data = self._encrypt(counter, padded)
        else:
            data = chunk
        length_field = tlv.encode_length(len(data) + MAC_LEN)
        full_mac = self._cmac(self.mcv, tag, length_field, data)
        self.mcv = full_mac
        self.block_counter = counter + 1
        segment = bytes([tag]) + length_field + data + full_mac[:MAC_LEN]
        assert len(segment) <= MAX_SEGMENT_SIZE
        return segment


class BspUnprotector(_State):
    """eUICC side: verifies (MAC first) and decrypts BSP segments in the order received.

    A refused segment raises :class:`BspError` and leaves the state (MCV, block counter) unchanged."""

    def unprotect(self, segment: bytes, *, expected_tag: int | None = None) -> bytes:
        """Verify one segment (``86``/``87``: then decrypt and unpad; ``88``: MAC only) and return the
        plaintext."""
        return self.unprotect_tlv(segment, expected_tag=expected_tag)[1]

    def unprotect_tlv(self, segment: bytes, *, expected_tag: int | None = None) -> tuple[int, bytes]:
        """Like :meth:`unprotect` but returns ``(tag, plaintext)``."""
        segment = bytes(segment)
        if len(segment) > MAX_SEGMENT_SIZE:
            raise BspError("structure", f"segment of {len(segment)} bytes exceeds {MAX_SEGMENT_SIZE}")
        try:
            t = tlv.parse_exact(segment, what="BSP segment")
        except DecodeError as exc:
            where = "" if exc.position is None else f" at byte {exc.position}"
            raise BspError("structure", f"{exc.reason}{where}") from None
        tag = t.tag
        if tag not in ENCRYPTED_TAGS and tag not in MAC_ONLY_TAGS:
            raise BspError("structure", f"tag {tag:X} is not a BSP segment tag (86, 87 or 88)")
        if expected_tag is not None and tag != expected_tag:
            raise BspError("structure", f"expected a {expected_tag:02X} segment, got {tag:02X}")
        if t.length < MAC_LEN:
            raise BspError("structure", f"{tag:02X} segment of {t.length} bytes is shorter than its MAC")
        length_field = segment[1 : t.header_len]
        if length_field != tlv.encode_length(t.length):
            raise BspError("structure", "length not in minimal (DER) form")
        data, mac = t.value[:-MAC_LEN], t.value[-MAC_LEN:]
        if tag in ENCRYPTED_TAGS and (len(data) == 0 or len(data) % BLOCK):
            raise BspError("structure", f"ciphertext of {len(data)} bytes is not a positive multiple of 16")
        full_mac = self._cmac(self.mcv, tag, length_field, data)
        if not bytes_eq(full_mac[:MAC_LEN], mac):
            raise BspError("mac", f"MAC of {tag:02X} segment (block {self.block_counter}) does not verify")
        counter = self.block_counter
        if tag in ENCRYPTED_TAGS:
            padded = self._decrypt(counter, data)
            stripped = padded.rstrip(b"\x00")
            if not stripped or stripped[-1] != 0x80 or len(padded) - len(stripped) > BLOCK - 1:
                raise BspError("padding", f"decrypted {tag:02X} segment is not padded 80 00..")
            plaintext = stripped[:-1]
        else:
            plaintext = data
        self.mcv = full_mac
        self.block_counter = counter + 1
        return tag, plaintext

    def unprotect_all(self, segments: list[bytes], *, expected_tag: int | None = None) -> bytes:
        """Unprotect a run of segments and join their plaintexts."""
        return b"".join(self.unprotect(s, expected_tag=expected_tag) for s in segments)


# ---------------------------------------------------------------------------------------------------------------
# ReplaceSessionKeys (BF26) and InitialiseSecureChannel (BF23) helpers


def encode_replace_session_keys(keys: SessionKeys) -> bytes:
    """``ReplaceSessionKeysRequest ::= [38] SEQUENCE { initialMacChainingValue, ppkEnc, ppkCmac }``
    (automatic tags 80/81/82) as the ``BF26`` TLV that goes, protected as ``87``, in secondSequenceOf87."""
    return tlv.encode(
        0xBF26, tlv.encode(0x80, keys.initial_mcv) + tlv.encode(0x81, keys.s_enc) + tlv.encode(0x82, keys.s_mac)
    )


def decode_replace_session_keys(data: bytes) -> SessionKeys:
    """Parse a ``BF26`` ReplaceSessionKeysRequest into :class:`SessionKeys`; raises :class:`BspError`."""
    try:
        t = tlv.parse_exact(bytes(data), what="ReplaceSessionKeysRequest")
        if t.tag != 0xBF26:
            raise BspError("structure", f"expected BF26 ReplaceSessionKeysRequest, got tag {t.tag:X}")
        fields = {c.tag: c.value for c in tlv.children(t, what="ReplaceSessionKeysRequest")}
    except DecodeError as exc:
        raise BspError("structure", str(exc)) from None
    missing = [
        name
        for tag, name in ((0x80, "initialMacChainingValue"), (0x81, "ppkEnc"), (0x82, "ppkCmac"))
        if tag not in fields
    ]
    if missing:
        raise BspError("structure", "ReplaceSessionKeysRequest lacks " + ", ".join(missing))
    return SessionKeys(initial_mcv=fields[0x80], s_enc=fields[0x81], s_mac=fields[0x82])


def control_ref_template(host_id: bytes, *, key_type: int = KEY_TYPE_AES, key_length: int = KEY_LENGTH_AES128) -> bytes:
    """``controlRefTemplate [6] { keyType [0] 88, keyLen [1] 10, hostId [4] }`` = ``A6 {80 01 88 81 01 10 84 ..}``."""
    return tlv.encode(
        0xA6,
        tlv.encode(0x80, bytes([key_type])) + tlv.encode(0x81, bytes([key_length])) + tlv.encode(0x84, bytes(host_id)),
    )


def initialise_secure_channel_signed_part(
    transaction_id: bytes, host_id: bytes, smdp_otpk: bytes, *, remote_op_id: int = 1
) -> bytes:
    """The InitialiseSecureChannelRequest content before smdpSign:
    ``82 01 <remoteOpId> || 80 transactionId || A6 CRT || 5F49 smdpOtpk``."""
    return (
        tlv.encode(0x82, bytes([remote_op_id]))
        + tlv.encode(0x80, bytes(transaction_id))
        + control_ref_template(host_id)
        + tlv.encode(0x5F49, bytes(smdp_otpk))
    )


def smdp_sign_input(signed_part: bytes, euicc_otpk: bytes) -> bytes:
    """What smdpSign covers (SGP.22 §5.5.1): the ISC content before the signature || ``5F49 euiccOtpk``."""
    return bytes(signed_part) + tlv.encode(0x5F49, bytes(euicc_otpk))


def initialise_secure_channel(signed_part: bytes, smdp_sign: bytes) -> bytes:
    """The ``BF23`` InitialiseSecureChannelRequest TLV: signed part || ``5F37 smdpSign``."""
    return tlv.encode(0xBF23, bytes(signed_part) + tlv.encode(0x5F37, bytes(smdp_sign)))
