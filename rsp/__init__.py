"""Shared GSMA RSP core (SGP.22 v2.5 / SGP.32 v1.2): pure functions, no I/O.

Modules: ``asn1`` (schemas + codec), ``tlv`` (BER-TLV walker), ``apdu`` (STORE DATA framing, SW names),
``crypto`` (TR-03111 signatures), ``pki`` (certificates, chains, lab PKI), ``bsp`` (SGP.22 §5.5 BSP),
``activation_code`` (SGP.22 §4.1).
"""

__all__ = ["__version__"]
__version__ = "0.1.0"
