"""Lab PKI generator: a complete, self-consistent RSP PKI for tests and the demo (layout in ``docs/pki.md``).

Per curve (``nist``, ``brainpool``): a self-signed CI, an EUM signed by the CI, one eUICC certificate per EID
signed by the EUM (EID in the subject serialNumber), SM-DP+ DPauth and DPpb, and the eIM package-signing
certificate, all signed by that curve's CI. Once: the SM-DP+ TLS certificate (DPtls) and the eIM TLS certificate,
NIST P-256 keys, serverAuth, subjectAltName DNS for every host plus IP 127.0.0.1, signed by the CI of the first
curve. Keys are PEM PKCS#8 (mode 0600), certificates PEM and DER; ``manifest.json`` lists everything and
``ca-bundle.pem`` holds every CI certificate.

Nothing is cached between calls: each :func:`create_lab_pki` makes fresh keys.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from rsp import crypto
from rsp.errors import RspError
from rsp.files import private_dir
from rsp.pki.certs import (
    LAB_EIN,
    LAB_SMDP_OID,
    POLICY_OF_ROLE,
    Role,
    eid_check_digits,
    is_valid_eid,
    lab_eid,
    subject_key_id,
)
from rsp.pki.eid_range import PERMITTED_EINS_OID, encode_permitted_eins

__all__ = [
    "DEFAULT_EID",
    "MANIFEST_VERSION",
    "LabPki",
    "LabPkiError",
    "create_lab_pki",
    "issue_certificate",
    "make_ci",
]

MANIFEST_VERSION = 1
DEFAULT_EID = lab_eid(1)
ORG = "sgp32-stack lab"
EUM_ORG = "sgp32-stack lab EUM"
#: roles that exist once per curve (eUICC: once per curve and EID)
PER_CURVE_ROLES = (Role.CI, Role.EUM, Role.DP_AUTH, Role.DP_PB, Role.EIM)
#: roles that exist once (NIST key, signed by the CI of the first curve)
TLS_ROLES = (Role.DP_TLS, Role.EIM_TLS)


class LabPkiError(RspError):
    """Bad arguments for, or an unreadable/incomplete, lab PKI directory."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _name(cn: str, *, o: str = ORG, serial: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o), x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if serial is not None:
        attrs.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, serial))
    return x509.Name(attrs)


def _policies(oid: str) -> x509.CertificatePolicies:
    return x509.CertificatePolicies([x509.PolicyInformation(x509.ObjectIdentifier(oid), None)])


def _ku(*, sign: bool = False, ca: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def issue_certificate(
    role: Role | str,
    public_key: ec.EllipticCurvePublicKey,
    issuer_cert: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    subject: x509.Name | None = None,
    eid: str | None = None,
    hosts: Sequence[str] = (),
    ips: Sequence[str] = ("127.0.0.1",),
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    policy_oid: str | None = None,
    smdp_oid: str = LAB_SMDP_OID,
    eid_prefixes: Sequence[str] | None = None,
) -> x509.Certificate:
    """Issue one RSP certificate of ``role`` for ``public_key``. ``issuer_cert=None`` makes a self-signed
    certificate (only sensible for the CI). ``policy_oid`` overrides the role's policy (tests use it to make a
    certificate with the wrong role); ``not_before``/``not_after`` default to now-1h .. now+10 years (CI 30).
    ``eid_prefixes`` (EUM only): the permitted EID range, written both as nameConstraints (directoryName
    O=<EUM organisation>, serialNumber=<prefix>) and as permittedEins; default the lab EIN ``89999000``; ``()``
    makes an EUM without a range (tests of the refusal)."""
    role = Role.parse(role)
    now = _now()
    nb = not_before or now - dt.timedelta(hours=1)
    na = not_after or now + dt.timedelta(days=365 * (30 if role is Role.CI else 10))
    if subject is None:
        subject = {
            Role.CI: lambda: _name(f"Lab CI ({crypto.curve_name(public_key)})"),
            Role.EUM: lambda: _name("Lab EUM", o=EUM_ORG),
            Role.EUICC: lambda: _name("Lab eUICC", o=EUM_ORG, serial=eid),
            Role.DP_AUTH: lambda: _name("Lab SM-DP+"),
            Role.DP_PB: lambda: _name("Lab SM-DP+"),
            Role.DP_TLS: lambda: _name(hosts[0] if hosts else "localhost"),
            Role.EIM: lambda: _name("Lab eIM"),
            Role.EIM_TLS: lambda: _name(hosts[0] if hosts else "localhost"),
        }.get(role, lambda: _name(f"Lab {role.label}"))()
    if role is Role.EUICC and (eid is None or not is_valid_eid(eid)):
        raise LabPkiError(f"an eUICC certificate needs a valid 32-digit EID, got {eid!r}")
    issuer_name = subject if issuer_cert is None else issuer_cert.subject
    ski = x509.SubjectKeyIdentifier.from_public_key(public_key)
    if issuer_cert is None:
        aki = x509.AuthorityKeyIdentifier(ski.digest, None, None)
    else:
        issuer_ski = subject_key_id(issuer_cert)
        if issuer_ski is None:
            raise LabPkiError("issuer certificate has no SubjectKeyIdentifier")
        aki = x509.AuthorityKeyIdentifier(issuer_ski, None, None)
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(nb)
        .not_valid_after(na)
        .add_extension(ski, critical=False)
        .add_extension(aki, critical=False)
    )
    oid = policy_oid or POLICY_OF_ROLE[role]
    if role is Role.CI:
        b = b.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        b = b.add_extension(_ku(ca=True), critical=True)
        b = b.add_extension(_policies(oid), critical=True)
    elif role is Role.EUM:
        b = b.add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        b = b.add_extension(_ku(ca=True), critical=True)
        b = b.add_extension(_policies(oid), critical=True)
        prefixes = list(dict.fromkeys((LAB_EIN,) if eid_prefixes is None else eid_prefixes))
        if prefixes:
            b = _add_eid_range(b, subject, prefixes)
    elif role in (Role.DP_TLS, Role.DS_TLS, Role.EIM_TLS):
        sans: list[x509.GeneralName] = [x509.DNSName(h) for h in hosts]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        if role is Role.DP_TLS:
            sans.append(x509.RegisteredID(x509.ObjectIdentifier(smdp_oid)))
        b = b.add_extension(_ku(sign=True), critical=True)
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=True)
        b = b.add_extension(_policies(oid), critical=False)
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    else:
        b = b.add_extension(_ku(sign=True), critical=True)
        b = b.add_extension(_policies(oid), critical=True)
        if role in (Role.DP_AUTH, Role.DP_PB):
            b = b.add_extension(
                x509.SubjectAlternativeName([x509.RegisteredID(x509.ObjectIdentifier(smdp_oid))]), critical=False
            )
    return b.sign(issuer_key, hashes.SHA256())


def _add_eid_range(b: x509.CertificateBuilder, subject: x509.Name, prefixes: list[str]) -> x509.CertificateBuilder:
    """The EUM's permitted EID range in both forms (``docs/pki.md``, SGP.22 §4.5.2.1.0.2 and SGP.26 v3):
    nameConstraints (critical, as RFC 5280 §4.2.1.10 requires) with one directoryName per prefix, and the
    permittedEins extension 2.23.146.1.2.2.0 (non-critical, so that verifiers that do not know it still accept
    the certificate)."""
    orgs = subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    org = str(orgs[0].value) if orgs else None
    subtrees: list[x509.GeneralName] = []
    for prefix in prefixes:
        if not prefix or len(prefix) > 32 or not prefix.isascii() or not prefix.isdigit():
            raise LabPkiError(f"invalid EID prefix {prefix!r}: need 1 to 32 decimal digits")
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)] if org else []
        attrs.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, prefix))
        subtrees.append(x509.DirectoryName(x509.Name(attrs)))
    b = b.add_extension(x509.NameConstraints(permitted_subtrees=subtrees, excluded_subtrees=None), critical=True)
    value = x509.UnrecognizedExtension(x509.ObjectIdentifier(PERMITTED_EINS_OID), encode_permitted_eins(prefixes))
    return b.add_extension(value, critical=False)


def make_ci(curve: str = "nist", **kwargs) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A fresh self-signed CI (certificate, key) on ``curve``; ``kwargs`` go to :func:`issue_certificate`."""
    key = crypto.generate_key(curve)
    return issue_certificate(Role.CI, key.public_key(), None, key, **kwargs), key


# --- files ------------------------------------------------------------------------------------------------------


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(path, mode)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _stem(role: Role, curve: str | None, eid: str | None) -> str:
    """Relative path stem of a role's files (``.cert.pem``, ``.cert.der``, ``.key.pem`` are appended)."""
    if role in TLS_ROLES:
        return f"tls/{role.value}"
    if role is Role.EUICC:
        return f"{curve}/euicc/{eid}"
    return f"{curve}/{role.value}"


def create_lab_pki(
    directory: str | os.PathLike[str],
    curves: Iterable[str] = ("nist",),
    eids: Iterable[str] = (),
    hosts: Iterable[str] = ("localhost",),
    *,
    smdp_oid: str = LAB_SMDP_OID,
    eid_prefixes: Iterable[str] = (),
) -> LabPki:
    """Create a lab PKI in ``directory`` (created if missing; existing files of a previous PKI are overwritten).

    ``curves``: any of ``"nist"``, ``"brainpool"`` (order kept, duplicates dropped; the first one's CI signs the
    TLS certificates). ``eids``: 32-digit EIDs with valid check digits (default: :data:`DEFAULT_EID`).
    ``hosts``: DNS names for the TLS certificates (IP 127.0.0.1 is always added). ``eid_prefixes``: extra EID
    prefixes the EUMs permit; the EUMs always permit the lab EIN ``89999000`` and the first 8 digits of each
    EID in ``eids``."""
    root = Path(directory)
    curve_list: list[str] = []
    for c in curves:
        try:
            name = crypto.curve_name(c)
        except crypto.CryptoError as exc:
            raise LabPkiError(str(exc)) from None
        if name not in curve_list:
            curve_list.append(name)
    if not curve_list:
        raise LabPkiError("at least one curve is needed")
    eid_list = list(dict.fromkeys(eids)) or [DEFAULT_EID]
    for eid in eid_list:
        if not is_valid_eid(eid):
            hint = ""
            if isinstance(eid, str) and len(eid) == 32 and eid.isdigit():
                hint = f" (check digits should be {eid_check_digits(eid[:30])})"
            raise LabPkiError(f"invalid EID {eid!r}: need 32 digits with mod-97 check digits{hint}")
    prefix_list = list(dict.fromkeys([LAB_EIN, *(e[:8] for e in eid_list), *eid_prefixes]))
    for prefix in prefix_list:
        if not isinstance(prefix, str) or not prefix or len(prefix) > 32 or not prefix.isdigit():
            raise LabPkiError(f"invalid EID prefix {prefix!r}: need 1 to 32 decimal digits")
    host_list = list(dict.fromkeys(hosts)) or ["localhost"]
    for h in host_list:
        try:
            x509.DNSName(h)
            h.encode("ascii")
        except (ValueError, UnicodeEncodeError, TypeError):
            raise LabPkiError(f"invalid host name {h!r}") from None
        if not h or " " in h or "/" in h:
            raise LabPkiError(f"invalid host name {h!r}")

    private_dir(root)  # 0700: the keys are in it
    files: dict[str, dict[str, str]] = {}
    ci_ids: dict[str, str] = {}
    cis: dict[str, tuple[x509.Certificate, ec.EllipticCurvePrivateKey]] = {}

    def save(
        role: Role,
        curve: str | None,
        eid: str | None,
        cert: x509.Certificate,
        key: ec.EllipticCurvePrivateKey,
        chain: list[x509.Certificate],
    ) -> None:
        stem = _stem(role, curve, eid)
        entry = {"cert": f"{stem}.cert.pem", "cert_der": f"{stem}.cert.der", "key": f"{stem}.key.pem"}
        _write(root / entry["cert"], _pem(cert))
        _write(root / entry["cert_der"], _der(cert))
        _write(root / entry["key"], crypto.private_key_pem(key), 0o600)
        if chain:
            entry["chain"] = f"{stem}.chain.pem"
            _write(root / entry["chain"], b"".join(_pem(c) for c in [cert, *chain]))
        label = role.value if role in TLS_ROLES else f"{curve}/{role.value}" + (f"/{eid}" if eid else "")
        files[label] = entry

    for curve in curve_list:
        ci_cert, ci_key = make_ci(curve)
        cis[curve] = (ci_cert, ci_key)
        ski = subject_key_id(ci_cert)
        assert ski is not None
        ci_ids[curve] = ski.hex().upper()
        save(Role.CI, curve, None, ci_cert, ci_key, [])
        eum_key = crypto.generate_key(curve)
        eum_cert = issue_certificate(Role.EUM, eum_key.public_key(), ci_cert, ci_key, eid_prefixes=prefix_list)
        save(Role.EUM, curve, None, eum_cert, eum_key, [])
        for eid in eid_list:
            k = crypto.generate_key(curve)
            c = issue_certificate(Role.EUICC, k.public_key(), eum_cert, eum_key, eid=eid)
            save(Role.EUICC, curve, eid, c, k, [eum_cert])
        for role in (Role.DP_AUTH, Role.DP_PB, Role.EIM):
            k = crypto.generate_key(curve)
            c = issue_certificate(role, k.public_key(), ci_cert, ci_key, smdp_oid=smdp_oid)
            save(role, curve, None, c, k, [])

    tls_ci_cert, tls_ci_key = cis[curve_list[0]]
    for role in TLS_ROLES:
        k = crypto.generate_key("nist")
        c = issue_certificate(role, k.public_key(), tls_ci_cert, tls_ci_key, hosts=host_list, smdp_oid=smdp_oid)
        save(role, None, None, c, k, [])

    _write(root / "ca-bundle.pem", b"".join(_pem(cis[c][0]) for c in curve_list))
    manifest = {
        "version": MANIFEST_VERSION,
        "kind": "sgp32-stack lab PKI",
        "created": _now().isoformat(),
        "curves": curve_list,
        "eids": eid_list,
        "eum_eid_prefixes": prefix_list,
        "hosts": host_list,
        "tls_ips": ["127.0.0.1"],
        "tls_ci_curve": curve_list[0],
        "smdp_oid": smdp_oid,
        "ci_key_ids": ci_ids,
        "policies": {r.value: POLICY_OF_ROLE[r] for r in Role},
        "ca_bundle": "ca-bundle.pem",
        "files": files,
    }
    _write(root / "manifest.json", (json.dumps(manifest, indent=2) + "\n").encode())
    return LabPki.load(root)


# --- loading ----------------------------------------------------------------------------------------------------


@dataclass
class LabPki:
    """A lab PKI directory, read back through its ``manifest.json``.

    Accessors take ``curve`` (``"nist"`` default, or ``"brainpool"``) where the role exists per curve; eUICC
    accessors take ``eid`` (default: the first EID). TLS accessors have no curve (NIST keys).
    """

    root: Path
    manifest: dict
    _cache: dict = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> LabPki:
        root = Path(directory)
        try:
            manifest = json.loads((root / "manifest.json").read_text())
        except FileNotFoundError:
            raise LabPkiError(f"{root} is not a lab PKI (no manifest.json; create one with `rsp pki init`)") from None
        except (OSError, ValueError) as exc:
            raise LabPkiError(f"cannot read {root / 'manifest.json'}: {exc}") from None
        if not isinstance(manifest, dict) or manifest.get("version") != MANIFEST_VERSION:
            raise LabPkiError(
                f"{root / 'manifest.json'}: unsupported manifest (version {manifest.get('version')!r})"
                if isinstance(manifest, dict)
                else f"{root / 'manifest.json'}: not an object"
            )
        for key in ("curves", "eids", "hosts", "files", "ci_key_ids"):
            if key not in manifest:
                raise LabPkiError(f"{root / 'manifest.json'}: missing {key!r}")
        return cls(root=root, manifest=manifest)

    # -- plain facts
    @property
    def curves(self) -> tuple[str, ...]:
        return tuple(self.manifest["curves"])

    @property
    def eids(self) -> tuple[str, ...]:
        return tuple(self.manifest["eids"])

    @property
    def eid(self) -> str:
        """The first (default) EID."""
        return self.manifest["eids"][0]

    @property
    def eum_eid_prefixes(self) -> tuple[str, ...]:
        """The EID prefixes the lab EUMs permit (empty for a PKI made before EUMs carried a range)."""
        return tuple(self.manifest.get("eum_eid_prefixes", ()))

    @property
    def hosts(self) -> tuple[str, ...]:
        return tuple(self.manifest["hosts"])

    @property
    def smdp_oid(self) -> str:
        return self.manifest.get("smdp_oid", LAB_SMDP_OID)

    @property
    def ca_bundle_path(self) -> Path:
        return self.root / self.manifest.get("ca_bundle", "ca-bundle.pem")

    def ci_key_id(self, curve: str = "nist") -> bytes:
        """SubjectKeyIdentifier of the CI = the ``euiccCiPKId``."""
        try:
            return bytes.fromhex(self.manifest["ci_key_ids"][self._curve(curve)])
        except KeyError:
            raise LabPkiError(f"no CI for curve {curve!r}") from None

    # -- generic access
    def _curve(self, curve: str) -> str:
        try:
            name = crypto.curve_name(curve)
        except crypto.CryptoError as exc:
            raise LabPkiError(str(exc)) from None
        if name not in self.manifest["curves"]:
            raise LabPkiError(f"this lab PKI has no {name} curve (curves: {', '.join(self.curves)})")
        return name

    def _entry(self, role: Role | str, curve: str = "nist", eid: str | None = None) -> dict[str, str]:
        role = Role.parse(role)
        if role in TLS_ROLES:
            label = role.value
        else:
            label = f"{self._curve(curve)}/{role.value}"
            if role is Role.EUICC:
                label += f"/{eid or self.eid}"
        try:
            return self.manifest["files"][label]
        except KeyError:
            raise LabPkiError(f"lab PKI has no {label} entry") from None

    def cert_path(self, role: Role | str, curve: str = "nist", eid: str | None = None, *, der: bool = False) -> Path:
        return self.root / self._entry(role, curve, eid)["cert_der" if der else "cert"]

    def key_path(self, role: Role | str, curve: str = "nist", eid: str | None = None) -> Path:
        return self.root / self._entry(role, curve, eid)["key"]

    def chain_path(self, role: Role | str, curve: str = "nist", eid: str | None = None) -> Path | None:
        """``<leaf><intermediates>`` PEM (eUICC: eUICC + EUM), or ``None`` for certificates directly under a CI."""
        rel = self._entry(role, curve, eid).get("chain")
        return None if rel is None else self.root / rel

    def cert(self, role: Role | str, curve: str = "nist", eid: str | None = None) -> x509.Certificate:
        path = self.cert_path(role, curve, eid)
        if path not in self._cache:
            try:
                self._cache[path] = crypto.load_certificate(path)
            except crypto.KeyLoadError as exc:
                raise LabPkiError(str(exc)) from None
        return self._cache[path]

    def key(self, role: Role | str, curve: str = "nist", eid: str | None = None) -> ec.EllipticCurvePrivateKey:
        path = self.key_path(role, curve, eid)
        if path not in self._cache:
            try:
                self._cache[path] = crypto.load_private_key(path)
            except crypto.KeyLoadError as exc:
                raise LabPkiError(str(exc)) from None
        return self._cache[path]

    # -- named accessors
    def ci_cert(self, curve: str = "nist") -> x509.Certificate:
        return self.cert(Role.CI, curve)

    def ci_key(self, curve: str = "nist") -> ec.EllipticCurvePrivateKey:
        return self.key(Role.CI, curve)

    def ci_certs(self) -> list[x509.Certificate]:
        """Every CI certificate (the trust anchors)."""
        return [self.ci_cert(c) for c in self.curves]

    trusted_cis = ci_certs

    def eum_cert(self, curve: str = "nist") -> x509.Certificate:
        return self.cert(Role.EUM, curve)

    def eum_key(self, curve: str = "nist") -> ec.EllipticCurvePrivateKey:
        return self.key(Role.EUM, curve)

    def euicc_cert(self, eid: str | None = None, curve: str = "nist") -> x509.Certificate:
        return self.cert(Role.EUICC, curve, eid)

    def euicc_key(self, eid: str | None = None, curve: str = "nist") -> ec.EllipticCurvePrivateKey:
        return self.key(Role.EUICC, curve, eid)

    def dpauth_cert(self, curve: str = "nist") -> x509.Certificate:
        return self.cert(Role.DP_AUTH, curve)

    def dpauth_key(self, curve: str = "nist") -> ec.EllipticCurvePrivateKey:
        return self.key(Role.DP_AUTH, curve)

    def dppb_cert(self, curve: str = "nist") -> x509.Certificate:
        return self.cert(Role.DP_PB, curve)

    def dppb_key(self, curve: str = "nist") -> ec.EllipticCurvePrivateKey:
        return self.key(Role.DP_PB, curve)

    def eim_cert(self, curve: str = "nist") -> x509.Certificate:
        return self.cert(Role.EIM, curve)

    def eim_key(self, curve: str = "nist") -> ec.EllipticCurvePrivateKey:
        return self.key(Role.EIM, curve)

    def dptls_cert(self) -> x509.Certificate:
        return self.cert(Role.DP_TLS)

    def dptls_key(self) -> ec.EllipticCurvePrivateKey:
        return self.key(Role.DP_TLS)

    @property
    def dptls_cert_path(self) -> Path:
        return self.cert_path(Role.DP_TLS)

    @property
    def dptls_key_path(self) -> Path:
        return self.key_path(Role.DP_TLS)

    def eimtls_cert(self) -> x509.Certificate:
        return self.cert(Role.EIM_TLS)

    def eimtls_key(self) -> ec.EllipticCurvePrivateKey:
        return self.key(Role.EIM_TLS)

    @property
    def eimtls_cert_path(self) -> Path:
        return self.cert_path(Role.EIM_TLS)

    @property
    def eimtls_key_path(self) -> Path:
        return self.key_path(Role.EIM_TLS)

    def entries(self) -> list[tuple[str, Role, str | None, str | None]]:
        """Every certificate: ``(label, role, curve, eid)``; curve ``None`` for the TLS ones."""
        out: list[tuple[str, Role, str | None, str | None]] = []
        for label in self.manifest["files"]:
            parts = label.split("/")
            if len(parts) == 1:
                out.append((label, Role.parse(parts[0]), None, None))
            else:
                out.append((label, Role.parse(parts[1]), parts[0], parts[2] if len(parts) > 2 else None))
        return out

    def verify(self, role: Role | str, curve: str = "nist", eid: str | None = None):
        """Verify one certificate of this PKI with :func:`rsp.pki.verify_chain` (returns the VerifiedChain)."""
        from rsp.pki.chain import verify_chain

        role = Role.parse(role)
        inter = [self.eum_cert(curve)] if role is Role.EUICC else []
        return verify_chain(self.cert(role, curve, eid), inter, self.ci_certs(), role)
