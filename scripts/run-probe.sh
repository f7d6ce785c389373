#!/usr/bin/env bash
# The main job: build casemate (release) and boot the embedded probe guest,
# printing its report. Extra arguments go to casemate, e.g.
#   scripts/run-probe.sh -smp 2 -m 1G -append "probe=exits n=10000"
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p casemate-vmm --bin casemate >&2
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(-smp 2 -m 256M -append "probe=hello")
exec target/release/casemate "${args[@]}"
