"""RSP PKI (SGP.22 v2.5 §4.5, SGP.32 v1.2): certificates, chain verification by role, lab PKI generator.

- :mod:`rsp.pki.certs`: loading (PEM/DER), ``subject_key_id`` / ``authority_key_id``, roles by policy OID,
  ``eid_of`` and EID check digits.
- :mod:`rsp.pki.chain`: ``verify_chain(leaf, intermediates, trusted_cis, role, at=None)`` -> ``VerifiedChain``
  or ``ChainError`` naming the reason.
- :mod:`rsp.pki.eid_range`: the EUM's permitted EID range (nameConstraints / permittedEins) and
  ``check_eid_in_range(eid, eum_cert, euicc_cert=None)`` -> ``EidRange`` or ``EidRangeError``.
- :mod:`rsp.pki.identity_import`: an outside eUICC identity (certificate, key, EUM, CIs from files), checked.
- :mod:`rsp.pki.lab`: ``create_lab_pki(dir, ...)`` -> ``LabPki`` and ``LabPki.load(dir)``; layout in
  ``docs/pki.md``; command line ``rsp pki init|show`` (:mod:`rsp.pki_cli`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from rsp.crypto import load_certificate
from rsp.pki.certs import (
    ID_RSP_ROLE,
    LAB_EIM_POLICY,
    LAB_EIM_TLS_POLICY,
    LAB_EIN,
    LAB_SMDP_OID,
    POLICY_OF_ROLE,
    Role,
    as_certificate,
    authority_key_id,
    eid_check_digits,
    eid_of,
    is_valid_eid,
    lab_eid,
    load_certificates,
    policies_of,
    role_of,
    roles_of,
    subject_key_id,
)

# The certificate reading above is what every user of this package needs (the software eUICC loading its
# identity, ``ipa --card``); the names below come from the other submodules on first use (PEP 562), so such a
# program never loads the lab PKI generator or the chain checks.
_HOME = {
    **dict.fromkeys(("REASONS", "ChainError", "VerifiedChain", "verify_chain"), "rsp.pki.chain"),
    **dict.fromkeys(
        ("PERMITTED_EINS_OID", "EidRange", "EidRangeError", "check_eid_in_range", "eid_range_of"), "rsp.pki.eid_range"
    ),
    **dict.fromkeys(
        ("DEFAULT_EID", "LabPki", "LabPkiError", "create_lab_pki", "issue_certificate", "make_ci"), "rsp.pki.lab"
    ),
}

_SUBMODULES = ("certs", "chain", "eid_range", "lab")


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        if name in _SUBMODULES:  # ``rsp.pki.lab`` without importing it first, as when __init__ imported it
            return importlib.import_module(f"rsp.pki.{name}")
        raise AttributeError(f"module 'rsp.pki' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOME))


if TYPE_CHECKING:
    from rsp.pki.chain import REASONS, ChainError, VerifiedChain, verify_chain
    from rsp.pki.eid_range import PERMITTED_EINS_OID, EidRange, EidRangeError, check_eid_in_range, eid_range_of
    from rsp.pki.lab import DEFAULT_EID, LabPki, LabPkiError, create_lab_pki, issue_certificate, make_ci

__all__ = [
    "DEFAULT_EID",
    "ID_RSP_ROLE",
    "LAB_EIM_POLICY",
    "LAB_EIM_TLS_POLICY",
    "LAB_EIN",
    "LAB_SMDP_OID",
    "PERMITTED_EINS_OID",
    "POLICY_OF_ROLE",
    "REASONS",
    "ChainError",
    "EidRange",
    "EidRangeError",
    "LabPki",
    "LabPkiError",
    "Role",
    "VerifiedChain",
    "as_certificate",
    "authority_key_id",
    "check_eid_in_range",
    "create_lab_pki",
    "eid_check_digits",
    "eid_of",
    "eid_range_of",
    "is_valid_eid",
    "issue_certificate",
    "lab_eid",
    "load_certificate",
    "load_certificates",
    "make_ci",
    "policies_of",
    "role_of",
    "roles_of",
    "subject_key_id",
    "verify_chain",
]
