"""HTTPS with client certificates for ESipa (SGP.32 v1.2 §6.1 "ESipa ASN.1 binding over HTTPS"): the TLS
facts the ASGI app needs, which uvicorn does not give it.

uvicorn (0.55) verifies a client certificate when configured with ``ssl_cert_reqs`` / ``ssl_ca_certs``, but
builds the ASGI scope without the ASGI TLS extension, so the app cannot tell who connected (checked in
``uvicorn/protocols/http/httptools_impl.py``: ``on_message_begin`` makes the scope from the client/server
addresses only). :class:`TlsHttpToolsProtocol` is uvicorn's own httptools protocol with one addition: when the
connection is TLS, it reads the verified peer certificate from the transport's ``ssl_object`` (the handshake is
complete before asyncio hands the connection to the protocol) and puts it into every request's scope in the shape
of the ASGI TLS extension::

    scope["extensions"]["tls"] = {"client_cert_chain": [<leaf PEM>], "client_cert_name": <subject RFC 4514>,
                                  "client_cert_error": None, "tls_version": 0x0304, "cipher_suite": None,
                                  "server_cert": None}

Only certificates the handshake verified reach the scope: the context is ``CERT_OPTIONAL`` with the operator's
device CA (``[devices] client_ca``), so a client without a certificate connects (and is then judged by the
device policy: a device secret, or loopback), while a certificate from any other CA fails the handshake.
``client_cert_chain`` holds the leaf only (Python 3.11's ``SSLObject`` gives no verified chain). The binding
trusts ``scope["extensions"]["tls"]`` only when device certificates are configured; run the eIM with this
protocol class (``eim serve`` does), not behind another server that might fill the extension differently.
"""

from __future__ import annotations

import ssl
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

TLS_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}


def _extension(ssl_object: Any, der: bytes | None) -> dict[str, Any]:
    chain: list[str] = []
    name = None
    if der:
        chain.append(ssl.DER_cert_to_PEM_cert(der))
        try:
            from cryptography import x509

            name = x509.load_der_x509_certificate(der).subject.rfc4514_string()
        except ValueError:
            name = None
    return {
        "server_cert": None,
        "client_cert_chain": chain,
        "client_cert_name": name,
        "client_cert_error": None,
        "tls_version": TLS_VERSIONS.get(ssl_object.version() or ""),
        "cipher_suite": None,
    }


class TlsHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol that hands the verified client certificate to the app (module docstring).

    The peer certificate is read for every request (a TLS 1.2 renegotiation could change it within a connection);
    the extension is rebuilt only when the certificate differs from the previous request's."""

    _tls: dict[str, Any] | None = None
    _der: bytes | None = None

    def on_message_begin(self) -> None:
        super().on_message_begin()
        ssl_object = self.transport.get_extra_info("ssl_object")
        if ssl_object is None:
            return
        der = ssl_object.getpeercert(binary_form=True)
        if self._tls is None or der != self._der:
            self._tls, self._der = _extension(ssl_object, der), der
        self.scope["extensions"] = {"tls": self._tls}  # type: ignore[typeddict-unknown-key]
