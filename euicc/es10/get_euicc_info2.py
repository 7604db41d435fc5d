"""ES10b.GetEuiccInfo2 - SGP.22 v2.5 §5.7.8 with the SGP.32 v1.2 additions (SGP32-EUICCInfo2: ``90 ipaMode``,
``B4 iotSpecificInfo``).

``BF22`` -> ``BF22 {81 profileVersion, 82 svn, 83 firmware, 84 extCardResource, 85 uiccCapability,
87 globalplatformVersion, 88 rspCapability, A9/AA CI key ids, 04 ppVersion, 0C sasAccreditationNumber,
90 ipaMode = ipad(0), B4 {A0 {04 SGP.32 version}, 81 ecallSupported, 82 fallbackSupported}}``.
"""

from __future__ import annotations

from euicc import der, isdr
from euicc.context import Context
from rsp import tlv

TAG = 0xBF22

PROFILE_VERSION = bytes([2, 3, 1])  # TCA eUICC Profile Package version
FIRMWARE_VERSION = bytes([1, 0, 0])
GP_VERSION = bytes([2, 3, 0])
PP_VERSION = bytes([1, 0, 0])
SGP32_VERSION = bytes([1, 2, 0])
SAS_ACCREDITATION = "LAB-SOFT-EUICC"
NVM_SIZE = 1024 * 1024  # advertised non-volatile memory for profiles
# UICCCapability: usimSupport(1), isimSupport(2), akaMilenage(4), akaTuak128(6), akaTuak256(7)
UICC_CAPABILITY_BITS = {1, 2, 4, 6, 7}
# RspCapability: additionalProfile(0), testProfileSupport(3), deviceInfoExtensibilitySupport(4)
RSP_CAPABILITY_BITS = {0, 3, 4}


def ext_card_resource(ctx: Context) -> bytes:
    """ETSI TS 102 226 §8.2.1.7.2 ``81 installed applications, 82 free NVM, 83 free RAM``."""
    used = sum(len(p.elements) + len(p.metadata) for p in ctx.state.profiles)
    free = max(0, NVM_SIZE - used)
    return (
        tlv.encode(0x81, bytes([min(len(ctx.state.profiles), 255)]))
        + tlv.encode(0x82, free.to_bytes(4, "big"))
        + tlv.encode(0x83, (32 * 1024).to_bytes(2, "big"))
    )


def euicc_info2(ctx: Context) -> bytes:
    ver = b"".join(tlv.encode(0x04, k) for k in ctx.identity.ci_pkids_for_verification())
    sig = b"".join(tlv.encode(0x04, k) for k in ctx.identity.ci_pkids_for_signing())
    iot = tlv.encode(0xB4, tlv.encode(0xA0, tlv.encode(0x04, SGP32_VERSION)) + der.null(0x81) + der.null(0x82))
    body = (
        tlv.encode(0x81, PROFILE_VERSION)
        + tlv.encode(0x82, isdr.SVN)
        + tlv.encode(0x83, FIRMWARE_VERSION)
        + tlv.encode(0x84, ext_card_resource(ctx))
        + der.bit_string(0x85, UICC_CAPABILITY_BITS)
        + tlv.encode(0x87, GP_VERSION)
        + der.bit_string(0x88, RSP_CAPABILITY_BITS)
        + tlv.encode(0xA9, ver)
        + tlv.encode(0xAA, sig)
        + tlv.encode(0x04, PP_VERSION)
        + der.utf8(0x0C, SAS_ACCREDITATION)
        + der.integer(0x90, 0)
        + iot
    )
    return tlv.encode(TAG, body)


def handle(ctx: Context, request: tlv.Tlv) -> bytes:
    return euicc_info2(ctx)
