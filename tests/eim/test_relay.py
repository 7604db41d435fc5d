"""The ES9+ relay against the real lab SM-DP+ over HTTPS on loopback, with an rsp-based test eUICC.

The test plays the IPA: it builds the ESipa requests from the card's ES10b answers and turns the relay's ESipa
answers back into what the card verifies (re-adding the 5F37/04 headers the relay stripped), so a wrong byte in
the mapping fails a signature check on the card or on the SM-DP+. Runs on an in-memory RelayStore and on the
real eIM store (SQLite and PostgreSQL, from ``tests/eim/conftest.py``).
"""

from __future__ import annotations

import base64
import os
import time
from typing import Any

import pytest

from eim.interfaces import DownloadRelay, RelayStore
from eim.model import Euicc, Operation, OpKind, OpStatus
from eim.relay import Es9PlusClient, Es9Relay, InvalidSmdpAddress, session_key, tls_context
from eim.store import Built
from eim.store.logic import new_id
from rsp import asn1, tlv
from rsp.pki import LAB_SMDP_OID, create_lab_pki, lab_eid
from smdpp import orders
from smdpp.config import SmdppConfig
from smdpp.server import running_server
from tests.eim.test_bindings_common import pir
from tests.services import free_port
from tests.smdpp.sim import SimEuicc

T = tlv.encode
EID_A = lab_eid(11)
EID_B = lab_eid(12)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class MemoryRelayStore:
    """The RelayStore protocol in memory (what the relay needs of the eIM store, nothing else)."""

    def __init__(self) -> None:
        self.sessions: dict[str, dict[str, Any]] = {}
        self.certificates: dict[str, tuple[bytes, bytes]] = {}
        self.operations: dict[bytes, Operation] = {}

    async def put_download_session(self, key: str, data: dict[str, Any]) -> None:
        self.sessions[key] = dict(data)

    async def get_download_session(self, key: str) -> dict[str, Any] | None:
        found = self.sessions.get(key)
        return dict(found) if found is not None else None

    async def delete_download_session(self, key: str) -> None:
        self.sessions.pop(key, None)

    async def set_euicc_certificates(self, eid: str, euicc_cert_der: bytes, eum_cert_der: bytes) -> None:
        self.certificates[eid] = (euicc_cert_der, eum_cert_der)

    async def find_operation_by_eim_transaction_id(self, eim_transaction_id: bytes) -> Operation | None:
        return self.operations.get(eim_transaction_id)

    def add_download(self, eid: str, params: dict[str, Any], kind: OpKind = OpKind.DOWNLOAD) -> bytes:
        txid = os.urandom(16)
        self.operations[txid] = Operation(
            id=new_id(),
            eid=eid,
            kind=kind,
            params=params,
            status=OpStatus.IN_PROGRESS,
            created_at=1.0,
            updated_at=1.0,
            eim_transaction_id=txid,
        )
        return txid


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return create_lab_pki(tmp_path_factory.mktemp("relay-pki"), curves=("nist", "brainpool"), eids=(EID_A, EID_B))


@pytest.fixture(scope="module")
def smdp(pki, tmp_path_factory):
    config = SmdppConfig(data_dir=tmp_path_factory.mktemp("smdp-data"), pki_dir=pki.root, port=0)
    with running_server(config) as srv:
        yield srv


@pytest.fixture
async def client(smdp):
    c = Es9PlusClient(tls_context([smdp.ca_bundle]), timeout=20)
    yield c
    await c.aclose()


@pytest.fixture
def memory_store() -> MemoryRelayStore:
    return MemoryRelayStore()


def new_order(smdp, **kw) -> orders.Order:
    return orders.create_order(smdp.ctx.store, profile="ts48", smdp_address=smdp.address, **kw)


# ---------------------------------------------------------------- the IPA side of an indirect download
class Ipa:
    """Builds ESipa requests from the card and maps ESipa answers back to the card's ES10b inputs."""

    def __init__(self, relay: DownloadRelay, card: SimEuicc) -> None:
        self.relay = relay
        self.card = card
        self.eid = card.eid
        self.txid = b""

    async def initiate(self, address: str | None, eim_txid: bytes | None = None, *, info1: bool = True) -> bytes:
        body = T(0x81, self.card.get_challenge())
        if address is not None:
            body += T(0x83, address.encode())
        if info1:
            body += self.card.euicc_info1()
        if eim_txid is not None:
            body += T(0x82, eim_txid)
        return await self.relay.initiate_authentication(self.eid, T(0xBF39, body))

    def auth_json(self, answer: bytes) -> dict[str, str]:
        assert asn1.decode("EsipaMessageFromEimToIpa", answer)[1][0] == "initiateAuthenticationOkEsipa"
        ok = tlv.children(tlv.children(answer)[0])
        assert [c.tag for c in ok[:5]] == [0x80, 0x30, 0x5F37, 0x04, 0x30]
        # matchingId (0C) only when the eIM holds the download data (the IPA sent no SM-DP+ address)
        self.supplied_matching_id = ok[5].value.decode() if len(ok) > 5 and ok[5].tag == 0x0C else None
        assert len(ok) == (6 if self.supplied_matching_id else 5)
        self.txid = ok[0].value
        assert len(ok[2].value) == 64  # a bare signature value, header stripped
        return {
            "transactionId": self.txid.hex().upper(),
            "serverSigned1": b64(ok[1].raw),
            "serverSignature1": b64(T(0x5F37, ok[2].value)),
            "euiccCiPKIdToBeUsed": b64(T(0x04, ok[3].value)),
            "serverCertificate": b64(ok[4].raw),
        }

    async def authenticate(self, auth: dict[str, str], matching_id: str | None, **kw) -> bytes:
        asr = self.card.authenticate_server(auth, matching_id, **kw)
        return await self.relay.authenticate_client(self.eid, T(0xBF3B, T(0x80, self.txid) + asr))

    def client_json(self, answer: bytes) -> dict[str, str]:
        assert asn1.decode("EsipaMessageFromEimToIpa", answer)[1][0] == "authenticateClientOkDPEsipa"
        ok = tlv.children(tlv.children(answer)[0])
        assert [c.tag for c in ok] == [0x80, 0xBF25, 0x30, 0x5F37, 0x30]
        assert ok[0].value == self.txid
        return {
            "profileMetadata": b64(ok[1].raw),
            "smdpSigned2": b64(ok[2].raw),
            "smdpSignature2": b64(T(0x5F37, ok[3].value)),
            "smdpCertificate": b64(ok[4].raw),
        }

    async def get_bpp(self, client: dict[str, str], cc: str | None = None, **kw) -> bytes:
        pdr = self.card.prepare_download(client, cc, **kw)
        return await self.relay.get_bound_profile_package(self.eid, T(0xBF3A, T(0x80, self.txid) + pdr))

    def bpp(self, answer: bytes) -> bytes:
        assert asn1.decode("EsipaMessageFromEimToIpa", answer)[1][0] == "getBoundProfilePackageOkEsipa"
        ok = tlv.children(tlv.children(answer)[0])
        assert [c.tag for c in ok] == [0x80, 0xBF36] and ok[0].value == self.txid
        return ok[1].raw

    async def cancel(self, reason: int = 1, txid: bytes | None = None) -> bytes:
        es10 = self.card.cancel_session(reason)  # BF41 { A0 {..} } from the card
        body = T(0x80, txid or self.txid) + T(0xA1, tlv.parse_exact(es10).value)
        return await self.relay.cancel_session(self.eid, T(0xBF41, body))

    async def download(self, address: str | None, matching_id: str, eim_txid: bytes | None = None) -> bytes:
        auth = self.auth_json(await self.initiate(address, eim_txid))
        if address is None:  # eimDownloadDataHandling: the matchingId comes from the eIM
            assert self.supplied_matching_id == matching_id
            matching_id = self.supplied_matching_id
        else:
            assert self.supplied_matching_id is None
        client = self.client_json(await self.authenticate(auth, matching_id))
        pir = self.card.load_bpp(self.bpp(await self.get_bpp(client)))
        await self.relay.forward_notification(self.eid, pir)
        return pir


def esipa(answer: bytes) -> tuple[str, Any]:
    return asn1.decode("EsipaMessageFromEimToIpa", answer)[1]


# ---------------------------------------------------------------- tests
def test_relay_implements_the_interfaces(memory_store):
    assert isinstance(memory_store, RelayStore)
    relay = Es9Relay(memory_store, Es9PlusClient(tls_context(use_system_store=True)))
    assert isinstance(relay, DownloadRelay)


@pytest.mark.parametrize("curve", ["nist", "brainpool"])
async def test_full_indirect_download_on_memory_store(smdp, client, pki, memory_store, curve):
    order = new_order(smdp)
    eim_txid = memory_store.add_download(EID_A, {"activationCode": f"1${smdp.address}${order.matching_id}"})
    relay = Es9Relay(memory_store, client)
    card = SimEuicc(pki, curve, eid=EID_A)
    ipa = Ipa(relay, card)
    pir = await ipa.download(None, order.matching_id, eim_txid)  # address taken from the operation
    assert order.iccid in card.profiles
    after = smdp.ctx.store.get(order.matching_id)
    assert after.state == "installed" and after.bound_eid == EID_A
    notes = [n for n in smdp.ctx.store.notifications() if n.kind == "pir" and n.iccid == order.iccid]
    assert notes and notes[0].verified  # the PIR reached the SM-DP+ byte for byte (signature verified there)
    assert tlv.parse_exact(pir).tag == 0xBF37
    assert memory_store.certificates[EID_A] == (card.cert_der, card.eum_der)
    assert session_key(ipa.txid) not in memory_store.sessions  # ended by the PIR


async def test_full_indirect_download_on_the_eim_store(smdp, client, pki, store):
    """The same download with the real store (SQLite / PostgreSQL): operation lookup, sessions, certificates."""
    order = new_order(smdp)
    ac = f"1${smdp.address}${order.matching_id}"
    await store.add_euicc(Euicc(eid=EID_B, eim_id="eim.test", association_token=1, counter_value=0), who="t")
    op = Operation(
        id=new_id(),
        eid=EID_B,
        kind=OpKind.DOWNLOAD,
        params={"activationCode": ac, "smdpAddress": smdp.address},
        status=OpStatus.QUEUED,
        created_at=1.0,
        updated_at=1.0,
    )
    await store.add_operations([op], who="t")
    eim_txid = os.urandom(16)
    claim = await store.claim_next(EID_B, time.time(), lambda e, o, n: Built(b"\xbf\x54\x00", eim_txid))
    assert claim.operation is not None and claim.operation.eim_transaction_id == eim_txid

    relay = Es9Relay(store, client)
    card = SimEuicc(pki, "nist", eid=EID_B)
    ipa = Ipa(relay, card)
    auth = ipa.auth_json(await ipa.initiate(smdp.address, eim_txid))
    session = await store.get_download_session(session_key(ipa.txid))
    assert session["eid"] == EID_B and session["smdp_address"] == smdp.address
    assert session["operation_id"] == op.id and session["eim_transaction_id"] == eim_txid.hex().upper()

    # another worker (another relay, same store) continues the session
    relay2 = Es9Relay(store, client)
    ipa.relay = relay2
    client_json = ipa.client_json(await ipa.authenticate(auth, order.matching_id))
    assert (await store.get_download_session(session_key(ipa.txid)))["step"] == "authenticated"
    learned = await store.get_euicc(EID_B)
    assert learned.euicc_certificate == card.cert_der and learned.eum_certificate == card.eum_der
    pir = card.load_bpp(ipa.bpp(await ipa.get_bpp(client_json)))
    await relay.forward_notification(EID_B, pir)
    assert smdp.ctx.store.get(order.matching_id).state == "installed"
    assert await store.get_download_session(session_key(ipa.txid)) is None


async def test_es9_errors_map_to_esipa_codes(smdp, client, pki, memory_store):
    relay = Es9Relay(memory_store, client)

    # AuthenticateClient: unknown matchingId -> 8.2.6/3.8 -> matchingIdRefused(6)
    ipa = Ipa(relay, SimEuicc(pki, "nist", eid=EID_A))
    auth = ipa.auth_json(await ipa.initiate(smdp.address))
    assert esipa(await ipa.authenticate(auth, "NO-SUCH-ORDER")) == ("authenticateClientErrorEsipa", 6)

    # AuthenticateClient: tampered euiccSignature1 -> 8.1/6.1 -> euiccSignatureInvalid(5)
    order = new_order(smdp)
    ipa = Ipa(relay, SimEuicc(pki, "nist", eid=EID_A))
    auth = ipa.auth_json(await ipa.initiate(smdp.address))
    answer = await ipa.authenticate(auth, order.matching_id, tamper_signature=True)
    assert esipa(answer) == ("authenticateClientErrorEsipa", 5)
    assert EID_A not in memory_store.certificates  # refused by the SM-DP+: nothing learned

    # GetBoundProfilePackage: tampered euiccSignature2 -> 8.1/6.1 -> euiccSignatureInvalid(1)
    order = new_order(smdp)
    ipa = Ipa(relay, SimEuicc(pki, "nist", eid=EID_A))
    client_json = ipa.client_json(
        await ipa.authenticate(ipa.auth_json(await ipa.initiate(smdp.address)), order.matching_id)
    )
    assert esipa(await ipa.get_bpp(client_json, tamper_signature=True)) == ("getBoundProfilePackageErrorEsipa", 1)

    # GetBoundProfilePackage: confirmation code required but missing -> 8.2.7/2.2 -> confirmationCodeMissing(2)
    order = new_order(smdp, confirmation_code="1234")
    ipa = Ipa(relay, SimEuicc(pki, "nist", eid=EID_A))
    client_json = ipa.client_json(
        await ipa.authenticate(ipa.auth_json(await ipa.initiate(smdp.address)), order.matching_id)
    )
    assert esipa(await ipa.get_bpp(client_json)) == ("getBoundProfilePackageErrorEsipa", 2)

    # InitiateAuthentication: the SM-DP+ refuses an address that is not its own -> 8.8.1/3.8 -> invalidDpAddress(1)
    port = smdp.address.rsplit(":", 1)[1]
    ipa = Ipa(relay, SimEuicc(pki, "nist", eid=EID_A))
    assert esipa(await ipa.initiate(f"localhost:{port}")) == ("initiateAuthenticationErrorEsipa", 1)


async def test_cancel_session_forwarded_and_session_closed(smdp, client, pki, memory_store):
    relay = Es9Relay(memory_store, client)
    order = new_order(smdp)
    ipa = Ipa(relay, SimEuicc(pki, "nist", eid=EID_A))
    ipa.client_json(await ipa.authenticate(ipa.auth_json(await ipa.initiate(smdp.address)), order.matching_id))
    answer = await ipa.cancel(reason=1)  # postponed
    assert answer == bytes.fromhex("BF4102A000") and esipa(answer) == ("cancelSessionOk", {})
    assert session_key(ipa.txid) not in memory_store.sessions
    assert smdp.ctx.store.get(order.matching_id).state != "installed"
    # the session is gone: a late GetBoundProfilePackage / CancelSession is refused without calling the SM-DP+
    assert esipa(
        await ipa.relay.get_bound_profile_package(EID_A, T(0xBF3A, T(0x80, ipa.txid) + T(0xBF21, T(0xA0, b""))))
    ) == (
        "getBoundProfilePackageErrorEsipa",
        95,
    )
    assert esipa(await ipa.cancel()) == ("cancelSessionError", 1)


async def test_cancel_session_accepts_the_double_tagged_form(smdp, client, pki, memory_store):
    relay = Es9Relay(memory_store, client)
    order = new_order(smdp)
    ipa = Ipa(relay, SimEuicc(pki, "brainpool", eid=EID_A))
    ipa.client_json(await ipa.authenticate(ipa.auth_json(await ipa.initiate(smdp.address)), order.matching_id))
    es10 = ipa.card.cancel_session(0)
    answer = await relay.cancel_session(EID_A, T(0xBF41, T(0x80, ipa.txid) + T(0xA1, es10)))  # A1 { BF41 .. }
    assert answer == bytes.fromhex("BF4102A000")


async def test_sessions_belong_to_their_eid(smdp, client, pki, memory_store):
    relay = Es9Relay(memory_store, client)
    order = new_order(smdp)
    ipa = Ipa(relay, SimEuicc(pki, "nist", eid=EID_A))
    auth = ipa.auth_json(await ipa.initiate(smdp.address))
    asr = ipa.card.authenticate_server(auth, order.matching_id)
    other = await relay.authenticate_client(EID_B, T(0xBF3B, T(0x80, ipa.txid) + asr))
    assert esipa(other) == ("authenticateClientErrorEsipa", 10)  # invalidTransactionId for another eUICC
    unknown = await relay.authenticate_client(EID_A, T(0xBF3B, T(0x80, os.urandom(16)) + asr))
    assert esipa(unknown) == ("authenticateClientErrorEsipa", 10)


async def test_sessions_expire(smdp, client, pki, memory_store):
    now = [1000.0]
    relay = Es9Relay(memory_store, client, session_ttl=60, clock=lambda: now[0])
    order = new_order(smdp)
    ipa = Ipa(relay, SimEuicc(pki, "nist", eid=EID_A))
    auth = ipa.auth_json(await ipa.initiate(smdp.address))
    now[0] += 61
    assert esipa(await ipa.authenticate(auth, order.matching_id)) == ("authenticateClientErrorEsipa", 10)
    assert session_key(ipa.txid) not in memory_store.sessions


async def test_operation_checks_on_initiate(smdp, client, pki, memory_store):
    relay = Es9Relay(memory_store, client)
    ipa = Ipa(relay, SimEuicc(pki, "nist", eid=EID_A))
    ac = f"1${smdp.address}$MID"
    # unknown eimTransactionId -> invalidEimTransactionId(52)
    assert esipa(await ipa.initiate(smdp.address, os.urandom(16))) == ("initiateAuthenticationErrorEsipa", 52)
    # an operation of another eUICC, or not a download -> 52
    other = memory_store.add_download(EID_B, {"activationCode": ac})
    assert esipa(await ipa.initiate(smdp.address, other)) == ("initiateAuthenticationErrorEsipa", 52)
    psmo = memory_store.add_download(EID_A, {"psmos": []}, kind=OpKind.PSMO)
    assert esipa(await ipa.initiate(smdp.address, psmo)) == ("initiateAuthenticationErrorEsipa", 52)
    # the request names another SM-DP+ than the operation -> smdpAddressMismatch(50)
    mine = memory_store.add_download(EID_A, {"activationCode": ac})
    assert esipa(await ipa.initiate("smdp.example.com", mine)) == ("initiateAuthenticationErrorEsipa", 50)
    # the activation code's SM-DP+ OID is not the one in CERT.DPauth -> smdpOidMismatch(51)
    oid_op = memory_store.add_download(EID_A, {"activationCode": f"1${smdp.address}$MID$1.2.3.4"})
    assert esipa(await ipa.initiate(None, oid_op)) == ("initiateAuthenticationErrorEsipa", 51)
    # the right OID passes
    right = LAB_SMDP_OID  # the OID in the lab CERT.DPauth
    ok_op = memory_store.add_download(EID_A, {"activationCode": f"1${smdp.address}$MID${right}"})
    assert esipa(await ipa.initiate(None, ok_op))[0] == "initiateAuthenticationOkEsipa"
    # no address anywhere -> invalidDpAddress(1); a default SM-DP+ fills in
    assert esipa(await ipa.initiate(None)) == ("initiateAuthenticationErrorEsipa", 1)
    with_default = Es9Relay(memory_store, client, default_smdp_address=smdp.address)
    ipa.relay = with_default
    assert esipa(await ipa.initiate(None))[0] == "initiateAuthenticationOkEsipa"


async def test_addresses_refused_before_any_connection(smdp, client, pki, memory_store):
    relay = Es9Relay(memory_store, client, allowed_smdp_addresses=["smdp.example.com"])
    ipa = Ipa(relay, SimEuicc(pki, "nist", eid=EID_A))
    assert esipa(await ipa.initiate(smdp.address)) == ("initiateAuthenticationErrorEsipa", 1)  # not allowed
    relay = Es9Relay(memory_store, client)
    ipa.relay = relay
    for bad in ("https://smdp.example.com/x", "user@host", "[::1]:443", "a b", "host:0", "host:70000", "-x.com"):
        assert esipa(await ipa.initiate(bad)) == ("initiateAuthenticationErrorEsipa", 1), bad
    with pytest.raises(InvalidSmdpAddress):
        await relay.forward_notification(EID_A, pir(address="a/b"))


async def test_untrusted_tls_and_unreachable_smdp(smdp, pki, memory_store, tmp_path):
    rogue = create_lab_pki(tmp_path / "rogue", curves=("nist",), eids=(EID_A,))
    untrusting = Es9PlusClient(tls_context([rogue.ca_bundle_path]), timeout=5)  # another lab's CAs
    try:
        ipa = Ipa(Es9Relay(memory_store, untrusting), SimEuicc(pki, "nist", eid=EID_A))
        assert esipa(await ipa.initiate(smdp.address)) == ("initiateAuthenticationErrorEsipa", 1)  # TLS refused
    finally:
        await untrusting.aclose()
    trusting = Es9PlusClient(tls_context([smdp.ca_bundle]), timeout=5)
    try:
        ipa = Ipa(Es9Relay(memory_store, trusting), SimEuicc(pki, "nist", eid=EID_A))
        closed = f"127.0.0.1:{free_port()}"
        assert esipa(await ipa.initiate(closed)) == ("initiateAuthenticationErrorEsipa", 127)  # nobody listens
    finally:
        await trusting.aclose()


async def test_euicc_info1_remembered_for_minimized_requests(smdp, client, pki, memory_store):
    relay = Es9Relay(memory_store, client)
    ipa = Ipa(relay, SimEuicc(pki, "nist", eid=EID_B))
    assert esipa(await ipa.initiate(smdp.address, info1=False)) == ("initiateAuthenticationErrorEsipa", 127)
    assert esipa(await ipa.initiate(smdp.address))[0] == "initiateAuthenticationOkEsipa"
    assert esipa(await ipa.initiate(smdp.address, info1=False))[0] == "initiateAuthenticationOkEsipa"


async def test_other_signed_notification_forwarded(smdp, client, pki, memory_store):
    relay = Es9Relay(memory_store, client)
    card = SimEuicc(pki, "nist", eid=EID_A)
    note = card.other_notification(1, "8949449999999990920", smdp.address)  # enable
    before = len(smdp.ctx.store.notifications())
    await relay.forward_notification(EID_A, T(0xBF3D, T(0xA0, note)))  # the whole BF3D is accepted too
    assert len(smdp.ctx.store.notifications()) == before + 1


async def test_relay_never_learns_a_certificate_for_another_eid(smdp, client, pki, memory_store):
    """The relay's learning path (AuthenticateClient): card A runs B's download operation (the session's EID is
    B's, from the operation). The SM-DP+ accepts A's certificates and signature, but they name A: the eIM learns
    no certificate for B (nor for A, from a session that is not A's)."""
    order = new_order(smdp)
    eim_txid = memory_store.add_download(EID_B, {"activationCode": f"1${smdp.address}${order.matching_id}"})
    ipa = Ipa(Es9Relay(memory_store, client), SimEuicc(pki, "nist", eid=EID_A))
    ipa.eid = EID_B  # what the dispatcher passes: the EID of the operation that handed out eim_txid
    auth = ipa.auth_json(await ipa.initiate(smdp.address, eim_txid))
    ipa.client_json(await ipa.authenticate(auth, order.matching_id))  # the SM-DP+ accepted the authentication
    assert memory_store.certificates == {}
