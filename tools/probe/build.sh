#!/usr/bin/env bash
# Build the probe guest ELF with plain rustc (no cargo, no crates).
# Usage: tools/probe/build.sh OUT.elf   (any cwd; RUSTC overrides the compiler)
set -euo pipefail

if [ $# -ne 1 ] || [ -z "$1" ]; then
    echo "usage: $0 OUT.elf" >&2
    exit 2
fi

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=$1
case $out in /*) ;; *) out=$(pwd)/$out ;; esac
rustc_bin=${RUSTC:-rustc}

# An outer cargo (vmm/build.rs) leaks flags meant for the host crates; none of
# them apply to this freestanding guest, so drop them all.
while IFS= read -r var; do
    case $var in
        CARGO_*|RUSTFLAGS|RUSTDOCFLAGS|RUSTC_WRAPPER|RUSTC_WORKSPACE_WRAPPER|RUSTC_LINKER)
            unset "$var" ;;
    esac
done < <(compgen -e)

trap 'echo "build.sh: building the probe guest failed (line $LINENO)" >&2' ERR
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# rustc writes intermediates beside its output; build in a scratch directory
# and move the finished ELF into place so OUT never holds a half-written file.
"$rustc_bin" \
    --edition 2021 \
    --crate-type bin \
    --crate-name casemate_probe \
    --target x86_64-unknown-linux-gnu \
    -C opt-level=2 \
    -C panic=abort \
    -C codegen-units=1 \
    -C debuginfo=0 \
    -C strip=debuginfo \
    -C relocation-model=static \
    -C code-model=small \
    -C link-arg=-nostartfiles \
    -C link-arg=-nostdlib \
    -C link-arg=-static \
    -C link-arg=-no-pie \
    -C link-arg=-Wl,-T,"$here/link.ld" \
    -C link-arg=-Wl,--build-id=none \
    -C link-arg=-Wl,-z,norelro \
    --remap-path-prefix="$here=probe" \
    -o "$tmp/probe.elf" \
    "$here/src/main.rs"

if [ ! -s "$tmp/probe.elf" ]; then
    echo "build.sh: rustc produced no ELF" >&2
    exit 1
fi
mkdir -p "$(dirname "$out")"
mv -f "$tmp/probe.elf" "$out.tmp.$$"
mv -f "$out.tmp.$$" "$out"
