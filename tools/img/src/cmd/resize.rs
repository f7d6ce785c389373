//! `resize`: absolute or relative size changes. Shrinking needs `--shrink`,
//! with qemu-img's wording when it is missing; qcow2 shrinks free the
//! clusters past the new end (see casemate-disk's qcow2/resize.rs).

use std::path::Path;

use anyhow::{bail, Context, Result};
use casemate_disk::{open_image, OpenOptions};

use super::format_arg;
use crate::args;
use crate::size::{parse_size_arg, SizeArg};

pub fn run(argv: &[String]) -> Result<u8> {
    if super::wants_help(argv) {
        println!("usage: casemate-img resize [-q] [-f FMT] [--shrink] FILENAME [+|-]SIZE");
        return Ok(0);
    }
    let a = args::parse(argv, &["-f"], &["-q", "--shrink"])?;
    let [file, size] = a.positional.as_slice() else {
        bail!("expected FILENAME [+|-]SIZE (see --help)");
    };
    let arg = parse_size_arg(size)?;
    let opts = OpenOptions {
        format: format_arg(a.opt("-f"))?,
        no_backing: true,
        ..OpenOptions::default()
    };
    let img =
        open_image(Path::new(file), &opts).with_context(|| format!("could not open '{file}'"))?;
    let cur = img.virtual_size();
    let new = match arg {
        SizeArg::Absolute(n) => n,
        SizeArg::Grow(d) => cur.checked_add(d).context("new image size is too large")?,
        SizeArg::Shrink(d) => match cur.checked_sub(d) {
            Some(n) if n > 0 => n,
            _ => bail!("New image size must be positive"),
        },
    };
    if new == 0 {
        bail!("New image size must be positive");
    }
    if new < cur && !a.flag("--shrink") {
        bail!("Use the --shrink option to perform a shrink operation.");
    }
    img.resize(new)
        .with_context(|| format!("could not resize '{file}'"))?;
    img.flush()?;
    if !a.flag("-q") {
        println!("Image resized.");
    }
    Ok(0)
}
