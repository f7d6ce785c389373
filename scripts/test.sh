#!/usr/bin/env bash
# The test command: installs what is missing, builds every binary the
# process-level tests run and the Linux guest tier's kernel and init
# (cached under target/linux-guest: minutes the first time, nothing after),
# then runs the whole suite (unit, integration, QEMU interop, Linux guests)
# and ends with one `N passed, N failed` line. Needs root and /dev/kvm;
# under CI=true a missing KVM, guest kernel or static casemate fails.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
tools/linux-guest/build.sh
cargo build --workspace --bins
# The jailed tests need a statically linked casemate (a jail has no /lib).
# With --target it builds under target/x86_64-unknown-linux-gnu, apart from
# the build above, and RUSTFLAGS reach neither build scripts nor proc macros.
RUSTFLAGS="-C target-feature=+crt-static" cargo build -p casemate-vmm --bin casemate \
    --target x86_64-unknown-linux-gnu
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --lib --bins --tests --no-fail-fast "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$rc"
