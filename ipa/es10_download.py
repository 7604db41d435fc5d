"""The ES10b functions of a profile download (SGP.22 v2.5 §5.7.3 AuthenticateServer, §5.7.5 PrepareDownload,
§5.7.6 LoadBoundProfilePackage), as the IPA reads them: the card's signed answers kept verbatim (``raw``) with the
few fields the IPA needs, the ProfileInstallationResult, and the split of a BoundProfilePackage into its STORE DATA
segments (protocol brief §7.5). The ES10 client (:mod:`ipa.es10`) imports this module only for a download.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Self

from ipa import der
from ipa.es10 import Es10Error
from rsp import tlv
from rsp.errors import DecodeError


def bpp_segments(bpp: bytes) -> list[bytes]:
    """Split a BoundProfilePackage (BF36) into the ES10b.LoadBoundProfilePackage commands (protocol brief §7.5)."""
    what = "BoundProfilePackage"
    outer = der.expect(bpp, 0xBF36, what)
    kids = tlv.children(outer, what=what)
    if not kids or kids[0].tag != 0xBF23:
        raise DecodeError(what, "initialiseSecureChannelRequest (BF23) must come first")
    segs = [outer.raw[: outer.header_len] + kids[0].raw]
    for k in kids[1:]:
        if k.tag in (0xA0, 0xA2):
            segs.append(k.raw)
        elif k.tag in (0xA1, 0xA3):
            segs.append(k.raw[: k.header_len])
            segs.extend(c.raw for c in tlv.children(k, what=what))
        else:
            raise DecodeError(what, f"unexpected part {k.tag:X}")
    return segs


@dataclass(frozen=True)
class _SignedOrErrorResult:
    """An ES10b answer ``{ A0 { 30 signed {80 transactionId ...}, 5F37 sig } | A1 { [80 transactionId], 02 code } }``:
    ``raw`` goes verbatim to the server; ``error`` is the card's code when it failed."""

    raw: bytes
    transaction_id: bytes | None
    error: int | None = None

    STEP: ClassVar[str] = ""
    ERROR_TYPE: ClassVar[str] = ""

    @property
    def ok(self) -> bool:
        return self.error is None

    @classmethod
    def parse(cls, data: bytes) -> Self:
        alt = tlv.children(data)
        if not alt:
            raise Es10Error(cls.STEP, "empty answer")
        a = alt[0]
        if a.tag == 0xA1:
            f = der.child_map(a, cls.ERROR_TYPE)
            return cls(data, f[0x80].value if 0x80 in f else None, der.dec_int(f[0x02].value) if 0x02 in f else 127)
        signed = tlv.find(a, 0x30)
        txid = tlv.find(signed, 0x80) if signed is not None else None
        return cls(data, txid.value if txid else None)


@dataclass(frozen=True)
class AuthenticateServerResult(_SignedOrErrorResult):
    """BF38 answer (AuthenticateServerResponse)."""

    STEP: ClassVar[str] = "AuthenticateServer"
    ERROR_TYPE: ClassVar[str] = "AuthenticateResponseError"


@dataclass(frozen=True)
class PrepareDownloadResult(_SignedOrErrorResult):
    """BF21 answer (PrepareDownloadResponse)."""

    STEP: ClassVar[str] = "PrepareDownload"
    ERROR_TYPE: ClassVar[str] = "PrepareDownloadResponseError"


@dataclass(frozen=True)
class ProfileInstallationResult:
    """What the IPA reads from a PIR (BF37), raw kept for forwarding."""

    raw: bytes
    transaction_id: bytes | None
    seq_number: int | None
    iccid: str | None
    success: bool
    aid: str | None = None
    bpp_command_id: int | None = None
    error_reason: int | None = None

    @classmethod
    def parse(cls, data: bytes) -> ProfileInstallationResult:
        from ipa import messages as m

        what = "ProfileInstallationResult"
        data_t = tlv.require(data, 0xBF27, what=what)
        f = der.child_map(data_t, what)
        seq = iccid = None
        if 0xBF2F in f:
            seq, _events, _addr, iccid = m.parse_notification_metadata(f[0xBF2F])
        final = f.get(0xA2)
        if final is None:
            raise DecodeError(what, "finalResult (A2) missing")
        alt = tlv.children(final, what=what)[0]
        txid = f[0x80].value if 0x80 in f else None
        r = der.child_map(alt, what)
        if alt.tag == 0xA0:  # successResult
            return cls(data, txid, seq, iccid, True, r[0x4F].value.hex().upper() if 0x4F in r else None)
        return cls(  # errorResult
            data,
            txid,
            seq,
            iccid,
            False,
            bpp_command_id=der.dec_int(r[0x80].value) if 0x80 in r else None,
            error_reason=der.dec_int(r[0x81].value) if 0x81 in r else None,
        )

    def describe(self) -> str:
        from ipa import codes

        if self.success:
            return "success"
        return (
            f"{codes.code_name(codes.BppCommandId, self.bpp_command_id or 0)} failed: "
            f"{codes.code_name(codes.BppErrorReason, self.error_reason or 127)}"
        )
