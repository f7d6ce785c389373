//! `check`: qcow2 consistency report with qemu-img's wording and exit codes
//! (0 clean, 1 check failed, 2 corruption, 3 leaks only, 63 unsupported).

use std::path::Path;

use anyhow::{bail, Context, Result};
use casemate_disk::{check::check_qcow2_with, probe_format, Format};
use serde_json::json;

use super::format_arg;
use crate::args;

pub fn run(argv: &[String]) -> Result<u8> {
    if super::wants_help(argv) {
        println!("usage: casemate-img check [-q] [-U] [-f FMT] [--output=human|json] FILENAME");
        return Ok(0);
    }
    let a = args::parse(argv, &["-f", "--output"], &["-q", "-U", "--force-share"])?;
    let [file] = a.positional.as_slice() else {
        bail!("expected one FILENAME (see --help)");
    };
    let path = Path::new(file);
    let fmt = match format_arg(a.opt("-f"))? {
        Some(f) => f,
        None => probe_format(path).with_context(|| format!("could not open '{file}'"))?,
    };
    if fmt != Format::Qcow2 {
        eprintln!("casemate-img: This image format does not support checks");
        return Ok(63);
    }
    // -U: check next to a writer (no lock; the result may be inconsistent).
    let locking = !(a.flag("-U") || a.flag("--force-share"));
    let rep = match check_qcow2_with(path, locking) {
        Ok(r) => r,
        Err(e) => {
            eprintln!(
                "casemate-img: {:#}",
                anyhow::Error::new(e).context(format!("could not check '{file}'"))
            );
            eprintln!("Check failed: the image is damaged beyond what check can read");
            return Ok(1);
        }
    };
    let code = if !rep.errors.is_empty() {
        2
    } else if !rep.leaks.is_empty() {
        3
    } else {
        0
    };
    if a.opt("--output") == Some("json") {
        let v = json!({
            "filename": file, "format": "qcow2",
            "check-errors": 0, "corruptions": rep.errors.len(), "leaks": rep.leaks.len(),
            "image-end-offset": rep.image_end_offset,
            "total-clusters": rep.total_clusters, "allocated-clusters": rep.allocated_clusters,
            "fragmented-clusters": rep.fragmented_clusters, "compressed-clusters": rep.compressed_clusters,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(code);
    }
    if a.flag("-q") {
        return Ok(code);
    }
    for l in rep.errors.iter().chain(rep.leaks.iter()) {
        eprintln!("{l}");
    }
    if !rep.errors.is_empty() {
        println!("\n{} errors were found on the image.", rep.errors.len());
        println!("Data may be corrupted, or further writes to the image may corrupt it.");
    }
    if !rep.leaks.is_empty() {
        println!(
            "\n{} leaked clusters were found on the image.",
            rep.leaks.len()
        );
        println!("This means waste of disk space, but no harm to data.");
    }
    if rep.is_clean() {
        println!("No errors were found on the image.");
    }
    if rep.total_clusters > 0 && rep.allocated_clusters > 0 {
        let pct = |n: u64| n as f64 * 100.0 / rep.total_clusters.max(1) as f64;
        let alloc = rep.allocated_clusters.max(1) as f64;
        println!(
            "{}/{} = {:.2}% allocated, {:.2}% fragmented, {:.2}% compressed clusters",
            rep.allocated_clusters,
            rep.total_clusters,
            pct(rep.allocated_clusters),
            rep.fragmented_clusters as f64 * 100.0 / alloc,
            rep.compressed_clusters as f64 * 100.0 / alloc
        );
    }
    println!("Image end offset: {}", rep.image_end_offset);
    Ok(code)
}
