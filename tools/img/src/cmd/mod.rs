//! One module per subcommand; each `run` takes the arguments after the
//! command name and returns the process exit code.

pub mod check;
pub mod convert;
mod copy;
pub mod create;
pub mod info;
pub mod resize;

use anyhow::{bail, Result};
use casemate_disk::Format;

/// `-f`/`-O` value to a format.
pub fn format_arg(v: Option<&str>) -> Result<Option<Format>> {
    match v {
        None => Ok(None),
        Some(s) => match Format::from_name(s) {
            Some(f) => Ok(Some(f)),
            None => bail!("unknown file format '{s}' (supported: raw, qcow2)"),
        },
    }
}

/// Help requested anywhere in a subcommand's arguments.
pub fn wants_help(args: &[String]) -> bool {
    args.iter().any(|a| a == "-h" || a == "--help")
}
