"""ESipa over MQTT v5 (SGP.32 v1.2 leaves this to the "proprietary" protocol bits; the layout is ours).

Topics (``prefix`` = ``esipa``):

* ``esipa/{EID}/up`` - the IPA publishes one DER ``EsipaMessageFromIpaToEim`` per message (QoS 1), with the MQTT v5
  *Response Topic* ``esipa/{EID}/down`` and *Correlation Data* of its choice.
* ``$share/eim/esipa/+/up`` - every eIM worker subscribes here: the broker hands each request to exactly one
  worker of the group ``eim`` (MQTT v5 shared subscription), so workers share the load.
* ``esipa/{EID}/down`` - the answer, QoS 1, with the request's Correlation Data and Content Type
  ``application/x-gsma-rsp-asn1``; an empty payload when the function has no answer (HandleNotification).
  Pushed ``TransferEimPackageRequest`` (BF4E) messages come here too, QoS 1 without Correlation Data; a device
  with a persistent session (clean_start=False, session expiry > 0) gets them when it wakes up.

A request published without a Response Topic (the IPA's TransferEimPackageResponse to a push) expects no
answer: it gets one only when the handler returns an ESipa message (then on ``esipa/{EID}/down``); empty
answers and errors are not published.

Error answers (no ESipa answer possible) carry Content Type ``text/plain; charset=utf-8``, the reason as payload
and the user property ``esipa-status`` = the HTTP-like status (400 rejected, 413 too large, 500 internal error,
503 try again later).

The Response Topic must lie in the requesting device's own namespace (``esipa/{EID}/...``); any other value is
ignored and the answer goes to ``esipa/{EID}/down``, so a device cannot make the eIM publish into another device's
topics. The EID of the topic (which the broker ACL ties to the device's credentials, see
``deploy/mosquitto/``) is passed to the dispatcher as ``RequestContext.eid_hint``.

Performance (``performance.md``): TCP_NODELAY on the socket (and ``set_tcp_nodelay true`` in Mosquitto), the
answer is never awaited inside the message loop (each request runs in its own task, at most ``max_concurrency``
at once), aiomqtt's pending-call warning threshold and paho's in-flight window are raised for a server. An answer
goes to paho without waiting for its PUBACK; the answers not acknowledged yet are bounded by ``max_unacknowledged``
(past it an answer is refused and logged).

The connection is re-established with exponential backoff (``reconnect_min`` .. ``reconnect_max``, jittered)
whenever it drops, e.g. when the broker restarts; the shared subscription is renewed on every connect. Worker
sessions are clean (no broker-side queue for a dead worker); requests published while no worker is connected
are lost and the IPA repeats them after its timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import socket
from typing import Any

from eim.bindings import ESIPA_CONTENT_TYPE
from eim.interfaces import EsipaHandler, EsipaRejected, RequestContext
from eim.logs import RateLimitedLog
from rsp.errors import RspError

log = logging.getLogger("eim.esipa.mqtt")
# a broker that stops acknowledging makes every answer fail the same way: one line per cause and minute
_UNDELIVERED = RateLimitedLog(log, 60.0)

DEFAULT_MAX_BODY = 256 * 1024
_EID = re.compile(r"[0-9A-Fa-f]{32}")
_TEXT = "text/plain; charset=utf-8"


_PAHO_CLIENT: list[type] = []  # paho's Client class, imported on first use (the binding imports paho lazily)


def _paho_client() -> type:
    if not _PAHO_CLIENT:
        from paho.mqtt.client import Client

        _PAHO_CLIENT.append(Client)
    return _PAHO_CLIENT[0]


class PushFailed(Exception):
    """A TransferEimPackageRequest could not be handed to the broker (not connected, ``max_unacknowledged`` messages
    already waiting for their PUBACK, or no PUBACK in time)."""


def is_eid(value: str) -> bool:
    return bool(_EID.fullmatch(value))


def topic_identity(prefix: str, topic: str, response_topic: str | None) -> tuple[str | None, str]:
    """``(EID, answer topic)`` of a request published to ``topic`` (``{prefix}/{EID}/up``).

    The EID is the topic's EID segment (upper case), ``None`` when that segment is not 32 hex digits; it is what
    the broker ACL tied to the device's credentials, so it becomes ``RequestContext.eid_hint``. The answer goes to
    ``response_topic`` only when that lies in the same device's namespace (``{prefix}/{segment}/...``, no
    wildcard); otherwise to ``{prefix}/{segment}/down``."""
    parts = topic.split("/")
    segment = parts[-2] if len(parts) >= 3 else ""
    eid = segment.upper() if is_eid(segment) else None
    own = f"{prefix}/{segment}/"
    if not response_topic or not response_topic.startswith(own) or "+" in response_topic or "#" in response_topic:
        response_topic = f"{prefix}/{segment}/down"
    return eid, response_topic


class MqttBinding:
    """One eIM worker's MQTT connection: answers ESipa requests and pushes packages (:class:`PackagePusher`)."""

    def __init__(
        self,
        handler: EsipaHandler,
        host: str = "127.0.0.1",
        port: int = 1883,
        *,
        client_id: str,
        shared_group: str = "eim",
        prefix: str = "esipa",
        username: str | None = None,
        password: str | None = None,
        tls_context: Any = None,
        keepalive: int = 30,
        max_concurrency: int = 256,
        max_body_size: int = DEFAULT_MAX_BODY,
        reconnect_min: float = 0.2,
        reconnect_max: float = 30.0,
        push_timeout: float = 10.0,
        push_expiry: int | None = None,
        max_unacknowledged: int | None = None,
    ) -> None:
        if "/" in shared_group or "+" in shared_group or "#" in shared_group or not shared_group:
            raise ValueError("shared_group must be one topic level without wildcards")
        self.handler = handler
        self.host = host
        self.port = port
        self.client_id = client_id
        self.shared_group = shared_group
        self.prefix = prefix
        self.username = username
        self.password = password
        self.tls_context = tls_context
        self.keepalive = keepalive
        self.max_concurrency = max_concurrency
        self.max_body_size = max_body_size
        self.reconnect_min = reconnect_min
        self.reconnect_max = reconnect_max
        self.push_timeout = push_timeout
        self.push_expiry = push_expiry
        # answers and pushes the broker has not acknowledged yet (PUBACK), in paho's in-flight window or queued
        # behind it: past this many an answer is refused (counted in ``undelivered``, logged once a minute) and a
        # push raises PushFailed, so a broker that stops acknowledging costs lost answers (the IPA repeats its
        # request) and failed pushes (the device polls), not memory
        self.max_unacknowledged = max_unacknowledged or 10 * max_concurrency + 1000
        self.subscription = f"$share/{shared_group}/{prefix}/+/up"
        self.connects = 0  # successful connections so far (observability, tests)
        self.undelivered = 0  # answers refused by paho (not connected, max_unacknowledged reached) or not acknowledged
        self._client: Any = None
        self._ready = asyncio.Event()
        self._stopping = False
        self._runner: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(max_concurrency)

    # ------------------------------------------------------------------ life cycle
    async def start(self, *, wait: float | None = 10.0) -> None:
        """Start the connection loop; wait up to ``wait`` seconds for the first subscription (``None``: don't).

        A broker that is not there yet is not an error: the loop keeps trying with backoff and a warning is logged.
        """
        if self._runner is not None:
            return
        self._stopping = False
        self._runner = asyncio.create_task(self._run(), name=f"mqtt-esipa-{self.client_id}")
        if wait:
            try:
                await asyncio.wait_for(self._ready.wait(), wait)
            except TimeoutError:
                log.warning("MQTT broker not reachable yet, still trying", extra={"host": self.host, "port": self.port})

    async def wait_ready(self, within: float = 10.0) -> None:
        """Wait until connected and subscribed (raises ``TimeoutError`` after ``within`` seconds)."""
        await asyncio.wait_for(self._ready.wait(), within)

    @property
    def connected(self) -> bool:
        return self._ready.is_set()

    async def stop(self, *, grace: float = 5.0) -> None:
        """Stop taking requests, let running ones answer for up to ``grace`` seconds, then disconnect."""
        self._stopping = True
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace)
        for task in list(self._tasks):
            task.cancel()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        self._ready.clear()

    async def __aenter__(self) -> MqttBinding:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _make_client(self) -> Any:
        import aiomqtt
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        connect = Properties(PacketTypes.CONNECT)
        connect.SessionExpiryInterval = 0
        client = aiomqtt.Client(
            self.host,
            self.port,
            identifier=self.client_id,
            username=self.username,
            password=self.password,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=True,
            keepalive=self.keepalive,
            properties=connect,
            tls_context=self.tls_context,
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
            max_inflight_messages=max(20, self.max_concurrency),
            max_queued_incoming_messages=10 * self.max_concurrency + 1000,
            max_queued_outgoing_messages=self.max_unacknowledged,
            timeout=10,
        )
        client.pending_calls_threshold = 10 * self.max_concurrency + 1000
        return client

    async def _run(self) -> None:
        import aiomqtt

        delay = self.reconnect_min
        while not self._stopping:
            client = self._make_client()
            try:
                async with client:
                    await client.subscribe(self.subscription, qos=1)
                    self._client = client
                    self.connects += 1
                    self._ready.set()
                    delay = self.reconnect_min
                    log.info(
                        "MQTT ESipa binding subscribed",
                        extra={"subscription": self.subscription, "client_id": self.client_id},
                    )
                    async for message in client.messages:
                        await self._slots.acquire()
                        task = asyncio.create_task(self._serve(client, message))
                        self._tasks.add(task)
                        task.add_done_callback(self._done)
            except aiomqtt.MqttError as exc:
                if self._stopping:
                    break
                log.warning("MQTT connection lost, reconnecting", extra={"error": str(exc), "delay": delay})
            finally:
                self._client = None
                self._ready.clear()
            if self._stopping:
                break
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, self.reconnect_max)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()
        if not task.cancelled() and task.exception() is not None:
            log.error("MQTT ESipa task failed", exc_info=task.exception())

    # ------------------------------------------------------------------ requests
    async def _serve(self, client: Any, message: Any) -> None:
        import aiomqtt

        from eim.bindings.mqtt_properties import ReplyProperties

        topic = message.topic.value
        props = message.properties
        asked_topic = getattr(props, "ResponseTopic", None) if props is not None else None
        correlation = getattr(props, "CorrelationData", None) if props is not None else None
        asked = bool(asked_topic)
        eid, response_topic = topic_identity(self.prefix, topic, asked_topic)
        if asked_topic and response_topic != asked_topic:
            log.warning("response topic outside the device's namespace ignored", extra={"topic": topic})
        payload = message.payload
        if not isinstance(payload, bytes):
            payload = bytes(payload) if isinstance(payload, bytearray) else str(payload or "").encode()

        reply = ReplyProperties()
        if correlation is not None:
            reply.set_correlation_data(correlation)
        answer: bytes
        failed = True
        if len(payload) > self.max_body_size:
            answer = self._error(reply, 413, f"request over {self.max_body_size} bytes")
        else:
            try:
                result = await self.handler.handle(
                    payload, RequestContext("mqtt", peer=topic, eid_hint=eid, auth="mqtt-acl")
                )
                reply.set_content_type(ESIPA_CONTENT_TYPE)
                answer = result if result is not None else b""
                failed = False
            except EsipaRejected as exc:
                status = exc.http_status if 400 <= exc.http_status < 500 or exc.http_status == 503 else 400
                log.info("ESipa request rejected", extra={"topic": topic, "reason": exc.message})
                answer = self._error(reply, status, exc.message)
            except RspError as exc:
                log.warning("ESipa request undecodable", extra={"topic": topic, "reason": str(exc)})
                answer = self._error(reply, 400, f"undecodable ESipa message: {exc}")
            except Exception:
                log.exception("ESipa handler failed", extra={"topic": topic})
                answer = self._error(reply, 500, "internal error")
        if not asked and (failed or not answer):
            return  # no Response Topic: the sender expects no answer (e.g. a TransferEimPackageResponse)
        paho = getattr(client, "_client", None)
        if isinstance(paho, _paho_client()):
            # Handed to paho without waiting for the broker's PUBACK: paho keeps the QoS 1 exchange (its in-flight
            # window, then its bounded outgoing queue), and aiomqtt's wait for the PUBACK (a future, a timeout and a
            # scan of every pending call per answer) cost ~10 % of a request's CPU (docs/performance.md, section 0).
            # Without aiomqtt's private paho client (another aiomqtt version), the answer is awaited as before.
            rc = paho.publish(response_topic, answer, 1, False, reply).rc
            if rc != 0:
                self.undelivered += 1
                _UNDELIVERED.warning(f"paho rc {rc}", "MQTT answer not delivered", {"topic": response_topic})
            return
        try:
            await client.publish(response_topic, answer, qos=1, properties=reply)
        except aiomqtt.MqttError as exc:
            self.undelivered += 1
            _UNDELIVERED.warning(type(exc).__name__, "MQTT answer not delivered", {"topic": response_topic})

    @staticmethod
    def _error(reply: Any, status: int, message: str) -> bytes:
        reply.ContentType = _TEXT
        reply.UserProperty = [("esipa-status", str(status))]
        return message.encode()

    # ------------------------------------------------------------------ push (PackagePusher)
    async def push(self, eid: str, transfer_eim_package_request: bytes, *, expiry: int | None = None) -> None:
        """Publish a DER ``TransferEimPackageRequest`` (BF4E) to ``esipa/{EID}/down``, QoS 1.

        Returns once the broker acknowledged it (PUBACK); the broker keeps it for a device with a persistent
        session until the device connects. ``expiry`` (seconds, default ``push_expiry``) sets the MQTT Message
        Expiry Interval. Raises :class:`PushFailed` when not connected within ``push_timeout`` or not acknowledged.
        """
        import aiomqtt
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        if not is_eid(eid):
            raise ValueError(f"not an EID: {eid!r}")
        try:
            await asyncio.wait_for(self._ready.wait(), self.push_timeout)
        except TimeoutError:
            raise PushFailed(f"push to {eid}: not connected to the MQTT broker") from None
        client = self._client
        if client is None:
            raise PushFailed(f"push to {eid}: not connected to the MQTT broker")
        props = Properties(PacketTypes.PUBLISH)
        props.ContentType = ESIPA_CONTENT_TYPE
        lifetime = expiry if expiry is not None else self.push_expiry
        if lifetime is not None:
            props.MessageExpiryInterval = int(lifetime)
        try:
            await client.publish(
                f"{self.prefix}/{eid.upper()}/down",
                transfer_eim_package_request,
                qos=1,
                properties=props,
                timeout=self.push_timeout,
            )
        except aiomqtt.MqttError as exc:
            raise PushFailed(f"push to {eid}: {exc}") from exc
