#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian 12 machine: QEMU 7.2 (the
# reference peer: qemu-system-x86 with the matching qemu-utils, installed
# together because a newer qemu-utils may be present that qemu-system-x86
# would conflict with), iproute2, passt (-netdev user) and genisoimage. Idempotent: does nothing when present.
set -euo pipefail

want_qemu() {
    command -v qemu-system-x86_64 >/dev/null 2>&1 || return 0
    command -v qemu-io >/dev/null 2>&1 || return 0
    qemu-img --version 2>/dev/null | grep -q 'version 7\.2' || return 0
    return 1
}

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

if want_qemu || ! command -v ip >/dev/null 2>&1; then
    echo "setup: installing qemu-system-x86, qemu-utils (7.2) and iproute2" >&2
    $SUDO apt-get update -qq
    v=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')
    [ -n "$v" ] && [ "$v" != "(none)" ] || { echo "setup: no qemu-system-x86 package available" >&2; exit 1; }
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --allow-downgrades \
        "qemu-system-x86=$v" "qemu-utils=$v" iproute2 >/dev/null
fi
# passt: the user-mode stack behind -netdev user (tests/tests/net_user.rs).
if ! command -v passt >/dev/null 2>&1; then
    echo "setup: installing passt" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq passt >/dev/null
fi
# genisoimage: the ISO images -cdrom tests mount (tests/src/ata_rig.rs, used by tests/tests/linux_fb.rs).
if ! command -v genisoimage >/dev/null 2>&1; then
    echo "setup: installing genisoimage" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq genisoimage >/dev/null
fi
# casemate-iobench labels its plots with DejaVu Sans.
if [ ! -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]; then
    echo "setup: installing fonts-dejavu-core" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq fonts-dejavu-core >/dev/null
fi
command -v cargo >/dev/null 2>&1 || { echo "setup: cargo (Rust stable) is required" >&2; exit 1; }
# qemu.qmp: QEMU's own QMP client library (tests/qmp/qmp_check.py).
if ! python3 -c 'import qemu.qmp' >/dev/null 2>&1; then
    echo "setup: installing the qemu.qmp Python package" >&2
    python3 -m pip install -q qemu.qmp
fi
