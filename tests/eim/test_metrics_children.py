"""The per-operation counters of :class:`eim.metrics.Metrics` keep their label children after the first look-up:
each label set still counts into its own series, as scraped."""

from __future__ import annotations

from eim.metrics import Metrics


def test_cached_children_count_into_their_own_series() -> None:
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
