"""The signature of a webhook delivery: ``X-Eim-Signature: sha256=<hex HMAC-SHA256 of the body>`` with the
subscription's secret (shown once, when the subscription is created). The receiver recomputes it over the bytes
it received and compares in constant time (:func:`verify`). Pure functions."""

from __future__ import annotations

import hashlib
import hmac
import secrets

HEADER = "X-Eim-Signature"
PREFIX = "sha256="
SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def sign(secret: str, body: bytes) -> str:
    return PREFIX + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str | None) -> bool:
    return header is not None and hmac.compare_digest(sign(secret, body), header.strip())
