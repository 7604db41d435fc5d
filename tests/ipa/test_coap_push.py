"""The IPA's CoAP(S) transport keeps a push observation at the eIM's real CoAP binding (loopback, plain and DTLS):
it is told at once when a package is queued, renews the observation, registers again after an eIM restart and
misses nothing queued meanwhile; over CoAPS the observation shares the polls' DTLS session and another device's
identity cannot observe this one."""

from __future__ import annotations

import asyncio
import socket

import pytest
from aiocoap import Context, Message
from aiocoap.numbers.codes import Code
from hypothesis import given, settings
from hypothesis import strategies as st

from eim.bindings.coap import CoapBinding
from eim.bindings.coap_observe import PushService
from eim.bindings.coap_psk import PskFile
from eim.push_bus import LocalWakeBus
from eim.store import open_store
from ipa.esipa import PackageWaiting
from ipa.esipa.coap import CoapTransport
from rsp.pki import create_lab_pki
from tests.eim.helpers import get_eim_package_request, make_env
from tests.eim.test_bindings_coap_push import EID, EIDS, PSMO, eventually, start_lab
from tests.eim.test_bindings_coaps import write_keys
from tests.services import free_port, require_dtls

KEY = bytes(range(32, 48))
OTHER = EIDS[0]
OTHER_KEY = bytes(range(64, 80))


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return create_lab_pki(tmp_path_factory.mktemp("pki"), curves=("nist",), eids=[])


async def test_package_waiting_arrives_at_once_and_the_poll_fetches_it(tmp_path, pki):
    lab = await start_lab(tmp_path, pki)
    t = CoapTransport(f"coap://127.0.0.1:{lab.port}", timeout=5, push_eid=EID)
    try:
        await t.start()
        t.start_push()
        await eventually(lambda: t.push_registered, "push observation registered")
        assert await t.next_push(0.2) is None  # nothing queued: the registration said so
        await lab.queue()
        assert isinstance(await t.next_push(30), PackageWaiting)
        answer = await t.send(get_eim_package_request(EID))
        assert answer[:2] == b"\xbf\x4f" and len(answer) > 20
    finally:
        await t.close()
        await lab.binding.stop()
        await lab.env.store.close()


async def test_a_one_shot_exchange_never_registers(tmp_path, pki):
    lab = await start_lab(tmp_path, pki)
    t = CoapTransport(f"coap://127.0.0.1:{lab.port}", timeout=5, push_eid=EID)
    try:
        await t.start()  # what `ipa` one-shot commands do: send, close; no next_push
        assert (await t.send(get_eim_package_request(EID)))[:2] == b"\xbf\x4f"
        await asyncio.sleep(0.3)
        assert t.push_registrations == 0 and len(lab.table) == 0
    finally:
        await t.close()
        await lab.binding.stop()
        await lab.env.store.close()


async def test_observation_is_renewed_and_the_eim_holds_one_per_device(tmp_path, pki):
    lab = await start_lab(tmp_path, pki)
    t = CoapTransport(f"coap://127.0.0.1:{lab.port}", timeout=5, push_eid=EID, push_refresh=1.0)
    try:
        await t.start()
        t.start_push()
        await eventually(lambda: t.push_registrations >= 3, "observation renewed twice")
        assert list(lab.table.observers) == [EID]
        await lab.queue()
        assert isinstance(await t.next_push(30), PackageWaiting)
        assert await t.next_push(0.3) is None  # one notification, not one per renewal
    finally:
        await t.close()
        await lab.binding.stop()
        await lab.env.store.close()


async def test_after_an_eim_restart_the_device_registers_again_and_gets_what_was_queued(tmp_path, pki):
    lab = await start_lab(tmp_path, pki)
    port, store = lab.port, lab.env.store
    t = CoapTransport(f"coap://127.0.0.1:{port}", timeout=2, push_eid=EID, push_refresh=1.0)
    try:
        await t.start()
        t.start_push()
        await eventually(lambda: t.push_registered, "push observation registered")
        await lab.binding.stop()  # the eIM goes away with every observation
        await lab.queue()  # queued through the store while it was down (e.g. another worker's REST API)
        lab = await start_lab(tmp_path, pki, port=port, store=store)
        assert isinstance(await t.next_push(30), PackageWaiting)
        await eventually(lambda: EID in lab.table.observers, "observation at the new eIM")
    finally:
        await t.close()
        await lab.binding.stop()
        await store.close()


async def test_an_eim_without_push_leaves_the_device_polling(tmp_path, pki):
    store = open_store(f"sqlite:///{tmp_path}/eim.db")
    await store.open()
    env = make_env(store, pki)
    await env.service.register_euicc(EID)
    binding = CoapBinding(env.dispatcher, "127.0.0.1", free_port(socket.SOCK_DGRAM))  # no push
    await binding.start()
    t = CoapTransport(f"coap://127.0.0.1:{binding.port}", timeout=5, push_eid=EID)
    try:
        await t.start()
        t.start_push()
        await asyncio.sleep(0.3)
        assert not t.push_registered and t.push_registrations == 0
        assert (await t.send(get_eim_package_request(EID)))[:2] == b"\xbf\x4f"
    finally:
        await t.close()
        await binding.stop()
        await store.close()


# ---------------------------------------------------------------------------------------------- CoAPS
@pytest.fixture
async def coaps_lab(tmp_path, pki):
    require_dtls()
    store = open_store(f"sqlite:///{tmp_path}/eim.db")
    await store.open()
    env = make_env(store, pki)
    for eid in (EID, OTHER):
        await env.service.register_euicc(eid)
    psk_path = tmp_path / "psk"
    write_keys(psk_path, {EID: KEY, OTHER: OTHER_KEY})
    push = PushService(env.service.has_work, env.service.is_registered)
    env.service.wakers.append(LocalWakeBus([push]))
    binding = CoapBinding(env.dispatcher, "127.0.0.1", free_port(socket.SOCK_DGRAM), psk=PskFile(psk_path), push=push)
    await binding.start()
    try:
        yield env, binding, push
    finally:
        await binding.stop()
        await store.close()


async def test_coaps_push_shares_the_polls_dtls_session(coaps_lab):
    env, binding, _push = coaps_lab
    t = CoapTransport(f"coaps://127.0.0.1:{binding.port}", timeout=5, psk=KEY, psk_identity=EID.encode(), push_eid=EID)
    try:
        await t.start()
        t.start_push()
        await eventually(lambda: t.push_registered, "push observation registered over DTLS")
        await env.service.create(EID, "psmo", PSMO)
        assert isinstance(await t.next_push(30), PackageWaiting)
        answer = await t.send(get_eim_package_request(EID))
        assert answer[:2] == b"\xbf\x4f" and len(answer) > 20
        (table,) = binding.dtls_sessions
        assert table.established == 1  # observation, notification and poll: one handshake
        assert _push.status(EID)["binding"] == "coaps"
    finally:
        await t.close()


async def test_coaps_observation_of_another_eid_is_refused_and_the_owner_keeps_its_own(coaps_lab):
    env, binding, push = coaps_lab
    owner = CoapTransport(
        f"coaps://127.0.0.1:{binding.port}", timeout=5, psk=KEY, psk_identity=EID.encode(), push_eid=EID
    )
    intruder = await Context.create_client_context(transports=["tinydtls"])
    intruder.client_credentials.load_from_dict(
        {f"coaps://127.0.0.1:{binding.port}/*": {"dtls": {"psk": OTHER_KEY, "client-identity": OTHER.encode()}}}
    )
    try:
        await owner.start()
        owner.start_push()
        await eventually(lambda: owner.push_registered, "owner registered")
        mine = push.table.observers[EID]
        uri = f"coaps://127.0.0.1:{binding.port}/esipa/push/{EID}"
        answer = await asyncio.wait_for(intruder.request(Message(code=Code.GET, uri=uri, observe=0)).response, 10)
        assert answer.code == Code.FORBIDDEN
        assert push.table.observers[EID] is mine and OTHER not in push.table.observers
        # its own EID is fine for the other device
        own = f"coaps://127.0.0.1:{binding.port}/esipa/push/{OTHER}"
        answer = await asyncio.wait_for(intruder.request(Message(code=Code.GET, uri=own, observe=0)).response, 10)
        assert answer.code == Code.CONTENT and OTHER in push.table.observers
        await env.service.create(EID, "psmo", PSMO)
        assert isinstance(await owner.next_push(30), PackageWaiting)
    finally:
        await owner.close()
        await intruder.shutdown()


# ---------------------------------------------------------------------------------------------- configuration
def test_push_settings_default_on_and_env_overrides():
    from ipa.config import parse_config

    cfg = parse_config("", {})
    assert cfg.eim.push is True and cfg.eim.push_refresh == 25.0
    cfg = parse_config("[eim]\npush = false\npush_refresh = 170\n", {})
    assert cfg.eim.push is False and cfg.eim.push_refresh == 170.0
    cfg = parse_config("", {"IPA_EIM_PUSH": "false", "IPA_EIM_PUSH_REFRESH": "2"})
    assert cfg.eim.push is False and cfg.eim.push_refresh == 2.0


@pytest.mark.parametrize("value", ["0", "0.5", "-3", "86401", "nan", "inf", '"soon"', "true"])
def test_bad_push_refresh_names_the_key(value):
    from ipa.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match="push_refresh"):
        parse_config(f"[eim]\npush_refresh = {value}\n", {})


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=16))
def test_any_push_refresh_from_the_environment_loads_or_names_the_key(text):
    from ipa.config import ConfigError, parse_config

    try:
        cfg = parse_config("", {"IPA_EIM_PUSH_REFRESH": text})
    except ConfigError as exc:
        assert "push_refresh" in str(exc)
    else:
        assert 1.0 <= cfg.eim.push_refresh <= 86400.0
