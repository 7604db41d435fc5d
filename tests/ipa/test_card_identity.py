"""The IPA never mixes cards (SIM or modem swap behind the same device path):

- the state file is bound to the EID read at start: another card never inherits its association tokens, results,
  delivered sequence numbers or procedure in flight, and a card that comes back gets its own state again;
- after any reopening of the channel (card reset, lost port), the EID is read before anything else is sent, and
  on a mismatch the agent stops without sending the other card a single ES10 command beyond GetEID.
"""

from __future__ import annotations

import asyncio

import pytest

from euicc.card import SoftEuicc
from euicc.channel import LocalApduChannel
from ipa.agent import Agent
from ipa.config import IpaConfig
from ipa.es10 import CardChanged
from ipa.state import PendingResult, StateStore, decode_state, encode_state
from rsp.pki import create_lab_pki, lab_eid

EID_A, EID_B = lab_eid(11), lab_eid(12)
GET_EID = bytes.fromhex("BF3E035C015A")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return create_lab_pki(tmp_path_factory.mktemp("swap-pki"), curves=("nist",), eids=(EID_A, EID_B))


@pytest.fixture
def cards(pki, tmp_path):
    return {eid: SoftEuicc.create(pki.root, eid, tmp_path / f"{eid}.cbor") for eid in (EID_A, EID_B)}


class SwapChannel:
    """A device path whose card can be changed under the IPA: after :meth:`swap` the channel reports a reset (as
    a SIM URC or a reopened port does) and leads to the other card."""

    def __init__(self, inner: LocalApduChannel) -> None:
        self.inner = inner
        self._swapped = False

    def swap(self, inner: LocalApduChannel) -> None:
        self.inner = inner
        self._swapped = True

    @property
    def reset_detected(self) -> bool:
        return self._swapped or self.inner.reset_detected

    async def open(self) -> None:
        self._swapped = False
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()

    async def transmit(self, apdu: bytes) -> bytes:
        return await self.inner.transmit(apdu)


def config(tmp_path) -> IpaConfig:
    c = IpaConfig()
    c.ipa.state_file = str(tmp_path / "state.cbor")
    return c


async def started(cfg: IpaConfig, channel) -> Agent:
    agent = Agent(cfg, channel)
    await agent.start(bootstrap=False)
    return agent


async def test_state_is_bound_to_the_card_and_comes_back_with_it(cards, tmp_path):
    cfg = config(tmp_path)
    a = await started(cfg, LocalApduChannel(cards[EID_A]))
    a.store.state.association_tokens["eim.lab"] = 7
    a.store.state.delivered_seqs = [0, 1]
    a.store.state.results.append(PendingResult("r1", "provide_eim_package_result", b"\xbf\x50\x00"))
    a.store.state.inflight = {"procedure": "euicc_package", "seqs": [3]}
    await a.store.commit()
    await a.close()

    b = await started(cfg, LocalApduChannel(cards[EID_B]))  # another card, same state file
    state = b.store.state
    assert state.eid == bytes.fromhex(EID_B)
    assert state.association_tokens == {} and state.delivered_seqs == [] and state.results == []
    assert state.inflight is None
    parked = decode_state((tmp_path / f"state.cbor.{EID_A}").read_bytes())
    assert parked.eid == bytes.fromhex(EID_A) and parked.association_tokens == {"eim.lab": 7}
    await b.close()
    on_disk = decode_state((tmp_path / "state.cbor").read_bytes())
    assert on_disk.eid == bytes.fromhex(EID_B) and on_disk.association_tokens == {}

    a2 = await started(cfg, LocalApduChannel(cards[EID_A]))  # card A is back: its own state again
    assert a2.store.state.association_tokens == {"eim.lab": 7} and a2.store.state.delivered_seqs == [0, 1]
    assert [r.id for r in a2.store.state.results] == ["r1"]
    await a2.close()


async def test_state_file_without_eid_is_set_aside_not_inherited(cards, tmp_path):
    """A state file of an older IPA records no EID: it may be another card's, so it is not used."""
    legacy = StateStore(tmp_path / "state.cbor")
    legacy.state.association_tokens["eim.lab"] = 3
    legacy.state.delivered_seqs = [0, 1]
    (tmp_path / "state.cbor").write_bytes(encode_state(legacy.state))
    agent = await started(config(tmp_path), LocalApduChannel(cards[EID_B]))
    assert agent.store.state.delivered_seqs == [] and agent.store.state.association_tokens == {}
    assert decode_state((tmp_path / "state.cbor.unbound").read_bytes()).delivered_seqs == [0, 1]
    await agent.close()


async def test_card_swapped_under_a_running_agent_gets_nothing_and_the_agent_stops(cards, tmp_path):
    channel = SwapChannel(LocalApduChannel(cards[EID_A]))
    agent = await started(config(tmp_path), channel)
    other = LocalApduChannel(cards[EID_B])
    other.trace = []
    channel.swap(other)

    result = await agent.poll_once()
    assert result.outcome.value == "failed" and EID_B in result.detail
    assert isinstance(agent.card_changed, CardChanged)
    store_data = [c for c, _ in other.trace if c[1:2] == b"\xe2"]
    assert store_data and all(GET_EID in c for c in store_data), [c.hex() for c in store_data]
    with pytest.raises(CardChanged):
        await agent.es10.get_euicc_info1()  # and nothing later gets through either
    assert all(GET_EID in c for c, _ in other.trace if c[1:2] == b"\xe2")
    with pytest.raises(CardChanged):
        await asyncio.wait_for(agent.run(asyncio.Event()), 10)  # the daemon loop stops instead of polling on
    await agent.close()


async def test_same_card_after_a_reset_carries_on(cards, tmp_path):
    channel = SwapChannel(LocalApduChannel(cards[EID_A]))
    agent = await started(config(tmp_path), channel)
    channel.swap(LocalApduChannel(cards[EID_A]))  # a reset, same card
    assert (await agent.es10.get_eid()) == bytes.fromhex(EID_A)
    assert agent.card_changed is None
    await agent.close()


# ------------------------------------------------------------------ the check itself, against a port that lies
class ScriptedPort:
    """A card port that answers every APDU with ``answer`` (data + status word); ``close`` may fail."""

    reset_detected = False

    def __init__(self, answer: bytes, *, close_fails: bool = False) -> None:
        self.answer, self.close_fails, self.closed = answer, close_fails, 0

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        self.closed += 1
        if self.close_fails:
            raise OSError("the port is gone")

    async def transmit(self, apdu: bytes) -> bytes:
        return self.answer


EXPECTED = bytes.fromhex("89049032123451234512345678901235")


def get_eid_answer(eid: bytes) -> bytes:
    return bytes.fromhex("BF3E12") + b"\x5a\x10" + eid + b"\x90\x00"


@pytest.mark.parametrize(
    ("answer", "found"),
    [
        (bytes.fromhex("BF3E055A10") + b"\x90\x00", None),  # truncated: no EID can be read
        (b"\x90\x00", None),  # no data at all
        (bytes.fromhex("BF3E035A0100") + b"\x90\x00", b"\x00"),  # an EID of one byte
        (get_eid_answer(bytes(16)), bytes(16)),  # another card
    ],
)
async def test_a_card_that_does_not_say_it_is_ours_is_another_card(answer, found):
    from ipa.es10 import Es10Client

    for close_fails in (False, True):
        port = ScriptedPort(answer, close_fails=close_fails)
        client = Es10Client(port)
        client.expected_eid = EXPECTED
        with pytest.raises(CardChanged) as exc:
            await client.open()
        assert (exc.value.expected, exc.value.found) == (EXPECTED, found)
        assert client.card_changed is exc.value and port.closed == 1
    client = Es10Client(ScriptedPort(get_eid_answer(EXPECTED)))
    client.expected_eid = EXPECTED
    await client.open()
    assert client.card_changed is None


async def test_a_card_that_refuses_get_eid_fails_the_step_get_eid():
    from ipa.es10 import Es10Client, Es10Error

    client = Es10Client(ScriptedPort(b"\x6a\x88"))
    client.expected_eid = EXPECTED
    with pytest.raises(Es10Error) as exc:
        await client.open()
    assert exc.value.step == "GetEID" and exc.value.sw == 0x6A88
