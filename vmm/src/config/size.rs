//! Byte sizes as QEMU writes them (`512M`, `1G`, `1.5G`, plain bytes), and
//! serde helpers so that a size field takes either a number of bytes (JSON)
//! or such a string (JSON, and the command line through the same types).

/// A QEMU size: plain numbers are MiB for `-m`; suffixes K, M, G, T (also
/// lower case, and with a trailing `B` or `iB`) are binary multiples.
pub fn parse_size(s: &str, default_shift: u32) -> Option<u64> {
    let s = s.trim();
    let digits_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(digits_end);
    let suffix = suffix.trim_end_matches("iB").trim_end_matches('B');
    let shift = match suffix {
        "" => default_shift,
        "k" | "K" => 10,
        "m" | "M" => 20,
        "g" | "G" => 30,
        "t" | "T" => 40,
        _ => return None,
    };
    if num.is_empty() {
        return None;
    }
    let value = if let Ok(n) = num.parse::<u64>() {
        n.checked_mul(1u64 << shift)?
    } else {
        let f: f64 = num.parse().ok()?;
        let bytes = f * (1u64 << shift) as f64;
        if !bytes.is_finite() || bytes >= u64::MAX as f64 {
            return None;
        }
        bytes as u64
    };
    Some(value)
}

/// A size field: bytes as a number, or a QEMU size string (bytes without a
/// suffix).
pub mod bytes {
    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(*v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        d.deserialize_any(SizeVisitor)
    }

    pub(super) struct SizeVisitor;

    impl Visitor<'_> for SizeVisitor {
        type Value = u64;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a size in bytes, or a number with a K, M, G or T suffix")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v).map_err(|_| E::custom(format!("size {v} is negative")))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
            super::parse_size(v, 0).ok_or_else(|| E::custom(format!("'{v}' is not a size")))
        }
    }
}

/// An optional size field (see `bytes`).
pub mod opt_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_some(v),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        #[derive(Deserialize)]
        struct Wrap(#[serde(with = "super::bytes")] u64);
        Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
    }
}
