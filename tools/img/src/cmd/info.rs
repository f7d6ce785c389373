//! `info`: an image's format, sizes, cluster size and backing file, as
//! qemu-img prints them (human) or with qemu-img's JSON keys.

use std::path::Path;

use anyhow::{bail, Context, Result};
use casemate_disk::{open_image, probe_format, DiskImage, Format, OpenOptions};
use serde_json::{json, Map, Value};

use super::format_arg;
use crate::{args, size};

pub fn run(argv: &[String]) -> Result<u8> {
    if super::wants_help(argv) {
        println!("usage: casemate-img info [-U] [-f FMT] [--output=human|json] [--backing-chain] FILENAME");
        return Ok(0);
    }
    let a = args::parse(
        argv,
        &["-f", "--output"],
        &["--backing-chain", "-U", "--force-share"],
    )?;
    let [file] = a.positional.as_slice() else {
        bail!("expected one FILENAME (see --help)");
    };
    let path = Path::new(file);
    let format = format_arg(a.opt("-f"))?;
    // qemu-img info takes no lock on a raw image (there is no metadata a
    // writer could change under it), but refuses a qcow2 one being written.
    let raw = match format {
        Some(f) => f == Format::Raw,
        None => probe_format(path).is_ok_and(|f| f == Format::Raw),
    };
    let opts = OpenOptions {
        format,
        read_only: true,
        force_share: raw || a.flag("-U") || a.flag("--force-share"),
        ..OpenOptions::default()
    };
    let output = a.opt("--output").unwrap_or("human");
    if !matches!(output, "human" | "json") {
        bail!("--output must be human or json, not '{output}'");
    }
    // With --backing-chain, as qemu-img: every image from the top down,
    // human blocks separated by a blank line, JSON as an array.
    let mut chain = vec![(file.to_string(), opts)];
    let mut humans = Vec::new();
    let mut jsons = Vec::new();
    while let Some((name, opts)) = chain.pop() {
        let img = open_image(Path::new(&name), &opts)
            .with_context(|| format!("could not open '{name}'"))?;
        let actual = std::fs::metadata(&name)
            .map(|m| std::os::unix::fs::MetadataExt::blocks(&m) * 512)
            .with_context(|| format!("could not stat '{name}'"))?;
        humans.push(human(&name, img.as_ref(), actual));
        jsons.push(to_json(&name, img.as_ref(), actual));
        let info = img.info();
        // Relative names resolve against the image's folder, as qemu does.
        let next = info.full_backing_file.clone().or_else(|| {
            let b = info.backing_file.as_deref()?;
            Some(casemate_disk::qcow2::resolve_backing(Path::new(&name), b))
        });
        if let (true, Some(next)) = (a.flag("--backing-chain"), next) {
            if jsons.len() > casemate_disk::MAX_BACKING_DEPTH {
                bail!(
                    "backing chain of '{file}' is deeper than {}",
                    casemate_disk::MAX_BACKING_DEPTH
                );
            }
            let next_opts = OpenOptions {
                format: info.backing_format,
                no_backing: true,
                ..opts.clone()
            };
            chain.push((next.to_string_lossy().into_owned(), next_opts));
        }
    }
    if output == "human" {
        print!("{}", humans.join("\n"));
    } else if a.flag("--backing-chain") {
        println!("{}", serde_json::to_string_pretty(&Value::Array(jsons))?);
    } else {
        println!("{}", serde_json::to_string_pretty(&jsons[0])?);
    }
    Ok(0)
}

fn human(file: &str, img: &dyn DiskImage, actual: u64) -> String {
    let i = img.info();
    let mut s = format!(
        "image: {file}\nfile format: {}\nvirtual size: {} ({} bytes)\ndisk size: {}\n",
        i.format.name(),
        size::human(i.virtual_size),
        i.virtual_size,
        size::human(actual)
    );
    if let Some(cs) = i.cluster_size {
        s += &format!("cluster_size: {cs}\n");
    }
    if let Some(b) = &i.backing_file {
        s += &format!("backing file: {b}\n");
        if let Some(f) = i.backing_format {
            s += &format!("backing file format: {}\n", f.name());
        }
    }
    if let Some(q) = &i.qcow2 {
        s += "Format specific information:\n";
        s += &format!("    compat: {}\n", q.compat);
        if q.compat != "0.10" {
            s += "    compression type: zlib\n";
            s += &format!("    lazy refcounts: {}\n", q.lazy_refcounts);
        }
        s += &format!("    refcount bits: {}\n", q.refcount_bits);
        s += &format!("    corrupt: {}\n", q.corrupt);
        s += "    extended l2: false\n";
    }
    s
}

fn to_json(file: &str, img: &dyn DiskImage, actual: u64) -> Value {
    let i = img.info();
    let mut m = Map::new();
    m.insert("virtual-size".into(), json!(i.virtual_size));
    m.insert("filename".into(), json!(file));
    m.insert("format".into(), json!(i.format.name()));
    m.insert("actual-size".into(), json!(actual));
    m.insert(
        "dirty-flag".into(),
        json!(i.qcow2.as_ref().is_some_and(|q| q.dirty)),
    );
    if let Some(cs) = i.cluster_size {
        m.insert("cluster-size".into(), json!(cs));
    }
    if let Some(b) = &i.backing_file {
        m.insert("backing-filename".into(), json!(b));
        if let Some(full) = &i.full_backing_file {
            m.insert(
                "full-backing-filename".into(),
                json!(full.to_string_lossy()),
            );
        }
        if let Some(f) = i.backing_format {
            m.insert("backing-filename-format".into(), json!(f.name()));
        }
    }
    if let Some(q) = &i.qcow2 {
        let mut d = Map::new();
        d.insert("compat".into(), json!(q.compat));
        if q.compat != "0.10" {
            d.insert("compression-type".into(), json!("zlib"));
            d.insert("lazy-refcounts".into(), json!(q.lazy_refcounts));
        }
        d.insert("refcount-bits".into(), json!(q.refcount_bits));
        d.insert("corrupt".into(), json!(q.corrupt));
        d.insert("extended-l2".into(), json!(false));
        m.insert(
            "format-specific".into(),
            json!({"type": "qcow2", "data": d}),
        );
    }
    Value::Object(m)
}
