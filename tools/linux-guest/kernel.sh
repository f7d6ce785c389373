#!/usr/bin/env bash
# Builds the guest kernel into OUT_DIR (vmlinux, bzImage, config, System.map):
# Debian's linux-source-6.1 + pvm-quirks.patch, `make tinyconfig` + guest.config.
# Called by build.sh, which keys OUT_DIR by the hash of this script, the patch,
# the fragment, the source package version and the compiler; OUT_DIR appears
# only once the build has succeeded. Usage: kernel.sh OUT_DIR
set -euo pipefail

if [ $# -ne 1 ] || [ -z "$1" ]; then
    echo "usage: $0 OUT_DIR" >&2
    exit 2
fi
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=$1
tarball=/usr/src/linux-source-6.1.tar.xz
[ -f "$tarball" ] || { echo "kernel.sh: $tarball missing (apt-get install linux-source-6.1)" >&2; exit 1; }

mkdir -p "$(dirname "$out")"
work=$(mktemp -d "$out.build.XXXXXX")
trap 'rm -rf "$work"' EXIT
log=$work/build.log
fail() {
    echo "kernel.sh: $1 failed; last lines of $log:" >&2
    tail -n 40 "$log" >&2
    exit 1
}

tar -C "$work" -xf "$tarball"
src=$work/linux-source-6.1
cd "$src"
patch -p1 --forward --quiet < "$here/pvm-quirks.patch" >>"$log" 2>&1 || fail "applying pvm-quirks.patch"

# Reproducible version strings: the same inputs give the same kernel.
export KBUILD_BUILD_TIMESTAMP="1970-01-01" KBUILD_BUILD_USER=casemate KBUILD_BUILD_HOST=casemate
make tinyconfig >>"$log" 2>&1 || fail "make tinyconfig"
scripts/kconfig/merge_config.sh -m .config "$here/guest.config" >>"$log" 2>&1 || fail "merging guest.config"
make olddefconfig >>"$log" 2>&1 || fail "make olddefconfig"

# Every option the fragment sets must survive olddefconfig.
missing=""
while IFS= read -r line; do
    case $line in
        CONFIG_*=*) grep -qxF "$line" .config || missing="$missing $line" ;;
        "# CONFIG_"*" is not set")
            opt=${line#\# }
            opt=${opt%% *}
            if grep -q "^$opt=" .config; then missing="$missing $line"; fi ;;
    esac
done < "$here/guest.config"
if [ -n "$missing" ]; then
    echo "kernel.sh: guest.config lines not in the final .config (dependencies?):$missing" >&2
    exit 1
fi

make -j"$(($(nproc) + 1))" vmlinux bzImage >>"$log" 2>&1 || fail "make vmlinux bzImage"

stage=$work/out
mkdir "$stage"
cp vmlinux arch/x86/boot/bzImage System.map "$stage/"
cp .config "$stage/config"
cp "$log" "$stage/build.log"
mv "$stage" "$out"
