"""ESipa bindings of the eIM: the same DER messages over HTTP(S), CoAP and MQTT v5 (SGP.32 v1.2 §6.1).

Each binding takes an :class:`eim.interfaces.EsipaHandler`, hands it the request bytes exactly as received with a
:class:`eim.interfaces.RequestContext`, and puts the handler's bytes on the wire unchanged. No binding decodes
ASN.1. See ``docs/esipa-bindings.md`` for status codes, topics and the broker ACL.

The modules import their server libraries lazily (``eim.bindings.http`` needs nothing but the ASGI server that
runs it, ``eim.bindings.coap`` needs aiocoap, ``eim.bindings.mqtt`` aiomqtt), so importing this package is cheap.
"""

from __future__ import annotations

ESIPA_PATH = "/gsma/rsp2/asn1"
ESIPA_CONTENT_TYPE = "application/x-gsma-rsp-asn1"
X_ADMIN_PROTOCOL = "gsma/rsp/v2.1.0"

__all__ = ["ESIPA_CONTENT_TYPE", "ESIPA_PATH", "X_ADMIN_PROTOCOL"]
