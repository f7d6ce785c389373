//! A serde `Deserializer` over QEMU's `key=value,...` lists (`KeyVals`), so
//! an option parses into the same serde config types `--config` JSON
//! uses, with the same field checks and the same messages.
//!
//! Keys are matched with dashes read as underscores (`prealloc-threads` is
//! the field `prealloc_threads`); values are strings that become numbers,
//! `on|off|yes|no|true|false` booleans, unit enum variants or `Some` as the
//! field asks. Unknown keys are refused by the target type
//! (`deny_unknown_fields`). Written here: serde_qs/serde_urlencoded parse
//! `&`-separated forms, not QEMU's `,` lists with `,,` escapes.

use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, Visitor};
use serde::Deserialize;

use super::{CliError, KeyVals};

/// A message from serde, kept as text for `CliError::BadValue`.
#[derive(Debug)]
pub struct KvError(String);

impl std::fmt::Display for KvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for KvError {}

impl de::Error for KvError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        KvError(msg.to_string())
    }
}

/// Deserialize `T` from `kv` (leaving out `skip` keys, e.g. `driver`);
/// errors name the option.
pub fn from_keyvals<'a, T: Deserialize<'a>>(
    opt: &str,
    kv: &'a KeyVals,
    skip: &[&str],
) -> Result<T, CliError> {
    // As QEMU's option parser: a key given twice keeps its last value.
    let mut pairs: Vec<(String, &'a str)> = Vec::new();
    for (k, v) in kv.pairs.iter().filter(|(k, _)| !skip.contains(&k.as_str())) {
        let k = k.replace('-', "_");
        pairs.retain(|(old, _)| *old != k);
        pairs.push((k, v.as_str()));
    }
    T::deserialize(MapDe {
        pairs: pairs.into_iter(),
        value: None,
    })
    .map_err(|e| CliError::BadValue {
        opt: opt.into(),
        value: kv
            .pairs
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","),
        why: as_keys(&e.0),
    })
}

/// serde speaks of fields (`max_bytes`); on the command line they are keys
/// (`max-bytes`). Only names inside backticks change.
fn as_keys(msg: &str) -> String {
    let mut out = String::new();
    for (i, part) in msg.replace("field", "key").split('`').enumerate() {
        if i > 0 {
            out.push('`');
        }
        if i % 2 == 1 {
            out.push_str(&part.replace('_', "-"));
        } else {
            out.push_str(part);
        }
    }
    out
}

struct MapDe<'a, I: Iterator<Item = (String, &'a str)>> {
    pairs: I,
    value: Option<&'a str>,
}

impl<'de, I: Iterator<Item = (String, &'de str)>> de::Deserializer<'de> for MapDe<'de, I> {
    type Error = KvError;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, KvError> {
        v.visit_map(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

impl<'de, I: Iterator<Item = (String, &'de str)>> MapAccess<'de> for MapDe<'de, I> {
    type Error = KvError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, KvError> {
        match self.pairs.next() {
            Some((k, v)) => {
                self.value = Some(v);
                seed.deserialize(k.into_deserializer()).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, KvError> {
        let v = self
            .value
            .take()
            .ok_or_else(|| KvError("a key without a value".into()))?;
        seed.deserialize(ValueDe(v))
    }
}

/// One value string, typed by what the field asks for.
struct ValueDe<'a>(&'a str);

macro_rules! parse_num {
    ($($m:ident $t:ty => $visit:ident),*) => {$(
        fn $m<V: Visitor<'de>>(self, v: V) -> Result<V::Value, KvError> {
            // Decimal or 0x-hex, as QEMU parses numbers.
            let parsed = match self.0.strip_prefix("0x").or_else(|| self.0.strip_prefix("0X")) {
                Some(hex) => <$t>::from_str_radix(hex, 16),
                None => self.0.parse(),
            };
            let n: $t = parsed.map_err(|_| {
                KvError(format!("'{}' is not a whole number", self.0))
            })?;
            v.$visit(n)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for ValueDe<'de> {
    type Error = KvError;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, KvError> {
        v.visit_borrowed_str(self.0)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, v: V) -> Result<V::Value, KvError> {
        match self.0 {
            "on" | "yes" | "y" | "true" => v.visit_bool(true),
            "off" | "no" | "n" | "false" => v.visit_bool(false),
            x => Err(KvError(format!("'{x}' is not on or off"))),
        }
    }

    parse_num! {
        deserialize_u8 u8 => visit_u8, deserialize_u16 u16 => visit_u16,
        deserialize_u32 u32 => visit_u32, deserialize_u64 u64 => visit_u64,
        deserialize_i8 i8 => visit_i8, deserialize_i16 i16 => visit_i16,
        deserialize_i32 i32 => visit_i32, deserialize_i64 i64 => visit_i64
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, KvError> {
        // A key that is present has a value.
        v.visit_some(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, KvError> {
        v.visit_enum(self.0.into_deserializer())
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        v: V,
    ) -> Result<V::Value, KvError> {
        v.visit_newtype_struct(self)
    }

    serde::forward_to_deserialize_any! {
        i128 u128 f32 f64 char str string bytes byte_buf unit unit_struct seq
        tuple tuple_struct map struct identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Opts {
        name: String,
        count: u32,
        #[serde(default)]
        fast: bool,
        max_bytes: Option<u64>,
        #[serde(default, with = "crate::config::size::opt_bytes")]
        size: Option<u64>,
    }

    fn kv(s: &str) -> KeyVals {
        KeyVals::parse("-x", s, "name").unwrap()
    }

    #[test]
    fn typed_values_dashes_and_escapes() {
        let k = kv("a,,b,count=3,fast=on,max-bytes=1024,size=2M");
        let o: Opts = from_keyvals("-x", &k, &[]).unwrap();
        assert_eq!(
            o,
            Opts {
                name: "a,b".into(),
                count: 3,
                fast: true,
                max_bytes: Some(1024),
                size: Some(2 << 20),
            }
        );
    }

    #[test]
    fn qemu_habits_last_key_wins_hex_numbers_short_booleans() {
        let k = kv("a,count=1,count=0x10,fast=y");
        let o: Opts = from_keyvals("-x", &k, &[]).unwrap();
        assert_eq!((o.count, o.fast), (16, true));
    }

    #[test]
    fn mistakes_name_the_key_and_the_option() {
        let k = kv("a,count=lots");
        let e = from_keyvals::<Opts>("-x", &k, &[]).unwrap_err().to_string();
        assert!(
            e.contains("-x") && e.contains("'lots' is not a whole number"),
            "{e}"
        );
        let k = kv("a,count=1,speed=9");
        let e = from_keyvals::<Opts>("-x", &k, &[]).unwrap_err().to_string();
        assert!(e.contains("unknown key `speed`"), "{e}");
        let k = kv("a,count=1,fast=maybe");
        let e = from_keyvals::<Opts>("-x", &k, &[]).unwrap_err().to_string();
        assert!(e.contains("'maybe' is not on or off"), "{e}");
        let k = kv("a");
        let e = from_keyvals::<Opts>("-x", &k, &[]).unwrap_err().to_string();
        assert!(e.contains("missing key `count`"), "{e}");
    }
}
