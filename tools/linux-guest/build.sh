#!/usr/bin/env bash
# The Linux guest tier's artifacts, built from source and cached:
#   - the kernel (kernel.sh): Debian's linux-source-6.1 + pvm-quirks.patch,
#     tinyconfig + guest.config -> vmlinux (PVH) and bzImage (LZ4);
#   - the test init (init/, plain rustc, no crates) packed as the only
#     program in an uncompressed newc cpio.
# Each lands in a directory named after the hash of its inputs under
# $CASEMATE_LINUX_CACHE (default: target/linux-guest), so a second run
# builds nothing. `current/` then holds links to this tree's artifacts:
#   target/linux-guest/current/{vmlinux,bzImage,initramfs.cpio,init}
# Installs the Debian packages it needs when they are missing (root or sudo).
# Usage: tools/linux-guest/build.sh   (any cwd; prints the artifact paths)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
cache=${CASEMATE_LINUX_CACHE:-$root/target/linux-guest}
packages=(linux-source-6.1 bc bison flex libelf-dev libssl-dev cpio lz4 make gcc)

say() { echo "linux-guest: $*" >&2; }

ensure_packages() {
    local need=() p
    for p in "${packages[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
    done
    [ ${#need[@]} -eq 0 ] && return 0
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    say "installing ${need[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
}

hash_of() { sha256sum | cut -c1-16; }

# newc cpio member: NAME MODE(octal) [FILE] [RDEV_MAJOR RDEV_MINOR]
ino=0
cpio_entry() {
    local name=$1 mode=$2 file=${3:-} major=${4:-0} minor=${5:-0} size=0 nlink=1
    [ -n "$file" ] && size=$(stat -c %s "$file")
    [ "${mode:0:2}" = "04" ] && nlink=2
    ino=$((ino + 1))
    printf '070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X' \
        "$ino" "$((8#$mode))" 0 0 "$nlink" 0 "$size" 0 0 "$major" "$minor" "$((${#name} + 1))" 0
    printf '%s\0' "$name"
    head -c $(((4 - (110 + ${#name} + 1) % 4) % 4)) /dev/zero
    if [ -n "$file" ]; then
        cat "$file"
        head -c $(((4 - size % 4) % 4)) /dev/zero
    fi
}

build_kernel() {
    local ver khash
    ver=$(dpkg-query -W -f='${Version}' linux-source-6.1)
    khash=$({
        echo "linux-source-6.1 $ver"
        gcc --version | head -n 1
        cat "$here/kernel.sh" "$here/pvm-quirks.patch" "$here/guest.config"
    } | hash_of)
    kdir=$cache/kernel-$khash
    if [ -f "$kdir/vmlinux" ]; then
        say "kernel cached: $kdir"
        return
    fi
    say "building the kernel (linux-source-6.1 $ver; about 3 minutes on 2 cores) -> $kdir"
    local t0=$SECONDS
    "$here/kernel.sh" "$kdir"
    say "kernel built in $((SECONDS - t0)) s"
}

build_init() {
    local ihash rustc_bin=${RUSTC:-rustc}
    ihash=$({
        "$rustc_bin" --version
        cat "$here/build.sh" "$here"/init/*.rs "$root/tools/probe/src/mem.rs"
    } | hash_of)
    idir=$cache/init-$ihash
    if [ -f "$idir/initramfs.cpio" ]; then
        say "init cached: $idir"
        return
    fi
    local tmp
    tmp=$(mktemp -d "$idir.build.XXXXXX")
    # An outer cargo leaks flags meant for host crates; none apply here.
    env -u RUSTFLAGS -u CARGO_ENCODED_RUSTFLAGS -u RUSTC_WRAPPER -u RUSTC_WORKSPACE_WRAPPER \
        "$rustc_bin" --edition 2021 --crate-type bin --crate-name casemate_init \
        --target x86_64-unknown-linux-gnu \
        -C opt-level=2 -C panic=abort -C codegen-units=1 -C debuginfo=0 -C strip=symbols \
        -C relocation-model=static \
        -C link-arg=-nostartfiles -C link-arg=-nostdlib -C link-arg=-static -C link-arg=-no-pie \
        -C link-arg=-Wl,--build-id=none \
        --remap-path-prefix="$root=." \
        -o "$tmp/init" "$here/init/main.rs"
    {
        cpio_entry dev 040755
        cpio_entry dev/console 020600 "" 5 1
        cpio_entry proc 040755
        cpio_entry sys 040755
        cpio_entry init 0100755 "$tmp/init"
        cpio_entry TRAILER!!! 0
    } > "$tmp/initramfs.cpio"
    rm -rf "$idir"
    mv "$tmp" "$idir"
    say "init built: $idir"
}

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
ensure_packages
build_kernel
build_init
mkdir -p "$cache/current"
for f in vmlinux bzImage; do ln -sfn "../kernel-${kdir##*/kernel-}/$f" "$cache/current/$f"; done
for f in init initramfs.cpio; do ln -sfn "../init-${idir##*/init-}/$f" "$cache/current/$f"; done
say "vmlinux=$cache/current/vmlinux"
say "bzImage=$cache/current/bzImage"
say "initramfs=$cache/current/initramfs.cpio"
