"""Two ``eim serve`` workers on one PostgreSQL and one Mosquitto share a fleet: IPAs poll either worker over HTTP
(also both at once) or over MQTT (the shared subscription spreads them); no operation runs twice, no counter value
names two packages, every operation ends done. And one worker pushes packages to an MQTT device."""

from __future__ import annotations

import asyncio
import os

import httpx
import pytest

from eim.model import OpStatus
from eim.store import open_store
from rsp import asn1, tlv
from rsp.pki import create_lab_pki, lab_eid
from tests.eim.conftest import fresh_pg_database
from tests.eim.helpers import get_eim_package_request, provide_result
from tests.eim.servers import start_eim
from tests.eim.test_serve import CT, queue, ready_cards, register

HTTP_EIDS = [lab_eid(i) for i in range(51, 55)]
MQTT_EIDS = [lab_eid(i) for i in range(55, 59)]
NOTHING = bytes.fromhex("BF4F03020101")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    return create_lab_pki(tmp_path_factory.mktemp("pki"), curves=("nist",), eids=HTTP_EIDS + MQTT_EIDS)


def mqtt_config(broker, push: bool) -> str:
    return f"""
[mqtt]
enabled = true
host = "{broker.host}"
port = {broker.port}
push = {"true" if push else "false"}
"""


class Device:
    """An IPA with one software eUICC; ``send`` is its ESipa transport (HTTP to a chosen worker, or MQTT)."""

    def __init__(self, card, send) -> None:
        self.card = card
        self.send = send
        self.pending: list[bytes] = []
        self.seen: dict[bytes, bytes] = {}  # package -> result (a package is run once per device)
        self.runs: list[bytes] = []  # results of every LoadEuiccPackage

    async def handle_package(self, package: bytes) -> None:
        if package in self.seen:
            return  # the same bytes again (re-handed): the result is already on its way
        if package[:2] == b"\xbf\x52":
            result = await self.card.euicc_data(package)
        else:
            result = await self.card.load(package)
            self.runs.append(result)
        self.seen[package] = result
        self.pending.append(result)

    async def cycle(self) -> bool:
        while self.pending:
            await self.send(provide_result(self.card.eid, self.pending[0]))
            self.pending.pop(0)
        answer = await self.send(get_eim_package_request(self.card.eid))
        if answer == NOTHING:
            return False
        await self.handle_package(tlv.children(answer)[0].raw)
        return True

    async def run(self, rounds_idle: int = 3, deadline: float = 90.0) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline
        idle = 0
        while idle < rounds_idle:
            assert loop.time() < end, f"{self.card.eid} not finished"
            idle = 0 if await self.cycle() else idle + 1
            await asyncio.sleep(0.02 if idle else 0)


@pytest.mark.slow
async def test_two_workers_share_a_fleet(postgres, mosquitto, lab, tmp_path):
    from ipa.esipa.mqtt import MqttTransport

    dsn = await fresh_pg_database(postgres.dsn)
    extra = mqtt_config(mosquitto, push=False)
    w1 = await asyncio.to_thread(
        start_eim, tmp_path / "w1", store_url=dsn, lab_pki=lab.root, name="w1", extra_config=extra
    )
    w2 = await asyncio.to_thread(
        start_eim, tmp_path / "w2", store_url=dsn, lab_pki=lab.root, name="w2", extra_config=extra
    )
    transports = []
    try:
        cards = await ready_cards(lab, HTTP_EIDS + MQTT_EIDS)
        ops = []
        for i, card in enumerate(cards):
            register((w1, w2)[i % 2].url, card)
            for _ in range(3):
                ops.append(queue((w2, w1)[i % 2].url, card.eid, {"psmos": [{"getRAT": {}}]}))
        client = httpx.AsyncClient(timeout=30)
        turn = [0]

        async def http_send(message: bytes) -> bytes:
            turn[0] += 1
            url = (w1, w2)[turn[0] % 2].esipa
            r = await client.post(url, content=message, headers=CT)
            assert r.status_code in (200, 204), r.text
            return r.content

        devices = []
        for card in cards[: len(HTTP_EIDS)]:
            devices.append(Device(card, http_send))
        for card in cards[len(HTTP_EIDS) :]:
            t = MqttTransport(
                host=mosquitto.host,
                port=mosquitto.port,
                eid=bytes.fromhex(card.eid),
                client_id=f"ipa-{card.eid}-{os.getpid()}",
                timeout=20,
            )
            await t.start()
            transports.append(t)

            async def mqtt_send(message: bytes, t=t) -> bytes:
                return await t.send(message) or b""

            devices.append(Device(card, mqtt_send))

        async def racing(device: Device) -> None:
            """Polls both workers at the same time, every round, then works through what came."""
            for _ in range(200):
                while device.pending:
                    await device.send(provide_result(device.card.eid, device.pending.pop(0)))
                answers = await asyncio.gather(
                    *(
                        client.post(w.esipa, content=get_eim_package_request(device.card.eid), headers=CT)
                        for w in (w1, w2)
                    )
                )
                packages = [tlv.children(a.content)[0].raw for a in answers if a.content != NOTHING]
                if not packages and not device.pending:
                    return
                for p in packages:
                    await device.handle_package(p)
            raise AssertionError("racing device did not finish")

        await asyncio.gather(racing(devices[0]), *(d.run() for d in devices[1:]))
        await client.aclose()
        store = open_store(dsn)
        await store.open()
        try:
            for op_id in ops:
                op = await store.get_operation(op_id)
                assert op.status is OpStatus.DONE, op
            for d in devices:
                txids = [
                    asn1.decode("EuiccPackageResult", r)[1]["euiccPackageResultDataSigned"]["eimTransactionId"]
                    for r in d.runs
                ]
                assert len(txids) == 3 and len(set(txids)) == 3  # each operation ran exactly once on the eUICC
                counters = sorted(
                    asn1.decode("EuiccPackageRequest", p)["euiccPackageSigned"]["counterValue"]
                    for p in d.seen
                    if p[:2] == b"\xbf\x51"
                )
                assert counters == [2, 3, 4]
                e = await store.get_euicc(d.card.eid)
                assert e.counter_value == 4
            bindings = {(await store.get_euicc(c.eid)).binding for c in cards[len(HTTP_EIDS) :]}
            assert bindings == {"mqtt"}
            # both workers served ESipa requests
            served = [(await asyncio.to_thread(httpx.get, w.url + "/metrics")).text for w in (w1, w2)]
            for text in served:
                assert 'function="getEimPackage"' in text
        finally:
            await store.close()
    finally:
        for t in transports:
            await t.close()
        w1.stop()
        w2.stop()


async def test_push_to_an_mqtt_device(postgres, mosquitto, lab, tmp_path):
    """A device last seen over MQTT gets a new operation pushed as TransferEimPackageRequest (BF4E); its
    TransferEimPackageResponse closes the operation and is acknowledged with BF4E BF53."""
    from ipa.esipa.mqtt import MqttTransport

    dsn = await fresh_pg_database(postgres.dsn)
    server = await asyncio.to_thread(
        start_eim, tmp_path / "p", store_url=dsn, lab_pki=lab.root, extra_config=mqtt_config(mosquitto, push=True)
    )
    card = (await ready_cards(lab, [MQTT_EIDS[0]]))[0]
    t = MqttTransport(
        host=mosquitto.host,
        port=mosquitto.port,
        eid=bytes.fromhex(card.eid),
        client_id=f"ipa-push-{os.getpid()}",
        timeout=20,
    )
    await t.start()
    try:
        register(server.url, card)
        device = Device(card, lambda m: t.send(m))
        queue(server.url, card.eid, {"tags": ["eumCertificate", "euiccCertificate"]}, kind="euicc_data")
        await device.run()  # first contact over MQTT: the eIM now knows the device's binding
        op_id = queue(server.url, card.eid, {"psmos": [{"getRAT": {}}]})
        push = await t.next_push(timeout=20)
        assert push is not None and push.der[:2] == b"\xbf\x4e"
        package = tlv.children(push.der)[0].raw
        assert package[:2] == b"\xbf\x51"
        result = await card.load(package)
        await t.answer_push(push, tlv.encode(0xBF4E, result))
        ack = await t.next_push(timeout=20)
        seq = asn1.decode("EuiccPackageResult", result)[1]["euiccPackageResultDataSigned"]["seqNumber"]
        assert ack is not None and asn1.decode("TransferEimPackageRequest", ack.der) == ("eimAcknowledgements", [seq])
        async with httpx.AsyncClient() as c:
            assert (await c.get(f"{server.url}/v1/operations/{op_id}")).json()["status"] == "done"
            assert 'eim_packages_pushed_total{kind="psmo"} 1.0' in (await c.get(server.url + "/metrics")).text
    finally:
        await t.close()
        server.stop()
