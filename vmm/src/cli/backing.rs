//! `-drive` keys that replace the image's backing chain, QEMU's nested
//! `backing.file.filename=` and `backing.driver=` (`backing.backing.…` for
//! the next level down). Only these two keys per level are taken; a level
//! needs its file, and levels follow one another from the top.

use super::{bad, CliError, KeyVals};
use crate::config::backing::BackingConfig;

/// Deepest chain taken here (the disk crate follows at most
/// `casemate_disk::MAX_BACKING_DEPTH` in all).
const MAX_LEVELS: usize = 16;

/// The level (1 = the image's own backing) and the leaf key (`file.filename`
/// or `driver`) of a `backing.` key, if it is one.
fn level_of(key: &str) -> Option<(usize, &str)> {
    let mut rest = key;
    let mut level = 0;
    while let Some(r) = rest.strip_prefix("backing.") {
        rest = r;
        level += 1;
    }
    (level > 0 && matches!(rest, "file.filename" | "driver")).then_some((level, rest))
}

/// The `backing.` keys present in `kv` (for `KeyVals::only`).
pub(super) fn keys(kv: &KeyVals) -> Vec<&str> {
    kv.pairs
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| level_of(k).is_some())
        .collect()
}

/// The chain the keys describe, top first; empty when none is given.
pub(super) fn chain(opt: &str, kv: &KeyVals) -> Result<Vec<BackingConfig>, CliError> {
    let mut levels: Vec<(Option<String>, Option<String>)> = Vec::new();
    for key in keys(kv) {
        let (level, leaf) = level_of(key).unwrap_or_default();
        if level > MAX_LEVELS {
            return Err(bad(
                opt,
                key,
                format!("a backing chain of at most {MAX_LEVELS} levels"),
            ));
        }
        if levels.len() < level {
            levels.resize(level, (None, None));
        }
        let v = kv.get(key).unwrap_or_default().to_string();
        if leaf == "driver" {
            if v != "raw" && v != "qcow2" {
                return Err(bad(opt, &v, format!("{key} is raw or qcow2")));
            }
            levels[level - 1].1 = Some(v);
        } else {
            if v.is_empty() {
                return Err(bad(opt, key, "an empty backing file name"));
            }
            levels[level - 1].0 = Some(v);
        }
    }
    levels
        .into_iter()
        .enumerate()
        .map(|(i, (file, format))| {
            let prefix = "backing.".repeat(i + 1);
            let file = file.ok_or_else(|| {
                bad(
                    opt,
                    &format!("{prefix}file.filename"),
                    "each level of a backing chain needs its file",
                )
            })?;
            Ok(BackingConfig {
                file: file.into(),
                format,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &str) -> Result<Vec<BackingConfig>, CliError> {
        chain("-drive", &KeyVals::parse("-drive", v, "file").unwrap())
    }

    #[test]
    fn nested_levels_top_first() {
        let c = parse(
            "file=/dev/fdset/0,backing.backing.file.filename=/dev/fdset/2,\
             backing.file.filename=/dev/fdset/1,backing.driver=qcow2",
        )
        .unwrap();
        assert_eq!(
            c,
            vec![
                BackingConfig {
                    file: "/dev/fdset/1".into(),
                    format: Some("qcow2".into())
                },
                BackingConfig {
                    file: "/dev/fdset/2".into(),
                    format: None
                },
            ]
        );
        assert!(parse("file=a").unwrap().is_empty());
    }

    #[test]
    fn gaps_bad_formats_and_depth_are_refused() {
        for v in [
            "file=a,backing.backing.file.filename=b",
            "file=a,backing.driver=raw",
            "file=a,backing.file.filename=b,backing.driver=vmdk",
            "file=a,backing.file.filename=",
        ] {
            assert!(parse(v).is_err(), "{v}");
        }
        let deep = format!("file=a,{}file.filename=b", "backing.".repeat(17));
        assert!(parse(&deep).is_err());
        let kv = KeyVals::parse("-drive", "file=a,backing.file.locking=off", "file").unwrap();
        assert!(keys(&kv).is_empty(), "only file.filename and driver");
    }
}
