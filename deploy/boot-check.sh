#!/bin/sh
# Part of `make fresh-check` (docs/install.md): boots a Debian root with systemd as PID 1 (systemd-nspawn) after
# installing the stack in it exactly as docs/install.md says, and checks that eim.service starts as systemd runs
# it: the unit's user, Type=notify (active only after READY=1), the watchdog armed, /healthz answering inside the
# sandbox, no restart, `systemd-analyze security` inside the booted system. Then the container powers off.
#   deploy/boot-check.sh ROOT        ROOT: a Debian root with systemd, python3-venv and curl (fresh-check's chroot)
# The IPA: a container has no udev, so no modem device to bind to. ipa-lab.service is the shipped ipa.service with
# only the device binding (BindsTo/After/WantedBy the udev-named port, IPA_DEVICE_PORT) replaced by an in-process
# software eUICC (IPA_DEVICE_CARD, lab only): the sandbox, user and Type=notify are the shipped unit's. It
# bootstraps the eUICC (AddInitialEim) and polls the eIM above.
set -eu
ROOT=$1
SRC=$(cd "$(dirname "$0")/.." && pwd)
command -v systemd-nspawn >/dev/null || { echo "boot-check: apt-get install systemd-container"; exit 2; }
[ -x "$ROOT/lib/systemd/systemd" ] || { echo "boot-check: $ROOT has no systemd"; exit 2; }

mkdir -p "$ROOT/src"
(cd "$SRC" && git ls-files -z | tar --null -T - -cf -) | tar -xf - -C "$ROOT/src"
cat >"$ROOT/root/install.sh" <<'EOF'
set -eux
cd /src
# docs/install.md, "One layout for both services", for a server (the device set goes into the same venv here)
install -D -m 0644 deploy/sysusers.d/sgp32-stack.conf /etc/sysusers.d/sgp32-stack.conf && systemd-sysusers
python3 -m venv /opt/sgp32-stack/.venv
/opt/sgp32-stack/.venv/bin/pip install -q '.[server,ipa]'
install -d /opt/sgp32-stack/docs && cp -r docs/. /opt/sgp32-stack/docs/
install -d -m 0750 -g eim /etc/eim
/opt/sgp32-stack/.venv/bin/rsp pki init /etc/eim/pki --curve nist >/dev/null
chgrp -R eim /etc/eim/pki && chmod -R g+rX /etc/eim/pki
# a lab configuration (the shipped example needs real certificates and an operators file)
cat >/etc/eim/eim.toml <<'TOML'
[eim]
eim_id = "eim.boot-check"
data_dir = "/var/lib/eim"
lab_pki = "/etc/eim/pki"
[store]
url = "sqlite:////var/lib/eim/eim.db"
[http]
host = "127.0.0.1"
port = 8080
TOML
chgrp eim /etc/eim/eim.toml && chmod 0640 /etc/eim/eim.toml
install -m 0644 deploy/systemd/eim.service deploy/systemd/ipa.service /etc/systemd/system/
systemctl enable eim.service
# the device side, lab variant (see the header)
install -d -m 0750 -g ipa /etc/ipa
install -d -m 0700 -o ipa -g ipa /var/lib/ipa && rm -f /var/lib/ipa/state.cbor /var/lib/eim/eim.db
EID=89999000000000000000000000000130
/opt/sgp32-stack/.venv/bin/rsp pki init /root/ipa-pki --eid $EID >/dev/null
/opt/sgp32-stack/.venv/bin/euicc new --pki /root/ipa-pki --eid $EID --state /var/lib/ipa/card.cbor --force >/dev/null
chown ipa:ipa /var/lib/ipa/card.cbor
install -m 0640 -g ipa /etc/eim/pki/nist/eim.cert.pem /etc/ipa/eim.cert.pem
cat >/etc/ipa/provisioning.toml <<'TOML'
[[eim]]
id = "eim.boot-check"
fqdn = "127.0.0.1:8080"
id_type = "fqdn"
counter_value = 0
certificate_pem = "eim.cert.pem"
protocols = ["retrieveHttps"]
TOML
cat >/etc/ipa/ipa.toml <<'TOML'
[eim]
url = "http://127.0.0.1:8080"
provisioning_file = "/etc/ipa/provisioning.toml"
[poll]
interval = 2
jitter = 0
TOML
chgrp ipa /etc/ipa/*.toml && chmod 0640 /etc/ipa/*.toml
sed -e '/^BindsTo=/d' -e 's/^After=.*/After=eim.service/' -e 's/^WantedBy=.*/WantedBy=multi-user.target/' \
    -e 's#^Environment=IPA_DEVICE_PORT=.*#Environment=IPA_DEVICE_CARD=/var/lib/ipa/card.cbor#' \
    deploy/systemd/ipa.service >/etc/systemd/system/ipa-lab.service
systemctl enable ipa-lab.service
systemctl enable sgp32-boot-check.service
EOF
cat >"$ROOT/etc/systemd/system/sgp32-boot-check.service" <<'EOF'
[Unit]
Description=sgp32-stack boot check (deploy/boot-check.sh)
After=eim.service ipa-lab.service
[Service]
Type=oneshot
StandardOutput=file:/var/tmp/boot-check.txt
StandardError=inherit
ExecStart=/bin/sh /root/check.sh
ExecStartPost=/bin/systemctl --no-block poweroff
[Install]
WantedBy=multi-user.target
EOF
cat >"$ROOT/root/check.sh" <<'EOF'
for i in $(seq 1 60); do
    s=$(systemctl show -P ActiveState eim.service)
    [ "$s" = active ] || [ "$s" = failed ] && break
    sleep 1
done
sleep 16  # past half of WatchdogSec=30: a missing ping would have failed the unit by now
echo "eim.service: $(systemctl show -P ActiveState eim.service)/$(systemctl show -P SubState eim.service)"
echo "restarts: $(systemctl show -P NRestarts eim.service)"
echo "watchdog: $(systemctl show -P WatchdogUSec eim.service)"
pid=$(systemctl show -P MainPID eim.service)
echo "user: $(stat -c %U /proc/"$pid" 2>/dev/null)"
echo "healthz: $(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8080/healthz)"
systemd-analyze security eim.service ipa.service --no-pager | grep -E 'Overall|UNIT|eim.service|ipa.service' || true
systemd-analyze verify eim.service ipa.service 2>&1 | grep -v 'fwbridge' || true
for i in $(seq 1 30); do [ "$(systemctl show -P ActiveState ipa-lab.service)" = active ] && break; sleep 1; done
# the eIM answers eidNotFound until the eUICC is registered (a warning per poll); then polls are idle and silent
/opt/sgp32-stack/.venv/bin/eim euicc register 89999000000000000000000000000130 --association-token 1 >/dev/null &&
    echo "registered at the eIM"
sleep 3
ts=$(date +%s)
sleep 8 # several idle polls (interval 2 s)
echo "ipa journal lines while idle: $(journalctl -q -u ipa-lab.service --since "@$ts" -o cat | wc -l)"
echo "eim journal lines while idle: $(journalctl -q -u eim.service --since "@$ts" -o cat | wc -l)"
contact=$(/opt/sgp32-stack/.venv/bin/eim euicc show 89999000000000000000000000000130 --json |
    /opt/sgp32-stack/.venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["last_contact"])')
echo "eUICC last contact at the eIM: $contact (check ended $(date -u +%FT%TZ))"
echo "ipa-lab.service: $(systemctl show -P ActiveState ipa-lab.service)/$(systemctl show -P SubState ipa-lab.service)"
echo "ipa restarts: $(systemctl show -P NRestarts ipa-lab.service)"
pid=$(systemctl show -P MainPID ipa-lab.service)
echo "ipa user: $(stat -c %U /proc/"$pid" 2>/dev/null)"
echo "journal eim:"
journalctl -b -u eim.service --no-pager -o cat | grep -v eidNotFound | tail -n 12
echo "journal ipa:"
journalctl -b -u ipa-lab.service --no-pager -o cat | tail -n 6
EOF
# behind a TLS-inspecting proxy: the host's CA bundle for pip (as in fresh-check.sh)
PASS_ENV=""
ca=${PIP_CERT:-${SSL_CERT_FILE:-$(pip config get global.cert 2>/dev/null || true)}}
if [ -n "$ca" ] && [ -f "$ca" ]; then
    cp "$ca" "$ROOT/etc/ssl/certs/host-ca-bundle.crt"
    PASS_ENV="PIP_CERT=/etc/ssl/certs/host-ca-bundle.crt"
fi
chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root $PASS_ENV sh /root/install.sh >"$ROOT/var/tmp/boot-install.log" 2>&1 || { tail -20 "$ROOT/var/tmp/boot-install.log"; exit 1; }
rm -f "$ROOT/var/tmp/boot-check.txt"
# --keep-unit --register=no: no systemd on the host side of this check; /run/systemd/nspawn must be a tmpfs
mkdir -p /run/systemd/nspawn
mountpoint -q /run/systemd/nspawn || mount -t tmpfs tmpfs /run/systemd/nspawn
timeout 300 systemd-nspawn -q --keep-unit --register=no -D "$ROOT" --boot --console=pipe </dev/null \
    >"$ROOT/var/tmp/boot-console.log" 2>&1 || true
cat "$ROOT/var/tmp/boot-check.txt" 2>/dev/null || { echo "boot-check: no result"; exit 1; }
grep -q '^eim.service: active/running' "$ROOT/var/tmp/boot-check.txt" &&
    grep -q '^restarts: 0' "$ROOT/var/tmp/boot-check.txt" &&
    grep -q '^healthz: 200' "$ROOT/var/tmp/boot-check.txt" &&
    grep -q '^user: eim' "$ROOT/var/tmp/boot-check.txt" &&
    grep -q '^ipa-lab.service: active/running' "$ROOT/var/tmp/boot-check.txt" &&
    grep -q '^ipa restarts: 0' "$ROOT/var/tmp/boot-check.txt" &&
    grep -q '^ipa user: ipa' "$ROOT/var/tmp/boot-check.txt" &&
    grep -q '^ipa journal lines while idle: 0' "$ROOT/var/tmp/boot-check.txt"
