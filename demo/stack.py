"""The whole lab on loopback, as real processes: lab PKI, lab SM-DP+, eIM, software eUICC behind a virtual modem
on a pseudo-terminal, and the IPA. Used by ``make demo`` and by the end-to-end tests (``tests/e2e``).

Every component is started through its own command-line tool, exactly as a user would run it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from demo.procs import Service, run, tool, wait_path, wait_port
from demo.services import free_port
from rsp import iccid as iccid_codec

DEFAULT_EID = "89999000000000000000000000000130"  # lab EID with valid check digits (docs/pki.md)
BINDINGS = ("http", "https", "coap", "coaps", "mqtt")
PROTOCOL_BITS = {
    "http": "retrieveHttps",
    "https": "retrieveHttps",
    "coap": "retrieveCoaps",
    "coaps": "retrieveCoaps",
    "mqtt": "proprietary",
}


def iccid_from_card(value: str) -> str:
    """The card stores ICCIDs as in EF ICCID (BCD, nibbles swapped, F-padded): give the printed form."""
    return iccid_codec.from_bcd(bytes.fromhex(value))


def _envelope_data(stdout: str) -> Any:
    """The data of a tool's final ``--json`` line (the envelope of docs/cli.md)."""
    return json.loads(stdout.strip().splitlines()[-1])["payload"]["data"]


@dataclass
class LabStack:
    """Start with :meth:`start`, stop with :meth:`stop` (or use as a context manager)."""

    workdir: Path
    binding: str = "http"
    eid: str = DEFAULT_EID
    quirks: str = ""
    indirect: bool = True
    poll_interval: float = 0.5
    mosquitto: Any = None  # a demo.services.Broker (or compatible: .host, .port) for MQTT; else started here
    services: dict[str, Service] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    _own_broker: Any = None
    eim_id: str = "eim.lab"
    association_token: int | None = None

    # ------------------------------------------------------------------ paths
    @property
    def pki(self) -> Path:
        return self.workdir / "pki"

    @property
    def card_state(self) -> Path:
        return self.workdir / "card.cbor"

    @property
    def modem_link(self) -> Path:
        return self.workdir / "modem"

    @property
    def smdp_address(self) -> str:
        return f"127.0.0.1:{self.ports['smdpp']}"

    @property
    def psk_file(self) -> Path:
        """The eIM's CoAPS key file (``EID:hexkey`` lines); the IPA's own copy of its key is ``ipa.psk``."""
        return self.workdir / "eim-coaps.psk"

    @property
    def eim_url(self) -> str:
        scheme = "https" if self.binding == "https" else "http"
        return f"{scheme}://127.0.0.1:{self.ports['eim_http']}"

    @property
    def verify(self) -> Any:
        """How the operator side verifies the eIM: the lab CA bundle over HTTPS."""
        if self.binding != "https":
            return True
        import ssl

        return ssl.create_default_context(cafile=str(self.pki / "ca-bundle.pem"))

    def device_cert(self) -> tuple[Path, Path]:
        """The IPA's TLS client certificate and key for HTTPS (``rsp pki device-cert``)."""
        out = self.pki / "tls" / "devices"
        return out / f"{self.eid}.cert.pem", out / f"{self.eid}.key.pem"

    def provision_device_cert(self) -> None:
        """The operator's step for HTTPS with mutual TLS: a client certificate for the eUICC's IPA (subject
        serialNumber = EID) from the lab's device CA, which the eIM trusts as ``[devices] client_ca``."""
        argv = [tool("rsp"), "pki", "device-cert", str(self.pki), "--eid", self.eid]
        run("issue the IPA's TLS client certificate", argv)

    def log(self, name: str) -> Path:
        return self.workdir / "logs" / f"{name}.log"

    # ------------------------------------------------------------------ steps
    def create_pki(self) -> None:
        run("create the lab PKI", [tool("rsp"), "pki", "init", str(self.pki), "--eid", self.eid])

    def start_smdpp(self) -> None:
        self.ports["smdpp"] = free_port()
        svc = Service(
            "smdpp",
            [
                tool("smdpp"),
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.ports["smdpp"]),
                "--pki",
                str(self.pki),
                "--data",
                str(self.workdir / "smdpp"),
            ],
            self.log("smdpp"),
        ).start()
        self.services["smdpp"] = svc
        wait_port(self.ports["smdpp"], proc=svc.proc)

    def smdp_order(self, profile: str = "ts48", **extra: str) -> dict[str, Any]:
        argv = [
            tool("smdpp"),
            "order",
            "create",
            "--data",
            str(self.workdir / "smdpp"),
            "--profile",
            profile,
            "--host",
            self.smdp_address,
            "--eid",
            self.eid,
            "--json",
        ]
        for k, v in extra.items():
            argv += [f"--{k.replace('_', '-')}", v]
        return _envelope_data(run("create an SM-DP+ download order", argv))

    def start_broker(self) -> None:
        if self.binding != "mqtt":
            return
        if self.mosquitto is None:
            from demo.services import run_mosquitto  # the same private broker the tests use

            self._own_broker = run_mosquitto()
            self.mosquitto = self._own_broker.__enter__()
        self.ports["mqtt"] = self.mosquitto.port

    def eim_config(self) -> Path:
        self.ports.setdefault("eim_http", free_port())
        self.ports.setdefault("eim_coap", free_port(2))
        coaps = self.binding == "coaps"
        if coaps and not self.psk_file.exists():
            self.provision_psk()
        if self.binding == "https" and not self.device_cert()[0].exists():
            self.provision_device_cert()
        cfg = f"""
[eim]
eim_id = "{self.eim_id}"
data_dir = "{self.workdir / "eim-data"}"
lab_pki = "{self.pki}"

[http]
host = "127.0.0.1"
port = {self.ports["eim_http"]}
{self._https_config()}
[coap]
enabled = {str(self.binding in ("coap", "coaps")).lower()}
host = "127.0.0.1"
port = {self.ports["eim_coap"]}
plain = {str(not coaps).lower()}
dtls = {str(coaps).lower()}
dtls_port = {self.ports["eim_coap"]}
psk_file = "{self.psk_file}"

[mqtt]
enabled = {str(self.binding == "mqtt").lower()}
host = "127.0.0.1"
port = {self.ports.get("mqtt", 1883)}

[relay]
ca_files = ["{self.pki / "ca-bundle.pem"}"]

[operations]
sweep_interval_s = 0.5

[log]
level = "INFO"
"""
        path = self.workdir / "eim.toml"
        path.write_text(cfg)
        return path

    def _https_config(self) -> str:
        """``https``: TLS with the lab's eIM TLS certificate, and every device must authenticate (loopback too)."""
        if self.binding != "https":
            return ""
        tls = self.pki / "tls"
        return f"""tls_cert = "{tls / "eimtls.cert.pem"}"
tls_key = "{tls / "eimtls.key.pem"}"

[devices]
client_ca = "{tls / "device-ca.cert.pem"}"
trusted_networks = []
"""

    def start_eim(self) -> None:
        cfg = self.eim_config() if not (self.workdir / "eim.toml").exists() else self.workdir / "eim.toml"
        svc = Service("eim", [tool("eim"), "--config", str(cfg), "serve"], self.log("eim")).start()
        self.services["eim"] = svc
        wait_port(self.ports["eim_http"], proc=svc.proc)
        self.wait_eim_ready()

    def wait_eim_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.eim_url + "/v1/euiccs", timeout=2, verify=self.verify).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError("the eIM REST API did not answer")

    def create_card(self) -> None:
        run(
            "create the software eUICC",
            [tool("euicc"), "new", "--pki", str(self.pki), "--eid", self.eid, "--state", str(self.card_state)],
        )

    def start_modem(self) -> None:
        argv = [tool("fwbridge"), "virtual-modem", "--card", str(self.card_state), "--link", str(self.modem_link)]
        if self.quirks:
            argv += ["--quirks", self.quirks]
        svc = Service("modem", argv, self.log("modem")).start()
        self.services["modem"] = svc
        wait_path(self.modem_link, proc=svc.proc)

    def provisioning_file(self) -> Path:
        eim_cert = self.pki_paths()["eim_cert"]
        fqdn = {
            "http": f"127.0.0.1:{self.ports['eim_http']}",
            "https": f"127.0.0.1:{self.ports['eim_http']}",
            "coap": f"127.0.0.1:{self.ports['eim_coap']}",
            "coaps": f"127.0.0.1:{self.ports['eim_coap']}",
            "mqtt": f"127.0.0.1:{self.ports.get('mqtt', 1883)}",
        }[self.binding]
        path = self.workdir / "provisioning.toml"
        path.write_text(
            f"""[[eim]]
id = "{self.eim_id}"
fqdn = "{fqdn}"
id_type = "fqdn"
counter_value = 0
certificate_pem = "{eim_cert}"
protocols = ["{PROTOCOL_BITS[self.binding]}"]
indirect_profile_download = {str(self.indirect).lower()}
"""
        )
        return path

    def pki_paths(self) -> dict[str, Path]:
        from rsp.pki import LabPki, Role

        lab = LabPki.load(self.pki)
        return {"eim_cert": lab.cert_path(Role.EIM, "nist"), "ca_bundle": lab.ca_bundle_path}

    def provision_psk(self) -> None:
        """The operator's step for CoAPS: ``eim psk set EID --generate`` adds a fresh key to the eIM's key file and
        prints it once; it goes into the IPA's key file (0600)."""
        import os

        key_hex = run(
            "generate the eUICC's CoAPS key (eim psk set)",
            [tool("eim"), "psk", "set", self.eid, "--generate", "--file", str(self.psk_file)],
        ).strip()
        fd = os.open(self.workdir / "ipa.psk", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key_hex + "\n")

    def ipa_config(self) -> Path:
        url = {
            "http": f"http://127.0.0.1:{self.ports['eim_http']}",
            "https": f"https://127.0.0.1:{self.ports['eim_http']}",
            "coap": f"coap://127.0.0.1:{self.ports['eim_coap']}",
            "coaps": f"coaps://127.0.0.1:{self.ports['eim_coap']}",
            "mqtt": f"mqtt://127.0.0.1:{self.ports.get('mqtt', 1883)}",
        }[self.binding]
        psk = f'psk_file = "{self.workdir / "ipa.psk"}"\n' if self.binding == "coaps" else ""
        ipa_binding = {"coaps": "coap", "https": "http"}.get(self.binding, self.binding)
        if self.binding == "https":
            cert, key = self.device_cert()
            psk = f'ca_file = "{self.pki / "ca-bundle.pem"}"\ntls_client_cert = "{cert}"\ntls_client_key = "{key}"\n'
        path = self.workdir / "ipa.toml"
        path.write_text(
            f"""[device]
port = "{self.modem_link}"
route = "auto"
block_size = 255

[eim]
binding = "{ipa_binding}"
url = "{url}"
{psk}
[poll]
interval = {self.poll_interval}
min_interval = 0.2
max_backoff = 2.0
jitter = 0.1

[es9]
ca_file = "{self.pki / "ca-bundle.pem"}"

[ipa]
state_file = "{self.workdir / "ipa-state.cbor"}"
"""
        )
        return path

    def ipa(self, step: str, *args: str, timeout: float = 120.0) -> list[dict[str, Any]]:
        """Run one ``ipa --json`` command; return its JSON lines."""
        out = run(step, [tool("ipa"), "--config", str(self.ipa_config()), "--json", *args], timeout=timeout)
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]

    def add_initial_eim(self) -> int:
        lines = self.ipa("AddInitialEim on the eUICC", "eim", "add-initial", str(self.provisioning_file()))
        data = lines[-1]["payload"]["data"]
        token = data["associationToken"]
        self.association_token = token[0] if isinstance(token, list) else token
        return self.association_token

    def register_euicc(self) -> dict[str, Any]:
        return self.api(
            "POST",
            "/v1/euiccs",
            {"eid": self.eid, "eim_id": self.eim_id, "association_token": self.association_token, "counter_value": 0},
        )

    def start_ipa(self, *, env: dict[str, str] | None = None, verbose: bool = False) -> None:
        """``ipa run`` on the modem; ``env`` adds ``IPA_<SECTION>_<KEY>`` overrides, ``verbose`` logs at INFO."""
        argv = [tool("ipa"), "--config", str(self.ipa_config()), *(["-v"] if verbose else []), "run"]
        svc = Service("ipa", argv, self.log("ipa"), env=dict(env or {})).start()
        self.services["ipa"] = svc

    def restart_eim(self, *, env: dict[str, str] | None = None) -> None:
        """Stop ``eim serve`` (SIGTERM) and start it again on the same ports, store and configuration."""
        old = self.services.get("eim")
        if old is not None:
            old.stop()
        cfg = self.workdir / "eim.toml"
        svc = Service("eim", [tool("eim"), "--config", str(cfg), "serve"], self.log("eim"), env=dict(env or {}))
        self.services["eim"] = svc.start()
        wait_port(self.ports["eim_http"], proc=svc.proc)
        self.wait_eim_ready()

    def log_count(self, name: str, text: str) -> int:
        """How many lines of a component's log contain ``text``."""
        try:
            return sum(text in line for line in self.log(name).read_text(errors="replace").splitlines())
        except OSError:
            return 0

    # ------------------------------------------------------------------ operator side (REST API)
    def api(self, method: str, path: str, body: Any = None) -> Any:
        r = httpx.request(method, self.eim_url + path, json=body, timeout=30, verify=self.verify)
        if r.status_code >= 400:
            raise RuntimeError(f"eIM REST {method} {path}: HTTP {r.status_code}: {r.text}")
        return r.json() if r.content else None

    def operation(self, kind: str, params: dict[str, Any], validity_s: float | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"kind": kind, "params": params}
        if validity_s is not None:
            body["validity_s"] = validity_s
        return self.api("POST", f"/v1/euiccs/{self.eid}/operations", body)

    def wait_push_reachable(self, timeout: float = 30.0) -> dict[str, Any]:
        """Wait until ``GET /v1/euiccs/{eid}`` says the eIM can push to the device now; return its ``push``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            push = self.api("GET", f"/v1/euiccs/{self.eid}").get("push")
            if push:
                return push
            time.sleep(0.1)
        raise TimeoutError(f"the eIM cannot push to {self.eid} after {timeout:.0f} s")

    def wait_operation(self, op_id: Any, timeout: float = 90.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            op = self.api("GET", f"/v1/operations/{op_id}")
            if op["status"] in ("done", "failed", "expired", "cancelled"):
                return op
            for name, svc in self.services.items():
                if svc.proc is not None and svc.proc.poll() is not None and name in ("eim", "ipa", "modem"):
                    raise RuntimeError(f"{name} exited with {svc.proc.returncode}:\n{svc.tail()}")
            time.sleep(0.1)
        raise TimeoutError(f"operation {op_id} did not finish within {timeout} s: {op}")

    def run_op(self, kind: str, params: dict[str, Any], timeout: float = 90.0) -> dict[str, Any]:
        op = self.operation(kind, params)
        return self.wait_operation(op["id"], timeout)

    def relayed_downloads(self) -> int:
        """How many ES9+ sessions the eIM relayed (indirect downloads), from its structured log."""
        return self.log("eim").read_text(errors="replace").count("ES9+ session started")

    # ------------------------------------------------------------------ card side
    def card(self) -> dict[str, Any]:
        """The card's state as `euicc show --json` prints it (read from the state file)."""
        return _envelope_data(
            run("read the card state", [tool("euicc"), "show", "--state", str(self.card_state), "--json"])
        )

    def card_profiles(self) -> dict[str, str]:
        """ICCID (as the SM-DP+ and the eIM write it) -> state, for every profile on the card."""
        return {iccid_from_card(p["iccid"]): p["state"] for p in self.card().get("profiles", [])}

    # ------------------------------------------------------------------ SM-DP+ side
    def smdp_notifications(self) -> list[dict[str, Any]]:
        """Every notification the SM-DP+ received (`smdpp notifications --json`), oldest first."""
        out = run(
            "list the SM-DP+ notifications",
            [tool("smdpp"), "notifications", "--data", str(self.workdir / "smdpp"), "--json"],
        )
        lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        rows = [ln["payload"]["data"] for ln in lines if ln["type"] == "item"]  # the envelope of docs/cli.md
        return sorted(rows, key=lambda r: r["id"])

    def smdp_order_show(self, matching_id: str) -> dict[str, Any]:
        out = run(
            "show an SM-DP+ order",
            [tool("smdpp"), "order", "show", "--data", str(self.workdir / "smdpp"), matching_id, "--json"],
        )
        return _envelope_data(out)

    # ------------------------------------------------------------------ lifecycle
    def start(self, *, with_ipa: bool = True) -> LabStack:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.create_pki()
        self.start_broker()
        self.start_smdpp()
        self.eim_config()
        self.start_eim()
        self.create_card()
        self.start_modem()
        self.add_initial_eim()
        self.register_euicc()
        if with_ipa:
            self.start_ipa()
        return self

    def stop(self) -> None:
        for name in ("ipa", "eim", "modem", "smdpp"):
            svc = self.services.get(name)
            if svc is not None:
                svc.stop()
        if self._own_broker is not None:
            self._own_broker.__exit__(None, None, None)
            self._own_broker = None

    def __enter__(self) -> LabStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
