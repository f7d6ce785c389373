//! `create`: a new raw or qcow2 image, optionally over a backing file (whose
//! size is used when SIZE is omitted). An existing file is replaced only when
//! nobody holds it (image locks) and it is not in the new image's backing chain.

use std::path::Path;

use anyhow::{bail, Context, Result};
use casemate_disk::{open_image, qcow2, FileId, Format, OpenOptions, RawImage};

use super::format_arg;
use crate::{args, size};

pub fn run(argv: &[String]) -> Result<u8> {
    if super::wants_help(argv) {
        println!("usage: casemate-img create [-q] [-f FMT] [-b BACKING [-F FMT]] [-o OPTIONS] FILENAME [SIZE]");
        return Ok(0);
    }
    let a = args::parse(argv, &["-f", "-o", "-b", "-F"], &["-q"])?;
    let fmt = format_arg(a.opt("-f"))?.unwrap_or(Format::Raw);
    let mut opts = qcow2::CreateOptions {
        backing_file: a.opt("-b").map(str::to_string),
        backing_format: format_arg(a.opt("-F"))?,
        ..qcow2::CreateOptions::default()
    };
    for o in a.all("-o") {
        apply_options(&mut opts, o)?;
    }
    let (file, size_arg) = match a.positional.as_slice() {
        [f] => (f, None),
        [f, s] => (f, Some(s)),
        _ => bail!("expected FILENAME [SIZE] (see --help)"),
    };
    let path = Path::new(file);
    if fmt == Format::Raw && opts.backing_file.is_some() {
        bail!("'raw' does not support backing files");
    }
    let mut size = size_arg.map(|s| size::parse_size(s)).transpose()?;
    if let Some(b) = &opts.backing_file {
        // Open the backing file as the new image will: relative to its folder.
        let bpath = qcow2::resolve_backing(path, b);
        let img = open_image(
            &bpath,
            &OpenOptions {
                format: opts.backing_format,
                read_only: true,
                ..OpenOptions::default()
            },
        )
        .with_context(|| format!("could not open backing file '{b}'"))?;
        opts.backing_format = Some(img.format());
        size.get_or_insert(img.virtual_size());
        // Creating truncates the file: it must not be the backing file or
        // one it reads through (compared by device and inode, so a symlink
        // or another name for it is caught too).
        if let Ok(id) = FileId::of_path(path) {
            if img.file_ids().contains(&id) {
                bail!("{file}: Error: Trying to create an image with the same filename as the backing file");
            }
        }
    }
    let Some(size) = size else {
        bail!("image creation needs a size parameter");
    };
    opts.size = size;
    if !a.flag("-q") {
        let mut line = format!("Formatting '{file}', fmt={}", fmt.name());
        if fmt == Format::Qcow2 {
            line += &format!(" cluster_size={}", opts.cluster_size);
            if let Some(b) = &opts.backing_file {
                line += &format!(" backing_file={b}");
            }
            if let Some(f) = opts.backing_format {
                line += &format!(" backing_fmt={}", f.name());
            }
        }
        println!("{line} size={size}");
    }
    match fmt {
        Format::Raw => RawImage::create(path, size),
        Format::Qcow2 => qcow2::create(path, &opts),
    }
    .with_context(|| format!("{file}: could not create image"))?;
    Ok(0)
}

/// Applies a `-o key=value,...` list.
pub fn apply_options(opts: &mut qcow2::CreateOptions, list: &str) -> Result<()> {
    for kv in list.split(',').filter(|s| !s.is_empty()) {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("invalid option '{kv}' (expected key=value)"))?;
        match k {
            "backing_file" => opts.backing_file = Some(v.to_string()),
            "backing_fmt" => opts.backing_format = format_arg(Some(v))?,
            "cluster_size" => opts.cluster_size = size::parse_size(v)?,
            "compat" if v == "1.1" || v == "v3" => {}
            "refcount_bits" if v == "16" => {}
            "lazy_refcounts" | "preallocation" | "extended_l2" if v == "off" => {}
            "compression_type" if v == "zlib" => {}
            _ => bail!("unsupported option '{kv}'"),
        }
    }
    Ok(())
}
