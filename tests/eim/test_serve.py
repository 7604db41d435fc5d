"""``eim serve`` as a real process, on SQLite and PostgreSQL: curl gets the exact bytes, the CLI drives it, a crash
between signing and replying loses nothing and reuses no counter, and random crashes under load lose nothing."""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import socket
import subprocess

import httpx
import pytest

from eim.model import OpStatus
from eim.packages import EimKey
from eim.store import open_store
from rsp import asn1, tlv
from rsp.pki import create_lab_pki, lab_eid
from tests.eim.helpers import EIM_ID, Card, get_eim_package_request, provide_result
from tests.eim.servers import json_items, json_result, run_cli, start_eim
from tests.services import free_port, missing_service

EIDS = [lab_eid(i) for i in range(41, 47)]
CT = {"Content-Type": "application/x-gsma-rsp-asn1"}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    return create_lab_pki(tmp_path_factory.mktemp("pki"), curves=("nist",), eids=EIDS)


def key_of(lab) -> EimKey:
    return EimKey(EIM_ID, lab.eim_key("nist"), lab.eim_cert("nist"))


async def esipa(client: httpx.AsyncClient, url: str, message: bytes) -> bytes:
    r = await client.post(url, content=message, headers=CT)
    assert r.status_code in (200, 204), (r.status_code, r.text)
    return r.content


class Ipa:
    """A minimal IPA over HTTP for one software eUICC: polls, runs packages, delivers results until acknowledged."""

    def __init__(self, card: Card, urls: list[str]) -> None:
        self.card = card
        self.urls = urls
        self.pending: list[bytes] = []  # results not yet acknowledged
        self.received: list[bytes] = []  # every package handed to it
        self.results: list[bytes] = []  # every result the card produced
        self.errors = 0  # requests that got no answer (the eIM was down)

    def url(self) -> str:
        return random.choice(self.urls)

    async def step(self, client: httpx.AsyncClient) -> bool:
        """One poll cycle. Returns False when the eIM has nothing more."""
        while self.pending:
            await esipa(client, self.url(), provide_result(self.card.eid, self.pending[0]))
            self.pending.pop(0)
        answer = await esipa(client, self.url(), get_eim_package_request(self.card.eid))
        if answer == bytes.fromhex("BF4F03020101"):
            return False
        package = tlv.children(answer)[0].raw
        self.received.append(package)
        if package[:2] == b"\xbf\x52":
            self.pending.append(await self.card.euicc_data(package))
        elif package[:2] == b"\xbf\x51":
            result = await self.card.load(package)
            self.results.append(result)
            self.pending.append(result)
        else:
            raise AssertionError(f"unexpected package {package[:2].hex()}")
        return True

    async def run(
        self,
        client: httpx.AsyncClient,
        until_idle: int = 3,
        deadline: float = 90.0,
        keep_going: asyncio.Event | None = None,
    ) -> None:
        """Poll until the eIM has had nothing ``until_idle`` times in a row (and ``keep_going`` is cleared)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline
        idle = 0
        while idle < until_idle or (keep_going is not None and keep_going.is_set()):
            if loop.time() > end:
                raise AssertionError(f"{self.card.eid}: not finished after {deadline}s")
            try:
                idle = 0 if await self.step(client) else idle + 1
            except (httpx.HTTPError, AssertionError) as exc:
                if isinstance(exc, AssertionError) and "unexpected" in str(exc):
                    raise
                self.errors += 1
                await asyncio.sleep(0.05)  # the eIM is down or restarting
            if keep_going is not None and keep_going.is_set():
                idle = 0  # idle polls count only once no more work can arrive
            await asyncio.sleep(0.01 if idle else 0)


async def ready_cards(lab, eids, counter=1) -> list[Card]:
    cards = []
    for eid in eids:
        card = Card(lab, eid)
        await card.open()
        card.token = await card.associate(key_of(lab), counter_value=counter)
        cards.append(card)
    return cards


def register(url: str, card: Card, counter: int = 1) -> None:
    r = httpx.post(
        url + "/v1/euiccs", json={"eid": card.eid, "association_token": card.token, "counter_value": counter}
    )
    assert r.status_code == 201, r.text


def queue(url: str, eid: str, params: dict, kind: str = "psmo") -> str:
    r = httpx.post(f"{url}/v1/euiccs/{eid}/operations", json={"kind": kind, "params": params})
    assert r.status_code == 202, r.text
    return r.json()["id"]


async def coap_post(port: int, payload: bytes) -> bytes:
    import aiocoap

    ctx = await aiocoap.Context.create_client_context()
    try:
        msg = aiocoap.Message(code=aiocoap.POST, uri=f"coap://127.0.0.1:{port}/gsma/rsp2/asn1", payload=payload)
        response = await asyncio.wait_for(ctx.request(msg).response, 10)
        assert response.code == aiocoap.CHANGED, response
        return response.payload
    finally:
        await ctx.shutdown()


# --------------------------------------------------------------------------------------------------- tests
def test_curl_and_cli(store_url, lab, tmp_path):
    if shutil.which("curl") is None:
        missing_service("curl", "apt-get install curl")
    coap_port = free_port(socket.SOCK_DGRAM)
    coap = f'[coap]\nenabled = true\nhost = "127.0.0.1"\nport = {coap_port}\n'
    server = start_eim(tmp_path, store_url=store_url, lab_pki=lab.root, relay=True, extra_config=coap)
    try:
        eid = EIDS[0]
        r = run_cli(server, "--json", "euicc", "register", eid, "--association-token", "1", "--label", "site=lab")
        assert r.returncode == 0, r.stderr
        line = json_result(r.stdout)
        assert line["created"] is True and line["euicc"]["labels"] == {"site": "lab"}
        request = tmp_path / "get.der"
        request.write_bytes(bytes.fromhex("BF4F125A10" + eid))
        out = tmp_path / "answer.der"
        cp = subprocess.run(
            [
                "curl",
                "-s",
                "-o",
                str(out),
                "-w",
                "%{http_code}",
                "--data-binary",
                f"@{request}",
                "-H",
                "Content-Type: application/x-gsma-rsp-asn1",
                server.esipa,
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert cp.stdout == "200"
        assert out.read_bytes() == bytes.fromhex("BF4F03020101")  # noEimPackageAvailable, byte for byte

        # the same over CoAP (eim serve started the CoAP binding)
        assert asyncio.run(coap_post(coap_port, request.read_bytes())) == bytes.fromhex("BF4F03020101")

        r = run_cli(server, "--json", "op", "create", eid, "download", "--activation-code", "1$smdp.example.com$X1")
        assert r.returncode == 0, r.stderr
        op = json_result(r.stdout)
        assert op["status"] == "queued" and op["params"]["activationCode"] == "1$smdp.example.com$X1"
        r = run_cli(server, "--json", "op", "create", eid, "psmo", "--params", '{"psmos": [{"getRAT": {}}]}')
        assert r.returncode == 0, r.stderr
        r = run_cli(server, "--json", "op", "list", "--eid", eid)
        lines = json_items(r.stdout)
        assert [o["kind"] for o in lines] == ["download", "euicc_data", "psmo"]  # one object per line, in order
        r = run_cli(server, "op", "show", op["id"])
        assert r.returncode == 0 and json.loads(r.stdout)["audit"][0]["action"] == "create"
        r = run_cli(server, "op", "cancel", op["id"])
        assert r.returncode == 0 and r.stdout.startswith("cancelled ")
        r = run_cli(server, "--json", "batch", "create", "euicc_data", "--eid", eid, "--eid", "123")
        assert r.returncode == 1, r.stderr  # one item refused: exit 1 (docs/cli.md), the batch in the error's data
        final = json.loads(r.stdout.splitlines()[-1])["payload"]
        assert final["code"] == -1 and final["message"] == "create batch: 1 of 2 item(s) refused"
        batch = final["data"]
        assert [i["status"] for i in batch["items"]] == ["queued", "refused"]
        r = run_cli(server, "batch", "show", batch["id"])
        assert r.returncode == 0 and "refused" in r.stdout
        r = run_cli(server, "euicc", "list")
        assert r.returncode == 0 and eid in r.stdout
        # --state mirrors GET /v1/euiccs?state=: the eUICC polled above is seen, not never seen
        r = run_cli(server, "--json", "euicc", "list", "--state", "seen_1h", "--label", "site=lab")
        assert r.returncode == 0 and [e["eid"] for e in json_items(r.stdout)] == [eid], r.stderr
        r = run_cli(server, "--json", "euicc", "list", "--state", "never_seen")
        assert r.returncode == 0 and json_items(r.stdout) == [], r.stderr
        # errors: the eIM's message, and exit codes 1 (refused) / 2 (usage) / 3 (unreachable)
        r = run_cli(server, "euicc", "register", "1234")
        assert r.returncode == 1 and "must be 32 decimal digits" in r.stderr
        r = run_cli(server, "op", "create", eid, "psmo", "--params", "{oops")
        assert r.returncode == 2 and "--params: not JSON" in r.stderr
        r = run_cli(None, "euicc", "list", url="http://127.0.0.1:9")
        assert r.returncode == 3 and "cannot reach the eIM" in r.stderr
        metrics = httpx.get(server.url + "/metrics").text
        assert 'eim_esipa_requests_total{binding="http",function="getEimPackage",outcome="ok"} 1.0' in metrics
    finally:
        server.stop()
    assert server.proc.returncode == 0, server.log_text()[-2000:]


async def test_crash_between_signing_and_replying(store_url, lab, tmp_path):
    """SIGKILL while the signed package is committed but the reply not sent: the next poll gets the SAME bytes,
    the eUICC runs it, and the next package takes the next counter value (none lost, none reused)."""
    card = (await ready_cards(lab, [EIDS[1]]))[0]
    first = start_eim(tmp_path / "a", store_url=store_url, lab_pki=lab.root)
    try:
        register(first.url, card)
        op1 = queue(first.url, card.eid, {"psmos": [{"getRAT": {}}]})
        async with httpx.AsyncClient(timeout=30) as client:
            ipa = Ipa(card, [first.esipa])
            assert await ipa.step(client)  # the automatic eUICC data request (certificates)
            assert ipa.received[-1][:2] == b"\xbf\x52"
            await esipa(client, first.esipa, provide_result(card.eid, ipa.pending.pop()))
    finally:
        first.stop()

    slow = start_eim(tmp_path / "b", store_url=store_url, lab_pki=lab.root, env={"EIM_FAILPOINTS": "after_claim=60"})
    store = open_store(store_url)
    await store.open()
    try:
        async with httpx.AsyncClient(timeout=90) as client:
            poll = asyncio.create_task(client.post(slow.esipa, content=get_eim_package_request(card.eid), headers=CT))
            for _ in range(200):
                op = await store.get_operation(op1)
                if op.status is OpStatus.IN_PROGRESS:
                    break
                await asyncio.sleep(0.05)
            assert op.status is OpStatus.IN_PROGRESS and op.counter_value == 2
            signed_bytes = op.package
            for _ in range(200):  # the claim commits just before the failpoint logs: wait for the line too
                if "failpoint reached" in slow.log_text():
                    break
                await asyncio.sleep(0.05)
            assert "failpoint reached" in slow.log_text()
            slow.kill()
            with pytest.raises(httpx.HTTPError):
                await poll  # the IPA never got the package
            assert (await store.get_euicc(card.eid)).counter_value == 2
    finally:
        slow.kill()

    again = start_eim(tmp_path / "c", store_url=store_url, lab_pki=lab.root)
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            answer = await esipa(client, again.esipa, get_eim_package_request(card.eid))
            package = tlv.children(answer)[0].raw
            assert package == signed_bytes  # byte for byte, same counter, same signature
            epr = await card.load(package)
            assert asn1.decode("EuiccPackageResult", epr)[0] == "euiccPackageResultSigned"
            await esipa(client, again.esipa, provide_result(card.eid, epr))
            done = await store.get_operation(op1)
            assert done.status is OpStatus.DONE and done.attempts == 2
            op2 = queue(again.url, card.eid, {"psmos": [{"getRAT": {}}]})
            nxt = tlv.children(await esipa(client, again.esipa, get_eim_package_request(card.eid)))[0].raw
            assert asn1.decode("EuiccPackageRequest", nxt)["euiccPackageSigned"]["counterValue"] == 3
            epr2 = await card.load(nxt)
            await esipa(client, again.esipa, provide_result(card.eid, epr2))
            assert (await store.get_operation(op2)).status is OpStatus.DONE
    finally:
        again.stop()
        await store.close()


@pytest.mark.slow
async def test_random_crashes_under_load_lose_nothing(store_url, lab, tmp_path):
    """Four IPAs work through their queues while the eIM is SIGKILLed at random moments and restarted: every
    operation ends done, each eUICC ran each package once, and no counter value names two different packages."""
    cards = await ready_cards(lab, EIDS[2:6])
    server = start_eim(tmp_path / "s0", store_url=store_url, lab_pki=lab.root)
    ops: list[str] = []
    for card in cards:
        register(server.url, card)
        for _ in range(2):
            ops.append(queue(server.url, card.eid, {"psmos": [{"getRAT": {}}]}))
    url = server.esipa
    ipas = [Ipa(c, [url]) for c in cards]
    rng = random.Random(7)
    chaos_running = asyncio.Event()
    chaos_running.set()

    async def chaos():
        nonlocal server
        try:
            for i in range(3):
                await asyncio.sleep(rng.uniform(0.1, 0.4))
                server.kill()
                await asyncio.sleep(rng.uniform(0.0, 0.2))
                server = await asyncio.to_thread(
                    start_eim, tmp_path / f"s{i + 1}", store_url=store_url, lab_pki=lab.root, port=server.port
                )
                for card in cards:  # new work arrives while the IPAs are polling
                    ops.append(await asyncio.to_thread(queue, server.url, card.eid, {"psmos": [{"getRAT": {}}]}))
        finally:
            chaos_running.clear()

    try:
        async with httpx.AsyncClient(timeout=10) as client:
            await asyncio.gather(chaos(), *(ipa.run(client, deadline=120, keep_going=chaos_running) for ipa in ipas))
    finally:
        server.stop()
    assert sum(ipa.errors for ipa in ipas) > 0  # the crashes did hit requests in flight
    store = open_store(store_url)
    await store.open()
    try:
        for op_id in ops:
            assert (await store.get_operation(op_id)).status is OpStatus.DONE
        for ipa in ipas:
            signed = [p for p in ipa.received if p[:2] == b"\xbf\x51"]
            by_counter: dict[int, set[bytes]] = {}
            for p in signed:
                by_counter.setdefault(
                    asn1.decode("EuiccPackageRequest", p)["euiccPackageSigned"]["counterValue"], set()
                ).add(p)
            assert all(len(v) == 1 for v in by_counter.values())  # a counter value never names two packages
            assert sorted(by_counter) == [2, 3, 4, 5, 6]
            ok = [r for r in ipa.results if asn1.decode("EuiccPackageResult", r)[0] == "euiccPackageResultSigned"]
            assert len(ok) == 5  # each package ran once on the eUICC
            assert (await store.get_euicc(ipa.card.eid)).counter_value == 6
    finally:
        await store.close()
