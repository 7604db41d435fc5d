"""eIM metrics: the ESipa request counters and histogram with cached label children (eim.metrics)."""

from __future__ import annotations

from eim.metrics import Metrics


def test_cached_metric_children_count_every_request():
    """The label children are looked up once and reused: every request is still counted under its labels."""
    m = Metrics()
    for binding in ("http", "http", "coap", "weird"):
        m.esipa_request("getEimPackage", binding, "ok", 0.001)
    m.esipa_request("getEimPackage", "http", "rejected", 0.001)
    text = m.render().decode()
    assert 'eim_esipa_requests_total{binding="http",function="getEimPackage",outcome="ok"} 2.0' in text
    assert 'eim_esipa_requests_total{binding="other",function="getEimPackage",outcome="ok"} 1.0' in text
    assert 'eim_esipa_requests_total{binding="http",function="getEimPackage",outcome="rejected"} 1.0' in text
    assert 'eim_esipa_request_seconds_count{binding="http",function="getEimPackage"} 3.0' in text
