"""ESipa over MQTT v5 (this project's "proprietary" binding, architecture doc "Wire conventions").

- Requests: the IPA publishes the DER ``EsipaMessageFromIpaToEim`` to ``esipa/{EID}/up`` (QoS 1) with MQTT v5
  Response Topic ``esipa/{EID}/down`` and random Correlation Data; the eIM answers on the down topic with the same
  correlation data. HandleNotification has no ESipa answer: the IPA waits ``notification_wait`` seconds for an
  optional (empty) answer and otherwise counts the broker's PUBACK as delivery - unless the PUBACK said that nobody
  subscribes to the up topic (then it was not delivered).
- Answers the eIM could not give as ESipa (``Content-Type: text/plain`` with the user property ``esipa-status``,
  e.g. 400 rejected, 500 internal error) raise :class:`EsipaError` with that status, like an HTTP error status.
- Push: the eIM publishes a ``TransferEimPackageRequest`` (BF4E) to the down topic at QoS 1. The session is
  persistent (clean start off, session expiry set), so a device that was offline receives it when it reconnects.
  The IPA answers with a ``TransferEimPackageResponse`` on the up topic, echoing the push's correlation data.
  A connection that drops while the IPA is idle is re-established in the background (0.2 s doubling to 30 s,
  jittered), so the subscription to the down topic - lost with a broker restarted without persistence - is back
  for the next push without waiting for the next poll.

Retransmission (a broker restarted without persistence forgets every queued message, every session and every
subscription; the eIM's workers re-subscribe ``$share/eim/esipa/+/up`` only after they reconnected, and what is
published before that reaches nobody). Until its answer arrives or ``eim.timeout`` ends, a pending request is
published again - always with the same correlation data, so whichever copy is answered first completes the
request and later answers are ignored:

1. when the broker's PUBACK says ``No matching subscribers`` (reason code 16): no eIM got the copy, so another one
   is published after ``retransmit_interval`` (doubling up to ``retransmit_max_interval``, +0-25 % jitter), for every
   function;
2. when the connection was lost while the request was pending: the IPA reconnects (0.2 s doubling to 5 s between
   attempts) and publishes the request again at once (the copy, or the eIM's answer to it, may have died with the
   broker; when the broker kept the session, a queued answer comes first and the new copy's answer is ignored);
3. when no answer came within the same intervals, for GetEimPackage and ProvideEimPackageResult only (the
   functions the eIM handles the same way however often it gets them, below). ``retransmit_interval = 0`` turns
   1 and 3 off.

Why each request is safe to receive twice at the eIM (``eim/esipa/``), so a copy that did arrive does no harm:

- GetEimPackage (BF4F, cases 1-3): the eIM hands out the head of the eUICC's queue, and the same bytes again
  while its result has not come (``get_eim_package``, the store's ``claim_next``); a repeated
  ``notifyStateChange`` rewrites the same ``lastStateChange``. The IPA runs only the package of the answer it
  matched. A copy answered after the IPA moved on can hand out a package the IPA never sees: that operation is
  handed out again, same bytes, at the next poll (its attempt count is one higher).
- ProvideEimPackageResult (BF50, cases 1-3): results are deduplicated - the store records a result only for an
  operation in progress (``record_result``: a replay of a done or failed operation changes nothing), and a replay
  of an accepted EuiccPackageResult is acknowledged again (``eim.esipa.results``), as the IPA must be able to
  resend after a lost answer over any binding. ipaEuiccDataResponse, profileDownloadTriggerResult and
  eimPackageResultResponseError go through the same ``record_result``.
- HandleNotification (BF3D, cases 1-2): a PIR closes its download operation once (``record_result`` ignores the
  replay); the notification goes to the eIM's outbox for its SM-DP+, which holds the same bytes once while they
  wait there (``eim.relay.outbox``); a copy arriving after the SM-DP+ took the first is forwarded once more - the
  repeat any IPA makes after a lost answer, which an SM-DP+ accepts (the lab SM-DP+ records it again, answers 204).
- InitiateAuthentication, AuthenticateClient, GetBoundProfilePackage, CancelSession (indirect download, relayed
  to the SM-DP+, cases 1-2 only): the SM-DP+ moves its session on with each call, so these are never repeated
  while an eIM may still be working on them. A copy after ``No matching subscribers`` reached nobody. After a
  reconnect the first copy may have been processed and its answer lost: a second InitiateAuthentication opens a
  second SM-DP+ session that is never used (the eIM links the download to whichever it processed last and finds
  the operation by EID for the PIR); a second AuthenticateClient / GetBoundProfilePackage / CancelSession is
  refused by the SM-DP+ (the session has moved on), so the IPA gets that function's error instead of a timeout
  and cancels the download as it would have anyway - no result is lost or doubled.
- TransferEimPackageResponse (the answer to a push) is published once, never repeated (the eIM pushes a package
  again while its result is missing).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import logging
import os
import random
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from ipa.esipa import EsipaError, PushedPackage, step_of

log = logging.getLogger("ipa.esipa.mqtt")

NO_MATCHING_SUBSCRIBERS = 16  # MQTT v5 PUBACK reason code 0x10
RECONNECT_FIRST = 0.2  # seconds before the first reconnect attempt within a request; doubles ...
RECONNECT_MAX = 5.0  # ... up to this
IDLE_RECONNECT_MAX = 30.0  # an idle connection that dropped is re-established in the background, backing off to this
# functions the eIM handles the same however often it gets them: repeated on a timer too (module docstring)
REPEAT_ON_TIMER = (b"\xbf\x4f", b"\xbf\x50")  # GetEimPackage, ProvideEimPackageResult
HANDLE_NOTIFICATION = b"\xbf\x3d"

# set around one publish: the paho MQTTMessageInfo of that publish lands here (to read its PUBACK reason code)
_PUBLISH_INFO: contextvars.ContextVar[list[Any] | None] = contextvars.ContextVar("ipa_mqtt_publish", default=None)


class _Client(aiomqtt.Client):
    """aiomqtt's client, keeping the PUBACK reason code of each QoS 1 publish (aiomqtt drops it).

    If a later aiomqtt stops calling ``_on_publish`` the codes are simply unknown (``None``), and the transport
    falls back to treating every PUBACK as "delivered to a subscriber"."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.puback: dict[int, int] = {}
        paho = self._client
        publish = paho.publish

        def publish_and_record(*a: Any, **kw: Any) -> Any:
            info = publish(*a, **kw)
            holder = _PUBLISH_INFO.get()
            if holder is not None:
                holder.append(info)
            return info

        paho.publish = publish_and_record  # type: ignore[method-assign]

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        value = getattr(reason_code, "value", reason_code)
        if isinstance(value, int):
            self.puback[mid] = value
        super()._on_publish(client, userdata, mid, reason_code, properties)


@dataclass(frozen=True)
class _Answer:
    payload: bytes
    status: str | None = None  # the eIM's esipa-status user property on a text/plain error answer


class _ConnectionLost(Exception):
    """The connection ended while a copy was being published (or the broker could not be reached)."""


@dataclass
class _Connection:
    client: _Client
    lost: asyncio.Event
    reader: asyncio.Task[None] | None = None


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
        retransmit_interval: float = 2.0,
        retransmit_max_interval: float = 8.0,
    ) -> None:
        eid_hex = eid.hex().upper()
        self.up = f"{topic_prefix}/{eid_hex}/up"
        self.down = f"{topic_prefix}/{eid_hex}/down"
        self.host, self.port = host, port
        self.client_id = client_id
        self.timeout = timeout
        self.notification_wait = notification_wait
        self.retransmit_interval = retransmit_interval
        self.retransmit_max_interval = max(retransmit_max_interval, retransmit_interval)
        self._tls = tls
        self._username, self._password = username, password
        self._keepalive = keepalive
        self._session_expiry = session_expiry
        self._conn: _Connection | None = None
        self._waiting: dict[bytes, asyncio.Future[_Answer]] = {}
        self._finished: collections.deque[bytes] = collections.deque(maxlen=64)  # correlation data of past requests
        self._pushes: asyncio.Queue[PushedPackage] = asyncio.Queue()
        self._lock = asyncio.Lock()
        self._closing = False
        self._reconnector: asyncio.Task[None] | None = None
        self.connects = 0  # successful connections (observability, tests)
        self.copies_sent = 0  # request copies published, first copies included
        self.duplicate_answers = 0  # answers to a request that was already answered (ignored)

    # ------------------------------------------------------------------ connection
    def _make_client(self) -> _Client:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self._session_expiry
        tls_ctx = None
        if self._tls is False:
            tls_ctx = ssl.create_default_context()
            tls_ctx.check_hostname = False
            tls_ctx.verify_mode = ssl.CERT_NONE
        elif isinstance(self._tls, ssl.SSLContext):
            tls_ctx = self._tls
        return _Client(
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

    @property
    def connected(self) -> bool:
        return self._conn is not None

    async def start(self) -> None:
        self._closing = False
        await self._connect()

    async def _connect(self) -> _Connection:
        async with self._lock:
            if self._conn is not None:
                return self._conn
            client = self._make_client()
            try:
                await client.__aenter__()
                await client.subscribe(self.down, qos=1)
            except aiomqtt.MqttError as exc:
                with contextlib.suppress(Exception):
                    await client.__aexit__(None, None, None)
                refused = _refusal(exc)
                raise EsipaError("MQTT connect", f"{exc} ({self.host}:{self.port})", refused) from None
            conn = _Connection(client, asyncio.Event())
            conn.reader = asyncio.create_task(self._read(conn), name="ipa-mqtt-reader")
            self._conn = conn
            self.connects += 1
            log.info(
                "MQTT %s to %s:%d as %s (persistent session), down topic %s",
                "connected" if self.connects == 1 else "reconnected",
                self.host,
                self.port,
                self.client_id,
                self.down,
            )
            return conn

    async def _read(self, conn: _Connection) -> None:
        try:
            async for msg in conn.client.messages:
                self._dispatch(msg)
        except aiomqtt.MqttError as exc:
            log.warning("MQTT connection lost: %s", exc)
        finally:
            if self._conn is conn:
                self._conn = None
            conn.lost.set()  # wakes the requests waiting on this connection: they reconnect and publish again
        if not self._closing and (self._reconnector is None or self._reconnector.done()):
            self._reconnector = asyncio.create_task(self._reconnect_idle(), name="ipa-mqtt-reconnect")
        with contextlib.suppress(Exception):  # free the client's resources
            await conn.client.__aexit__(None, None, None)
        _collect_disconnect_error(conn.client)

    async def _reconnect_idle(self) -> None:
        """Re-establish a connection that dropped, even with no request pending: the subscription to the down topic
        (gone with a broker restarted without persistence) is renewed, so pushed packages arrive again."""
        delay = RECONNECT_FIRST
        while not self._closing and self._conn is None:
            await asyncio.sleep(delay * random.uniform(1.0, 1.5))
            if self._closing or self._conn is not None:
                return
            try:
                await self._connect()
            except EsipaError as exc:
                log.debug("MQTT reconnect failed, next attempt in up to %.0f s: %s", delay * 2, exc)
                delay = min(delay * 2, IDLE_RECONNECT_MAX)

    def _dispatch(self, msg: aiomqtt.Message) -> None:
        payload = bytes(msg.payload) if isinstance(msg.payload, bytes | bytearray) else b""
        props = msg.properties
        corr = getattr(props, "CorrelationData", None) if props is not None else None
        corr = bytes(corr) if corr else None
        if corr:
            fut = self._waiting.get(corr)
            if fut is not None and not fut.done():
                fut.set_result(_Answer(payload, _error_status(props)))
                return
            if fut is not None or corr in self._finished:
                self.duplicate_answers += 1
                log.debug("ignoring another answer to an answered request (%d bytes)", len(payload))
                return
        if payload[:2] == b"\xbf\x4e":
            reply_to = getattr(props, "ResponseTopic", None) if props is not None else None
            log.info("pushed TransferEimPackageRequest (%d bytes)", len(payload))
            self._pushes.put_nowait(PushedPackage(payload, reply_to, corr))
            return
        log.warning("dropping an unexpected %d-byte message on %s (no matching request)", len(payload), msg.topic)

    async def _publish_on(
        self, conn: _Connection, topic: str, payload: bytes, properties: Properties | None, within: float
    ) -> int | None:
        """Publish one copy on ``conn``; returns the PUBACK reason code (``None`` when unknown). Raises
        :class:`_ConnectionLost` when the connection ends first or the publish fails."""
        holder: list[Any] = []
        token = _PUBLISH_INFO.set(holder)
        try:
            pub = asyncio.ensure_future(
                conn.client.publish(topic, payload, qos=1, properties=properties, timeout=max(within, 0.1))
            )
        finally:
            _PUBLISH_INFO.reset(token)
        lost = asyncio.ensure_future(conn.lost.wait())
        try:
            await asyncio.wait({pub, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
            if not pub.done():
                pub.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pub
        if pub.cancelled():
            raise _ConnectionLost("the connection ended before the broker acknowledged the publish")
        exc = pub.exception()
        if exc is not None:
            raise _ConnectionLost(f"publish failed: {exc}")
        self.copies_sent += 1
        return conn.client.puback.pop(holder[0].mid, None) if holder else None

    # ------------------------------------------------------------------ EsipaTransport
    async def send(self, message_der: bytes) -> bytes | None:
        step = step_of(message_der)
        corr = os.urandom(16)
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = self.down
        props.CorrelationData = corr
        fut: asyncio.Future[_Answer] = asyncio.get_running_loop().create_future()
        self._waiting[corr] = fut
        try:
            answer = await self._exchange(step, message_der, props, fut)
        finally:
            self._waiting.pop(corr, None)
            self._finished.append(corr)
        if answer is None:
            return None
        if answer.status is not None:
            text = answer.payload.decode("utf-8", "replace")[:200]
            status: int | str = int(answer.status) if answer.status.isdigit() else answer.status
            raise EsipaError(step, f"eIM answered {answer.status}: {text}", status=status)
        return answer.payload or None

    async def _exchange(self, step: str, der: bytes, props: Properties, fut: asyncio.Future[_Answer]) -> _Answer | None:
        """Publish copies of one request until ``fut`` has its answer (rules in the module docstring). ``None``:
        a HandleNotification the broker took for a subscriber and the eIM did not answer (delivered)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        notification = der[:2] == HANDLE_NOTIFICATION
        on_timer = der[:2] in REPEAT_ON_TIMER
        interval = self.retransmit_interval
        reconnect_delay = RECONNECT_FIRST
        copies = 0
        nobody = False  # the last copy's PUBACK said: no matching subscribers
        why = ""
        last_error = ""
        while True:
            now = loop.time()
            if now >= deadline:
                break
            try:
                conn = await self._connect()
                code = await self._publish_on(conn, self.up, der, props, deadline - now)
            except (EsipaError, _ConnectionLost) as exc:  # the broker is away: try again shortly, until the deadline
                if isinstance(exc, EsipaError) and exc.status is not None:
                    raise  # the broker refused us (credentials, client id): trying again changes nothing
                last_error = str(exc)
                log.info("%s: broker not reachable (%s), retrying in %.1f s", step, exc, reconnect_delay)
                await asyncio.sleep(max(0.0, min(reconnect_delay, deadline - loop.time())))
                reconnect_delay = min(reconnect_delay * 2, RECONNECT_MAX)
                why = "after reconnecting"
                continue
            copies += 1
            if copies > 1:
                log.info("%s: published again %s (copy %d)", step, why, copies)
            if code is not None and code >= 0x80:
                raise EsipaError(step, f"the broker refused the request on {self.up} (reason code {code})", code)
            nobody = code == NO_MATCHING_SUBSCRIBERS
            answer_by = deadline
            if notification and not nobody:
                answer_by = min(deadline, loop.time() + self.notification_wait)
            retransmit_at = float("inf")
            if self.retransmit_interval > 0 and (on_timer or nobody):
                retransmit_at = loop.time() + interval * random.uniform(1.0, 1.25)
            wake = min(answer_by, retransmit_at)
            lost = asyncio.ensure_future(conn.lost.wait())
            try:
                await asyncio.wait({fut, lost}, timeout=max(0.0, wake - loop.time()), return_when="FIRST_COMPLETED")
            finally:
                lost.cancel()
            if fut.done():
                return fut.result()
            if conn.lost.is_set():
                why, reconnect_delay = "after reconnecting", RECONNECT_FIRST
                continue
            if loop.time() >= answer_by:
                if notification and not nobody:
                    return None  # HandleNotification: the broker took it for a subscriber (PUBACK); no answer needed
                break
            why = "(nobody subscribed to the up topic)" if nobody else "(no answer yet)"
            interval = min(interval * 2, self.retransmit_max_interval)
        if copies == 0:
            where = f"{self.host}:{self.port}"
            raise EsipaError(step, f"MQTT broker {where} not reachable within {self.timeout:.0f} s: {last_error}")
        if nobody:
            raise EsipaError(step, f"no eIM subscribed to {self.up} within {self.timeout:.0f} s ({copies} copies)")
        raise EsipaError(step, f"no answer on {self.down} within {self.timeout:.0f} s ({copies} copies)")

    async def close(self) -> None:
        self._closing = True
        if self._reconnector is not None:
            self._reconnector.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reconnector
            self._reconnector = None
        conn, self._conn = self._conn, None  # taken first: the reader forgets it when it ends
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(EsipaError("MQTT", "transport closed while waiting for the answer"))
        if conn is None:
            return
        if conn.reader is not None:
            conn.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await conn.reader
        conn.lost.set()
        with contextlib.suppress(Exception):
            await conn.client.__aexit__(None, None, None)

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
        """TransferEimPackageResponse on the up topic, published once (the eIM pushes again if it is lost)."""
        props = None
        if push.correlation:
            props = Properties(PacketTypes.PUBLISH)
            props.CorrelationData = push.correlation
        conn = await self._connect()
        try:
            await self._publish_on(conn, self.up, response_der, props, self.timeout)
        except _ConnectionLost as exc:
            raise EsipaError("TransferEimPackage", str(exc)) from None


def _collect_disconnect_error(client: aiomqtt.Client) -> None:
    """Mark aiomqtt's "unexpected disconnection" error as seen: ``__aexit__`` returns without reading it once the
    connection is gone, and asyncio would log "Future exception was never retrieved" for it."""
    fut = getattr(client, "_disconnected", None)
    if isinstance(fut, asyncio.Future) and fut.done() and not fut.cancelled():
        fut.exception()


# CONNACK reason codes (MQTT v5) that mean "not you, not like this": connecting again within the request is futile
REFUSALS = {0x84, 0x85, 0x86, 0x87, 0x8A, 0x8C}  # protocol, client id, credentials, not authorized, banned, auth


def _refusal(exc: aiomqtt.MqttError) -> int | None:
    """The CONNACK reason code when the broker refused the connection for good, else ``None``."""
    rc = getattr(exc, "rc", None) if isinstance(exc, aiomqtt.MqttCodeError) else None
    if isinstance(rc, ReasonCode) and rc.value in REFUSALS:
        return rc.value
    return None


def _error_status(props: Any) -> str | None:
    """The ``esipa-status`` of an error answer (Content Type text/plain), else ``None``."""
    if props is None:
        return None
    content_type = getattr(props, "ContentType", None) or ""
    if not content_type.startswith("text/plain"):
        return None
    for key, value in getattr(props, "UserProperty", None) or []:
        if key == "esipa-status":
            return str(value)
    return "error"
