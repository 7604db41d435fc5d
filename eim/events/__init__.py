"""Events for the operator's systems: webhook subscriptions (``/v1/subscriptions``), the feed that turns the audit
trail into events (:mod:`eim.events.catalog`), signed deliveries with retries from a durable queue
(:mod:`eim.events.deliverer`), and the checks on subscriber URLs (:mod:`eim.events.webhook_url`).
See docs/eim.md "Events (webhooks)"."""
