"""eIM metrics: the ESipa request counters and histogram, and the per-operation counters, with cached label children
(eim.metrics)."""

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


def test_cached_children_count_into_their_own_series() -> None:
    """The per-operation counters: each label set still counts into its own series, as scraped."""
    m = Metrics()
    for _ in range(3):
        m.operation_finished("psmo", "done")
    m.operation_finished("psmo", "failed")
    m.operation_finished("eco", "done")
    m.package_handed_out("psmo", again=False)
    m.package_handed_out("psmo", again=False)
    m.package_handed_out("psmo", again=True)
    m.operations_expired(2)
    text = m.render().decode()
    assert 'eim_operations_finished_total{kind="psmo",status="done"} 3.0' in text
    assert 'eim_operations_finished_total{kind="psmo",status="failed"} 1.0' in text
    assert 'eim_operations_finished_total{kind="eco",status="done"} 1.0' in text
    assert 'eim_operations_finished_total{kind="any",status="expired"} 2.0' in text
    assert 'eim_packages_handed_out_total{again="false",kind="psmo"} 2.0' in text
    assert 'eim_packages_handed_out_total{again="true",kind="psmo"} 1.0' in text
    other = Metrics()  # another registry: its own children, nothing shared
    other.operation_finished("psmo", "done")
    assert 'eim_operations_finished_total{kind="psmo",status="done"} 1.0' in other.render().decode()
