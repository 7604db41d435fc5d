"""The MQTT v5 properties of an ESipa answer (MQTT v5.0 §3.3.2.3: Content Type 0x03, Correlation Data 0x09, User
Property 0x26 of a PUBLISH), built and packed without paho's general ``Properties`` machinery.

paho's ``Properties`` builds its name and type tables anew for every instance, checks every attribute it is given
against them by string comparisons, and packs by walking all 27 property names: ~32 % of the eIM's CPU time on a
no-work poll over MQTT went to the properties of the request and the answer (py-spy, docs/performance.md
section 0). :class:`ReplyProperties` is a ``Properties`` (paho and aiomqtt take it as one) that shares paho's tables
between instances, sets the three properties an answer carries directly, and packs them with paho's own
encoders in paho's order; anything else set on it is packed by paho's ``pack``. The bytes are paho's:
``tests/eim/test_mqtt_properties.py`` holds the two to the same output.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties, VariableByteIntegers, writeBytes, writeUTF

_OWN = frozenset({"packetType", "types", "names", "properties", "ContentType", "CorrelationData", "UserProperty"})


@cache
def _tables() -> tuple[Any, Any, Any]:
    """paho's tables of a PUBLISH's Properties (read only by paho once built)."""
    p = Properties(PacketTypes.PUBLISH)
    return p.types, p.names, p.properties


class ReplyProperties(Properties):
    """Properties of a PUBLISH that answers an ESipa request."""

    def __init__(self) -> None:  # not paho's: its tables are shared, not rebuilt
        types, names, properties = _tables()
        object.__setattr__(self, "packetType", PacketTypes.PUBLISH)
        object.__setattr__(self, "types", types)
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "properties", properties)

    def set_content_type(self, value: str) -> None:
        """Content Type (a UTF-8 string; paho's check of the name is not needed for this one)."""
        object.__setattr__(self, "ContentType", value)

    def set_correlation_data(self, value: bytes) -> None:
        """Correlation Data, echoed from the request."""
        object.__setattr__(self, "CorrelationData", value)

    def pack(self) -> bytes:
        state = self.__dict__
        if state.keys() - _OWN:  # something else was set: paho packs it all
            return super().pack()
        buf = b""
        if "ContentType" in state:
            buf += b"\x03" + writeUTF(state["ContentType"])
        if "CorrelationData" in state:
            buf += b"\x09" + writeBytes(state["CorrelationData"])
        for key, value in state.get("UserProperty", ()):
            buf += b"\x26" + writeUTF(key) + writeUTF(value)
        return VariableByteIntegers.encode(len(buf)) + buf
