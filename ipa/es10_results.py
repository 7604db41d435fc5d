"""Typed results of the ES10 functions a one-shot ``chip info`` does not call: GetCerts, GetProfilesInfo,
AddInitialEim, ProfileRollback, ListNotification (SGP.22 v2.5 §5.7, SGP.32 v1.2 §5.9).

Split from :mod:`ipa.es10` (and re-exported there): each frozen dataclass costs the interpreter about 4 M
instructions to build at import, and ``ipa chip info`` needs none of these (docs/performance.md, 5b).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ipa import der
from rsp import tlv

if TYPE_CHECKING:
    from ipa import messages as m


@dataclass(frozen=True)
class Certs:
    eum_certificate: bytes
    euicc_certificate: bytes
    raw: bytes


@dataclass(frozen=True)
class ProfileInfo:
    iccid: str | None
    isdp_aid: str | None
    state: int | None
    nickname: str | None
    service_provider_name: str | None
    profile_name: str | None
    profile_class: int | None
    fallback_attribute: bool = False

    @classmethod
    def parse(cls, t: tlv.Tlv) -> ProfileInfo:
        f = der.child_map(t, "ProfileInfo")

        def s(tag: int) -> str | None:
            return der.dec_utf8(f[tag].value, "ProfileInfo") if tag in f else None

        return cls(
            iccid=der.iccid_to_str(f[0x5A].value) if 0x5A in f else None,
            isdp_aid=f[0x4F].value.hex().upper() if 0x4F in f else None,
            state=der.dec_int(f[0x9F70].value) if 0x9F70 in f else None,
            nickname=s(0x90),
            service_provider_name=s(0x91),
            profile_name=s(0x92),
            profile_class=der.dec_int(f[0x95].value) if 0x95 in f else None,
            fallback_attribute=bool(f[0x9F26].value and f[0x9F26].value[0]) if 0x9F26 in f else False,
        )

    def to_json(self) -> dict:
        return {
            "iccid": self.iccid,
            "isdpAid": self.isdp_aid,
            "profileState": {0: "disabled", 1: "enabled"}.get(self.state, self.state)
            if self.state is not None
            else None,
            "profileNickname": self.nickname,
            "serviceProviderName": self.service_provider_name,
            "profileName": self.profile_name,
            "profileClass": {0: "test", 1: "provisioning", 2: "operational"}.get(self.profile_class, self.profile_class)
            if self.profile_class is not None
            else None,
            "fallbackAttribute": self.fallback_attribute,
        }


@dataclass(frozen=True)
class AddInitialEimResult:
    association_tokens: tuple[int | None, ...]
    raw: bytes


@dataclass(frozen=True)
class RollbackResult:
    code: int
    euicc_package_result: m.EuiccPackageResult | None


@dataclass(frozen=True)
class NotificationMetadata:
    seq_number: int
    events: tuple[str, ...]
    address: str | None
    iccid: str | None

    def to_json(self) -> dict:
        return {
            "seqNumber": self.seq_number,
            "profileManagementOperation": list(self.events),
            "notificationAddress": self.address,
            "iccid": self.iccid,
        }
