"""The eIM's ES9+ relay for indirect profile downloads (SGP.32 v1.2 §3.2.3; protocol brief §6).

- :class:`~eim.relay.relay.Es9Relay`: implements :class:`eim.interfaces.DownloadRelay` over a
  :class:`eim.interfaces.RelayStore`;
- :class:`~eim.relay.es9plus_client.Es9PlusClient` and :func:`~eim.relay.es9plus_client.tls_context`: the ES9+
  JSON client over verified HTTPS;
- one module per relayed function with its mapping and error-code table: ``initiate_authentication``,
  ``authenticate_client``, ``get_bound_profile_package``, ``cancel_session``, ``handle_notification``;
- :class:`~eim.relay.outbox.NotificationOutbox`: the durable queue of notifications owed to SM-DP+s
  (:class:`eim.interfaces.NotificationQueue`) and its forwarder (leases, retries with backoff, failed with reason).
"""

from eim.relay.errors import (
    Es9BadResponse,
    Es9Failed,
    Es9Unreachable,
    InvalidSmdpAddress,
    NotForwardable,
    RelayError,
)
from eim.relay.es9plus_client import Es9PlusClient, check_address, tls_context
from eim.relay.relay import Es9Relay, session_key

__all__ = [
    "Es9BadResponse",
    "Es9Failed",
    "Es9PlusClient",
    "Es9Relay",
    "Es9Unreachable",
    "InvalidSmdpAddress",
    "NotForwardable",
    "RelayError",
    "check_address",
    "session_key",
    "tls_context",
]
