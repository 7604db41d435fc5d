"""A new card's identity from the lab PKI (``rsp.pki.LabPki``, layout in docs/pki.md).

The eUICC certificate and key for the EID are taken from the PKI when it has them for the curve; otherwise a
fresh eUICC key pair is made and its certificate issued by the lab EUM of that curve (the EUM key is in the PKI
directory). The card trusts every CI of the lab PKI plus any extra CI certificates given (e.g. the SGP.26 test
CI, so that an SM-DP+ with SGP.26 certificates authenticates to it).
"""

from __future__ import annotations

import os

from cryptography.hazmat.primitives import serialization

from euicc.state import EuiccState
from rsp import crypto
from rsp.errors import RspError
from rsp.pki import LabPki, LabPkiError, Role, is_valid_eid, issue_certificate, load_certificates


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
        if eid_text in pki.eids:
            key = pki.euicc_key(eid_text, curve_name)
            cert = pki.euicc_cert(eid_text, curve_name)
        else:
            key = crypto.generate_key(curve_name)
            cert = issue_certificate(Role.EUICC, key.public_key(), eum_cert, pki.eum_key(curve_name), eid=eid_text)
        cis = [_der(c) for c in pki.ci_certs()]
    except (LabPkiError, crypto.CryptoError) as exc:
        raise ProvisionError(f"lab PKI {pki_dir}: {exc}") from None
    for path in trusted_ci_paths:
        try:
            extra = load_certificates(path)
        except (RspError, OSError, ValueError) as exc:
            raise ProvisionError(f"trusted CI {path}: {exc}") from None
        if not extra:
            raise ProvisionError(f"trusted CI {path}: no certificate in the file")
        for c in extra:
            der = _der(c)
            if der not in cis:
                cis.append(der)
    return EuiccState(
        eid=bytes.fromhex(eid_text),
        curve=curve_name,
        private_key_pem=crypto.private_key_pem(key).decode(),
        euicc_cert=_der(cert),
        eum_cert=_der(eum_cert),
        ci_certs=cis,
        default_dp_address=default_dp_address,
    )
