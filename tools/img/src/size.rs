//! Size arguments and size display the way qemu-img takes and prints them:
//! `1G`, `512k`, `1.5M`, relative `+200M`/`-200M`, and `1 GiB` in `info`.

use anyhow::{bail, Context, Result};

/// Parses a size with an optional K/M/G/T/P/E suffix (powers of 1024) or
/// `b`/`B` for bytes. Fractions are allowed with a suffix (`1.5G`).
pub fn parse_size(s: &str) -> Result<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let shift = match suffix {
        "" | "b" | "B" => 0,
        "k" | "K" => 10,
        "m" | "M" => 20,
        "g" | "G" => 30,
        "t" | "T" => 40,
        "p" | "P" => 50,
        "e" | "E" => 60,
        _ => bail!("invalid size suffix in '{s}' (use K, M, G, T, P or E)"),
    };
    if num.is_empty() {
        bail!("invalid size '{s}'");
    }
    if let Ok(n) = num.parse::<u64>() {
        return n
            .checked_mul(1u64 << shift)
            .with_context(|| format!("size '{s}' is too large"));
    }
    let f: f64 = num.parse().with_context(|| format!("invalid size '{s}'"))?;
    let v = f * (1u64 << shift) as f64;
    if !v.is_finite() || v < 0.0 || v >= u64::MAX as f64 {
        bail!("size '{s}' is too large");
    }
    Ok(v as u64)
}

/// A resize argument: absolute, or relative to the current size.
#[derive(Debug, PartialEq, Eq)]
pub enum SizeArg {
    Absolute(u64),
    Grow(u64),
    Shrink(u64),
}

pub fn parse_size_arg(s: &str) -> Result<SizeArg> {
    Ok(if let Some(r) = s.strip_prefix('+') {
        SizeArg::Grow(parse_size(r)?)
    } else if let Some(r) = s.strip_prefix('-') {
        SizeArg::Shrink(parse_size(r)?)
    } else {
        SizeArg::Absolute(parse_size(s)?)
    })
}

/// qemu's `size_to_str`: three significant digits and a binary unit.
pub fn human(val: u64) -> String {
    const UNITS: [&str; 7] = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
    // Switch units at 1000 of the smaller one, as qemu does.
    let mut i = 0;
    while i < 6 && val as f64 >= 1000.0 * (1u64 << (10 * i)) as f64 {
        i += 1;
    }
    let v = val as f64 / (1u64 << (10 * i)) as f64;
    format!("{} {}B", sig3(v), UNITS[i])
}

/// `%0.3g` for values below 1000.
fn sig3(v: f64) -> String {
    let decimals = if v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else if v >= 1.0 {
        2
    } else {
        3
    };
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_qemu_sizes() {
        assert_eq!(parse_size("300M").unwrap(), 300 << 20);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_size("4k").unwrap(), 4096);
        assert_eq!(parse_size("1.5K").unwrap(), 1536);
        assert_eq!(parse_size("2T").unwrap(), 2 << 40);
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999E").is_err());
        assert_eq!(parse_size_arg("+200M").unwrap(), SizeArg::Grow(200 << 20));
        assert_eq!(parse_size_arg("-200M").unwrap(), SizeArg::Shrink(200 << 20));
    }

    #[test]
    fn prints_like_qemu() {
        assert_eq!(human(1 << 30), "1 GiB");
        assert_eq!(human(200704), "196 KiB");
        assert_eq!(human(300 << 20), "300 MiB");
        assert_eq!(human(1000 << 20), "0.977 GiB");
        assert_eq!(human(1536 << 20), "1.5 GiB");
        assert_eq!(human(0), "0 B");
    }
}
