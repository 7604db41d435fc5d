"""Running the SM-DP+: uvicorn (uvloop, httptools) with TLS by default.

* :func:`serve` runs in the foreground (``smdpp serve``);
* :func:`running_server` runs it in a background thread for tests and the demo, on a free port when
  ``config.port`` is 0, and yields a :class:`RunningServer` (base URL, address, CA bundle, the context).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import uvicorn

from smdpp.app import create_app
from smdpp.config import SmdppConfig
from smdpp.credentials import Credentials, CredentialsError, load_lab, load_sgp26
from smdpp.es9plus.common import SmdpContext

log = logging.getLogger("smdpp.server")


def load_credentials(config: SmdppConfig) -> Credentials:
    """Lab PKI credentials, or the SGP.26 ones with ``config.sgp26`` (then the lab CIs are trusted too)."""
    if config.sgp26:
        extra = {}
        if config.pki_dir is not None:
            extra = load_lab(config.pki_dir, config.curves).trusted_cis
        return load_sgp26(config.curves, extra)
    if config.pki_dir is None:
        raise CredentialsError("no credentials: give --pki DIR (a lab PKI from `rsp pki init`) or --sgp26")
    return load_lab(config.pki_dir, config.curves)


def _free_port(host: str) -> int:
    """A free port for ``--port 0``, chosen below the kernel's ephemeral range: a port the kernel hands out for
    port 0 can be taken by an outgoing client socket before the server binds it."""
    addr = host if host not in ("", "0.0.0.0") else "127.0.0.1"
    for _ in range(200):
        port = random.randrange(20000, 32000)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((addr, port))
        except OSError:
            continue
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((addr, 0))
        return s.getsockname()[1]


def finalize(config: SmdppConfig, credentials: Credentials) -> SmdppConfig:
    """Pick a port when 0 and default the SM-DP+ address to ``<host>:<port>`` (loopback/explicit host) or
    ``<TLS host name>:<port>`` when listening on all interfaces."""
    if config.port == 0:
        config = dataclasses.replace(config, port=_free_port(config.host))
    if not config.address:
        host = config.host if config.host not in ("", "0.0.0.0", "::") else credentials.tls_host
        config = dataclasses.replace(config, address=f"{host}:{config.port}")
    return config


def uvicorn_config(config: SmdppConfig, credentials: Credentials, app) -> uvicorn.Config:
    kwargs: dict = {
        "host": config.host,
        "port": config.port,
        "loop": "uvloop",
        "http": "httptools",
        "lifespan": "off",
        "access_log": False,
        "log_level": "warning",
        "server_header": False,
        # an idle keep-alive TLS client (an eIM relay's connection pool) would otherwise hold SIGTERM forever
        "timeout_graceful_shutdown": 5,
    }
    if not config.insecure_http:
        kwargs["ssl_certfile"] = str(credentials.tls_cert_file)
        kwargs["ssl_keyfile"] = str(credentials.tls_key_file)
    return uvicorn.Config(app, **kwargs)


def serve(config: SmdppConfig, workers: int = 1) -> int:
    """Run in the foreground until stopped; ``workers`` > 1: that many processes on the port (``smdpp.workers``).
    Returns the exit status."""
    credentials = load_credentials(config)
    config = finalize(config, credentials)
    scheme = "http" if config.insecure_http else "https"
    if config.insecure_http:
        log.warning("plain HTTP (--insecure-http): for debugging only, real LPAs and eUICCs need TLS")
    log.info(
        "SM-DP+ %s listening on %s://%s:%d (%s credentials, curves %s)",
        config.address,
        scheme,
        config.host,
        config.port,
        credentials.origin,
        ", ".join(credentials.curves),
    )
    if workers > 1:
        from smdpp.workers import serve_workers

        log.info("SM-DP+ %s: %d worker processes sharing the port and the store", config.address, workers)
        return serve_workers(config, credentials, workers)
    app = create_app(config, credentials)
    uvicorn.Server(uvicorn_config(config, credentials, app)).run()
    return 0


class RunningServer(str):
    """The base URL of a running SM-DP+ (it *is* the URL string), with what a test or the demo needs besides:
    ``address`` (the SM-DP+ address for activation codes), ``ca_bundle`` (PEM to verify its TLS certificate),
    ``config``, ``credentials`` and ``ctx`` (the store, the sessions)."""

    address: str
    config: SmdppConfig
    credentials: Credentials
    ctx: SmdpContext

    def __new__(
        cls, base_url: str, address: str, config: SmdppConfig, credentials: Credentials, ctx: SmdpContext
    ) -> RunningServer:
        obj = super().__new__(cls, base_url)
        obj.address = address
        obj.config = config
        obj.credentials = credentials
        obj.ctx = ctx
        return obj

    @property
    def base_url(self) -> str:
        return str.__str__(self)

    @property
    def ca_bundle(self) -> Path | None:
        return self.credentials.ca_bundle


@contextlib.contextmanager
def running_server(config: SmdppConfig, credentials: Credentials | None = None) -> Iterator[RunningServer]:
    """Run the SM-DP+ in a background thread; yields its base URL (a :class:`RunningServer`) once it accepts
    connections, stops it on exit."""
    credentials = credentials or load_credentials(config)
    config = finalize(config, credentials)
    app = create_app(config, credentials)
    server = uvicorn.Server(uvicorn_config(config, credentials, app))
    thread = threading.Thread(target=server.run, name=f"smdpp-{config.port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"SM-DP+ did not start on {config.host}:{config.port}")
        time.sleep(0.02)
    scheme = "http" if config.insecure_http else "https"
    host = config.host if config.host not in ("", "0.0.0.0") else "127.0.0.1"
    try:
        yield RunningServer(f"{scheme}://{host}:{config.port}", config.address, config, credentials, app.state.ctx)
    finally:
        server.should_exit = True
        thread.join(10)
        app.state.es9_threads.shutdown(wait=True)
        app.state.ctx.store.close()
