#!/bin/sh
# `make fresh-check` (docs/install.md): proves that `make demo` and `make test` work on a bare Debian machine.
# Builds a clean Debian bookworm chroot with debootstrap (minbase, plus make, python3 and ca-certificates: what a
# user needs to type `make`), copies the repository's tracked files into it and runs, as root with CI=true (a
# missing service fails instead of skipping):
#     make demo            -> deploy/install-system-deps.sh installs the Debian packages, then the venv, the demo
#     make test            -> FRESH_TESTS selects the tests (default: a subset; FRESH_TESTS=all runs everything)
#     make install-check   -> the wheel's [ipa] and [server] install sets in fresh venvs
# then deploy/boot-check.sh installs the stack as docs/install.md says and boots the root with systemd
# (systemd-nspawn) to check that eim.service starts hardened.
# Needs root, debootstrap, systemd-nspawn and a Debian mirror (FRESH_MIRROR). Takes 10-20 minutes; kept out of `make test`.
# The chroot is left in FRESH_ROOT for inspection and removed by the next run (FRESH_KEEP_BASE=1 reuses the
# debootstrap tarball of the previous run to skip the download).
set -eu
ROOT=${FRESH_ROOT:-/var/tmp/sgp32-fresh}
MIRROR=${FRESH_MIRROR:-http://deb.debian.org/debian}
SUITE=${FRESH_SUITE:-bookworm}
BASE_TGZ=${FRESH_BASE_TGZ:-/var/tmp/sgp32-fresh-base.tgz}
TESTS=${FRESH_TESTS:-tests/deploy tests/eim/test_unit_exec.py tests/ipa/test_units.py tests/docs/test_demo.py tests/eim/test_bindings_coaps.py tests/eim/test_store.py tests/eim/test_bindings_mqtt.py tests/test_services.py}
SRC=$(cd "$(dirname "$0")/.." && pwd)

[ "$(id -u)" = 0 ] || { echo "fresh-check: run as root (debootstrap and chroot)"; exit 2; }
command -v debootstrap >/dev/null && command -v systemd-nspawn >/dev/null ||
    { echo "fresh-check: apt-get install debootstrap systemd-container"; exit 2; }

cleanup() {
    for m in dev/pts dev/shm dev proc sys; do umount -l "$ROOT/$m" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM
cleanup
rm -rf "$ROOT"
mkdir -p "$ROOT"
t0=$(date +%s)
if [ "${FRESH_KEEP_BASE:-}" = 1 ] && [ -f "$BASE_TGZ" ]; then
    tar -xzf "$BASE_TGZ" -C "$ROOT"
else
    debootstrap --variant=minbase --include=make,python3,ca-certificates "$SUITE" "$ROOT" "$MIRROR" \
        >/var/tmp/sgp32-fresh-debootstrap.log 2>&1 || { tail -20 /var/tmp/sgp32-fresh-debootstrap.log; exit 1; }
    tar -czf "$BASE_TGZ" -C "$ROOT" .
fi
t1=$(date +%s)
echo "fresh-check: bare $SUITE chroot in $ROOT ($((t1 - t0)) s)"
chroot "$ROOT" dpkg-query -W -f='${Package}\n' | sort >"$ROOT/var/tmp/packages-before"

mount -t proc proc "$ROOT/proc"
mount -t sysfs sys "$ROOT/sys"
mount --bind /dev "$ROOT/dev"
mount --bind /dev/pts "$ROOT/dev/pts"
mount -t tmpfs shm "$ROOT/dev/shm"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
# Behind a TLS-inspecting proxy the host trusts an extra CA (PIP_CERT / SSL_CERT_FILE); hand the same bundle to
# pip in the chroot, or it cannot reach the package index. Nothing else of the host's configuration goes in.
PASS_ENV=""
ca=${PIP_CERT:-${SSL_CERT_FILE:-$(pip config get global.cert 2>/dev/null || true)}}
if [ -n "$ca" ] && [ -f "$ca" ]; then
    cp "$ca" "$ROOT/etc/ssl/certs/host-ca-bundle.crt"
    PASS_ENV="PIP_CERT=/etc/ssl/certs/host-ca-bundle.crt SSL_CERT_FILE=/etc/ssl/certs/host-ca-bundle.crt"
fi
mkdir -p "$ROOT/src"
(cd "$SRC" && git ls-files -z | tar --null -T - -cf -) | tar -xf - -C "$ROOT/src"

run() { # run "what" "command": prints the time and exit code of one step
    s=$(date +%s)
    rc=0
    chroot "$ROOT" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
        LANG=C.UTF-8 CI=true $PASS_ENV sh -c "cd /src && $2" || rc=$?
    echo "fresh-check: $1: exit $rc in $(($(date +%s) - s)) s"
    return $rc
}
status=0
run "make demo" "make demo" || status=1
if [ "$TESTS" = all ]; then
    run "make test" "make test" || status=1
else
    run "make test (subset)" ".venv/bin/python -m pytest -q -p no:cacheprovider $TESTS" || status=1
fi
run "make install-check" "make install-check" || status=1
s=$(date +%s)
rc=0
cleanup # boot-check boots the root with systemd-nspawn, which mounts /proc, /sys and /dev itself
sh "$SRC/deploy/boot-check.sh" "$ROOT" || rc=$?
echo "fresh-check: boot-check (docs/install.md steps, eim.service under systemd): exit $rc in $(($(date +%s) - s)) s"
[ $rc = 0 ] || status=1
chroot "$ROOT" dpkg-query -W -f='${Package}\n' | sort >"$ROOT/var/tmp/packages-after"
added=$(comm -13 "$ROOT/var/tmp/packages-before" "$ROOT/var/tmp/packages-after" | wc -l)
echo "fresh-check: packages added by make: $added (of them named by deploy/install-system-deps.sh:" \
    "$(comm -13 "$ROOT/var/tmp/packages-before" "$ROOT/var/tmp/packages-after" |
        grep -xE 'mosquitto|postgresql|chromium|chromium-driver|curl|openssl|systemd|autoconf|automake|libtool|pkg-config|build-essential|python3-dev|python3-venv|git' |
        tr '\n' ' '))"
echo "fresh-check: total $(($(date +%s) - t0)) s, $([ $status = 0 ] && echo PASS || echo FAIL)"
exit $status
