"""The properties of an MQTT ESipa answer (eim.bindings.mqtt_properties.ReplyProperties) pack to exactly the bytes
paho's own ``Properties`` packs for the same values (MQTT v5.0 §3.3.2.3), whichever of them are set, and paho
still checks what goes through its own attribute path."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import MQTTException, Properties

from eim.bindings.mqtt_properties import ReplyProperties

TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


@settings(max_examples=400, deadline=None)
@given(
    st.none() | TEXT,
    st.none() | st.binary(max_size=64),
    st.lists(st.tuples(TEXT, TEXT), max_size=3),
    st.none() | st.integers(1, 2**32 - 1),
)
def test_the_same_bytes_as_paho(content_type, correlation, user, expiry):
    mine = ReplyProperties()
    paho = Properties(PacketTypes.PUBLISH)
    if content_type is not None:
        mine.set_content_type(content_type)
        paho.ContentType = content_type
    if correlation is not None:
        mine.set_correlation_data(correlation)
        paho.CorrelationData = correlation
    if user:
        mine.UserProperty = list(user)  # paho's own attribute path, as the error answers use it
        paho.UserProperty = list(user)
    if expiry is not None:  # a property the fast packer does not know: paho packs the whole set
        mine.MessageExpiryInterval = expiry
        paho.MessageExpiryInterval = expiry
    assert bytes(mine.pack()) == bytes(paho.pack())
    assert isinstance(mine, Properties) and mine.packetType == PacketTypes.PUBLISH


def test_an_answer_of_the_binding_packs_as_paho_does():
    mine = ReplyProperties()
    mine.set_correlation_data(b"\x01\x02")
    mine.set_content_type("application/x-gsma-rsp-asn1")
    # written by hand from MQTT v5.0 §2.2.2 and §3.3.2.3: 35 bytes of properties (0x23), Content Type 03 with a
    # 27-byte UTF-8 string, Correlation Data 09 with 2 bytes
    expected = b"\x23\x03\x00\x1b" + b"application/x-gsma-rsp-asn1" + b"\x09\x00\x02\x01\x02"
    assert bytes(mine.pack()) == expected


def test_paho_still_refuses_what_a_publish_may_not_carry():
    with pytest.raises(MQTTException):
        ReplyProperties().ServerKeepAlive = 10  # a CONNACK property
    with pytest.raises(MQTTException):
        ReplyProperties().NoSuchProperty = 1
