//! A small qemu-img-style argument reader: short options with a separate
//! value (`-f qcow2`), long ones with `=` or a separate value, flags, and
//! positional arguments in order. Unknown options are errors.

use anyhow::{bail, Result};

#[derive(Debug, Default)]
pub struct Parsed {
    pub opts: Vec<(String, String)>,
    pub flags: Vec<String>,
    pub positional: Vec<String>,
}

impl Parsed {
    pub fn opt(&self, name: &str) -> Option<&str> {
        self.opts
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.opts
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn flag(&self, name: &str) -> bool {
        self.flags.iter().any(|f| f == name)
    }
}

/// `with_value`: options taking a value; `flags`: options that don't.
pub fn parse(args: &[String], with_value: &[&str], flags: &[&str]) -> Result<Parsed> {
    let mut p = Parsed::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--" {
            p.positional.extend(it.by_ref().cloned());
            break;
        }
        // A lone "-SIZE" (resize) is positional, not an option.
        let looks_numeric = a.len() > 1 && a[1..].starts_with(|c: char| c.is_ascii_digit());
        if !a.starts_with('-') || a == "-" || looks_numeric {
            p.positional.push(a.clone());
            continue;
        }
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) if a.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        if with_value.contains(&name.as_str()) {
            let v = match inline {
                Some(v) => v,
                None => match it.next() {
                    Some(v) => v.clone(),
                    None => bail!("option '{name}' needs a value"),
                },
            };
            p.opts.push((name, v));
        } else if flags.contains(&name.as_str()) && inline.is_none() {
            p.flags.push(name);
        } else {
            bail!("unknown option '{a}' (see --help)");
        }
    }
    Ok(p)
}
