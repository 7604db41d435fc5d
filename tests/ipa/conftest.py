"""Fixtures of the IPA tests: lab PKI, a software eUICC with an eIM provisioned through the IPA's own AddInitialEim,
the scripted eIM peer on a real HTTP/CoAP/MQTT server, and an Agent wired to them."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from euicc.card import SoftEuicc
from euicc.channel import LocalApduChannel
from euicc.state import PROFILE_DISABLED, PROFILE_ENABLED, Profile
from ipa import messages as m
from ipa.agent import Agent
from ipa.config import IpaConfig
from rsp.pki import create_lab_pki, lab_eid
from tests.ipa.peer import MqttEim, ScriptedEim, start_coap, start_http
from tests.services import require_dtls

EID_TEXT = lab_eid(1)
EID = bytes.fromhex(EID_TEXT)
ICCID_A = "8944000000000000011"
ICCID_B = "8944000000000000029"
DTLS_PSK = b"Lab-PSK-of-IPA-1"  # 16 bytes, all tinydtls takes


@pytest.fixture(autouse=True)
def _no_blocking_state_writes_on_the_loop(caplog):
    """House rule: async code never blocks the loop. ``StateStore.save()`` on a running loop still writes but logs
    an error; any such error fails the test that caused it."""
    yield
    blocking = [r.getMessage() for r in caplog.records if r.name == "ipa.state" and "blocking save()" in r.getMessage()]
    assert not blocking, blocking


@pytest.fixture
def smdp(lab_pki, tmp_path):
    """A lab SM-DP+ on a free port (HTTPS), its data under ``tmp_path``."""
    from smdpp.config import SmdppConfig
    from smdpp.server import running_server

    with running_server(SmdppConfig(data_dir=tmp_path / "smdp", pki_dir=lab_pki.root, port=0)) as srv:
        yield srv


@pytest.fixture(scope="session")
def lab_pki(tmp_path_factory):
    return create_lab_pki(tmp_path_factory.mktemp("ipa-pki"), curves=("nist",), eids=(EID_TEXT,))


def write_provisioning(pki, directory: Path, fqdn: str = "127.0.0.1:1", protocols=("retrieveHttps",)) -> Path:
    pem = (
        pki.eim_key()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    (directory / "eim-signing.pem").write_bytes(pem)
    prot = ", ".join(f'"{p}"' for p in protocols)
    path = directory / "provisioning.toml"
    path.write_text(
        f'[[eim]]\nid = "lab-eim"\nfqdn = "{fqdn}"\nid_type = "fqdn"\ncounter_value = 0\n'
        f'public_key_pem = "eim-signing.pem"\nprotocols = [{prot}]\n'
    )
    return path


def seed_profiles(card: SoftEuicc, enabled: str | None = ICCID_A, others=(ICCID_B,)) -> None:
    """Two installed profiles (test set-up), each sending enable/disable/delete notifications."""
    n = 0
    for iccid in ([enabled] if enabled else []) + list(others):
        n += 1
        card.state.profiles.append(
            Profile(
                iccid=m.iccid_to_bytes(iccid),
                isdp_aid=bytes.fromhex(f"A0000005591010FFFFFFFF89000010{n:02X}"),
                state=PROFILE_ENABLED if iccid == enabled else PROFILE_DISABLED,
                service_provider_name="Lab",
                profile_name=f"Profile {n}",
                notification_config=[([1, 2, 3], "smdp.lab.example")],
            )
        )
    card.state.next_isdp = n + 1
    card.save()


@dataclass
class Rig:
    card: SoftEuicc
    channel: Any
    peer: ScriptedEim
    config: IpaConfig
    tmp: Path
    server: Any = None

    def agent(self, **kw) -> Agent:
        return Agent(self.config, self.channel, **kw)

    def reload_card(self) -> None:
        """A fresh card object from the state file (as after a power cycle / process restart)."""
        self.card = SoftEuicc.load(self.card.state_path)
        self.channel = LocalApduChannel(self.card)

    @contextlib.asynccontextmanager
    async def started(self, **kw) -> AsyncIterator[Agent]:
        """The rig's agent, started, closed on exit."""
        agent = self.agent(**kw)
        await agent.start()
        try:
            yield agent
        finally:
            await agent.close()


@pytest.fixture
async def make_rig(lab_pki, tmp_path, request):
    """``await make_rig("http"|"coap"|"coaps"|"mqtt")``: card, peer, server and config, all stopped afterwards."""
    stack = contextlib.AsyncExitStack()

    async def make(
        binding: str = "http",
        *,
        profiles: bool = True,
        provision: bool = True,
        device: str = "local",
        broker: Any = None,
        modem_model: str = "generic",
    ) -> Rig:
        """``device``: ``local`` (LocalApduChannel) or ``modem`` (virtual modem on a real pty, AT+CCHO/CGLA or
        AT+CSIM through firmware_bridge.AtApduChannel). ``broker``: a private Mosquitto for ``mqtt`` (default: the
        session's)."""
        card = SoftEuicc.create(lab_pki.root, EID_TEXT, tmp_path / "card.cbor")
        if profiles:
            seed_profiles(card)
        if device == "modem":
            from firmware_bridge.at import AtEngine
            from firmware_bridge.channel import AtApduChannel
            from firmware_bridge.virtual_modem import VirtualModem

            vm = VirtualModem(card, quirks="refresh-reset=0.1", model=modem_model)
            vm.start()
            stack.callback(vm.stop)
            engine = AtEngine(vm.path)
            await engine.open()
            stack.push_async_callback(engine.close)
            channel = AtApduChannel(engine, route="auto")
        else:
            channel = LocalApduChannel(card)
        peer = ScriptedEim(lab_pki.eim_key(), lab_pki.euicc_cert(EID_TEXT), EID)
        config = IpaConfig()
        config.ipa.state_file = str(tmp_path / "ipa-state.cbor")
        config.poll.interval = 0.05
        config.poll.min_interval = 0.01
        config.poll.max_backoff = 0.05
        config.eim.timeout = 5
        config.mqtt.notification_wait = 0.5
        if binding == "http":
            server = await start_http(peer)
            stack.push_async_callback(server.stop)
            config.eim.url = server.url
        elif binding == "coap":
            server = await start_coap(peer)
            stack.push_async_callback(server.stop)
            config.eim.url = server.url
        elif binding == "coaps":
            require_dtls()
            server = await start_coap(peer, psk={EID_TEXT: DTLS_PSK})
            stack.push_async_callback(server.stop)
            config.eim.url = server.url
            config.eim.psk_hex = DTLS_PSK.hex()
        elif binding == "mqtt":
            broker = broker or request.getfixturevalue("mosquitto")
            server = MqttEim(peer, broker.host, broker.port)
            await server.start()
            stack.push_async_callback(server.stop)
            config.eim.url = f"mqtt://{broker.host}:{broker.port}"
            config.mqtt.client_id = f"ipa-test-{tmp_path.name}"
        else:
            raise ValueError(binding)
        rig = Rig(card, channel, peer, config, tmp_path, server)
        if provision:
            config.eim.provisioning_file = str(write_provisioning(lab_pki, tmp_path))
        return rig

    yield make
    await stack.aclose()
