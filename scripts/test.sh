#!/usr/bin/env bash
# The test command: installs what is missing, builds every binary the
# process-level tests run, then runs the whole suite (unit, integration,
# QEMU interop). Needs root and /dev/kvm; under CI=true a missing KVM fails.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --workspace --bins
cargo test --workspace --no-fail-fast "$@"
