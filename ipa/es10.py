"""ES10 client: ES10a/b/c and SGP.32 ES10b functions over any :class:`ApduChannel` (SGP.22 §5.7, SGP.32 §5.9).

``Es10Client.call`` sends one ES10 command (a DER TLV) as a STORE DATA chain and returns the card's DER answer.
The typed functions below build on it: each builds its request, checks the answer's tag, names the card's error
code (``ProfileRollback: rollbackNotAllowed(1)``) and returns a frozen dataclass. Signed answers keep their raw
bytes (``.raw``) so they can be forwarded without re-encoding.

After a REFRESH (profile state change) the modem resets the card and the logical channel is gone; every typed
call first checks ``channel.reset_detected`` and re-opens (MANAGE CHANNEL + SELECT ISD-R) when set.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING

from ipa import der
from rsp import apdu, tlv
from rsp.errors import DecodeError

if TYPE_CHECKING:
    from firmware_bridge.interfaces import ApduChannel
    from ipa import messages as m
    from ipa.es10_download import AuthenticateServerResult, PrepareDownloadResult
    from ipa.es10_results import AddInitialEimResult, Certs, NotificationMetadata, ProfileInfo, RollbackResult

# ipa.messages (the ESipa and eUICC package messages) and ipa.codes (every result code's name) are imported by the
# functions that use them: reading the card's identity and configuration (``ipa chip info``) loads neither.

log = logging.getLogger("ipa.es10")


class Es10Error(Exception):
    """An ES10 command failed; ``step`` names the ES10 function, ``sw`` the status word or ``code`` the card's
    result code (``code_name`` its name)."""

    def __init__(
        self, step: str, message: str, sw: int | None = None, code: int | None = None, code_name: str | None = None
    ) -> None:
        self.step = step
        self.sw = sw
        self.code = code
        self.code_name = code_name
        super().__init__(f"{step}: {message}")


class CardChanged(Exception):
    """The eUICC behind the port is not the one this IPA started with (a SIM or modem swap, or a device path that
    now leads to another modem). Nothing may be sent to it: the IPA stops. Not an :class:`Es10Error` on purpose:
    procedures that handle card errors must not take it for one (the client also keeps it in ``card_changed``)."""

    step = "GetEID"

    def __init__(self, expected: bytes, found: bytes | None) -> None:
        self.expected = expected
        self.found = found
        shown = found.hex().upper() if found else "no EID"
        super().__init__(
            f"GetEID: the eUICC behind the port changed: expected EID {expected.hex().upper()}, found {shown}"
        )


GET_EID = bytes.fromhex("BF3E035C015A")


class Es10Client:
    """``expected_eid``: once set (the agent does after start), every (re)opening of the channel - after a card
    reset, a lost and reopened port, or a close - reads the EID before any other command, and raises
    :class:`CardChanged` when it is another card's."""

    def __init__(self, channel: ApduChannel, block_size: int = apdu.DEFAULT_BLOCK_SIZE) -> None:
        if not 1 <= block_size <= 255:
            raise ValueError("block size must be 1..255")
        self.channel = channel
        self.block_size = block_size
        self.reopens = 0
        self.expected_eid: bytes | None = None
        self.card_changed: CardChanged | None = None  # sticky: set the first time another card is found
        self._open = False

    async def call(self, command: bytes, step: str = "ES10") -> bytes:
        """Send one ES10 command; return the response data (may be empty)."""
        blocks = apdu.store_data_chain(command, 0, self.block_size)
        for i, blk in enumerate(blocks):
            raw = await self.channel.transmit(blk)
            resp = apdu.parse_response(raw)
            if not resp.ok:
                raise Es10Error(step, f"block {i} answered {resp.sw:04X} ({apdu.sw_name(resp.sw)})", resp.sw)
            if i < len(blocks) - 1 and resp.data:
                raise Es10Error(step, f"intermediate block {i} answered {len(resp.data)} data bytes")
            if i == len(blocks) - 1:
                return resp.data
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ channel life cycle
    async def open(self) -> None:
        await self.channel.open()
        await self._check_card()
        self._open = True

    async def reopen(self) -> None:
        """Re-open the logical channel after a card reset (REFRESH) or a lost port; check the card is ours."""
        log.info("card was reset: re-opening the channel to ISD-R")
        self._open = False
        try:
            await self.channel.close()
        except Exception as exc:  # the channel may already be gone with the reset
            log.debug("close before re-open failed: %s", exc)
        await self.channel.open()
        self.reopens += 1
        await self._check_card()
        self._open = True

    async def _check_card(self) -> None:
        """After an opening: the card must be the one :attr:`expected_eid` names (when set)."""
        if self.expected_eid is None:
            return
        try:
            found = tlv.find(await self.call(GET_EID, "GetEID"), der.TAG_EID)
        except DecodeError:
            found = None
        eid = found.value if found is not None else None
        if eid != self.expected_eid:
            with contextlib.suppress(Exception):
                await self.channel.close()
            self.card_changed = CardChanged(self.expected_eid, eid)
            raise self.card_changed

    async def close(self) -> None:
        if self._open:
            self._open = False
            await self.channel.close()

    async def ensure_open(self) -> None:
        if not self._open:
            await self.open()
        elif self.channel.reset_detected:
            await self.reopen()

    async def _cmd(self, command: bytes, step: str, expect_tag: int | None = None, *, idempotent: bool = True) -> bytes:
        """One typed call: re-open after a reset; an idempotent (read-only) command that fails because the card was
        reset under it is sent once more on the re-opened channel."""
        await self.ensure_open()
        try:
            data = await self.call(command, step)
        except Exception:
            if not (idempotent and self.channel.reset_detected):
                raise
            await self.reopen()
            data = await self.call(command, step)
        if expect_tag is not None:
            try:
                t = tlv.parse_exact(data, what=step)
            except DecodeError as exc:
                raise Es10Error(step, f"malformed answer: {exc}") from None
            if t.tag != expect_tag:
                raise Es10Error(step, f"answer tag {t.tag:X}, expected {expect_tag:X}")
        return data

    # ------------------------------------------------------------------ identification
    async def get_eid(self) -> bytes:
        """ES10c.GetEID (GetEuiccData tagList 5A): the 16-byte EID."""
        data = await self._cmd(GET_EID, "GetEID", 0xBF3E)
        found = tlv.find(data, der.TAG_EID)
        if found is None or len(found.value) != 16:
            raise Es10Error("GetEID", "no 16-byte EID (5A) in the answer")
        return found.value

    async def get_euicc_info1(self) -> bytes:
        """ES10b.GetEUICCInfo1: the BF20 TLV (verbatim, it goes into InitiateAuthentication)."""
        return await self._cmd(b"\xbf\x20\x00", "GetEUICCInfo1", 0xBF20)

    async def get_euicc_info2(self) -> EuiccInfo2:
        data = await self._cmd(b"\xbf\x22\x00", "GetEUICCInfo2", 0xBF22)
        return EuiccInfo2.parse(data)

    async def get_euicc_challenge(self) -> bytes:
        data = await self._cmd(b"\xbf\x2e\x00", "GetEUICCChallenge", 0xBF2E)
        found = tlv.find(data, 0x80)
        if found is None or len(found.value) != 16:
            raise Es10Error("GetEUICCChallenge", "no 16-byte challenge (80)")
        return found.value

    async def get_euicc_configured_addresses(self) -> ConfiguredAddresses:
        data = await self._cmd(b"\xbf\x3c\x00", "EuiccConfiguredAddresses", 0xBF3C)
        f = der.child_map(tlv.parse_exact(data), "EuiccConfiguredAddresses")
        return ConfiguredAddresses(
            default_dp_address=der.dec_utf8(f[0x80].value, "defaultDpAddress") if 0x80 in f else None,
            root_ds_address=der.dec_utf8(f[0x81].value, "rootDsAddress") if 0x81 in f else None,
        )

    async def get_certs(self, euicc_ci_pkid: bytes | None = None) -> Certs:
        """SGP.32 ES10b.GetCerts: EUM and eUICC certificates (A5/A6 contents are the certificates)."""
        from ipa import codes
        from ipa.es10_results import Certs

        body = tlv.encode(0x80, euicc_ci_pkid) if euicc_ci_pkid else b""
        data = await self._cmd(tlv.encode(0xBF56, body), "GetCerts", 0xBF56)
        alt = tlv.children(data)[0] if tlv.children(data) else None
        if alt is not None and alt.tag == 0x81:
            raise _code_error("GetCerts", codes.GetCertsError, der.dec_int(alt.value))
        if alt is None or alt.tag != 0xA0:
            raise Es10Error("GetCerts", "no certs in the answer")
        f = der.child_map(alt, "GetCerts")
        if 0xA5 not in f or 0xA6 not in f:
            raise Es10Error("GetCerts", "eumCertificate (A5) or euiccCertificate (A6) missing")
        # [5]/[6] IMPLICIT over Certificate: the value is the certificate's contents; rebuild the 30 TLV.
        return Certs(
            eum_certificate=tlv.encode(0x30, f[0xA5].value),
            euicc_certificate=tlv.encode(0x30, f[0xA6].value),
            raw=data,
        )

    async def get_rat(self) -> bytes:
        return await self._cmd(b"\xbf\x43\x00", "GetRAT", 0xBF43)

    # ------------------------------------------------------------------ profiles
    async def get_profiles_info(self, iccid: str | None = None) -> list[ProfileInfo]:
        from ipa import codes
        from ipa.es10_results import ProfileInfo

        body = b""
        if iccid:
            body = tlv.encode(0xA0, tlv.encode(der.TAG_EID, der.iccid_to_bytes(iccid)))
        data = await self._cmd(tlv.encode(0xBF2D, body), "GetProfilesInfo", 0xBF2D)
        kids = tlv.children(data)
        if kids and kids[0].tag == 0x81:
            raise _code_error("GetProfilesInfo", codes.ProfileInfoListError, der.dec_int(kids[0].value))
        if not kids or kids[0].tag != 0xA0:
            raise Es10Error("GetProfilesInfo", "no profileInfoListOk (A0)")
        return [ProfileInfo.parse(p) for p in tlv.children(kids[0]) if p.tag == 0xE3]

    # ------------------------------------------------------------------ eIM configuration
    async def get_eim_configuration_data(self, eim_id: str | None = None) -> list[EimConfiguration]:
        body = tlv.encode(0xA0, tlv.encode(0x80, eim_id.encode())) if eim_id else b""
        data = await self._cmd(tlv.encode(0xBF55, body), "GetEimConfigurationData", 0xBF55)
        lst = tlv.find(data, 0xA0)
        if lst is None:
            return []
        return [EimConfiguration.parse(c) for c in tlv.children(lst) if c.tag == 0x30]

    async def add_initial_eim(self, request: bytes) -> AddInitialEimResult:
        """SGP.32 ES10b.AddInitialEim: ``request`` is the whole BF57 AddInitialEimRequest."""
        from ipa import codes
        from ipa.es10_results import AddInitialEimResult

        if request[:2] != b"\xbf\x57":
            raise Es10Error("AddInitialEim", "request is not a BF57 AddInitialEimRequest")
        data = await self._cmd(request, "AddInitialEim", 0xBF57, idempotent=False)
        alt = tlv.children(data)
        if alt and alt[0].tag == 0x81:
            raise _code_error("AddInitialEim", codes.AddInitialEimError, der.dec_int(alt[0].value))
        if not alt or alt[0].tag != 0xA0:
            raise Es10Error("AddInitialEim", "unexpected answer")
        tokens: list[int | None] = []
        for c in tlv.children(alt[0]):
            tokens.append(der.dec_int(c.value) if c.tag == 0x84 else None)
        return AddInitialEimResult(tuple(tokens), data)

    # ------------------------------------------------------------------ eUICC packages
    async def load_euicc_package(self, package: bytes) -> m.EuiccPackageResult:
        """SGP.32 ES10b.LoadEuiccPackage: ``package`` is the eIM's BF51 verbatim."""
        from ipa import messages as m

        data = await self._cmd(package, "LoadEuiccPackage", 0xBF51, idempotent=False)
        try:
            return m.parse_euicc_package_result(data)
        except DecodeError as exc:
            raise Es10Error("LoadEuiccPackage", f"malformed EuiccPackageResult: {exc}") from None

    async def profile_rollback(self, refresh: bool = True) -> RollbackResult:
        from ipa import codes
        from ipa import messages as m
        from ipa.es10_results import RollbackResult

        data = await self._cmd(
            bytes.fromhex("BF58038001") + (b"\xff" if refresh else b"\x00"), "ProfileRollback", 0xBF58, idempotent=False
        )
        f = der.child_map(tlv.parse_exact(data), "ProfileRollback")
        if 0x02 not in f:
            raise Es10Error("ProfileRollback", "cmdResult missing")
        code = der.dec_int(f[0x02].value)
        epr = m.parse_euicc_package_result(f[0xBF51]) if 0xBF51 in f else None
        if code != 0:
            raise _code_error("ProfileRollback", codes.ProfileRollbackCmdResult, code)
        return RollbackResult(code, epr)

    async def retrieve_notifications_list(
        self, seq_number: int | None = None, event_bits: set[int] | None = None
    ) -> list[m.PendingNotification]:
        """SGP.32 RetrieveNotificationsList (BF2B): pending notifications (PIR BF37 / otherSignedNotification 30)."""
        from ipa import messages as m

        crit = b""
        if seq_number is not None:
            crit = tlv.encode(0xA0, der.enc_int(0x80, seq_number))
        elif event_bits is not None:
            crit = tlv.encode(0xA0, der.enc_bitstring(0x81, event_bits))
        data = await self._cmd(tlv.encode(0xBF2B, crit), "RetrieveNotificationsList", 0xBF2B)
        alt = tlv.children(data)
        if not alt:
            return []
        if alt[0].tag == 0x81:
            raise Es10Error("RetrieveNotificationsList", f"notificationsListResultError {der.dec_int(alt[0].value)}")
        if alt[0].tag != 0xA0:
            raise Es10Error("RetrieveNotificationsList", f"unexpected alternative {alt[0].tag:X}")
        out = []
        for n in tlv.children(alt[0]):
            try:
                out.append(m.parse_pending_notification(n))
            except DecodeError as exc:
                log.warning("skipping an unreadable pending notification: %s", exc)
        return out

    async def retrieve_euicc_package_results(self) -> list[m.EuiccPackageResult]:
        """RetrieveNotificationsList with searchCriteria euiccPackageResults: the card's pending EPR list."""
        from ipa import messages as m

        data = await self._cmd(bytes.fromhex("BF2B04A0028200"), "RetrieveNotificationsList(EPR)", 0xBF2B)
        alt = tlv.children(data)
        if not alt:
            return []
        if alt[0].tag == 0x81:
            raise Es10Error("RetrieveNotificationsList(EPR)", f"error {der.dec_int(alt[0].value)}")
        out = []
        for e in tlv.children(alt[0]):
            if e.tag == m.TAG_EUICC_PACKAGE:
                try:
                    out.append(m.parse_euicc_package_result(e))
                except DecodeError as exc:
                    log.warning("skipping an unreadable pending EPR: %s", exc)
        return out

    async def list_notification(self) -> list[NotificationMetadata]:
        """ES10b.ListNotification (BF28): metadata of the pending notifications."""
        from ipa import messages as m
        from ipa.es10_results import NotificationMetadata

        data = await self._cmd(b"\xbf\x28\x00", "ListNotification", 0xBF28)
        alt = tlv.children(data)
        if not alt:
            return []
        if alt[0].tag == 0x81:
            raise Es10Error("ListNotification", f"listNotificationsResultError {der.dec_int(alt[0].value)}")
        out = []
        for md in tlv.children(alt[0]):
            if md.tag == 0xBF2F:
                seq, events, addr, iccid = m.parse_notification_metadata(md)
                out.append(NotificationMetadata(seq, tuple(sorted(events)), addr, iccid))
        return out

    async def remove_notification_from_list(self, seq_number: int) -> int:
        """ES10b.RemoveNotificationFromList (BF30): 0 ok, 1 nothingToDelete (an earlier removal succeeded)."""
        from ipa import codes

        data = await self._cmd(tlv.encode(0xBF30, der.enc_int(0x80, seq_number)), "RemoveNotificationFromList", 0xBF30)
        f = der.child_map(tlv.parse_exact(data), "RemoveNotificationFromList")
        code = der.dec_int(f[0x80].value) if 0x80 in f else 127
        if code not in (0, 1):
            raise _code_error("RemoveNotificationFromList", codes.RemoveNotificationResult, code)
        return code

    # ------------------------------------------------------------------ SGP.32 local functions
    async def _refresh_cmd(self, tag: int, step: str, enum: type[IntEnum], refresh: bool) -> int:
        req = tlv.encode(tag, b"\x80\x01" + (b"\xff" if refresh else b"\x00"))
        data = await self._cmd(req, step, tag, idempotent=False)
        f = der.child_map(tlv.parse_exact(data), step)
        if 0x80 not in f:
            raise Es10Error(step, "result (80) missing")
        code = der.dec_int(f[0x80].value)
        if code != 0:
            raise _code_error(step, enum, code)
        return code

    async def immediate_enable(self, refresh: bool = True) -> int:
        from ipa import codes

        return await self._refresh_cmd(0xBF5A, "ImmediateEnable", codes.ImmediateEnableResult, refresh)

    async def execute_fallback_mechanism(self, refresh: bool = True) -> int:
        from ipa import codes

        return await self._refresh_cmd(
            0xBF5D, "ExecuteFallbackMechanism", codes.ExecuteFallbackMechanismResult, refresh
        )

    async def return_from_fallback(self, refresh: bool = True) -> int:
        from ipa import codes

        return await self._refresh_cmd(0xBF5E, "ReturnFromFallback", codes.ReturnFromFallbackResult, refresh)

    async def enable_emergency_profile(self, refresh: bool = True) -> int:
        from ipa import codes

        return await self._refresh_cmd(0xBF5B, "EnableEmergencyProfile", codes.EnableEmergencyProfileResult, refresh)

    async def disable_emergency_profile(self, refresh: bool = True) -> int:
        from ipa import codes

        return await self._refresh_cmd(0xBF5C, "DisableEmergencyProfile", codes.DisableEmergencyProfileResult, refresh)

    async def configure_immediate_profile_enabling(self, enable: bool, default_smdp_address: str | None = None) -> int:
        from ipa import codes

        body = b"\x80\x00" if enable else b""
        if default_smdp_address:
            body += tlv.encode(0x82, default_smdp_address.encode())
        data = await self._cmd(tlv.encode(0xBF59, body), "ConfigureImmediateProfileEnabling", 0xBF59)
        f = der.child_map(tlv.parse_exact(data), "ConfigureImmediateProfileEnabling")
        code = der.dec_int(f[0x80].value) if 0x80 in f else 127
        if code != 0:
            raise _code_error("ConfigureImmediateProfileEnabling", codes.ConfigImmediateEnableResult, code)
        return code

    async def get_connectivity_parameters(self) -> bytes | None:
        from ipa import codes

        data = await self._cmd(b"\xbf\x5f\x00", "GetConnectivityParameters", 0xBF5F)
        alt = tlv.children(data)
        if alt and alt[0].tag == 0x81:
            code = der.dec_int(alt[0].value)
            if code == codes.ConnectivityParametersError.parametersNotAvailable:
                return None
            raise _code_error("GetConnectivityParameters", codes.ConnectivityParametersError, code)
        found = tlv.find(alt[0], 0x81) if alt else None
        return found.value if found else None

    async def set_default_dp_address(self, address: str) -> int:
        from ipa import codes

        data = await self._cmd(tlv.encode(0xBF65, tlv.encode(0x80, address.encode())), "SetDefaultDpAddress", 0xBF65)
        f = der.child_map(tlv.parse_exact(data), "SetDefaultDpAddress")
        code = der.dec_int(f[0x80].value) if 0x80 in f else 127
        if code != 0:
            raise _code_error("SetDefaultDpAddress", codes.SetDefaultDpAddressResult, code)
        return code

    async def euicc_memory_reset(self, options: set[int]) -> int:
        from ipa import codes

        data = await self._cmd(tlv.encode(0xBF64, der.enc_bitstring(0x82, options)), "EuiccMemoryReset", 0xBF64)
        kids = tlv.children(data)
        code = der.dec_int(kids[0].value) if kids else 127
        if code != 0:
            raise _code_error("EuiccMemoryReset", codes.EuiccMemoryResetResult, code)
        return code

    # ------------------------------------------------------------------ SGP.22 download (ES10b)
    async def authenticate_server(
        self,
        server_signed1: bytes,
        server_signature1: bytes,
        euicc_ci_pkid_to_be_used: bytes,
        server_certificate: bytes,
        ctx_params1: bytes,
    ) -> AuthenticateServerResult:
        """ES10b.AuthenticateServer (BF38); ``ctx_params1`` is the CtxParams1 TLV (A0 ...)."""
        req = tlv.encode(
            0xBF38,
            server_signed1
            + tlv.encode(0x5F37, server_signature1)
            + tlv.encode(0x04, euicc_ci_pkid_to_be_used)
            + server_certificate
            + ctx_params1,
        )
        data = await self._cmd(req, "AuthenticateServer", 0xBF38, idempotent=False)
        from ipa.es10_download import AuthenticateServerResult

        return AuthenticateServerResult.parse(data)

    async def prepare_download(
        self, smdp_signed2: bytes, smdp_signature2: bytes, smdp_certificate: bytes, hash_cc: bytes | None = None
    ) -> PrepareDownloadResult:
        body = smdp_signed2 + tlv.encode(0x5F37, smdp_signature2)
        if hash_cc is not None:
            body += tlv.encode(0x04, hash_cc)
        body += smdp_certificate
        data = await self._cmd(tlv.encode(0xBF21, body), "PrepareDownload", 0xBF21, idempotent=False)
        from ipa.es10_download import PrepareDownloadResult

        return PrepareDownloadResult.parse(data)

    async def load_bound_profile_package(self, bpp: bytes, progress=None) -> bytes:
        """ES10b.LoadBoundProfilePackage: send the BPP in its segments (protocol brief §7.5); return the PIR (BF37).

        Raises :class:`Es10Error` if a segment is refused; a BF37 earlier than the last segment ends the load and
        is returned (its finalResult says what failed).
        """
        from ipa.es10_download import bpp_segments

        segments = bpp_segments(bpp)
        await self.ensure_open()
        for i, seg in enumerate(segments):
            data = await self.call(seg, f"LoadBoundProfilePackage(segment {i + 1}/{len(segments)})")
            if progress is not None:
                progress(i + 1, len(segments))
            if data:
                if data[:2] != b"\xbf\x37":
                    raise Es10Error("LoadBoundProfilePackage", f"segment {i + 1} answered {data[:4].hex()}...")
                return data
        raise Es10Error("LoadBoundProfilePackage", "no ProfileInstallationResult after the last segment")

    async def cancel_session(self, transaction_id: bytes, reason: int) -> bytes:
        """ES10b.CancelSession (BF41): the card's signed BF41 answer, verbatim."""
        req = tlv.encode(0xBF41, tlv.encode(0x80, transaction_id) + der.enc_int(0x81, reason))
        data = await self._cmd(req, "CancelSession", 0xBF41, idempotent=False)
        alt = tlv.children(data)
        if alt and alt[0].tag == 0x81:
            raise Es10Error(
                "CancelSession",
                f"cancelSessionResponseError {der.dec_int(alt[0].value)}",
                code=der.dec_int(alt[0].value),
            )
        return data


def _code_error(step: str, enum: type[IntEnum], code: int) -> Es10Error:
    from ipa import codes

    name = codes.code_name(enum, code)
    return Es10Error(step, f"card answered {name}", code=code, code_name=name)


# ------------------------------------------------------------------ typed results
@dataclass(frozen=True)
class ConfiguredAddresses:
    default_dp_address: str | None
    root_ds_address: str | None


def _version(value: bytes) -> str:
    return ".".join(str(b) for b in value)


@dataclass(frozen=True)
class EuiccInfo2:
    raw: bytes
    profile_version: str | None = None
    svn: str | None = None
    firmware_version: str | None = None
    ext_card_resource: bytes | None = None
    ci_pkids_verification: tuple[bytes, ...] = ()
    ci_pkids_signing: tuple[bytes, ...] = ()
    pp_version: str | None = None
    sas_accreditation_number: str | None = None
    ipa_mode: int | None = None
    iot_versions: tuple[str, ...] = ()
    ecall_supported: bool = False
    fallback_supported: bool = False
    free_nvm: int | None = None

    @classmethod
    def parse(cls, data: bytes) -> EuiccInfo2:
        t = tlv.parse_exact(data, what="EUICCInfo2")
        kids = tlv.children(t, what="EUICCInfo2")
        f: dict[int, tlv.Tlv] = {}
        for k in kids:
            f.setdefault(k.tag, k)
        ext = f[0x84].value if 0x84 in f else None
        free_nvm = None
        if ext:
            try:  # ETSI TS 102 226 ext card resource: 81 apps, 82 free NVM, 83 free RAM
                for r in tlv.iter_tlvs(ext):
                    if r.tag == 0x82:
                        free_nvm = int.from_bytes(r.value, "big")
            except DecodeError:
                pass
        # ppVersion (04) and sasAcreditationNumber (0C) are untagged universals after the tagged fields
        pp = next((k for k in kids if k.tag == 0x04), None)
        sas = next((k for k in kids if k.tag == 0x0C), None)
        iot = f.get(0xB4)
        iot_versions: tuple[str, ...] = ()
        ecall = fallback = False
        if iot is not None:
            im = der.child_map(iot, "IoTSpecificInfo")
            if 0xA0 in im:
                iot_versions = tuple(_version(v.value) for v in tlv.children(im[0xA0]))
            ecall = 0x81 in im
            fallback = 0x82 in im
        return cls(
            raw=data,
            profile_version=_version(f[0x81].value) if 0x81 in f else None,
            svn=_version(f[0x82].value) if 0x82 in f else None,
            firmware_version=_version(f[0x83].value) if 0x83 in f else None,
            ext_card_resource=ext,
            ci_pkids_verification=tuple(c.value for c in tlv.children(f[0xA9])) if 0xA9 in f else (),
            ci_pkids_signing=tuple(c.value for c in tlv.children(f[0xAA])) if 0xAA in f else (),
            pp_version=_version(pp.value) if pp else None,
            sas_accreditation_number=der.dec_utf8(sas.value, "EUICCInfo2") if sas else None,
            ipa_mode=der.dec_int(f[0x90].value) if 0x90 in f else None,
            iot_versions=iot_versions,
            ecall_supported=ecall,
            fallback_supported=fallback,
            free_nvm=free_nvm,
        )

    def to_json(self) -> dict:
        return {
            "profileVersion": self.profile_version,
            "svn": self.svn,
            "euiccFirmwareVer": self.firmware_version,
            "ppVersion": self.pp_version,
            "sasAcreditationNumber": self.sas_accreditation_number,
            "ipaMode": {0: "ipad", 1: "ipae"}.get(self.ipa_mode, self.ipa_mode) if self.ipa_mode is not None else None,
            "iotVersion": list(self.iot_versions),
            "ecallSupported": self.ecall_supported,
            "fallbackSupported": self.fallback_supported,
            "freeNonVolatileMemory": self.free_nvm,
            "euiccCiPKIdListForVerification": [k.hex() for k in self.ci_pkids_verification],
            "euiccCiPKIdListForSigning": [k.hex() for k in self.ci_pkids_signing],
        }


@dataclass(frozen=True)
class EimConfiguration:
    raw: bytes
    eim_id: str
    fqdn: str | None = None
    id_type: int | None = None
    counter_value: int | None = None
    association_token: int | None = None
    public_key_data: bytes | None = None  # the A5 contents (A0 SPKI | A1 certificate)
    tls_trust: bytes | None = None  # A6 contents: A0 SPKI | A1 certificate (DER, re-tagged 30)
    tls_trust_is_certificate: bool = False
    supported_protocols: frozenset[int] = field(default_factory=frozenset)
    euicc_ci_pkid: bytes | None = None
    indirect_profile_download: bool = False

    PROTOCOL_NAMES = ("eimRetrieveHttps", "eimRetrieveCoaps", "eimInjectHttps", "eimInjectCoaps", "eimProprietary")

    @classmethod
    def parse(cls, t: tlv.Tlv) -> EimConfiguration:
        what = "EimConfigurationData"
        f = der.child_map(t, what)
        if 0x80 not in f:
            raise DecodeError(what, "eimId missing")
        tls = None
        tls_cert = False
        if 0xA6 in f:
            inner = tlv.children(f[0xA6], what=what)
            if inner:
                tls = tlv.encode(0x30, inner[0].value)
                tls_cert = inner[0].tag == 0xA1
        return cls(
            raw=t.raw,
            eim_id=der.dec_utf8(f[0x80].value, what),
            fqdn=der.dec_utf8(f[0x81].value, what) if 0x81 in f else None,
            id_type=der.dec_int(f[0x82].value) if 0x82 in f else None,
            counter_value=der.dec_int(f[0x83].value) if 0x83 in f else None,
            association_token=der.dec_int(f[0x84].value) if 0x84 in f else None,
            public_key_data=f[0xA5].value if 0xA5 in f else None,
            tls_trust=tls,
            tls_trust_is_certificate=tls_cert,
            supported_protocols=frozenset(der.dec_bitstring(f[0x87].value)) if 0x87 in f else frozenset(),
            euicc_ci_pkid=f[0x88].value if 0x88 in f else None,
            indirect_profile_download=0x89 in f,
        )

    def to_json(self) -> dict:
        return {
            "eimId": self.eim_id,
            "eimFqdn": self.fqdn,
            "eimIdType": self.id_type,
            "counterValue": self.counter_value,
            "associationToken": self.association_token,
            "eimSupportedProtocol": [
                self.PROTOCOL_NAMES[b] if b < len(self.PROTOCOL_NAMES) else f"bit{b}"
                for b in sorted(self.supported_protocols)
            ],
            "euiccCiPKId": self.euicc_ci_pkid.hex() if self.euicc_ci_pkid else None,
            "indirectProfileDownload": self.indirect_profile_download,
            "trustedTls": ("certificate" if self.tls_trust_is_certificate else "publicKey") if self.tls_trust else None,
        }


# The profile download's results and BPP segmentation live in ipa.es10_download (imported by the functions that need
# them); the old names still resolve here.
_DOWNLOAD_NAMES = (
    "AuthenticateServerResult",
    "PrepareDownloadResult",
    "ProfileInstallationResult",
    "bpp_segments",
)
# The results of the functions ``chip info`` does not call live in ipa.es10_results (imported when first returned).
_RESULT_NAMES = ("Certs", "ProfileInfo", "AddInitialEimResult", "RollbackResult", "NotificationMetadata")


def __getattr__(name: str):
    if name in _DOWNLOAD_NAMES:
        from ipa import es10_download

        return getattr(es10_download, name)
    if name in _RESULT_NAMES:
        from ipa import es10_results

        return getattr(es10_results, name)
    raise AttributeError(f"module 'ipa.es10' has no attribute {name!r}")
