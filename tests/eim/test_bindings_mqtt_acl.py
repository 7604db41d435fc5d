"""The shipped broker configuration (deploy/mosquitto/) on a real Mosquitto: TLS for devices, passwords, the ACL.

The test starts Mosquitto with ``deploy/mosquitto/mosquitto.conf`` and ``deploy/mosquitto/acl`` as shipped, only
paths and ports substituted, then checks what a device may and may not do, with an eIM worker (MqttBinding)
answering on the loopback listener.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
import subprocess
from pathlib import Path

import aiomqtt
import pytest

from rsp.pki import create_lab_pki, lab_eid
from tests.eim.test_bindings_common import NO_PACKAGE, SpecHandler, get_eim_package_request
from tests.eim.test_bindings_mqtt import TRANSFER, Device, MqttLab
from tests.services import Broker, free_port, missing_service, mosquitto_binary, wait_port

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto"
E1 = lab_eid(31)
E2 = lab_eid(32)
PASSWORDS = {"eim": "eim-secret", E1: "pw-one", E2: "pw-two"}


class ShippedBroker:
    def __init__(self, tmp: Path) -> None:
        binary = mosquitto_binary()
        passwd_tool = shutil.which("mosquitto_passwd")
        if binary is None or passwd_tool is None:
            missing_service("Mosquitto with mosquitto_passwd", "apt-get install mosquitto")
        pki = create_lab_pki(tmp / "pki", curves=("nist",), eids=(E1,))
        etc = tmp / "etc"
        (etc / "tls").mkdir(parents=True)
        shutil.copy(pki.root / "tls" / "eimtls.cert.pem", etc / "tls" / "server.cert.pem")
        shutil.copy(pki.root / "tls" / "eimtls.key.pem", etc / "tls" / "server.key.pem")
        shutil.copy(pki.ca_bundle_path, etc / "tls" / "ca.pem")
        shutil.copy(DEPLOY / "acl", etc / "acl")
        for user, password in PASSWORDS.items():
            args = [passwd_tool, "-b", str(etc / "passwd"), user, password]
            if not (etc / "passwd").exists():
                args.insert(1, "-c")
            subprocess.run(args, check=True, capture_output=True)
        self.tls_port, self.plain_port = free_port(), free_port()
        conf = (DEPLOY / "mosquitto.conf").read_text()
        conf = conf.replace("/etc/mosquitto/eim/", f"{etc}/").replace("/var/lib/mosquitto/", f"{tmp}/data/")
        conf = conf.replace("listener 8883\n", f"listener {self.tls_port} 127.0.0.1\n")
        conf = conf.replace("listener 1883 127.0.0.1\n", f"listener {self.plain_port} 127.0.0.1\n")
        assert str(self.tls_port) in conf and str(self.plain_port) in conf, "the shipped config changed shape"
        (tmp / "data").mkdir()
        if os.geteuid() == 0:
            conf += "user root\n"
        path = tmp / "mosquitto.conf"
        path.write_text(conf)
        self.log = open(tmp / "mosquitto.log", "w")
        proc = subprocess.Popen([binary, "-c", str(path)], stdout=self.log, stderr=subprocess.STDOUT)
        self.broker = Broker("127.0.0.1", self.plain_port, proc, path)
        if not (wait_port(self.plain_port) and wait_port(self.tls_port)):
            self.close()
            raise RuntimeError(
                f"mosquitto did not start with the shipped config: {(tmp / 'mosquitto.log').read_text()}"
            )
        self.tls = ssl.create_default_context(cafile=str(etc / "tls" / "ca.pem"))

    def device(self, eid: str, password: str | None = None, **kw) -> Device:
        return Device(
            "127.0.0.1",
            self.tls_port,
            eid,
            username=eid,
            password=password if password is not None else PASSWORDS[eid],
            tls_context=self.tls,
            **kw,
        )

    def close(self) -> None:
        self.broker.stop()
        self.log.close()


@pytest.fixture
def shipped(tmp_path):
    broker = ShippedBroker(tmp_path)
    lab = MqttLab(broker.broker)
    try:
        yield broker, lab
    finally:
        lab.close()
        broker.close()


def test_shipped_config_has_the_performance_and_session_settings():
    conf = (DEPLOY / "mosquitto.conf").read_text()
    assert "set_tcp_nodelay true" in conf and "allow_anonymous false" in conf and "persistence true" in conf


def test_devices_use_only_their_own_topics(shipped):
    broker, lab = shipped
    handler = SpecHandler()
    worker = lab.binding(handler, "eim-acl-1", username="eim", password=PASSWORDS["eim"])

    async def go():
        with pytest.raises(aiomqtt.MqttError):  # anonymous
            async with aiomqtt.Client("127.0.0.1", broker.tls_port, tls_context=broker.tls):
                pass
        with pytest.raises(aiomqtt.MqttError):  # wrong password
            async with broker.device(E1, password="wrong"):
                pass
        async with broker.device(E1) as d1, broker.device(E2) as d2:
            first = await d1.request(get_eim_package_request(E1))  # over TLS, answered by the worker
            # E1 tries to speak for E2: the broker drops it, the eIM never sees it
            await d1.client.publish(f"esipa/{E2}/up", get_eim_package_request(E2), qos=1)
            # E2 tries to read E1's answers and to inject a fake answer
            codes = await d2.client.subscribe(f"esipa/{E1}/down", qos=1)
            await d2.client.publish(f"esipa/{E1}/down", b"\xbf\x4e\x00", qos=1)
            await worker.push(E1, TRANSFER)
            pushed = await asyncio.wait_for(d1.unsolicited.get(), 10)
            await asyncio.sleep(0.5)
            return first, codes, pushed, d1.unsolicited.qsize(), list(d2.replies)

    try:
        first, codes, pushed, more_for_d1, seen_by_d2 = lab.run(go())
    finally:
        lab.run(worker.stop())
    assert first.payload == NO_PACKAGE
    assert [m for m, _ in handler.calls] == [get_eim_package_request(E1)]
    assert all(ctx.eid_hint == E1 for _, ctx in handler.calls)
    # Mosquitto 2.0 grants the SUBSCRIBE itself but checks "read" on every message: nothing reaches E2
    assert codes and seen_by_d2 == []
    assert pushed.payload == TRANSFER and more_for_d1 == 0  # the fake answer never arrived
    assert seen_by_d2 == []


def test_another_device_cannot_take_over_a_sleeping_session(shipped):
    broker, lab = shipped
    worker = lab.binding(SpecHandler(), "eim-acl-2", username="eim", password=PASSWORDS["eim"])

    async def go():
        async with broker.device(E1, persistent=True):
            pass  # E1 subscribed and went to sleep
        await worker.push(E1, TRANSFER)
        thief = broker.device(E2, client_id=f"ipa-{E1}", persistent=True)  # E2's credentials, E1's client id
        await thief.connect_only()
        try:
            await asyncio.sleep(1.0)
            return list(thief.replies)
        finally:
            await thief.__aexit__(None, None, None)

    try:
        stolen = lab.run(go())
    finally:
        lab.run(worker.stop())
    assert stolen == []
