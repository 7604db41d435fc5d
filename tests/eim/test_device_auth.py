"""Device authentication policy (eim.esipa.device_auth): the attacks of security issue 13 at the dispatcher and
at the ESipa HTTP app (ASGI, with the peer address an attacker's socket would have), and the new parsers.

Attack: knowing an EID is enough, over plain HTTP or CoAP from anywhere, to fetch the eUICC's packages (the
download trigger carries the activation code), to fail its open operation with an unsigned error result, and to
change its recorded binding and last contact. Each test below performs the attack from a non-loopback address
and checks the answer and that the store did not change.
"""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eim.bindings.device_secrets import (
    DeviceSecretError,
    DeviceSecretFile,
    SecretEntry,
    format_secret_line,
    new_token,
    parse_secret_file,
    parse_token,
    remove_secret,
    set_secret,
)
from eim.bindings.http import EsipaHttpApp, HttpDeviceAuth
from eim.esipa.device_auth import (
    DeviceAuthError,
    DevicePolicy,
    eid_from_client_certificate,
    parse_networks,
    peer_address,
)
from eim.interfaces import EsipaRejected, RequestContext
from eim.model import OpKind, OpStatus
from eim.store import open_store
from rsp import tlv
from rsp.pki import create_lab_pki, lab_eid
from rsp.pki.device_tls import issue_device_certificate, make_device_ca
from tests.eim.helpers import get_eim_package_request, make_env, provide_result

EID_A = lab_eid(131)
EID_B = lab_eid(132)
AC = "1$smdp.example.com$MATCHING-ID-OF-A"
OUTSIDE = RequestContext("http", "192.0.2.7:40000", peer_ip="192.0.2.7")  # TEST-NET-1: never loopback
COAP_OUTSIDE = RequestContext("coap", "198.51.100.9:5683", peer_ip="198.51.100.9")
UNDEFINED = {
    0xBF4F: bytes.fromhex("BF4F0302017F"),
    0xBF50: bytes.fromhex("BF500302017F"),
    0xBF39: bytes.fromhex("BF390381017F"),
    0xBF3B: bytes.fromhex("BF3B0382017F"),
    0xBF3A: bytes.fromhex("BF3A0381017F"),
    0xBF41: bytes.fromhex("BF410381017F"),
}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    return create_lab_pki(tmp_path_factory.mktemp("pki"), curves=("nist",), eids=[EID_A, EID_B])


@pytest.fixture
async def env(lab, tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/eim.db")
    await store.open()
    e = make_env(store, lab)
    await e.service.register_euicc(EID_A, association_token=1, counter_value=1)
    await e.service.register_euicc(EID_B, association_token=1, counter_value=1)
    try:
        yield e
    finally:
        await store.close()


async def snapshot(env, eid):
    e = await env.store.get_euicc(eid)
    ops = await env.store.list_operations(eid=eid, limit=100)
    return (e.last_contact, e.binding, e.info), [(o.id, o.status, o.package) for o in ops]


# ------------------------------------------------------------------------------------------ the dispatcher


async def test_unauthenticated_non_loopback_poll_gets_no_activation_code(env):
    op = await env.service.create(EID_A, OpKind.DOWNLOAD, {"activationCode": AC})
    before = await snapshot(env, EID_A)
    for ctx in (OUTSIDE, COAP_OUTSIDE):
        answer = await env.handle(get_eim_package_request(EID_A), ctx)
        assert answer == UNDEFINED[0xBF4F]
        assert AC.encode() not in answer
    assert await snapshot(env, EID_A) == before  # no last contact, no binding, package not handed out
    assert (await env.store.get_operation(op.id)).status is OpStatus.QUEUED
    # the same poll from loopback (the lab exemption) gets the trigger with the activation code
    answer = await env.handle(get_eim_package_request(EID_A))
    assert AC.encode() in answer and tlv.children(answer)[0].tag == 0xBF54
    assert (await env.store.get_euicc(EID_A)).binding == "http"


async def test_unauthenticated_non_loopback_cannot_fail_the_open_operation(env):
    op = await env.service.create(EID_A, OpKind.DOWNLOAD, {"activationCode": AC})
    await env.handle(get_eim_package_request(EID_A))  # the device itself (loopback) took the package
    op = await env.store.get_operation(op.id)
    assert op.status is OpStatus.IN_PROGRESS
    before = await snapshot(env, EID_A)
    # an unsigned eimPackageResultResponseError (A0 { 80 eimTransactionId, 02 error }) naming A's operation (its
    # eimTransactionId learned from a poll), sent from elsewhere: refused before decoding
    error_result = tlv.encode(0xA0, tlv.encode(0x80, op.eim_transaction_id) + tlv.encode(0x02, b"\x7f"))
    assert await env.handle(provide_result(EID_A, error_result), OUTSIDE) == UNDEFINED[0xBF50]
    assert await snapshot(env, EID_A) == before
    # from loopback it is served, but an unsigned error from an unauthenticated device ends nothing
    await env.handle(provide_result(EID_A, error_result))
    assert (await env.store.get_operation(op.id)).status is OpStatus.IN_PROGRESS
    # the device authenticated as A (its client certificate) does end it: the checks above stopped the attack
    as_a = RequestContext("http", "192.0.2.7:1", EID_A, "mtls", "192.0.2.7")
    await env.handle(provide_result(EID_A, error_result), as_a)
    assert (await env.store.get_operation(op.id)).status is OpStatus.FAILED


@pytest.mark.parametrize("tag", sorted(UNDEFINED))
async def test_every_function_is_refused_with_its_undefined_error(env, tag):
    before = await snapshot(env, EID_A), await snapshot(env, EID_B)
    message = tlv.encode(tag, tlv.encode(0x5A, bytes.fromhex(EID_A)))  # content does not matter: never decoded
    assert await env.handle(message, OUTSIDE) == UNDEFINED[tag]
    assert (await snapshot(env, EID_A), await snapshot(env, EID_B)) == before


@pytest.mark.parametrize("tag", [0xBF3D, 0xBF4E])
async def test_functions_without_error_answer_are_rejected_403(env, tag):
    with pytest.raises(EsipaRejected) as info:
        await env.handle(tlv.encode(tag, tlv.encode(0xA0, b"")), OUTSIDE)
    assert info.value.http_status == 403


async def test_allow_unauthenticated_serves_any_address(env):
    env.dispatcher.device_policy = DevicePolicy(allow_unauthenticated=True)
    assert await env.handle(get_eim_package_request(EID_A), OUTSIDE) == bytes.fromhex("BF4F03020101")


async def test_authenticated_device_from_anywhere_only_for_itself(env):
    await env.service.create(EID_A, OpKind.DOWNLOAD, {"activationCode": AC})
    as_b = RequestContext("http", "192.0.2.7:1", EID_B, "mtls", "192.0.2.7")
    before = await snapshot(env, EID_A)
    assert await env.handle(get_eim_package_request(EID_A), as_b) == bytes.fromhex("BF4F03020103")  # invalidEid
    assert await snapshot(env, EID_A) == before
    as_a = RequestContext("http", "192.0.2.7:1", EID_A, "device-secret", "192.0.2.7")
    assert AC.encode() in await env.handle(get_eim_package_request(EID_A), as_a)


def test_loopback_is_the_default_and_narrowable():
    default = DevicePolicy()
    for ip in ("127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1"):
        assert default.peer_trusted(ip), ip
    for ip in ("192.0.2.7", "10.0.0.1", "::ffff:192.0.2.7", "fe80::1%lo", None, "", "localhost", "not an ip"):
        assert not default.peer_trusted(ip), ip
    narrow = DevicePolicy(trusted_networks=["127.0.0.1/32"])
    assert narrow.peer_trusted("127.0.0.1") and not narrow.peer_trusted("127.0.0.2")
    assert not DevicePolicy(trusted_networks=[]).peer_trusted("127.0.0.1")


# ------------------------------------------------------------------------------------------ the HTTP app


class Recorder:
    def __init__(self) -> None:
        self.contexts: list[RequestContext] = []

    async def handle(self, message: bytes, ctx: RequestContext) -> bytes:
        self.contexts.append(ctx)
        return b"\xbf\x4f\x03\x02\x01\x01"


async def call(app, *, client=("192.0.2.7", 40000), headers=(), extensions=None, body=b"\xbf\x4f\x00"):
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/gsma/rsp2/asn1",
        "headers": [(b"content-type", b"application/x-gsma-rsp-asn1"), *headers],
        "client": client,
    }
    if extensions is not None:
        scope["extensions"] = extensions
    sent = []
    done = False

    async def receive():
        nonlocal done
        if done:
            await asyncio.sleep(3600)
        done = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"], dict(sent[0]["headers"]), sent[1]["body"]


async def test_http_app_passes_the_peer_address_and_the_secret_eid(tmp_path):
    token_a, entry_a = new_token(EID_A)
    path = tmp_path / "secrets"
    path.write_text(format_secret_line(EID_A, entry_a))
    rec = Recorder()
    app = EsipaHttpApp(rec, device_auth=HttpDeviceAuth(secrets=DeviceSecretFile(path)))
    assert (await call(app))[0] == 200
    assert rec.contexts[-1].peer_ip == "192.0.2.7" and rec.contexts[-1].eid_hint is None
    status, _, _ = await call(app, headers=[(b"authorization", f"Bearer {token_a}".encode())])
    assert status == 200 and (rec.contexts[-1].eid_hint, rec.contexts[-1].auth) == (EID_A, "device-secret")
    # wrong secret, the secret of A presented as B, garbage, two headers: 401 and the handler is never called
    wrong = EID_A + "." + "A" * 43
    as_b = EID_B + token_a[32:]
    for headers in (
        [(b"authorization", f"Bearer {wrong}".encode())],
        [(b"authorization", f"Bearer {as_b}".encode())],
        [(b"authorization", b"Bearer \xff\xfe")],
        [(b"authorization", f"bearer {token_a}".encode())] * 2,
    ):
        n = len(rec.contexts)
        status, hdrs, _ = await call(app, headers=headers)
        assert status == 401 and hdrs[b"www-authenticate"].startswith(b"Bearer"), headers
        assert len(rec.contexts) == n


async def test_http_app_trusts_the_tls_extension_only_with_client_certificates_on(lab):
    ca, ca_key = make_device_ca()
    key = ec.generate_private_key(ec.SECP256R1())
    pem = issue_device_certificate(EID_A, key.public_key(), ca, ca_key).public_bytes(serialization.Encoding.PEM)
    ext = {"tls": {"client_cert_chain": [pem.decode()]}}
    rec = Recorder()
    off = EsipaHttpApp(rec)
    await call(off, extensions=ext)
    assert rec.contexts[-1].eid_hint is None
    on = EsipaHttpApp(rec, device_auth=HttpDeviceAuth(client_certificates=True))
    await call(on, extensions=ext)
    assert (rec.contexts[-1].eid_hint, rec.contexts[-1].auth) == (EID_A, "mtls")
    # a verified certificate whose subject names no EID: 403, not served
    no_eid = _cert_with_serials([], ca, ca_key).public_bytes(serialization.Encoding.PEM)
    status, _, _ = await call(on, extensions={"tls": {"client_cert_chain": [no_eid.decode()]}})
    assert status == 403


# ------------------------------------------------------------------------------------------ parsers


def _cert_with_serials(serials, ca=None, ca_key=None) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, "device")]
    # UTF8String as an attacker's CA may write it (PrintableString cannot hold every character)
    attrs += [x509.NameAttribute(NameOID.SERIAL_NUMBER, s, _type=_ASN1Type.UTF8String) for s in serials]
    name = x509.Name(attrs)
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(ca.subject if ca else name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(ca_key or key, hashes.SHA256())
    )


_SERIAL_KEY = ec.generate_private_key(ec.SECP256R1())


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    serials=st.lists(
        st.one_of(
            st.from_regex(r"[0-9]{32}", fullmatch=True),
            st.text(alphabet="0123456789 a\u0660", min_size=1, max_size=40),
        ),
        max_size=3,
    )
)
def test_certificate_subject_parser(serials):
    cert = _cert_with_serials(serials)
    der = cert.public_bytes(serialization.Encoding.DER)
    valid = len(serials) == 1 and len(serials[0]) == 32 and all(c in "0123456789" for c in serials[0])
    if valid:
        assert eid_from_client_certificate(der) == serials[0]
    else:
        with pytest.raises(DeviceAuthError):
            eid_from_client_certificate(der)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_certificate_parser_on_garbage(data):
    with pytest.raises(DeviceAuthError):
        eid_from_client_certificate(data)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_token_parser(text):
    try:
        eid, secret = parse_token(text)
    except DeviceSecretError as exc:
        secret = text.strip()[33:76]
        assert len(secret) < 4 or secret not in str(exc)  # never echoes the secret (a 1-3 character piece may
        # happen to be in the fixed message: ')' was)
        return
    assert len(eid) == 32 and eid.isdigit() and len(secret) == 43


def test_token_round_trip_and_verify(tmp_path):
    token_a, entry_a = new_token(EID_A)
    token_b, entry_b = new_token(EID_B)
    text, replaced = set_secret("# devices\n", EID_A, entry_a)
    assert not replaced
    text, _ = set_secret(text, EID_B, entry_b)
    assert text.startswith("# devices\n") and set(parse_secret_file(text)) == {EID_A, EID_B}
    path = tmp_path / "secrets"
    path.write_text(text)
    secrets = DeviceSecretFile(path)
    assert secrets.verify(token_a) == EID_A and secrets.verify(token_b) == EID_B
    assert secrets.verify(EID_B + token_a[32:]) is None  # A's secret under B's name
    assert secrets.verify(EID_A + "." + "x" * 43) is None
    assert secrets.verify(lab_eid(9) + token_a[32:]) is None  # unknown EID
    text, removed = remove_secret(text, EID_A)
    assert removed and set(parse_secret_file(text)) == {EID_B}
    assert token_a.split(".")[1] not in text and token_a.split(".")[1] not in repr(entry_a)


_LINE = st.one_of(
    st.text(max_size=120),
    st.builds(
        lambda eid, algo, salt, digest: f"{eid}:{algo}:{salt}:{digest}",
        st.one_of(st.just(EID_A), st.from_regex(r"[0-9]{30,33}", fullmatch=True)),
        st.sampled_from(["sha256", "SHA256", "md5", ""]),
        st.from_regex(r"[0-9a-fA-F]{30,34}", fullmatch=True),
        st.from_regex(r"[0-9a-f]{62,66}", fullmatch=True),
    ),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_LINE, max_size=5))
def test_secret_file_parser(lines):
    text = "\n".join(lines)
    try:
        entries = parse_secret_file(text, "f")
    except DeviceSecretError as exc:
        assert str(exc).startswith("f line ")
        return
    for eid, entry in entries.items():
        assert len(eid) == 32 and isinstance(entry, SecretEntry) and len(entry.salt) == 16
        assert format_secret_line(eid, entry).rstrip("\n") in text


def test_bad_secret_file_reload_keeps_the_previous_entries(tmp_path):
    token_a, entry_a = new_token(EID_A)
    path = tmp_path / "secrets"
    path.write_text(format_secret_line(EID_A, entry_a))
    secrets = DeviceSecretFile(path)
    path.write_text("garbage line\n")
    assert secrets.reload() is False and secrets.verify(token_a) == EID_A
    with pytest.raises(DeviceSecretError, match="line 1"):
        DeviceSecretFile(path)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=50), st.ip_addresses().map(str)))
def test_peer_address_and_networks_parsers(text):
    addr = peer_address(text)
    assert addr is None or addr.version in (4, 6)
    try:
        nets = parse_networks([text])
    except ValueError as exc:
        assert "[devices] trusted_networks" in str(exc)
        return
    assert len(nets) == 1


# ------------------------------------------------------------------------------------------ plain CoAP


async def test_plain_coap_from_an_untrusted_address_is_refused(env):
    """A real CoAP binding on 127.0.0.1 and a real aiocoap client: with 127.0.0.1 outside trusted_networks (only
    ::1 left) the client's address is untrusted, so the poll gets the refusal and a notification 4.03."""
    from aiocoap import POST, Context, Message
    from aiocoap.numbers.codes import Code

    from eim.bindings.coap import CoapBinding
    from tests.services import free_port

    await env.service.create(EID_A, OpKind.DOWNLOAD, {"activationCode": AC})
    env.dispatcher.device_policy = DevicePolicy(trusted_networks=["::1/128"])
    port = free_port()
    binding = CoapBinding(env.dispatcher, "127.0.0.1", port)
    await binding.start()
    client = await Context.create_client_context()
    uri = f"coap://127.0.0.1:{port}/gsma/rsp2/asn1"
    try:
        before = await snapshot(env, EID_A)
        r = await client.request(Message(code=POST, uri=uri, payload=get_eim_package_request(EID_A))).response
        assert (r.code, r.payload) == (Code.CHANGED, UNDEFINED[0xBF4F])
        r = await client.request(Message(code=POST, uri=uri, payload=bytes.fromhex("BF3D03A00100"))).response
        assert r.code == Code.FORBIDDEN
        assert await snapshot(env, EID_A) == before
        env.dispatcher.device_policy = DevicePolicy()  # the default: loopback, 127.0.0.1 included
        r = await client.request(Message(code=POST, uri=uri, payload=get_eim_package_request(EID_A))).response
        assert r.code == Code.CHANGED and AC.encode() in r.payload
        assert (await env.store.get_euicc(EID_A)).binding == "coap"
    finally:
        await client.shutdown()
        await binding.stop()


# ------------------------------------------------------------------------------------------ edges an attacker tries


def test_a_token_whose_eid_part_is_not_an_eid_is_refused_even_with_a_good_secret():
    secret = new_token(EID_A)[0].split(".", 1)[1]
    for eid in ("1" * 31, "1" * 33, "", "a" * 32, EID_A + " "):
        with pytest.raises(DeviceSecretError):
            parse_token(f"{eid}.{secret}")
    with pytest.raises(DeviceSecretError):
        parse_token(EID_A + secret)  # no dot
    assert parse_token(f"  {EID_A}.{secret}\n") == (EID_A, secret)


def _identify(auth, *, cert_pem=None, authorization=()):
    scope = {"extensions": {"tls": {"client_cert_chain": [cert_pem]}}} if cert_pem else {}
    return auth.identify(scope, list(authorization))


def test_certificate_and_token_of_different_eids_are_refused(tmp_path):
    from eim.bindings.http import DeviceCredentialsRefused

    ca, ca_key = make_device_ca()
    key = ec.generate_private_key(ec.SECP256R1())
    pem = issue_device_certificate(EID_A, key.public_key(), ca, ca_key).public_bytes(serialization.Encoding.PEM)
    token_a, entry_a = new_token(EID_A)
    token_b, entry_b = new_token(EID_B)
    text, _ = set_secret("", EID_A, entry_a)
    text, _ = set_secret(text, EID_B, entry_b)
    path = tmp_path / "secrets"
    path.write_text(text)
    auth = HttpDeviceAuth(client_certificates=True, secrets=DeviceSecretFile(path))
    # the certificate of A with the (valid) token of B: neither identity is taken
    with pytest.raises(DeviceCredentialsRefused) as refused:
        _identify(auth, cert_pem=pem.decode(), authorization=[f"Bearer {token_b}".encode()])
    assert refused.value.status == 403 and refused.value.reason
    # both naming A: the certificate's identity
    assert _identify(auth, cert_pem=pem.decode(), authorization=[f"Bearer {token_a}".encode()]) == (EID_A, "mtls")
    assert _identify(auth, authorization=[f"Bearer {token_b}".encode()]) == (EID_B, "device-secret")
    assert _identify(auth) == (None, "none")
    assert _identify(HttpDeviceAuth(), authorization=[f"Bearer {token_a}".encode()]) == (None, "none")


def test_a_token_followed_by_more_words_is_refused(tmp_path):
    from eim.bindings.http import DeviceCredentialsRefused

    token_a, entry_a = new_token(EID_A)
    path = tmp_path / "secrets"
    path.write_text(format_secret_line(EID_A, entry_a))
    auth = HttpDeviceAuth(secrets=DeviceSecretFile(path))
    for header in (f"Bearer {token_a} x", f"Bearer x {token_a}", f"Bearer {token_a}.x"):
        with pytest.raises(DeviceCredentialsRefused) as refused:
            _identify(auth, authorization=[header.encode()])
        assert refused.value.status == 401
    # another scheme is no device credential: unauthenticated, not refused
    assert _identify(auth, authorization=[f"Basic {token_a}".encode()]) == (None, "none")


def test_a_scope_id_is_dropped_from_the_peer_address():
    from ipaddress import IPv4Address, IPv6Address

    assert peer_address("fe80::1%eth0") == IPv6Address("fe80::1")
    assert peer_address("fe80::1%eth0%x") == IPv6Address("fe80::1")
    assert peer_address("::ffff:10.0.0.1%2") == IPv4Address("10.0.0.1")
    assert peer_address("%eth0") is None and peer_address("") is None and peer_address(None) is None
