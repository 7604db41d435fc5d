"""Configuration of the lab SM-DP+ (one frozen value built by the CLI or a test)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SmdppConfig:
    """``host``/``port``: where to listen. ``address``: the SM-DP+ address (FQDN[:port]) that activation codes
    carry and that ``serverSigned1.serverAddress`` echoes; by default ``<TLS host name>:<port>``.

    ``pki_dir``: the lab PKI (``rsp pki init``); ``sgp26``: present the GSMA SGP.26 test DPauth/DPpb/TLS
    credentials instead (and trust the SGP.26 test CI besides the lab CI). ``curves``: which credential sets
    to offer (``("nist",)``, ``("brainpool",)`` or both). ``data_dir``: the order store.
    """

    data_dir: Path
    pki_dir: Path | None = None
    host: str = "127.0.0.1"
    port: int = 8443
    address: str = ""
    insecure_http: bool = False
    sgp26: bool = False
    curves: tuple[str, ...] = ("nist", "brainpool")
    session_ttl: float = 900.0
    notification_address: str = ""  # defaults to address

    aliases: tuple[str, ...] = ()  # other SM-DP+ addresses accepted in InitiateAuthentication

    def accepts_address(self, address: str) -> bool:
        """SGP.22 §5.6.1: the received address must match the SM-DP+ address (case-insensitive)."""
        wanted = address.strip().lower()
        return any(wanted == a.lower() for a in (self.address, *self.aliases) if a)

    @property
    def effective_notification_address(self) -> str:
        return self.notification_address or self.address
