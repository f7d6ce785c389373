//! `convert`: copies one or more inputs (concatenated) into a new raw or
//! qcow2 image. All-zero blocks are skipped, so sparse input stays sparse in
//! raw output and unallocated in qcow2 output.

use std::path::Path;

use anyhow::{bail, Context, Result};
use casemate_disk::{open_image, qcow2, DiskImage, Format, OpenOptions, RawImage};

use super::format_arg;
use crate::{args, progress::Progress};

/// Copy buffer size.
const CHUNK: usize = 2 << 20;
/// Zero-detection granularity (a file system block).
const ZERO_GRAIN: usize = 4096;

pub fn run(argv: &[String]) -> Result<u8> {
    if super::wants_help(argv) {
        println!(
            "usage: casemate-img convert [-q] [-p] [-f FMT] [-O FMT] [-o OPTIONS] INPUT... OUTPUT"
        );
        return Ok(0);
    }
    let a = args::parse(argv, &["-f", "-O", "-o"], &["-q", "-p", "-U"])?;
    if a.positional.len() < 2 {
        bail!("expected INPUT... OUTPUT (see --help)");
    }
    let (inputs, out) = a.positional.split_at(a.positional.len() - 1);
    let out = &out[0];
    let in_fmt = format_arg(a.opt("-f"))?;
    let out_fmt = format_arg(a.opt("-O"))?.unwrap_or(Format::Raw);
    let mut srcs = Vec::new();
    for i in inputs {
        let o = OpenOptions {
            format: in_fmt,
            read_only: true,
            ..OpenOptions::default()
        };
        srcs.push(open_image(Path::new(i), &o).with_context(|| format!("could not open '{i}'"))?);
    }
    let total: u64 = srcs.iter().map(|s| s.virtual_size()).sum();
    let out_path = Path::new(out);
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
    let mut progress = Progress::new(a.flag("-p") && !a.flag("-q"), total);
    let mut base = 0;
    let mut buf = vec![0u8; CHUNK];
    for (src, name) in srcs.iter().zip(inputs) {
        copy(src.as_ref(), dst.as_ref(), base, &mut buf, &mut progress)
            .with_context(|| format!("error while converting '{name}'"))?;
        base += src.virtual_size();
    }
    dst.flush()
        .with_context(|| format!("could not flush '{out}'"))?;
    progress.finish();
    Ok(0)
}

fn copy(
    src: &dyn DiskImage,
    dst: &dyn DiskImage,
    base: u64,
    buf: &mut [u8],
    p: &mut Progress,
) -> Result<()> {
    let size = src.virtual_size();
    let mut off = 0;
    while off < size {
        let n = (size - off).min(buf.len() as u64) as usize;
        let chunk = &mut buf[..n];
        src.read_at(chunk, off)?;
        write_nonzero(dst, chunk, base + off)?;
        off += n as u64;
        p.update(base + off);
    }
    Ok(())
}

/// Writes the runs of `data` that are not all zeros.
fn write_nonzero(dst: &dyn DiskImage, data: &[u8], at: u64) -> Result<()> {
    let mut run_start: Option<usize> = None;
    let mut i = 0;
    while i < data.len() {
        let end = (i + ZERO_GRAIN).min(data.len());
        let zero = data[i..end].iter().all(|&b| b == 0);
        match (zero, run_start) {
            (false, None) => run_start = Some(i),
            (true, Some(s)) => {
                dst.write_at(&data[s..i], at + s as u64)?;
                run_start = None;
            }
            _ => {}
        }
        i = end;
    }
    if let Some(s) = run_start {
        dst.write_at(&data[s..], at + s as u64)?;
    }
    Ok(())
}
