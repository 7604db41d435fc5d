"""ESipa over MQTT v5 (this project's "proprietary" binding, architecture doc "Wire conventions").

- Requests: the IPA publishes the DER ``EsipaMessageFromIpaToEim`` to ``esipa/{EID}/up`` (QoS 1) with MQTT v5
  Response Topic ``esipa/{EID}/down`` and random Correlation Data; the eIM answers on the down topic with the same
  correlation data. HandleNotification has no ESipa answer: the IPA waits ``notification_wait`` seconds for an
  optional (empty) answer and otherwise counts the broker's PUBACK as delivery.
- Push: the eIM publishes a ``TransferEimPackageRequest`` (BF4E) to the down topic at QoS 1. The session is
  persistent (clean start off, session expiry set), so a device that was offline receives it when it reconnects.
  The IPA answers with a ``TransferEimPackageResponse`` on the up topic, echoing the push's correlation data.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from collections.abc import AsyncIterator

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ipa.esipa import EsipaError, PushedPackage, step_of

log = logging.getLogger("ipa.esipa.mqtt")


class MqttTransport:
    binding = "mqtt"

    def __init__(
        self,
        *,
        host: str,
        port: int,
        eid: bytes,
        client_id: str,
        topic_prefix: str = "esipa",
        tls: ssl.SSLContext | bool | None = None,
        username: str | None = None,
        password: str | None = None,
        keepalive: int = 60,
        session_expiry: int = 7 * 24 * 3600,
        timeout: float = 30.0,
        notification_wait: float = 5.0,
    ) -> None:
        eid_hex = eid.hex().upper()
        self.up = f"{topic_prefix}/{eid_hex}/up"
        self.down = f"{topic_prefix}/{eid_hex}/down"
        self.host, self.port = host, port
        self.client_id = client_id
        self.timeout = timeout
        self.notification_wait = notification_wait
        self._tls = tls
        self._username, self._password = username, password
        self._keepalive = keepalive
        self._session_expiry = session_expiry
        self._client: aiomqtt.Client | None = None
        self._reader: asyncio.Task | None = None
        self._waiting: dict[bytes, asyncio.Future[bytes]] = {}
        self._pushes: asyncio.Queue[PushedPackage] = asyncio.Queue()
        self._lock = asyncio.Lock()

    # ------------------------------------------------------------------ connection
    def _make_client(self) -> aiomqtt.Client:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self._session_expiry
        tls_ctx = None
        if self._tls is False:
            tls_ctx = ssl.create_default_context()
            tls_ctx.check_hostname = False
            tls_ctx.verify_mode = ssl.CERT_NONE
        elif isinstance(self._tls, ssl.SSLContext):
            tls_ctx = self._tls
        return aiomqtt.Client(
            self.host,
            self.port,
            identifier=self.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,
            properties=props,
            tls_context=tls_ctx,
            username=self._username,
            password=self._password,
            keepalive=self._keepalive,
            timeout=self.timeout,
        )

    async def start(self) -> None:
        async with self._lock:
            if self._client is not None:
                return
            client = self._make_client()
            try:
                await client.__aenter__()
                await client.subscribe(self.down, qos=1)
            except aiomqtt.MqttError as exc:
                with contextlib.suppress(Exception):
                    await client.__aexit__(None, None, None)
                raise EsipaError("MQTT connect", f"{exc} ({self.host}:{self.port})") from None
            self._client = client
            self._reader = asyncio.create_task(self._read(client), name="ipa-mqtt-reader")
            log.info(
                "MQTT connected to %s:%d as %s (persistent session), down topic %s",
                self.host,
                self.port,
                self.client_id,
                self.down,
            )

    async def _read(self, client: aiomqtt.Client) -> None:
        try:
            async for msg in client.messages:
                payload = bytes(msg.payload) if isinstance(msg.payload, bytes | bytearray) else b""
                props = msg.properties
                corr = getattr(props, "CorrelationData", None) if props is not None else None
                corr = bytes(corr) if corr else None
                fut = self._waiting.pop(corr, None) if corr else None
                if fut is not None:
                    if not fut.done():
                        fut.set_result(payload)
                    continue
                if payload[:2] == b"\xbf\x4e":
                    reply_to = getattr(props, "ResponseTopic", None) if props is not None else None
                    log.info("pushed TransferEimPackageRequest (%d bytes)", len(payload))
                    await self._pushes.put(PushedPackage(payload, reply_to, corr))
                    continue
                log.warning(
                    "dropping an unexpected %d-byte message on %s (no matching request)", len(payload), msg.topic
                )
        except aiomqtt.MqttError as exc:
            log.warning("MQTT connection lost: %s", exc)
            with contextlib.suppress(Exception):  # collect the client's disconnect error, free its resources
                await client.__aexit__(None, None, None)
        finally:
            if self._client is client:
                self._client = None
            for fut in self._waiting.values():
                if not fut.done():
                    fut.set_exception(EsipaError("MQTT", "connection lost while waiting for the answer"))
            self._waiting.clear()

    async def _publish(
        self, step: str, payload: bytes, properties: Properties | None, topic: str | None = None
    ) -> None:
        if self._client is None:
            await self.start()
        assert self._client is not None
        try:
            await self._client.publish(topic or self.up, payload, qos=1, properties=properties, timeout=self.timeout)
        except aiomqtt.MqttError as exc:
            raise EsipaError(step, f"publish failed: {exc}") from None

    # ------------------------------------------------------------------ EsipaTransport
    async def send(self, message_der: bytes) -> bytes | None:
        step = step_of(message_der)
        corr = os.urandom(16)
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = self.down
        props.CorrelationData = corr
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting[corr] = fut
        try:
            await self._publish(step, message_der, props)
            notification = message_der[:2] == b"\xbf\x3d"
            wait = self.notification_wait if notification else self.timeout
            try:
                answer = await asyncio.wait_for(fut, wait)
            except TimeoutError:
                if notification:
                    return None  # delivered to the broker (PUBACK); the eIM sends no answer
                raise EsipaError(step, f"no answer on {self.down} within {wait:.0f} s") from None
        finally:
            self._waiting.pop(corr, None)
        return answer or None

    async def close(self) -> None:
        client, self._client = self._client, None  # taken first: the reader forgets it when it ends
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
            self._reader = None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.__aexit__(None, None, None)

    # ------------------------------------------------------------------ push
    async def pushed(self) -> AsyncIterator[PushedPackage]:
        while True:
            yield await self._pushes.get()

    async def next_push(self, timeout: float | None = None) -> PushedPackage | None:  # noqa: ASYNC109
        try:
            return await asyncio.wait_for(self._pushes.get(), timeout)
        except TimeoutError:
            return None

    def push_pending(self) -> bool:
        return not self._pushes.empty()

    async def answer_push(self, push: PushedPackage, response_der: bytes) -> None:
        props = None
        if push.correlation:
            props = Properties(PacketTypes.PUBLISH)
            props.CorrelationData = push.correlation
        await self._publish("TransferEimPackage", response_der, props, topic=self.up)
