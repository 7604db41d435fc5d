"""One eIM worker for the benchmarks, started as its own process by :mod:`bench.eim`.

It wires the eIM core exactly as the server does (store -> OperationService -> ResultProcessor ->
EsipaDispatcher) and serves it on ONE binding: HTTP (uvicorn on uvloop + httptools, the plain ASGI
``EsipaHttpApp``), CoAP (``CoapBinding``) or MQTT v5 (``MqttBinding`` through a broker). It prints ``READY`` on
stdout once it serves and stops on SIGTERM. ``--fd`` serves HTTP on an inherited listening socket, so several
workers can share one port.

    python -m bench.eim_server --store URL --pki DIR --binding http --port 8080
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import socket
import sys


async def serve(args: argparse.Namespace) -> None:
    from eim.esipa.dispatcher import EsipaDispatcher
    from eim.esipa.results import ResultProcessor
    from eim.operations import OperationService, OperationSettings
    from eim.packages import EimKey, PackageFactory
    from eim.packages.euicc_package import EuiccKeys
    from eim.store import open_store
    from rsp.pki import LabPki

    lab = LabPki.load(args.pki)
    if args.store_variant == "one-connection":  # the shipped store with [store] sqlite_read_connection = false
        store = open_store(args.store, read_connection=False)
    elif args.store_variant != "default":
        from bench.whatif import open_variant

        store = open_variant(args.store, args.store_variant)
    else:
        store = open_store(args.store)
    await store.open()
    key = EimKey(args.eim_id, lab.eim_key("nist"), lab.eim_cert("nist"))
    service = OperationService(store, PackageFactory(key), OperationSettings())
    rp = ResultProcessor(store, service, EuiccKeys(lab.ci_certs()), None)
    dispatcher = EsipaDispatcher(rp)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    binding = None
    server = None
    task = None
    if args.binding == "http":
        import uvicorn

        from eim.bindings.http import EsipaHttpApp

        config = uvicorn.Config(
            EsipaHttpApp(dispatcher),
            host="127.0.0.1",
            port=args.port,
            loop="none",
            http="httptools",
            log_level="warning",
            lifespan="off",
            access_log=False,
            backlog=4096,
        )
        server = uvicorn.Server(config)
        server.install_signal_handlers = lambda: None  # we handle SIGTERM ourselves
        # An inherited listening socket is wrapped with its real family (uvicorn's own ``fd=`` treats every fd as
        # AF_UNIX, so the event loop would not set TCP_NODELAY and small answers would wait for delayed ACKs).
        sockets = [socket.socket(fileno=args.fd)] if args.fd is not None else None
        task = asyncio.create_task(server.serve(sockets=sockets))
        while not server.started:
            if task.done():
                task.result()
                raise SystemExit("uvicorn did not start")
            await asyncio.sleep(0.01)
    elif args.binding == "coap":
        from eim.bindings.coap import CoapBinding

        binding = CoapBinding(dispatcher, "127.0.0.1", args.port)
        await binding.start()
    elif args.binding == "mqtt":
        from eim.bindings.mqtt import MqttBinding

        binding = MqttBinding(dispatcher, "127.0.0.1", args.mqtt_port, client_id=f"eim-bench-{args.worker}")
        await binding.start()
        await binding.wait_ready(10)
    else:
        raise SystemExit(f"unknown binding {args.binding}")

    gc.collect()
    gc.freeze()  # start-up objects are never garbage: keep them out of every collection (performance.md)
    print("READY", flush=True)
    await stop.wait()
    if server is not None:
        server.should_exit = True
        await task
    if binding is not None:
        await binding.stop()
    await store.close()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.eim_server")
    p.add_argument("--store", required=True)
    p.add_argument("--pki", required=True)
    p.add_argument("--eim-id", default="eim.bench")
    p.add_argument("--binding", choices=["http", "coap", "mqtt"], default="http")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--fd", type=int)
    p.add_argument("--mqtt-port", type=int, default=1883)
    p.add_argument("--worker", type=int, default=0)
    p.add_argument(
        "--store-variant",
        choices=["default", "one-connection", "normal-sync"],
        default="default",
        help="SQLite only: one-connection = [store] sqlite_read_connection = false; normal-sync: bench.whatif",
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
