"""``eim serve``: one eIM worker. Several workers may run on one PostgreSQL store (and one MQTT broker, where the
shared subscription spreads ESipa requests over them); SQLite suits one worker.

Starts, in order: the store (migrations), the relay, the HTTP server (uvicorn on uvloop/httptools: ESipa at
``POST /gsma/rsp2/asn1`` plus the operator API), then, each if enabled in the configuration, the CoAP binding
(``eim.bindings.coap.CoapBinding``, with push observers and their wake-up bus ``eim.push_bus``) and the MQTT
binding (``eim.bindings.mqtt.MqttBinding``, also the pusher of packages to MQTT devices), and a sweeper that
expires operations past their window and pushes queued work to MQTT devices, and (with the relay on) the
forwarder of the notification outbox. SIGTERM/SIGINT stop everything in reverse order.

Before anything starts, :func:`check_operator_auth` refuses to serve the operator API on an address other than
loopback (127.0.0.0/8, ::1, localhost) without operator authentication (``[api] operators_file`` or ``token``),
unless told so in words that say it is insecure (``eim serve --insecure-no-operator-auth`` or ``[api]
insecure_no_auth = true``); then it warns once. The HTTP server runs with the guards of ``eim.api.timeouts``
(header and body timeouts, ``[http] max_connections``) and ``[http] keep_alive_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import signal
import socket
from typing import Any

from eim import sdnotify
from eim.app import Runtime, build
from eim.config import Config, ConfigError

log = logging.getLogger("eim.serve")


def _binding(module: str, cls: str) -> Any:
    try:
        mod = __import__(f"eim.bindings.{module}", fromlist=[cls])
        return getattr(mod, cls)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            f"[{module}] enabled but eim.bindings.{module}.{cls} is not available ({exc}); "
            f"install the server extras (pip install 'sgp32-stack[server]') or set {module}.enabled = false"
        ) from None


async def start_push_bus(config: Config, rt: Runtime) -> tuple[Any, Any]:
    """CoAP push (``[coap] push``): one observer table for coap:// and coaps://, and the bus that carries wake-ups
    from any worker to it (PostgreSQL LISTEN/NOTIFY with several workers, in-process with SQLite)."""
    from eim.bindings.coap_observe import PushService
    from eim.push_bus import LocalWakeBus, PgWakeBus

    c = config.coap
    policy = rt.dispatcher.device_policy  # plain-CoAP observers: the [devices] rule of every unauthenticated request
    push = PushService(
        rt.service.has_work,
        rt.service.is_registered,
        max_observers=c.push_max_observers,
        ack_timeout=c.push_ack_timeout_s,
        admits=lambda peer: policy.allow_unauthenticated or policy.peer_trusted(peer),
    )
    dsn = getattr(rt.store, "dsn", None)
    bus = PgWakeBus(dsn, [push]) if rt.store.dialect == "postgresql" and dsn else LocalWakeBus([push])
    await bus.start()
    rt.service.wakers.append(bus)
    return push, bus


async def start_bindings(config: Config, rt: Runtime) -> list[Any]:
    started: list[Any] = []
    push = None
    if config.coap.enabled and config.coap.push:
        push, bus = await start_push_bus(config, rt)
        started.append(bus)
    if config.coap.enabled and config.coap.plain:
        CoapBinding = _binding("coap", "CoapBinding")
        coap = CoapBinding(rt.dispatcher, config.coap.host, config.coap.port, push=push)
        await coap.start()
        started.append(coap)
        log.info("CoAP binding listening", extra={"host": config.coap.host, "port": config.coap.port})
    if config.coap.enabled and config.coap.dtls:
        CoapBinding = _binding("coap", "CoapBinding")
        from eim.bindings.coap_psk import PskFile, PskFileError

        try:
            psk = PskFile(config.coap.psk_file)
        except PskFileError as exc:
            raise ConfigError(f"[coap] psk_file: {exc}") from None
        coaps = CoapBinding(
            rt.dispatcher,
            config.coap.host,
            config.coap.dtls_port,
            psk=psk,
            dtls_max_sessions=config.coap.dtls_max_sessions,
            push=push,
        )
        try:
            await coaps.start()
        except RuntimeError as exc:  # DTLSSocket missing
            raise ConfigError(f"[coap] dtls: {exc}") from None
        started.append(coaps)
        log.info(
            "CoAPS (DTLS PSK) binding listening",
            extra={"host": config.coap.host, "port": config.coap.dtls_port, "devices": len(psk)},
        )
    if config.mqtt.enabled:
        MqttBinding = _binding("mqtt", "MqttBinding")
        m = config.mqtt
        mqtt = MqttBinding(
            rt.dispatcher,
            m.host,
            m.port,
            client_id=m.client_id or f"eim-{socket.gethostname()}-{os.getpid()}",
            shared_group=m.shared_group,
            prefix=m.prefix,
            username=m.username or None,
            password=m.password or None,
            push_expiry=push_expiry_s(config),
        )
        await mqtt.start()
        started.append(mqtt)
        if m.push:
            rt.service.pusher = mqtt
        log.info("MQTT binding connected", extra={"host": m.host, "port": m.port, "push": m.push})
    return started


def push_expiry_s(config: Config) -> int:
    """The MQTT Message Expiry Interval of a push: twice ``[operations] push_retry_s``. An unanswered package is
    pushed again after ``push_retry_s``, so a device asleep for a day finds about two copies in its persistent
    session instead of one per retry (288 at the default 300 s)."""
    return max(1, int(2 * config.operations.push_retry_s))


def warn_device_policy(config: Config) -> None:
    """One warning at start-up when devices that prove no identity are served from any address."""
    if config.devices.allow_unauthenticated:
        log.warning(
            "[devices] allow_unauthenticated = true: devices that prove no identity are served from any address; "
            "anyone who knows an EID can fetch its packages (activation codes included) and report for it",
            extra={"subsystem": "device_auth"},
        )


async def sweeper(rt: Runtime, interval: float) -> None:
    while True:
        try:
            await rt.service.expire()
            await rt.service.push_pending()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a store outage: try again next round
            log.warning("sweep failed", extra={"error": str(exc)})
        await asyncio.sleep(interval)


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_operator_auth(config: Config, *, insecure: bool = False) -> None:
    """ConfigError when the operator API would be open to the network; a warning when that is wanted."""
    if not config.http.enabled or config.api.operators_file or config.api.token:
        return
    if is_loopback(config.http.host):
        return
    if not (insecure or config.api.insecure_no_auth):
        raise ConfigError(
            f"[http] host {config.http.host!r} is not a loopback address and no operator authentication is "
            "configured: anyone who reaches the port could queue work for every eUICC. Create operators "
            "(`eim operator add NAME --role admin`, [api] operators_file) or, knowingly, start with "
            "--insecure-no-operator-auth ([api] insecure_no_auth = true)"
        )
    log.warning(
        "the operator API is served WITHOUT authentication on a non-loopback address (insecure_no_auth)",
        extra={"host": config.http.host, "port": config.http.port},
    )


async def serve(config: Config, *, ready: asyncio.Event | None = None, insecure_no_auth: bool = False) -> None:
    import uvicorn

    from eim.api.timeouts import guarded_protocol

    check_operator_auth(config, insecure=insecure_no_auth)
    rt = await build(config)
    bindings: list[Any] = []
    sweep: asyncio.Task | None = None
    secrets_watch: asyncio.Task | None = None
    watchdog: asyncio.Task | None = None  # systemd Type=notify (eim.sdnotify)
    server = None
    try:
        kw: dict[str, Any] = {}
        http_protocol: Any = None  # the guarded httptools protocol, with client certificates when configured
        if config.http.tls_cert:
            kw.update(ssl_certfile=config.http.tls_cert, ssl_keyfile=config.http.tls_key)
        if config.devices.client_ca:  # device certificates: verified if sent, handed to the app (eim.bindings.tls)
            import ssl

            from eim.bindings.tls import TlsHttpToolsProtocol

            try:
                ssl.create_default_context(cafile=config.devices.client_ca)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"[devices] client_ca: {config.devices.client_ca}: {exc}") from None
            kw.update(ssl_cert_reqs=ssl.CERT_OPTIONAL, ssl_ca_certs=config.devices.client_ca)
            http_protocol = TlsHttpToolsProtocol
        warn_device_policy(config)
        uv = uvicorn.Config(
            rt.app,
            host=config.http.host,
            port=config.http.port,
            loop="none",
            http=guarded_protocol(
                base=http_protocol,
                header_timeout=config.http.header_timeout_s,
                body_timeout=config.http.body_timeout_s,
                max_connections=config.http.max_connections,
            ),
            timeout_keep_alive=config.http.keep_alive_s,  # type: ignore[arg-type]
            lifespan="off",
            log_config=None,
            use_colors=False,
            access_log=False,
            server_header=False,
            # the peer is the TCP peer: uvicorn's default would take X-Forwarded-For / X-Forwarded-Proto from any
            # connection from 127.0.0.1, and the device policy ([devices] trusted_networks) judges that address
            proxy_headers=False,
            **kw,
        )
        server = uvicorn.Server(uv)
        if config.http.enabled:
            uv.load()
            server.lifespan = uv.lifespan_class(uv)
            await server.startup()
            if server.should_exit:
                raise ConfigError(f"[http] cannot listen on {config.http.host}:{config.http.port}")
            log.info(
                "HTTP listening", extra={"host": config.http.host, "port": config.http.port, "store": rt.store.dialect}
            )
        bindings = await start_bindings(config, rt)
        sweep = asyncio.create_task(sweeper(rt, config.operations.sweep_interval_s))
        if rt.device_secrets is not None:
            secrets_watch = asyncio.create_task(rt.device_secrets.watch(), name="eim device secret file watch")
        rt.start_background()  # the notification forwarder
        freeze_startup_objects()
        if ready is not None:
            ready.set()
        sdnotify.notify("READY=1")
        watchdog = sdnotify.start_watchdog()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        if config.http.enabled:
            waiter = asyncio.create_task(stop.wait())
            main = asyncio.create_task(server.main_loop())
            await asyncio.wait({waiter, main}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            server.should_exit = True
            await main
        else:
            await stop.wait()
    finally:
        sdnotify.notify("STOPPING=1")
        await sdnotify.stop_watchdog(watchdog)
        for task in (sweep, secrets_watch):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for b in reversed(bindings):
            with contextlib.suppress(Exception):
                await b.stop()
        if server is not None and config.http.enabled and server.started:
            await server.shutdown()
        await rt.aclose()
        log.info("stopped")


GC_YOUNG_THRESHOLD = 10_000  # container allocations between two young collections (CPython's default: 700)
GC_MIDDLE_THRESHOLD = 2  # young collections between two middle-generation ones (CPython's default: 10)


def freeze_startup_objects() -> None:
    """Move everything allocated during start-up (modules, the app, the store, the keys: never garbage) out of
    the garbage collector's reach (``gc.freeze``): a full collection then walks only what requests allocated,
    instead of ~50 ms over every object of the process (docs/performance.md, section 0).

    And collect the young generation every ``GC_YOUNG_THRESHOLD`` allocations instead of every 700: a signed
    PSMO round trip allocates thousands of short-lived containers (ASN.1 values, rows, futures), nearly all freed
    by their reference counts, and the young collections cost ~50 µs per round trip with the default threshold
    (docs/performance.md, section 1c). Cycles wait a little longer to be collected.

    And collect the middle generation every ``GC_MIDDLE_THRESHOLD`` young collections instead of every 10: each
    young collection moves the objects of the requests in flight to the middle generation, and aiocoap's pipes
    and callbacks are in reference cycles, so they wait there, garbage, for the next middle collection. With 10,
    those collections walked ~20,000 objects and stopped the loop for 9-22 ms, a CoAP poll's p99 2.5x aiocoap's;
    with 2 they take 3-8 ms, and the collector's total time does not grow (docs/performance.md, section 0)."""
    import gc

    gc.collect()
    gc.freeze()
    _young, _older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, GC_MIDDLE_THRESHOLD, oldest)


def run(config: Config, *, insecure_no_auth: bool = False) -> None:
    """Run a worker until SIGTERM/SIGINT, on uvloop when available."""
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover - Windows
        runner = asyncio.run
    runner(serve(config, insecure_no_auth=insecure_no_auth))
