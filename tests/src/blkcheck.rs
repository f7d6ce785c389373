//! Host-side check of what `probe=blk` wrote, per tools/probe/CONTRACT.md:
//! byte `i` of the sector at LBA `L` written in pass `P` is
//! `(L*7 + P + i) & 0xff`; `zeroed` sectors read as zero; `discarding`
//! makes a sector's content unspecified; later lines override earlier ones.

use std::collections::BTreeMap;

use crate::parse_pairs;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Pass(u64),
    Zero,
    Any,
}

/// Compare `disk` (a raw image) with the probe's console log; returns the
/// number of sectors checked, or a description of the first mismatches.
pub fn check(console: &str, disk: &[u8]) -> Result<usize, String> {
    check_lines(console, disk, "probe: blk ")
}

/// As `check`, for any guest that writes the same `blk wrote` lines after
/// `prefix` (the Linux guest's init: `init: blk `).
pub fn check_lines(console: &str, disk: &[u8], prefix: &str) -> Result<usize, String> {
    let mut want: BTreeMap<u64, Expect> = BTreeMap::new();
    for line in console
        .lines()
        .filter_map(|l| l.trim_end().strip_prefix(prefix))
    {
        let kv = parse_pairs(line);
        let num = |k: &str| kv.get(k).and_then(|v| v.parse::<u64>().ok());
        let (Some(lba), Some(n)) = (num("lba"), num("sectors")) else {
            continue;
        };
        let e = if kv.contains_key("wrote") {
            match num("pass") {
                Some(p) => Expect::Pass(p),
                None => continue,
            }
        } else if kv.contains_key("zeroed") {
            Expect::Zero
        } else if kv.contains_key("discarding") {
            Expect::Any
        } else {
            continue;
        };
        for s in lba..lba + n {
            want.insert(s, e);
        }
    }
    let mut bad = Vec::new();
    for (&lba, &e) in &want {
        let at = (lba * 512) as usize;
        let Some(sector) = disk.get(at..at + 512) else {
            bad.push(format!("lba {lba} beyond the image"));
            continue;
        };
        let ok = match e {
            Expect::Pass(p) => sector
                .iter()
                .enumerate()
                .all(|(i, &b)| b == ((lba * 7 + p + i as u64) & 0xff) as u8),
            Expect::Zero => sector.iter().all(|&b| b == 0),
            Expect::Any => true,
        };
        if !ok {
            bad.push(format!("lba {lba}: expected {e:?}"));
        }
    }
    if want.is_empty() {
        return Err("the log records no block writes".into());
    }
    if bad.is_empty() {
        Ok(want.len())
    } else {
        Err(bad.join("; "))
    }
}
