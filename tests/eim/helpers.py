"""Test wiring for the eIM core: a lab PKI, the eIM objects on a store, and a software eUICC on the other side.

The eUICC side is the project's software eUICC (``euicc.card.SoftEuicc``) behind the in-process APDU channel and
the IPA's ES10 client, so packages really are verified and executed by a card and results really are signed by
it. The few IPA steps a test needs (answering an eUICC data request, wrapping a result) are spelled out here as
the wire formats of the protocol brief, so a failure points at the eIM, not at the IPA.
"""

from __future__ import annotations

from dataclasses import dataclass

from eim.esipa.dispatcher import EsipaDispatcher, check_structure
from eim.esipa.results import ResultProcessor
from eim.interfaces import RequestContext
from eim.model import Euicc, Operation, OpKind, OpStatus
from eim.operations import OperationService, OperationSettings
from eim.packages import EimKey, PackageFactory
from eim.packages.euicc_package import EuiccKeys
from rsp import asn1, crypto, tlv
from rsp.errors import RspError
from rsp.pki import LabPki

EIM_ID = "eim.lab.test"
HTTP = RequestContext("http", "127.0.0.1", peer_ip="127.0.0.1")


@dataclass
class Env:
    store: object
    key: EimKey
    service: OperationService
    rp: ResultProcessor
    dispatcher: EsipaDispatcher

    async def handle(self, message: bytes, ctx: RequestContext = HTTP) -> bytes | None:
        return await self.dispatcher.handle(message, ctx)


def make_env(
    store, lab: LabPki, *, curve: str = "nist", relay=None, clock=None, settings=None, admission=None, policy=None
) -> Env:
    """With a ``relay``, notifications go to the store's outbox (``env.rp.outbox``); a test delivers the due ones
    with ``await env.rp.outbox.deliver_due()`` (``eim serve`` runs that in its forwarder task). ``admission``:
    the outbox's :class:`eim.relay.admission.Admission` (default: a lab eIM's, loopback SM-DP+s allowed);
    ``policy``: its retry policy."""
    key = EimKey(EIM_ID, lab.eim_key(curve), lab.eim_cert(curve))
    kw = {"clock": clock} if clock else {}
    service = OperationService(store, PackageFactory(key), settings or OperationSettings(), **kw)
    outbox = None
    if relay is not None:
        from eim.relay.outbox import NotificationOutbox

        outbox = NotificationOutbox(store, relay, policy, admission=admission or lab_admission(), **kw)
    rp = ResultProcessor(store, service, EuiccKeys(lab.ci_certs()), relay, outbox=outbox, **kw)
    return Env(store, key, service, rp, EsipaDispatcher(rp))


def lab_admission(allowed=(), **kw):
    """The outbox admission of a lab eIM listening on loopback (``[relay]`` defaults otherwise)."""
    from eim.relay.admission import Admission
    from eim.smdp_addresses import SmdpAddressPolicy

    return Admission(addresses=SmdpAddressPolicy.of(allowed, allow_loopback=True), **kw)


def verified(lab: LabPki, raw: bytes, eid: str, curve: str = "nist"):
    """``raw`` (a notification the lab eUICC ``eid`` signed) through the eIM's verifier, as the outbox takes it."""
    from eim.packages import notification as nv

    parts = nv.parse(raw)
    if parts.kind == "other":
        return nv.verify_other(parts, EuiccKeys(lab.ci_certs()), eid)
    return nv.verify_pir(parts, lab.euicc_cert(eid, curve), eid)


def get_eim_package_request(eid: str) -> bytes:
    return asn1.encode("EsipaMessageFromIpaToEim", ("getEimPackageRequest", {"eidValue": bytes.fromhex(eid)}))


def provide_result(eid: str | None, part: bytes) -> bytes:
    """ProvideEimPackageResult ``BF50 { 5A eid, <eimPackageResult as received> }`` (never re-encoded)."""
    body = (tlv.encode(0x5A, bytes.fromhex(eid)) if eid else b"") + part
    return tlv.encode(0xBF50, body)


class Card:
    """A software eUICC with the IPA's ES10 client in front of it."""

    def __init__(self, lab: LabPki, eid: str, curve: str = "nist") -> None:
        from euicc.card import SoftEuicc
        from euicc.channel import LocalApduChannel
        from ipa.es10 import Es10Client

        self.eid = eid
        self.curve = curve
        self.card = SoftEuicc.create(lab.root, eid, None, curve=curve)
        self.es10 = Es10Client(LocalApduChannel(self.card))

    async def open(self) -> None:
        await self.es10.open()

    async def associate(self, key: EimKey, counter_value: int = 1, token: int = -1) -> int:
        """AddInitialEim with this eIM's key; returns the association token the card generated."""
        request = asn1.encode(
            "AddInitialEimRequest",
            {
                "eimConfigurationDataList": [
                    {
                        "eimId": key.eim_id,
                        "eimFqdn": "127.0.0.1:8000",
                        "counterValue": counter_value,
                        "associationToken": token,
                        "eimPublicKeyData": (
                            "eimPublicKey",
                            asn1.decode("SubjectPublicKeyInfo", key.public_key_spki()),
                        ),
                    }
                ]
            },
        )
        answer = await self.es10.call(request, "AddInitialEim")
        alt, value = asn1.decode("AddInitialEimResponse", answer)
        assert alt == "addInitialEimOk", value
        kind, tok = value[0]
        assert kind == "associationToken"
        return tok

    async def load(self, package: bytes) -> bytes:
        """ES10b.LoadEuiccPackage: the BF51 from the eIM in, the card's BF51 result out."""
        return await self.es10.call(package, "LoadEuiccPackage")

    async def euicc_data(self, request_bf52: bytes, *, features: tuple[int, ...] = (1,)) -> bytes:
        """What an IPA answers to an IpaEuiccDataRequest asking for certificates + capabilities:
        ``BF52 { A0 { A5 eum, A6 euicc, A8 caps, 87 txid } }`` (certificate contents under implicit tags)."""
        req = asn1.decode("IpaEuiccDataRequest", request_bf52)
        certs = await self.es10.get_certs()
        bits = 0
        for b in features:
            bits |= 0x80 >> b
        nbits = max(features) + 1
        unused = (8 - nbits % 8) % 8
        caps = tlv.encode(0xA8, tlv.encode(0x80, bytes([unused, bits])))
        body = (
            tlv.encode(0xA5, tlv.parse_exact(certs.eum_certificate).value)
            + tlv.encode(0xA6, tlv.parse_exact(certs.euicc_certificate).value)
            + caps
            + tlv.encode(0x87, req["eimTransactionId"])
        )
        return tlv.encode(0xBF52, tlv.encode(0xA0, body))


def unwrap_package(answer: bytes) -> bytes:
    """The BF51/BF52/BF54 inside a GetEimPackageResponse ``BF4F``."""
    outer = tlv.parse_exact(answer)
    assert outer.tag == 0xBF4F, answer.hex()
    return tlv.children(outer)[0].raw


def verify_eim_signature(package: bytes, key: EimKey, token: int | None) -> None:
    from eim.packages.common import association_token_tlv

    signed = tlv.require(package, 0x30).raw
    sig = tlv.require(package, 0x5F37).value
    crypto.verify(key.private_key.public_key(), signed + association_token_tlv(token), sig, what="eimSignature")


def full_decode(message: bytes, alternative: str):
    """What the dispatcher's full path makes of ``message``: the decoded value of an EsipaMessageFromIpaToEim
    ``alternative``, or ``None`` when it is refused or another alternative (for the fast-path tests)."""
    try:
        top = tlv.parse_exact(message)
        check_structure(top.raw)
        alt, value = asn1.decode("EsipaMessageFromIpaToEim", top.raw)
    except RspError:
        return None
    return value if alt == alternative else None


def plain_euicc(eid: str, counter: int = 10) -> Euicc:
    """An eUICC row as the store tests register it (eIM ``eim.test``, association token 1)."""
    return Euicc(eid=eid, eim_id="eim.test", association_token=1, counter_value=counter, created_at=1000.0)


def queued_psmo(eid: str, op_id: str | None = None, at: float = 1000.0) -> Operation:
    """A queued PSMO operation (getRAT) for ``eid``, created at ``at`` (id: ``op_id`` or a new one)."""
    from eim.store.logic import new_id

    return Operation(
        id=op_id or new_id(),
        eid=eid,
        kind=OpKind.PSMO,
        params={"psmos": [{"getRAT": {}}]},
        status=OpStatus.QUEUED,
        created_at=at,
        updated_at=at,
    )
