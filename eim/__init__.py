"""The eIM (SGP.32 v1.2 eSIM IoT remote Manager): the fleet-side server.

Layout: :mod:`eim.interfaces` (contracts with the bindings and the relay), :mod:`eim.model` (records),
:mod:`eim.store` (SQLite / PostgreSQL), :mod:`eim.operations` (the work queue), :mod:`eim.packages` (one module per
package kind), :mod:`eim.esipa` (the dispatcher, one module per ESipa function), :mod:`eim.bindings` (HTTP, CoAP,
MQTT), :mod:`eim.relay` (ES9+ for indirect downloads), :mod:`eim.api` (REST), :mod:`eim.app` / :mod:`eim.serve`
(wiring, ``eim serve``), :mod:`eim.cli`. Operator guide: ``docs/eim.md``.
"""
