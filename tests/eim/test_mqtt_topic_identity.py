"""The identity the MQTT binding takes from a request's topic, and where it sends the answer
(:func:`eim.bindings.mqtt.topic_identity`): a device named by its topic never gets another device's EID, and
never makes the eIM publish outside its own namespace, whatever Response Topic it asks for."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from eim.bindings.mqtt import is_eid, topic_identity

EID = "89049032123451234512345678901235"
OTHER = "89049032123451234512345678901299"


def test_the_eid_is_the_topic_segment_upper_case():
    assert topic_identity("esipa", f"esipa/{EID}/up", None) == (EID, f"esipa/{EID}/down")
    hexa = "89abcdef" * 4
    assert topic_identity("esipa", f"esipa/{hexa}/up", None) == (hexa.upper(), f"esipa/{hexa}/down")


def test_a_segment_that_is_not_an_eid_names_nobody():
    for segment in ("", "abc", EID[:31], EID + "0", EID[:31] + "g", EID[:31] + "+"):
        eid, answer = topic_identity("esipa", f"esipa/{segment}/up", None)
        assert eid is None, segment
        assert answer == f"esipa/{segment}/down"
    # too few levels: no segment at all
    assert topic_identity("esipa", EID, None) == (None, "esipa//down")
    assert topic_identity("esipa", f"{EID}/up", None) == (None, "esipa//down")


def test_the_device_may_choose_a_response_topic_in_its_own_namespace():
    assert topic_identity("esipa", f"esipa/{EID}/up", f"esipa/{EID}/down/7") == (EID, f"esipa/{EID}/down/7")
    assert topic_identity("dev", f"dev/{EID}/up", f"dev/{EID}/x") == (EID, f"dev/{EID}/x")


def test_a_response_topic_outside_the_namespace_is_replaced():
    down = f"esipa/{EID}/down"
    for asked in (
        f"esipa/{OTHER}/down",  # another device's answers
        f"esipa/{EID}",  # a prefix of the namespace, not inside it
        f"esipa/{EID}x/down",
        f"other/{EID}/down",  # another prefix
        f"esipa/{EID}/+",  # wildcards are not topics to publish to
        f"esipa/{EID}/#",
        f"esipa/{EID}/a/+/b",
        f"esipa/{EID}/a#",
        "",
    ):
        assert topic_identity("esipa", f"esipa/{EID}/up", asked) == (EID, down), asked
    # the namespace is the prefix given, not the default
    assert topic_identity("dev", f"dev/{EID}/up", f"esipa/{EID}/down") == (EID, f"dev/{EID}/down")


def test_an_eid_with_a_trailing_newline_is_not_an_eid():
    assert is_eid(EID)
    assert not is_eid(EID + "\n")
    assert topic_identity("esipa", f"esipa/{EID}\n/up", None)[0] is None


@settings(max_examples=300, deadline=None)
@given(topic=st.text(max_size=80), asked=st.one_of(st.none(), st.text(max_size=80)))
def test_whatever_the_topic_the_answer_stays_in_its_namespace(topic, asked):
    eid, answer = topic_identity("esipa", topic, asked)
    parts = topic.split("/")
    segment = parts[-2] if len(parts) >= 3 else ""
    assert answer.startswith(f"esipa/{segment}/")
    assert "+" not in answer[len(f"esipa/{segment}/") :] and "#" not in answer[len(f"esipa/{segment}/") :]
    assert eid is None or (eid == segment.upper() and len(eid) == 32)
