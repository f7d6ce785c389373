#!/usr/bin/env bash
# The main job: build casemate (release) and boot the embedded probe guest
# with a 16 MiB virtio-blk disk, printing its report: the guest writes
# patterns, reads them back, flushes, discards. Extra arguments replace the
# defaults, e.g.
#   scripts/run-probe.sh -smp 2 -m 1G -append "probe=hello"
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p casemate-vmm --bin casemate >&2
disk=target/probe-disk.raw
rm -f "$disk"
truncate -s 16M "$disk"
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(-smp 2 -m 256M -drive "file=$disk,format=raw,if=virtio" -append "probe=blk")
exec target/release/casemate "${args[@]}"
