#!/bin/sh
# Part of `make fresh-check` (docs/install.md): boots a Debian root with systemd as PID 1 (systemd-nspawn) after
# installing the stack in it exactly as docs/install.md says, and checks that eim.service starts as systemd runs
# it: the unit's user, Type=notify (active only after READY=1), the watchdog armed, /healthz answering inside the
# sandbox, no restart, `systemd-analyze security` inside the booted system. Then the container powers off.
#   deploy/boot-check.sh ROOT        ROOT: a Debian root with systemd, python3-venv and curl (fresh-check's chroot)
# The IPA unit is verified but not started: a container has no udev, so no modem device to bind to.
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
systemctl enable sgp32-boot-check.service
EOF
cat >"$ROOT/etc/systemd/system/sgp32-boot-check.service" <<'EOF'
[Unit]
Description=sgp32-stack boot check (deploy/boot-check.sh)
After=eim.service
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
echo "user: $(ps -o user= -p "$pid" 2>/dev/null || stat -c %U /proc/"$pid")"
echo "healthz: $(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8080/healthz)"
systemd-analyze security eim.service ipa.service --no-pager | grep -E 'Overall|UNIT|eim.service|ipa.service' || true
systemd-analyze verify eim.service ipa.service 2>&1 | grep -v 'fwbridge' || true
echo "journal:"
journalctl -b -u eim.service --no-pager -o cat | tail -n 20
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
    grep -q '^user: eim' "$ROOT/var/tmp/boot-check.txt"
