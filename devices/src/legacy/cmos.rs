//! The CMOS RTC and NVRAM at ports 0x70 (index) and 0x71 (data).
//!
//! Owns the calendar registers (read from the host clock plus the `-rtc
//! base` choice, in BCD or binary and 12/24-hour per status register B) and
//! the memory-size bytes firmware and old kernels read. No periodic or alarm
//! interrupts: the PIT and LAPIC timers serve guests here. Guest writes to the
//! time registers move the guest's clock by an offset, as on real hardware.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::bus::{BusAction, BusDevice};

pub const LEN: u64 = 2;

const REG_SEC: u8 = 0x00;
const REG_MIN: u8 = 0x02;
const REG_HOUR: u8 = 0x04;
const REG_WDAY: u8 = 0x06;
const REG_MDAY: u8 = 0x07;
const REG_MON: u8 = 0x08;
const REG_YEAR: u8 = 0x09;
const REG_A: u8 = 0x0a;
const REG_B: u8 = 0x0b;
const REG_C: u8 = 0x0c;
const REG_D: u8 = 0x0d;
const REG_CENTURY: u8 = 0x32;

const B_24H: u8 = 1 << 1;
const B_BINARY: u8 = 1 << 2;
const D_VALID: u8 = 1 << 7;

/// Where the guest's clock starts (`-rtc base=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtcBase {
    Utc,
    LocalTime,
    /// A fixed start, in seconds since the Unix epoch (UTC).
    At(i64),
}

pub struct Cmos {
    index: u8,
    nvram: [u8; 128],
    /// Seconds added to the host's UTC clock to get the guest's wall time.
    offset: i64,
}

impl Cmos {
    /// `low_ram` is RAM below 4 GiB, `high_ram` above it, in bytes.
    pub fn new(base: RtcBase, low_ram: u64, high_ram: u64) -> Self {
        let now = host_now();
        let offset = match base {
            RtcBase::Utc => 0,
            RtcBase::LocalTime => local_utc_offset(now),
            RtcBase::At(t) => t - now,
        };
        let mut nvram = [0u8; 128];
        nvram[REG_A as usize] = 0x26; // 32.768 kHz base, 1024 Hz rate
        nvram[REG_B as usize] = B_24H;
        nvram[REG_D as usize] = D_VALID;
        // Base memory in KiB, extended memory in KiB (capped) and in 64 KiB
        // units above 16 MiB and above 4 GiB, where BIOSes look for them.
        put16(&mut nvram, 0x15, 640);
        let ext_kib = (low_ram.saturating_sub(1 << 20) >> 10).min(0xfc00);
        put16(&mut nvram, 0x17, ext_kib as u16);
        put16(&mut nvram, 0x30, ext_kib as u16);
        let above16 = (low_ram.saturating_sub(16 << 20) >> 16).min(0xffff);
        put16(&mut nvram, 0x34, above16 as u16);
        let above4g = (high_ram >> 16).min(0xff_ffff);
        nvram[0x5b] = above4g as u8;
        nvram[0x5c] = (above4g >> 8) as u8;
        nvram[0x5d] = (above4g >> 16) as u8;
        Self {
            index: 0,
            nvram,
            offset,
        }
    }

    fn read_reg(&mut self, reg: u8) -> u8 {
        let b = self.nvram[REG_B as usize];
        let t = civil(host_now() + self.offset);
        let enc = |v: u32| if b & B_BINARY != 0 { v as u8 } else { bcd(v) };
        match reg {
            REG_SEC => enc(t.sec),
            REG_MIN => enc(t.min),
            REG_HOUR if b & B_24H != 0 => enc(t.hour),
            REG_HOUR => {
                let h12 = match t.hour % 12 {
                    0 => 12,
                    h => h,
                };
                enc(h12) | if t.hour >= 12 { 0x80 } else { 0 }
            }
            REG_WDAY => enc(t.wday + 1),
            REG_MDAY => enc(t.mday),
            REG_MON => enc(t.mon),
            REG_YEAR => enc(t.year % 100),
            REG_CENTURY => enc(t.year / 100),
            // Reading C acknowledges pending interrupts; none are ever raised.
            REG_C => 0,
            r => self.nvram[r as usize & 0x7f],
        }
    }

    fn write_reg(&mut self, reg: u8, v: u8) {
        let b = self.nvram[REG_B as usize];
        let dec = |v: u8| -> u32 {
            if b & B_BINARY != 0 {
                v.into()
            } else {
                u32::from(v >> 4) * 10 + u32::from(v & 0xf)
            }
        };
        let mut t = civil(host_now() + self.offset);
        match reg {
            REG_SEC => t.sec = dec(v).min(59),
            REG_MIN => t.min = dec(v).min(59),
            REG_HOUR if b & B_24H != 0 => t.hour = dec(v).min(23),
            REG_HOUR => t.hour = (dec(v & 0x7f) % 12 + if v & 0x80 != 0 { 12 } else { 0 }).min(23),
            REG_MDAY => t.mday = dec(v).clamp(1, 31),
            REG_MON => t.mon = dec(v).clamp(1, 12),
            REG_YEAR => t.year = t.year / 100 * 100 + dec(v) % 100,
            REG_CENTURY => t.year = dec(v) * 100 + t.year % 100,
            REG_C | REG_D | REG_WDAY => return,
            r => {
                self.nvram[r as usize & 0x7f] = v;
                return;
            }
        }
        self.offset = t.to_unix() - host_now();
    }
}

impl BusDevice for Cmos {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let v = if offset == 1 {
            self.read_reg(self.index)
        } else {
            0xff
        };
        data.fill(0);
        if let Some(b) = data.first_mut() {
            *b = v;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> BusAction {
        match (offset, data.first()) {
            // Bit 7 of the index port gates NMIs on real hardware.
            (0, Some(&v)) => self.index = v & 0x7f,
            (1, Some(&v)) => self.write_reg(self.index, v),
            _ => {}
        }
        BusAction::None
    }
}

fn put16(nvram: &mut [u8; 128], at: usize, v: u16) {
    nvram[at] = v as u8;
    nvram[at + 1] = (v >> 8) as u8;
}

fn bcd(v: u32) -> u8 {
    (((v / 10) % 10) << 4 | (v % 10)) as u8
}

fn host_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The host's offset from UTC at `now`, in seconds.
fn local_utc_offset(now: i64) -> i64 {
    let t: libc::time_t = now as libc::time_t;
    // SAFETY: an all-zero `tm` is a valid value for localtime_r to overwrite.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are to live locals of the right types.
    let ok = unsafe { !libc::localtime_r(&t, &mut tm).is_null() };
    if ok {
        tm.tm_gmtoff
    } else {
        0
    }
}

/// A broken-down UTC time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Civil {
    year: u32,
    mon: u32,
    mday: u32,
    hour: u32,
    min: u32,
    sec: u32,
    /// 0 = Sunday.
    wday: u32,
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Hinnant's algorithm).
fn civil(t: i64) -> Civil {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400) as u32;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let mday = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let mon = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = (yoe + era * 400 + i64::from(mon <= 2)).clamp(0, 9999) as u32;
    Civil {
        year,
        mon,
        mday,
        hour: secs / 3600,
        min: secs / 60 % 60,
        sec: secs % 60,
        wday: (days + 4).rem_euclid(7) as u32,
    }
}

impl Civil {
    fn to_unix(self) -> i64 {
        let y = i64::from(self.year) - i64::from(self.mon <= 2);
        let era = y.div_euclid(400);
        let yoe = y.rem_euclid(400);
        let m = i64::from(self.mon);
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(self.mday) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        days * 86_400 + i64::from(self.hour * 3600 + self.min * 60 + self.sec)
    }
}

/// Seconds since the Unix epoch of a UTC calendar time, for `-rtc base=`
/// parsing; `None` when a field is out of range.
pub fn unix_from_civil(
    year: u32,
    mon: u32,
    mday: u32,
    hour: u32,
    min: u32,
    sec: u32,
) -> Option<i64> {
    let ok = (1..=9999).contains(&year)
        && (1..=12).contains(&mon)
        && (1..=31).contains(&mday)
        && hour < 24
        && min < 60
        && sec < 60;
    let t = Civil {
        year,
        mon,
        mday,
        hour,
        min,
        sec,
        wday: 0,
    }
    .to_unix();
    // Reject dates like Feb 30 that would silently roll over.
    (ok && civil(t).mday == mday).then_some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(c: &mut Cmos, r: u8) -> u8 {
        c.write(0, &[r]);
        let mut b = [0u8];
        c.read(1, &mut b);
        b[0]
    }

    #[test]
    fn civil_round_trips_known_dates() {
        // 2000-02-29 12:34:56 UTC, a Tuesday.
        let t = 951_827_696;
        let c = civil(t);
        assert_eq!((c.year, c.mon, c.mday), (2000, 2, 29));
        assert_eq!((c.hour, c.min, c.sec, c.wday), (12, 34, 56, 2));
        assert_eq!(c.to_unix(), t);
        assert_eq!(civil(0).year, 1970);
        assert_eq!(unix_from_civil(2000, 2, 29, 12, 34, 56), Some(t));
        assert_eq!(unix_from_civil(2001, 2, 29, 0, 0, 0), None);
        assert_eq!(unix_from_civil(2001, 13, 1, 0, 0, 0), None);
    }

    #[test]
    fn fixed_base_reads_back_in_bcd_and_binary() {
        let mut c = Cmos::new(RtcBase::At(951_827_696), 64 << 20, 0);
        assert_eq!(reg(&mut c, REG_YEAR), 0x00);
        assert_eq!(reg(&mut c, REG_CENTURY), 0x20);
        assert_eq!(reg(&mut c, REG_MON), 0x02);
        assert_eq!(reg(&mut c, REG_MDAY), 0x29);
        assert_eq!(reg(&mut c, REG_HOUR), 0x12);
        c.write(0, &[REG_B]);
        c.write(1, &[B_24H | B_BINARY]);
        assert_eq!(reg(&mut c, REG_MDAY), 29);
        assert_eq!(reg(&mut c, REG_D), D_VALID);
    }

    #[test]
    fn guest_can_set_the_year() {
        let mut c = Cmos::new(RtcBase::Utc, 64 << 20, 0);
        c.write(0, &[REG_YEAR]);
        c.write(1, &[0x37]);
        assert_eq!(reg(&mut c, REG_YEAR), 0x37);
    }

    #[test]
    fn memory_size_bytes() {
        let mut c = Cmos::new(RtcBase::Utc, 3 << 30, 2 << 30);
        let above16 = u16::from(reg(&mut c, 0x34)) | u16::from(reg(&mut c, 0x35)) << 8;
        assert_eq!(u64::from(above16), ((3u64 << 30) - (16 << 20)) >> 16);
        assert_eq!(reg(&mut c, 0x5c), ((2u64 << 30) >> 24) as u8);
    }
}
