#!/bin/sh
# The Debian packages that `make test` and `make demo` need beyond Python (docs/install.md):
#   mosquitto            MQTT broker for the MQTT binding's tests and the demo (mosquitto_passwd included)
#   postgresql           initdb/pg_ctl for the private PostgreSQL clusters of the store tests
#   chromium, chromium-driver  headless browser for the browser tests of the operator UI
#   curl, openssl        the docs' commands are run as written; openssl cross-checks the lab PKI
#   systemd              systemd-analyze, which checks the shipped units (tests/deploy/)
#   autoconf automake libtool pkg-config build-essential python3-dev  build DTLSSocket (CoAPS; deploy/install-dtls.sh;
#                        without pkg-config tinydtls' autoreconf stops at "possibly undefined macro: AC_DEFINE")
#   git                  the tests list the tracked files (tests/deploy)
#   python3-venv         `make venv`
# Run as root with apt-get: installs what is missing (nothing when all is there). Otherwise: prints the one
# command to run and exits 0, so that `make` goes on and the tests that need a missing package skip off CI (under
# CI=true they fail). SYSDEPS=skip leaves the system alone.
set -u
[ "${SYSDEPS:-}" = skip ] && exit 0
command -v dpkg-query >/dev/null 2>&1 || exit 0 # not Debian: docs/install.md lists the packages

PKGS="mosquitto postgresql chromium chromium-driver curl openssl systemd autoconf automake libtool pkg-config
build-essential python3-dev python3-venv git"
missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0
missing=${missing# }

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install-system-deps: missing Debian packages; install them with:"
    echo "    sudo apt-get install -y $missing"
    exit 0
fi
echo "install-system-deps: installing $missing"
export DEBIAN_FRONTEND=noninteractive
# Only packages are installed: no service is enabled or started (policy-rc.d refuses it during this install); the
# tests start private brokers and clusters of their own.
policy=/usr/sbin/policy-rc.d
own_policy=""
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && own_policy=1
fi
rc=0
# shellcheck disable=SC2086 # one word per package
apt-get update -qq && apt-get install -y -qq --no-install-recommends $missing >/tmp/install-system-deps.log 2>&1 || rc=$?
[ -n "$own_policy" ] && rm -f "$policy"
if [ "$rc" != 0 ]; then
    echo "install-system-deps: apt-get install failed (exit $rc; log in /tmp/install-system-deps.log)"
    tail -n 20 /tmp/install-system-deps.log
    exit 0
fi
echo "install-system-deps: installed $missing"
