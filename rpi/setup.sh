#!/usr/bin/env bash
# Set up dsm-tr181 on a Raspberry Pi: Raspberry Pi OS (Debian 12 based) or an RDK-B image
# with apt. Installs the packages, a venv with dsm-tr181 from this checkout, the config,
# the systemd unit and the D-Bus policy, then starts the service.
#
#   sudo rpi/setup.sh [--runtime runc|crun|dobby] [--bus auto|rbus|dbus]
#                     [--prefix /opt/dsm] [--root DIR] [--dry-run] [--no-start]
#
# --dry-run   print every command instead of running it
# --root DIR  install the files under DIR (a staging root or a mounted Pi image); commands
#             that change the running system (apt, groupadd, systemctl) are printed, not run
set -euo pipefail

RUNTIME=runc
BUS=auto
PREFIX=/opt/dsm
ROOT=""
DRY_RUN=0
START=1
SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --runtime) RUNTIME="${2:?}"; shift 2 ;;
        --bus) BUS="${2:?}"; shift 2 ;;
        --prefix) PREFIX="${2:?}"; shift 2 ;;
        --root) ROOT="$(realpath -m "${2:?}")"; shift 2 ;;
        --dry-run) DRY_RUN=1; shift ;;
        --no-start) START=0; shift ;;
        -h|--help) usage 0 ;;
        *) echo "setup.sh: unknown option $1" >&2; usage 2 ;;
    esac
done
case "$RUNTIME" in runc|crun|dobby) ;; *) echo "setup.sh: --runtime must be runc, crun or dobby" >&2; exit 2 ;; esac
case "$BUS" in auto|rbus|dbus) ;; *) echo "setup.sh: --bus must be auto, rbus or dbus" >&2; exit 2 ;; esac

# run: a command that installs into the target (runs under --root, printed under --dry-run)
run() {
    if [ "$DRY_RUN" = 1 ]; then printf '+'; printf ' %q' "$@"; printf '\n'; else "$@"; fi
}
# live: a command that changes the running system (printed under --root and --dry-run)
live() {
    if [ "$DRY_RUN" = 1 ] || [ -n "$ROOT" ]; then printf '+'; printf ' %q' "$@"; printf '\n'; else "$@"; fi
}

if [ "$DRY_RUN" = 0 ] && [ -z "$ROOT" ] && [ "$(id -u)" != 0 ]; then
    echo "setup.sh: run as root (or use --dry-run / --root DIR)" >&2
    exit 1
fi

packages=(python3 python3-venv python3-dev gcc pkg-config libgirepository1.0-dev libcairo2-dev
          gir1.2-glib-2.0 dbus busybox-static curl ca-certificates)
case "$RUNTIME" in
    runc) packages+=(runc) ;;
    crun) packages+=(crun) ;;
    dobby) echo "setup.sh: Dobby is not packaged for Raspberry Pi OS; build it from rdkcentral/Dobby first" >&2 ;;
esac

echo "== packages"
live apt-get update
live env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${packages[@]}"
live groupadd --system --force dsm

echo "== dsm-tr181 in $PREFIX/venv"
run mkdir -p "$ROOT$PREFIX" "$ROOT/usr/bin"
if [ -n "$ROOT" ] && [ "$DRY_RUN" = 0 ]; then
    echo "+ (venv skipped under --root: python3 -m venv $PREFIX/venv && pip install $SRC, on the target)"
else
    run python3 -m venv "$PREFIX/venv"
    run "$PREFIX/venv/bin/pip" install --upgrade pip
    run "$PREFIX/venv/bin/pip" install "$SRC"
fi
run ln -sf "$PREFIX/venv/bin/dsm" "$ROOT/usr/bin/dsm"
run ln -sf "$PREFIX/venv/bin/dsmcli" "$ROOT/usr/bin/dsmcli"
run install -d -m 0755 "$ROOT/usr/share/dsm-tr181/datamodel"
run install -m 0644 "$SRC"/datamodel/*.xml "$ROOT/usr/share/dsm-tr181/datamodel/"

echo "== configuration (/etc/dsm/dsm.toml, kept if present)"
run install -d -m 0755 "$ROOT/etc/dsm"
if [ -e "$ROOT/etc/dsm/dsm.toml" ]; then
    echo "kept existing $ROOT/etc/dsm/dsm.toml"
elif [ "$DRY_RUN" = 1 ]; then
    echo "+ write $ROOT/etc/dsm/dsm.toml (runtime $RUNTIME, bus $BUS)"
else
    cat > "$ROOT/etc/dsm/dsm.toml" <<EOF
# dsm-tr181 on a Raspberry Pi (written by rpi/setup.sh; every key: integration/dsm.toml)
[daemon]
buses = ["$BUS"]
socket_group = "dsm"
datamodel_dir = "/usr/share/dsm-tr181/datamodel"

[[execenv]]
name = "default"
runtime = "$RUNTIME"
EOF
    if [ "$RUNTIME" = crun ]; then
        # Raspberry Pi OS boots with a hybrid cgroup layout, which crun refuses.
        printf '\n[runtime.crun]\ncgroup2_mount_namespace = true\n' >> "$ROOT/etc/dsm/dsm.toml"
    fi
fi

echo "== systemd unit and D-Bus policy"
run install -d -m 0755 "$ROOT/lib/systemd/system" "$ROOT/etc/dbus-1/system.d"
run install -m 0644 "$SRC/integration/dsm.service" "$ROOT/lib/systemd/system/dsm.service"
run install -m 0644 "$SRC/integration/com.rdkcentral.DSM.conf" "$ROOT/etc/dbus-1/system.d/com.rdkcentral.DSM.conf"
live systemctl reload dbus
live systemctl daemon-reload
if [ "$START" = 1 ]; then
    live systemctl enable --now dsm.service
    live systemctl --no-pager status dsm.service
fi
echo "== done: try 'dsmcli ee.list' (members of group dsm) — see rpi/WALKTHROUGH.md"
