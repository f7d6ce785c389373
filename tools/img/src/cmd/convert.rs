//! `convert`: copies one or more inputs (concatenated) into a new raw or
//! qcow2 image, with qemu-img's `-S` (sparse size), `-c` (compressed qcow2)
//! and `-p`. Refuses to write over an input or any file in an input's
//! backing chain (same device and inode, whatever the names). The copy loop
//! is in `copy.rs`.

use std::path::Path;

use anyhow::{bail, Context, Result};
use casemate_disk::{open_image, qcow2, FileId, Format, OpenOptions, RawImage};

use super::copy::{copy, CopyOptions, Sources};
use super::format_arg;
use crate::{args, progress::Progress, size};

/// qemu-img's limit on `-S` (`MAX_BUF_SECTORS` sectors).
const MAX_SPARSE: u64 = 32768 * 512;

pub fn run(argv: &[String]) -> Result<u8> {
    if super::wants_help(argv) {
        println!(
            "usage: casemate-img convert [-q] [-p] [-c] [-U] [-S SIZE] [-f FMT] [-O FMT] [-o OPTIONS] INPUT... OUTPUT"
        );
        return Ok(0);
    }
    let a = args::parse(
        argv,
        &["-f", "-O", "-o", "-S"],
        &["-q", "-p", "-c", "-U", "--force-share"],
    )?;
    if a.positional.len() < 2 {
        bail!("expected INPUT... OUTPUT (see --help)");
    }
    let (inputs, out) = a.positional.split_at(a.positional.len() - 1);
    let out = &out[0];
    let in_fmt = format_arg(a.opt("-f"))?;
    let out_fmt = format_arg(a.opt("-O"))?.unwrap_or(Format::Raw);
    let sparse = sparse_arg(a.opt("-S"))?;
    if a.flag("-c") && out_fmt != Format::Qcow2 {
        bail!("Compression not supported for this file format");
    }
    let mut srcs = Vec::new();
    for i in inputs {
        let o = OpenOptions {
            format: in_fmt,
            read_only: true,
            force_share: a.flag("-U") || a.flag("--force-share"),
            ..OpenOptions::default()
        };
        let img = open_image(Path::new(i), &o).with_context(|| format!("could not open '{i}'"))?;
        srcs.push((img, i.clone()));
    }
    let src = Sources::new(srcs);
    let out_path = Path::new(out);
    refuse_overwriting_an_input(&src, out)?;
    // qemu sees raw files in whole sectors (a partial last one padded
    // with zeros) and qcow2 sizes rounded down to them: round up, as
    // qemu-img convert does, so no input byte is lost to qemu.
    let total = src.total().next_multiple_of(512);
    let mut backing = false;
    match out_fmt {
        Format::Raw => RawImage::create(out_path, total),
        Format::Qcow2 => {
            let mut o = qcow2::CreateOptions {
                size: total,
                ..qcow2::CreateOptions::default()
            };
            for list in a.all("-o") {
                super::create::apply_options(&mut o, list)?;
            }
            backing = o.backing_file.is_some();
            qcow2::create(out_path, &o)
        }
    }
    .with_context(|| format!("could not create '{out}'"))?;
    let dst = open_image(
        out_path,
        &OpenOptions {
            format: Some(out_fmt),
            ..OpenOptions::default()
        },
    )
    .with_context(|| format!("could not open '{out}'"))?;
    let opts = CopyOptions {
        sparse,
        compress_cluster: a.flag("-c").then(|| dst.info().cluster_size).flatten(),
        explicit_zeroes: backing,
    };
    let mut progress = Progress::new(a.flag("-p") && !a.flag("-q"), total);
    copy(&src, dst.as_ref(), &opts, &mut progress).context("error while converting")?;
    dst.flush()
        .with_context(|| format!("could not flush '{out}'"))?;
    progress.finish();
    Ok(0)
}

/// `-S SIZE`: a multiple of 512 up to qemu-img's maximum; 0 turns sparse
/// detection off. Default 4 KiB.
fn sparse_arg(v: Option<&str>) -> Result<u64> {
    let Some(v) = v else {
        return Ok(4096);
    };
    match size::parse_size(v) {
        Ok(n) if n % 512 == 0 && n <= MAX_SPARSE => Ok(n),
        _ => bail!(
            "Invalid buffer size for sparse output specified. Valid sizes are multiples of 512 up to {MAX_SPARSE}. Select 0 to disable sparse detection (fully allocates output)."
        ),
    }
}

/// Creating the output truncates it: it must not be an input or a file
/// any input reads through its backing chain.
fn refuse_overwriting_an_input(src: &Sources, out: &str) -> Result<()> {
    let Ok(out_id) = FileId::of_path(Path::new(out)) else {
        return Ok(()); // Does not exist yet.
    };
    for (img, name) in src.images() {
        let ids = img.file_ids();
        if ids.first() == Some(&out_id) {
            bail!("output '{out}' is the input image '{name}': refusing to overwrite it");
        }
        if ids.contains(&out_id) {
            bail!(
                "output '{out}' is in the backing chain of the input image '{name}': refusing to overwrite it"
            );
        }
    }
    Ok(())
}
