#!/bin/sh
# CoAP over DTLS (coaps://) needs DTLSSocket, which has no wheels: it builds tinydtls from source with autoconf,
# automake and libtool. Installs those from Debian's packages when they are missing and we are root, then the
# project's [dtls] extra into the venv. Without them the rest of the stack works; coaps:// is refused with a message
# and the CoAPS tests skip on a laptop (under CI=true they fail).
PY=${PY:-.venv/bin/python}
if "$PY" -c 'import DTLSSocket' 2>/dev/null; then exit 0; fi
if ! command -v autoreconf >/dev/null 2>&1 || ! command -v libtoolize >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "install-dtls: installing autoconf automake libtool pkg-config (Debian packages) to build DTLSSocket"
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq autoconf automake libtool pkg-config; } \
            >/dev/null 2>&1 || echo "install-dtls: apt-get install autoconf automake libtool failed"
    fi
fi
if ! command -v autoreconf >/dev/null 2>&1 || ! command -v libtoolize >/dev/null 2>&1; then
    echo "install-dtls: CoAPS (DTLS) left out: install autoconf, automake and libtool, then run 'make venv' again"
    exit 0
fi
if ! "$PY" -m pip install -q -e '.[dtls]'; then
    echo "install-dtls: building DTLSSocket failed; CoAPS (DTLS) left out (see the pip output above)"
fi
exit 0
