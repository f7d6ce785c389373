//! TSC frequency and TSC-based delays. The frequency comes from CPUID 0x15,
//! 0x16 or the hypervisor leaf 0x40000010 when offered, else from a ~50 ms
//! calibration against PIT channel 2, or channel 0 read back where port 0x61
//! (the channel 2 gate) is absent, as on QEMU microvm. Timeouts use a guess
//! when only a bound is needed, so `probe=hello` never pays for calibration.

use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use crate::io::{cpuid, inb, outb, rdtsc};

const PIT_HZ: u64 = 1_193_182;
const CALIBRATE_MS: u64 = 50;
/// Assumed for delays when no CPUID leaf gives the frequency: a slower real
/// TSC only makes delays and timeouts longer, which they tolerate.
const GUESS_KHZ: u64 = 3_000_000;

static KHZ: AtomicU64 = AtomicU64::new(0);
static SRC: AtomicU8 = AtomicU8::new(0);

const SOURCES: [&str; 7] = ["none", "cpuid15", "cpuid16", "hv", "pit", "guess", "pit-ch0"];
const SRC_GUESS: u8 = 5;
/// Give up on a PIT that does not count after this many TSC ticks.
const PIT_GIVE_UP_TICKS: u64 = 5_000_000_000;

fn from_cpuid() -> Option<(u64, u8)> {
    let max = cpuid(0)?.eax;
    if max >= 0x15 {
        let r = cpuid(0x15)?;
        if r.eax != 0 && r.ebx != 0 && r.ecx != 0 {
            return Some((r.ecx as u64 * r.ebx as u64 / r.eax as u64 / 1000, 1));
        }
    }
    if max >= 0x16 {
        let mhz = cpuid(0x16)?.eax & 0xffff;
        if mhz != 0 {
            return Some((mhz as u64 * 1000, 2));
        }
    }
    let hypervisor = cpuid(1)?.ecx & (1 << 31) != 0;
    if hypervisor && cpuid(0x4000_0000)?.eax >= 0x4000_0010 {
        let khz = cpuid(0x4000_0010)?.eax;
        if khz != 0 {
            return Some((khz as u64, 3));
        }
    }
    None
}

/// Counts TSC ticks while PIT channel 2 (gate via port 0x61) counts down
/// CALIBRATE_MS worth of PIT clocks in mode 0.
fn from_pit() -> Option<u64> {
    let port61 = inb(0x61);
    if port61 == 0xff {
        return None; // no PIT/speaker port behind 0x61
    }
    let latch = PIT_HZ * CALIBRATE_MS / 1000;
    outb(0x61, (port61 & !0x02) | 0x01); // gate high, speaker off
    outb(0x43, 0xb0); // channel 2, lobyte/hibyte, mode 0, binary
    outb(0x42, (latch & 0xff) as u8);
    outb(0x42, (latch >> 8) as u8);
    let t0 = rdtsc();
    let mut polls: u64 = 0;
    while inb(0x61) & 0x20 == 0 {
        polls += 1;
        if polls > 5_000_000 {
            return None;
        }
    }
    let khz = (rdtsc() - t0) / CALIBRATE_MS;
    // Below 100 MHz means OUT2 was high at once: no working PIT.
    if khz < 100_000 { None } else { Some(khz) }
}

fn pit0_count() -> u16 {
    outb(0x43, 0x00); // latch channel 0
    let lo = inb(0x40);
    let hi = inb(0x40);
    u16::from_le_bytes([lo, hi])
}

/// Channel 0 in one-shot mode 0 from 0xffff, read back with latch commands;
/// one-shot so no periodic timer is left running afterwards.
fn from_pit0() -> Option<u64> {
    let want = PIT_HZ * CALIBRATE_MS / 1000;
    outb(0x43, 0x30); // channel 0, lobyte/hibyte, mode 0, binary
    outb(0x40, 0xff);
    outb(0x40, 0xff);
    let mut last = pit0_count();
    let t0 = rdtsc();
    let mut elapsed: u64 = 0;
    let mut t1 = t0;
    while elapsed < want {
        let c = pit0_count();
        t1 = rdtsc();
        // Polls are far apart less than a full 16-bit wrap (55 ms).
        elapsed += last.wrapping_sub(c) as u64;
        last = c;
        if t1 - t0 > PIT_GIVE_UP_TICKS {
            return None;
        }
    }
    let khz = (t1 - t0) * PIT_HZ / elapsed / 1000;
    if khz < 100_000 { None } else { Some(khz) }
}

fn store(khz: u64, src: u8) -> (u64, &'static str) {
    KHZ.store(khz, Ordering::Relaxed);
    SRC.store(src, Ordering::Relaxed);
    (khz, SOURCES[src as usize])
}

/// The measured TSC frequency in kHz and its source; calibrates if needed.
/// Returns (0, "none") when no source works.
pub fn khz() -> (u64, &'static str) {
    let k = KHZ.load(Ordering::Relaxed);
    let s = SRC.load(Ordering::Relaxed);
    if k != 0 && s != SRC_GUESS {
        return (k, SOURCES[s as usize]);
    }
    if let Some((k, s)) = from_cpuid() {
        return store(k, s);
    }
    if let Some(k) = from_pit() {
        return store(k, 4);
    }
    match from_pit0() {
        Some(k) => store(k, 6),
        None => (0, "none"),
    }
}

/// A frequency good enough for timeouts and delays; never calibrates.
pub fn khz_for_delays() -> u64 {
    let k = KHZ.load(Ordering::Relaxed);
    if k != 0 {
        return k;
    }
    match from_cpuid() {
        Some((k, s)) => store(k, s).0,
        None => store(GUESS_KHZ, SRC_GUESS).0,
    }
}

pub fn us_to_ticks(us: u64) -> u64 {
    khz_for_delays() * us / 1000
}

pub fn delay_us(us: u64) {
    let end = rdtsc().wrapping_add(us_to_ticks(us));
    while (rdtsc().wrapping_sub(end) as i64) < 0 {
        core::hint::spin_loop();
    }
}
