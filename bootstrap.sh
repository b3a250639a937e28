#!/usr/bin/env bash
# Set up a Debian 12 machine for dsm-tr181: the Debian packages it runs with (runc, crun,
# busybox-static, dbus, ...), a venv in .venv and the package installed in it with its test
# extras. Run as root (it installs packages); idempotent.
set -euo pipefail
cd "$(dirname "$0")"
export DEBIAN_FRONTEND=noninteractive
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
    python3 python3-venv python3-dev gcc pkg-config \
    libgirepository1.0-dev libcairo2-dev gir1.2-glib-2.0 libglib2.0-bin \
    dbus runc crun busybox-static util-linux e2fsprogs iptables iproute2 \
    curl openssl ca-certificates tar xz-utils gzip \
    postgresql docker-registry skopeo umoci >/dev/null
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[test]' -e tools
# A runtime and a bus from other distributions, for tests/integration/test_plugin_{runtime,bus}.py.
.venv/bin/pip install -q -e tests/plugins/dsm-chroot-runtime -e tests/plugins/dsm-lines-bus
