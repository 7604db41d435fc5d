"""A profile package in the shape of the published GSMA TS.48 generic eUICC test profile, written as a profile
creator writes it (not by this project's generator): its ProfileHeader as published (SAIP 2.3: major-version 2,
minor-version 3, profileType "GSMA Generic eUICC Test Profile", mandatory services usim isim csim
usim-test-algorithm ber-tlv get-identity profile-a-x25519 profile-b-p256, GFSTE templates
2.23.143.1.2.{1,3,4,5,7,8,9,10,11,13,14}) with the ICCID in plain digit order, then the 29 PEs of TS.48 in their
published order with their SAIP tags and PEHeaders, each file content standing in as one fillFileContent."""

from __future__ import annotations

from rsp import tlv

T = tlv.encode
GFSTE = b"".join(T(0x06, bytes.fromhex("67810F0102") + bytes([n])) for n in (1, 3, 4, 5, 7, 8, 9, 10, 11, 13, 14))
SERVICES = bytes.fromhex("8100820083009100920095009600" + "9700")
# after the header: mf, pukCodes, pinCodes, telecom, pinCodes, genericFileManagement, usim, opt-usim, pinCodes,
# akaParameter, gsm-access, df-5gs, df-saip, csim, opt-csim, pinCodes, cdmaParameter, isim, opt-isim, pinCodes,
# akaParameter, genericFileManagement x2, securityDomain, rfm x4 (then end)
TS48_ORDER = [0xB0, 0xA3, 0xA2, 0xB2, 0xA2, 0xA1, 0xB3, 0xB4, 0xA2, 0xA4, 0xB8, 0xBC, 0xBD, 0xB9, 0xBA, 0xA2]
TS48_ORDER += [0xA5, 0xB5, 0xB6, 0xA2, 0xA4, 0xA1, 0xA1, 0xA6, 0xA7, 0xA7, 0xA7, 0xA7]


def plain(iccid: str) -> bytes:
    """The header form of SAIP: plain E.118 digit order, F-padded."""
    return bytes.fromhex(iccid.ljust(20, "F"))


def header(iccid_field: bytes, *, major: int = 2, services: bytes = SERVICES) -> bytes:
    return T(
        0xA0,
        T(0x80, bytes([major]))
        + T(0x81, b"\x03")
        + T(0x82, b"GSMA Generic eUICC Test Profile")
        + T(0x83, iccid_field)
        + T(0xA5, services)
        + T(0xA6, GFSTE),
    )


def pe(tag: int, ident: int, body: bytes = b"", *, mandated: bool = True) -> bytes:
    head = T(0xA0, (T(0x80, b"") if mandated else b"") + T(0x81, bytes([ident])))
    return T(tag, head + body)


def ts48_body(file_size: int = 450) -> list[bytes]:
    """The PEs after the header, End last (identifications 2..31 as in the published profile)."""
    out = [pe(tag, i + 2, T(0x83, bytes([i]) * file_size)) for i, tag in enumerate(TS48_ORDER)]
    return [*out, pe(0xAA, 31)]


def ts48_upp(iccid: str, file_size: int = 450) -> bytes:
    """About 13 KB with the default file size."""
    return header(plain(iccid)) + b"".join(ts48_body(file_size))
