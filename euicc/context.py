"""What an ES10 function sees: persistent state, identity, the volatile RSP session and the card's signals.

ES10 functions are pure protocol logic over a :class:`Context`; the APDU layer (``euicc.card``) owns the
context, runs each function inside a transaction (snapshot, run, persist or roll back) and turns
:class:`Es10Reject` into a status word.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from euicc.identity import Identity
from euicc.state import EuiccState

if TYPE_CHECKING:  # annotations only: a card that only answers GetEUICCInfo2 never imports cryptography
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

    from euicc.forgery import Forgery

SW_WRONG_DATA = 0x6A80
SW_NOT_FOUND = 0x6A88
SW_CONDITIONS = 0x6985
SW_MEMORY = 0x6A84


class Es10Reject(Exception):
    """Refuse an ES10 command at the APDU level (the command has no response structure for this case)."""

    def __init__(self, sw: int, step: str, message: str) -> None:
        self.sw = sw
        self.step = step
        super().__init__(f"{step}: {message}")


@dataclass
class AuthSession:
    """Established by AuthenticateServer (SGP.22 §3.1.2 common mutual authentication)."""

    transaction_id: bytes
    server_address: str
    server_challenge: bytes
    dpauth: x509.Certificate
    smdp_oid: str | None
    euicc_signature1: bytes
    ci_pkid: bytes


@dataclass
class PrepareSession:
    """Established by PrepareDownload: the one-time key pair and the SM-DP+ binding certificate."""

    otsk: ec.EllipticCurvePrivateKey
    otpk: bytes
    dppb: x509.Certificate
    smdp_oid: str | None
    smdp_signature2: bytes
    hash_cc: bytes | None


@dataclass
class Session:
    """Volatile RSP session context (RAM): lost when the card object is dropped, kept over a REFRESH."""

    challenge: bytes | None = None
    auth: AuthSession | None = None
    prepared: PrepareSession | None = None
    bpp: object | None = None  # euicc.es10.load_bound_profile_package.BppLoader while a BPP is being loaded
    # otSK/otPK kept for a retried PrepareDownload (bppEuiccOtpk), SGP.22 §3.1.3.2
    last_ot: tuple[ec.EllipticCurvePrivateKey, bytes] | None = None

    def clear(self) -> None:
        self.challenge = None
        self.auth = None
        self.prepared = None
        self.bpp = None


@dataclass
class Context:
    state: EuiccState
    identity: Identity
    session: Session
    request_refresh: Callable[[], None]
    random: Callable[[int], bytes] = field(default=os.urandom)
    forgery: Forgery | None = None  # tests only: results signed with a lie (euicc.forgery); never persisted

    @property
    def eid(self) -> bytes:
        return self.state.eid
