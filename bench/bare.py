"""The bare transport servers the eIM is measured against (:mod:`bench.ceiling`): the ceiling of each binding.

Each answers every ESipa request with the no-work poll's answer ``BF4F 03 02 01 01`` and does nothing else - no
decoding, no store, no metrics - on the same stack as the eIM's binding, so the eIM / bare ratio is the cost of
the eIM itself:

* ``asgi``: a plain ASGI callable under uvicorn (uvloop + httptools), as ``eim serve`` runs it;
* ``starlette``: a Starlette app with one ``POST /gsma/rsp2/asn1`` route, same server;
* ``aiocoap``: an aiocoap resource at ``gsma/rsp2/asn1`` (the ``simplesocketserver`` transport the eIM's CoAP
  binding uses), answering 2.04 Changed;
* ``aiomqtt``: an aiomqtt (MQTT v5) client subscribed to ``$share/P/P/+/up`` (``--prefix P``) that publishes the
  answer to the request's Response Topic with its Correlation Data, QoS 1, a task per message (as the eIM's
  binding does, with its client options).

Prints ``READY`` once it serves and stops on SIGTERM.

    python -m bench.bare KIND --port PORT
"""

from __future__ import annotations

import argparse
import asyncio
import signal

NO_PACKAGE = bytes.fromhex("BF4F03020101")
CT = b"application/x-gsma-rsp-asn1"
XAP = b"gsma/rsp/v2.1.0"


async def asgi_app(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", CT), (b"x-admin-protocol", XAP), (b"content-length", b"6")],
        }
    )
    await send({"type": "http.response.body", "body": NO_PACKAGE})


def starlette_app():
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def esipa(request: Request) -> Response:
        await request.body()
        return Response(NO_PACKAGE, media_type=CT.decode(), headers={"x-admin-protocol": XAP.decode()})

    return Starlette(routes=[Route("/gsma/rsp2/asn1", esipa, methods=["POST"])])


async def serve_http(app, port: int, stop: asyncio.Event) -> None:
    import uvicorn

    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        loop="none",
        http="httptools",
        lifespan="off",
        log_config=None,
        access_log=False,
        server_header=False,
    )
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise SystemExit("uvicorn did not start")
        await asyncio.sleep(0.01)
    print("READY", flush=True)
    await stop.wait()
    server.should_exit = True
    await task


async def serve_coap(port: int, stop: asyncio.Event) -> None:
    import aiocoap
    import aiocoap.resource as resource

    class Esipa(resource.Resource):
        async def render_post(self, request):
            return aiocoap.Message(code=aiocoap.CHANGED, payload=NO_PACKAGE, content_format=0)

    site = resource.Site()
    site.add_resource(["gsma", "rsp2", "asn1"], Esipa())
    ctx = await aiocoap.Context.create_server_context(site, bind=("127.0.0.1", port), transports=["simplesocketserver"])
    print("READY", flush=True)
    await stop.wait()
    await ctx.shutdown()


async def serve_mqtt(port: int, prefix: str, stop: asyncio.Event) -> None:
    import socket

    import aiomqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    tasks: set[asyncio.Task] = set()

    async def answer(client, message) -> None:
        props = message.properties
        reply = Properties(PacketTypes.PUBLISH)
        reply.CorrelationData = props.CorrelationData
        reply.ContentType = CT.decode()
        await client.publish(props.ResponseTopic, NO_PACKAGE, qos=1, properties=reply)

    connect = Properties(PacketTypes.CONNECT)
    connect.SessionExpiryInterval = 0
    async with aiomqtt.Client(  # the eIM binding's client options (eim.bindings.mqtt)
        "127.0.0.1",
        port,
        identifier=f"bare-responder-{prefix}",
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=True,
        keepalive=60,
        properties=connect,
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        max_inflight_messages=256,
        max_queued_incoming_messages=3560,
        timeout=10,
    ) as client:
        client.pending_calls_threshold = 3560
        await client.subscribe(f"$share/{prefix}/{prefix}/+/up", qos=1)
        print("READY", flush=True)

        async def loop() -> None:
            async for message in client.messages:
                t = asyncio.create_task(answer(client, message))
                tasks.add(t)
                t.add_done_callback(tasks.discard)

        runner = asyncio.create_task(loop())
        await stop.wait()
        runner.cancel()


async def main_async(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if args.kind == "asgi":
        await serve_http(asgi_app, args.port, stop)
    elif args.kind == "starlette":
        await serve_http(starlette_app(), args.port, stop)
    elif args.kind == "aiocoap":
        await serve_coap(args.port, stop)
    else:
        await serve_mqtt(args.port, args.prefix, stop)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.bare")
    p.add_argument("kind", choices=["asgi", "starlette", "aiocoap", "aiomqtt"])
    p.add_argument("--port", type=int, required=True, help="HTTP/CoAP port to serve, or the MQTT broker's port")
    p.add_argument("--prefix", default="esipa", help="MQTT topic prefix ({prefix}/{EID}/up, shared group {prefix})")
    args = p.parse_args(argv)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
