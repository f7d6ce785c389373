#!/usr/bin/env python3
"""Checks a disk image against a probe serial log (CONTRACT.md, "Block
pattern"): every `probe: blk wrote lba=L sectors=N pass=P` line must have
left byte i of sector L+k equal to ((L+k)*7 + P + i) & 0xff; `blk zeroed`
ranges must read as zeroes; `blk discarding` ranges are unspecified. Lines
apply in order (a later line overrides an earlier one for its sectors).
`blk write_done` (wait_after_write=1) needs nothing extra: the `wrote` line
before it names the sector.

Usage: check_blk.py SERIAL_LOG RAW_IMAGE    exit 0 = all good, 1 = mismatch
"""
import re
import sys

SECTOR = 512
LINE = re.compile(r"^probe: blk (wrote|zeroed|discarding) lba=(\d+) sectors=(\d+)(?: pass=(\d+))?")


def expected(log):
    want = {}  # lba -> pass (int), 'zero', or None (unspecified)
    for raw in log.splitlines():
        m = LINE.match(raw.strip())
        if not m:
            continue
        kind, lba, n, p = m.group(1), int(m.group(2)), int(m.group(3)), m.group(4)
        for s in range(lba, lba + n):
            want[s] = int(p) if kind == "wrote" else ("zero" if kind == "zeroed" else None)
    return want


def sector_bytes(lba, p):
    base = (lba * 7 + p) & 0xff
    return bytes((base + i) & 0xff for i in range(SECTOR))


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    log = open(sys.argv[1], encoding="utf-8", errors="replace").read()
    want = expected(log)
    if not want:
        print("check_blk: no 'probe: blk wrote' lines in the log")
        return 1
    bad = 0
    with open(sys.argv[2], "rb") as f:
        for lba, p in sorted(want.items()):
            if p is None:
                continue
            f.seek(lba * SECTOR)
            got = f.read(SECTOR)
            exp = bytes(SECTOR) if p == "zero" else sector_bytes(lba, p)
            if got != exp:
                bad += 1
                if bad <= 10:
                    print(f"check_blk: lba {lba}: expected {'zeroes' if p == 'zero' else f'pass {p}'}, got {got[:8].hex()}...")
    checked = sum(1 for p in want.values() if p is not None)
    print(f"check_blk: {checked} sectors checked, {bad} bad")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
