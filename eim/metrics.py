"""Prometheus metrics of the eIM (``GET /metrics``). Labels never carry an EID, ICCID or operation id.

=========================================  ===========================================================
metric                                     labels
=========================================  ===========================================================
``eim_operations_created_total``           ``kind``
``eim_operations_finished_total``          ``kind``, ``status`` (done / failed / expired / cancelled)
``eim_operations``  (gauge, from store)    ``kind``, ``status`` - queue depth = status "queued"
``eim_packages_handed_out_total``          ``kind``, ``again`` (true when the same bytes went out again)
``eim_packages_pushed_total``              ``kind``
``eim_results_refused_total``              ``cause`` (a fixed set, ``eim.packages.euicc_package.REFUSAL_CAUSES``)
``eim_notifications_forwarded_total``      ``outcome`` (queued / delivered / retry / failed / refused)
``eim_notifications_refused_total``        ``cause`` (malformed / compact / certificate / eid_mismatch / signature
                                           / unknown_euicc / unattributed / address / unforwardable / cap / rate)
``eim_notification_queue`` (gauge, store)  ``status`` (pending / failed) - the outbox of notifications for SM-DP+s
``eim_esipa_requests_total``               ``function``, ``binding``, ``outcome`` (ok / error / rejected)
``eim_esipa_error_answers_total``          ``function``, ``binding``, ``code`` (the ESipa error code, 0..127 or other)
``eim_esipa_request_seconds`` (histogram)  ``function``, ``binding``
``eim_api_requests_total``                 ``method``, ``route`` (the route template), ``status``
``eim_fleet_euiccs`` (gauge, from store)   ``state``: registered / never_seen / seen_1h / seen_24h / stale
``eim_event_deliveries_total``             ``outcome`` (delivered / retry / failed) - webhook attempts
``eim_event_delivery_queue`` (gauge)       ``status`` (pending / delivered / failed)
=========================================  ===========================================================

``stale``: silent longer than the expected poll interval (``[fleet] poll_interval_s`` or the eUICC's own).

``queued``: the eIM took responsibility for a notification (it is in the outbox); ``delivered``: the SM-DP+
accepted it; ``retry``: an attempt failed and another one is scheduled; ``failed``: refused for good or given up;
``refused``: it could never be forwarded (not taken, not acknowledged to the IPA).

The gauges are read from the store when ``/metrics`` is scraped, so every worker on a shared PostgreSQL reports
the fleet's queue, and counters are per worker (Prometheus sums them).
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from eim.model import NotificationStatus, OpKind, OpStatus

CONTENT_TYPE = CONTENT_TYPE_LATEST
disable_created_metrics()  # no *_created series: they double the output and nobody graphs them
TOP_SMDPS = 10  # SM-DP+ labels on eim_fleet_euiccs_by_enabled_smdp at most (then "other")
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """One registry per process (or per app in tests)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.created = Counter("eim_operations_created", "Operations created", ["kind"], registry=r)
        self.finished = Counter("eim_operations_finished", "Operations ended", ["kind", "status"], registry=r)
        self.depth = Gauge(
            "eim_operations", "Operations in the store by kind and status", ["kind", "status"], registry=r
        )
        self.handed = Counter("eim_packages_handed_out", "Packages handed to IPAs", ["kind", "again"], registry=r)
        self.pushed = Counter("eim_packages_pushed", "Packages pushed over MQTT", ["kind"], registry=r)
        self.refused = Counter(
            "eim_results_refused",
            "Results refused, by cause (signature, counter, certificate...)",
            ["cause"],
            registry=r,
        )
        self.forwarded = Counter(
            "eim_notifications_forwarded", "Notifications for SM-DP+s by step (outbox)", ["outcome"], registry=r
        )
        self.notifications_refused = Counter(
            "eim_notifications_refused",
            "Notifications from IPAs not taken for SM-DP+s, by cause",
            ["cause"],
            registry=r,
        )
        self.notification_queue = Gauge(
            "eim_notification_queue", "Notifications in the outbox for SM-DP+s, by status", ["status"], registry=r
        )
        self.esipa = Counter("eim_esipa_requests", "ESipa requests", ["function", "binding", "outcome"], registry=r)
        self.esipa_errors = Counter(
            "eim_esipa_error_answers", "ESipa error answers by code", ["function", "binding", "code"], registry=r
        )
        self.esipa_latency = Histogram(
            "eim_esipa_request_seconds",
            "ESipa request handling time",
            ["function", "binding"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.api = Counter("eim_api_requests", "Operator API requests", ["method", "route", "status"], registry=r)
        self.fleet = Gauge("eim_fleet_euiccs", "Registered eUICCs by contact state", ["state"], registry=r)
        self.deliveries = Counter("eim_event_deliveries", "Webhook delivery attempts", ["outcome"], registry=r)
        self.delivery_queue = Gauge(
            "eim_event_delivery_queue", "Webhook deliveries in the store by status", ["status"], registry=r
        )
        self.stale_after_s = 86400.0  # [fleet] poll_interval_s
        self.fleet_versions = Gauge(
            "eim_fleet_euiccs_by_sgp32_version",
            "Registered eUICCs by SGP.32 version of their IPA",
            ["version"],
            registry=r,
        )
        self.fleet_smdps = Gauge(
            "eim_fleet_euiccs_by_enabled_smdp",
            f"Registered eUICCs by the SM-DP+ of their enabled profile (the {TOP_SMDPS} largest, then other, unknown)",
            ["smdp"],
            registry=r,
        )
        self.failure_ratio = Gauge(
            "eim_operations_failure_ratio_24h",
            "(failed + expired) / (done + failed + expired) of the operations ended in the last 24 h",
            registry=r,
        )
        self.scrape_errors = Counter("eim_metrics_store_errors", "Store reads that failed during a scrape", registry=r)
        for k in OpKind:
            self.created.labels(k.value)
        self._esipa_children: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        # children of the per-operation counters (kinds and statuses are fixed sets), looked up once each
        self._children: dict[tuple[Any, ...], Any] = {}

    # hooks called by the core
    def operation_created(self, kind: str) -> None:
        self.created.labels(kind).inc()

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def operation_finished(self, kind: str, status: str) -> None:
        self._child(self.finished, kind, status).inc()

    def operations_expired(self, n: int) -> None:
        self.finished.labels("any", OpStatus.EXPIRED.value).inc(n)

    def package_handed_out(self, kind: str, again: bool) -> None:
        self._child(self.handed, kind, "true" if again else "false").inc()

    def package_pushed(self, kind: str) -> None:
        self.pushed.labels(kind).inc()

    def result_refused(self, cause: str = "other") -> None:
        from eim.packages.euicc_package import REFUSAL_CAUSES

        self.refused.labels(cause if cause in REFUSAL_CAUSES else "other").inc()

    def notification_forwarded(self, outcome: str) -> None:
        self.forwarded.labels(outcome).inc()

    def notification_refused(self, cause: str) -> None:
        self.notifications_refused.labels(cause).inc()

    def esipa_request(self, function: str, binding: str, outcome: str, seconds: float) -> None:
        binding = binding if binding in ("http", "coap", "mqtt") else "other"
        # the children of a label set, looked up once (``labels()`` costs more than the update; the key set is
        # bounded: functions, 4 bindings and the outcomes are fixed sets)
        children = self._esipa_children.get((function, binding, outcome))
        if children is None:
            children = self._esipa_children[(function, binding, outcome)] = (
                self.esipa.labels(function, binding, outcome),
                self.esipa_latency.labels(function, binding),
            )
        children[0].inc()
        children[1].observe(seconds)

    def esipa_error_answer(self, function: str, binding: str, code: int) -> None:
        binding = binding if binding in ("http", "coap", "mqtt") else "other"
        self.esipa_errors.labels(function, binding, str(code) if 0 <= code <= 127 else "other").inc()

    def api_request(self, method: str, route: str, status: int) -> None:
        self.api.labels(method, route, str(status)).inc()

    def event_delivery(self, outcome: str) -> None:
        self.deliveries.labels(outcome).inc()

    async def refresh_fleet(self, store: Any) -> None:
        """The fleet gauges (index counts, ``eim.store.fleet``), when the store has them."""
        if not hasattr(store, "fleet_counts"):
            return
        try:
            c = await store.fleet_counts(default_interval_s=self.stale_after_s)
        except Exception:
            self.scrape_errors.inc()
            return
        for state in ("registered", "never_seen", "seen_1h", "seen_24h", "stale"):
            self.fleet.labels(state).set(getattr(c, state))
        for status in ("pending", "delivered", "failed"):
            self.delivery_queue.labels(status).set(c.deliveries.get(status, 0))
        versions = getattr(c, "by_sgp32_version", {})
        self.fleet_versions.clear()
        for version, n in sorted(versions.items())[:TOP_SMDPS]:  # a handful of versions; bounded all the same
            self.fleet_versions.labels(version).set(n)
        self.fleet_smdps.clear()
        for smdp, n in bounded_smdps(getattr(c, "by_enabled_smdp", {})).items():
            self.fleet_smdps.labels(smdp).set(n)
        rate = getattr(c, "failure_rate_24h", None)
        self.failure_ratio.set(rate if rate is not None else float("nan"))  # NaN: nothing ended in 24 h

    async def refresh(self, store: Any) -> None:
        """Read the queue gauges from the store (called before each scrape)."""
        try:
            counts = await store.count_operations_by_status()
        except Exception:
            self.scrape_errors.inc()
            return
        for k in OpKind:
            for s in OpStatus:
                self.depth.labels(k.value, s.value).set(counts.get((k.value, s.value), 0))
        try:
            queued = await store.count_notifications_by_status()
        except Exception:
            self.scrape_errors.inc()
            return
        for n in NotificationStatus:
            self.notification_queue.labels(n.value).set(queued.get(n.value, 0))
        await self.refresh_fleet(store)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def bounded_smdps(by_smdp: dict[str, int], top: int | None = None) -> dict[str, int]:
    """The ``top`` largest SM-DP+ counts by name, the rest summed as ``other`` (``unknown`` kept as it is): the
    gauge's label set stays bounded whatever the fleet holds."""
    top = TOP_SMDPS if top is None else top
    known = sorted(((n, k) for k, n in by_smdp.items() if k != "unknown"), key=lambda x: (-x[0], x[1]))
    out = {k: n for n, k in known[:top]}
    rest = sum(n for n, _k in known[top:])
    if rest:
        out["other"] = out.get("other", 0) + rest
    if "unknown" in by_smdp:
        out["unknown"] = by_smdp["unknown"]
    return out


def now() -> float:
    return time.perf_counter()
