"""A new card's identity: from the lab PKI (``rsp.pki.LabPki``, layout in docs/pki.md) or imported from files.

Lab PKI: the eUICC certificate and key for the EID are taken from the PKI when it has them for the curve;
otherwise a fresh eUICC key pair is made and its certificate issued by the lab EUM of that curve (the EUM key is
in the PKI directory), if the EID lies within the lab EUM's permitted EID range. The card trusts every CI of the
lab PKI plus any extra CI certificates given (e.g. the SGP.26 test CI, so that an SM-DP+ with SGP.26
certificates authenticates to it).

Import (:func:`import_state`): an eUICC certificate and key, the EUM certificate and CI certificates from PEM or
DER files made by another PKI (another test PKI, the full SGP.26 package), checked with
:func:`rsp.pki.identity_import.check_identity`; every error names the file and the step.
"""

from __future__ import annotations

import os

from cryptography.hazmat.primitives import serialization

from euicc.state import EuiccState
from rsp import crypto
from rsp.errors import RspError
from rsp.pki import (
    EidRangeError,
    LabPki,
    LabPkiError,
    Role,
    check_eid_in_range,
    is_valid_eid,
    issue_certificate,
    load_certificates,
)
from rsp.pki.identity_import import IdentityError, check_identity


class ProvisionError(RspError):
    """A card cannot be created; the message names the step."""


def _der(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def new_state(
    pki_dir: str | os.PathLike[str],
    eid: str | bytes,
    *,
    curve: str = "nist",
    trusted_ci_paths=(),
    default_dp_address: str | None = None,
) -> EuiccState:
    eid_text = eid.hex().upper() if isinstance(eid, bytes | bytearray) else str(eid).strip()
    if len(eid_text) != 32 or not eid_text.isdigit():
        raise ProvisionError(f"EID: {eid_text!r} is not 32 decimal digits")
    if not is_valid_eid(eid_text):
        raise ProvisionError(f"EID: {eid_text} fails the check-digit rule (ISO 7064 MOD 97-10, SGP.29)")
    try:
        pki = LabPki.load(pki_dir)
        curve_name = crypto.curve_name(curve)
        eum_cert = pki.eum_cert(curve_name)
        try:
            check_eid_in_range(eid_text, eum_cert)
        except EidRangeError as exc:
            hint = (
                "re-create the PKI with `rsp pki init` (EUMs carry a permitted EID range since interop issue 14)"
                if exc.reason == "no-range"
                else f"add it with `rsp pki init --eid {eid_text}` or `--eid-prefix {eid_text[:8]}`"
            )
            raise ProvisionError(f"lab PKI {pki_dir}: {curve_name} EUM: {exc}; {hint}") from None
        if eid_text in pki.eids:
            key = pki.euicc_key(eid_text, curve_name)
            cert = pki.euicc_cert(eid_text, curve_name)
        else:
            key = crypto.generate_key(curve_name)
            cert = issue_certificate(Role.EUICC, key.public_key(), eum_cert, pki.eum_key(curve_name), eid=eid_text)
        cis = [_der(c) for c in pki.ci_certs()]
    except (LabPkiError, crypto.CryptoError) as exc:
        raise ProvisionError(f"lab PKI {pki_dir}: {exc}") from None
    _add_trusted(cis, trusted_ci_paths)
    return EuiccState(
        eid=bytes.fromhex(eid_text),
        curve=curve_name,
        private_key_pem=crypto.private_key_pem(key).decode(),
        euicc_cert=_der(cert),
        eum_cert=_der(eum_cert),
        ci_certs=cis,
        default_dp_address=default_dp_address,
    )


def _add_trusted(cis: list[bytes], paths) -> None:
    for path in paths:
        for c in _certs_from(path, "trusted CI"):
            der = _der(c)
            if der not in cis:
                cis.append(der)


def _certs_from(path, what: str) -> list:
    try:
        certs = load_certificates(path)
    except (RspError, OSError, ValueError) as exc:
        raise ProvisionError(f"{what} {path}: {exc}") from None
    if not certs:
        raise ProvisionError(f"{what} {path}: no certificate in the file")
    return certs


def _one_cert_from(path, what: str):
    certs = _certs_from(path, what)
    if len(certs) != 1:
        raise ProvisionError(f"{what} {path}: holds {len(certs)} certificates, expected exactly one")
    return certs[0]


def import_state(
    euicc_cert_path: str | os.PathLike[str],
    euicc_key_path: str | os.PathLike[str],
    eum_cert_path: str | os.PathLike[str],
    ci_paths,
    *,
    eid: str | None = None,
    trusted_ci_paths=(),
    default_dp_address: str | None = None,
) -> EuiccState:
    """A card state from an outside identity (PEM or DER files). Raises :class:`ProvisionError` naming the file
    and the step: reading a file, the key, the chain (signatures, roles, validity, the EUM's EID range), the EID."""
    euicc_cert = _one_cert_from(euicc_cert_path, "eUICC certificate")
    eum_cert = _one_cert_from(eum_cert_path, "EUM certificate")
    ci_certs = [c for p in ci_paths for c in _certs_from(p, "CI certificate")]
    try:
        key = crypto.load_private_key(euicc_key_path)
    except (RspError, OSError, ValueError) as exc:
        raise ProvisionError(f"eUICC key {euicc_key_path}: {exc}") from None
    eid_text = None if eid is None else (eid.hex().upper() if isinstance(eid, bytes | bytearray) else str(eid).strip())
    try:
        ident = check_identity(euicc_cert, key, eum_cert, ci_certs, eid=eid_text)
    except IdentityError as exc:
        where = {
            "euicc-cert": f"eUICC certificate {euicc_cert_path}",
            "euicc-key": f"eUICC key {euicc_key_path} (for certificate {euicc_cert_path})",
            "eum-cert": f"EUM certificate {eum_cert_path}",
            "ci": "CI certificates " + (", ".join(str(p) for p in ci_paths) or "(none given)"),
            "chain": f"chain {euicc_cert_path} <- {eum_cert_path} <- CI "
            + (", ".join(str(p) for p in ci_paths) or "(none)"),
            "eid": f"EID of {euicc_cert_path}",
        }[exc.step]
        raise ProvisionError(f"{where}: {exc}") from None
    cis = [_der(c) for c in ident.ci_certs]
    cis = list(dict.fromkeys(cis))
    _add_trusted(cis, trusted_ci_paths)
    return EuiccState(
        eid=bytes.fromhex(ident.eid),
        curve=ident.curve,
        private_key_pem=crypto.private_key_pem(ident.key).decode(),
        euicc_cert=_der(ident.euicc_cert),
        eum_cert=_der(ident.eum_cert),
        ci_certs=cis,
        default_dp_address=default_dp_address,
    )
