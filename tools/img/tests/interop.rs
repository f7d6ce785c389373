//! Interop with Debian's qemu-utils (`qemu-img`, `qemu-io`): images made by
//! one tool must be read, checked and compared equal by the other. Without
//! qemu-img these tests print a skip line, except with CI=true where they fail.
//! Every external command runs under `timeout` (qemu-img check can hang).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_casemate-img");

fn have_qemu(test: &str) -> bool {
    let ok = Command::new("qemu-img")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{test}: qemu-img is missing and CI=true (install qemu-utils)"
        );
        println!("SKIP {test}: qemu-img not installed (apt install qemu-utils)");
    }
    ok
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("casemate-img-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self, f: &str) -> String {
        self.0.join(f).to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(prog: &str, args: &[&str]) -> Output {
    let out = Command::new("timeout")
        .arg("60")
        .arg(prog)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {prog}: {e}"));
    assert_ne!(out.status.code(), Some(124), "{prog} {args:?} timed out");
    out
}

fn ok(prog: &str, args: &[&str]) -> String {
    let out = run(prog, args);
    assert!(
        out.status.success(),
        "{prog} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn img(args: &[&str]) -> String {
    ok(BIN, args)
}

fn json(prog: &str, file: &str) -> serde_json::Value {
    serde_json::from_str(&ok(prog, &["info", "--output=json", file])).unwrap()
}

fn virtual_size(prog: &str, file: &str) -> u64 {
    json(prog, file)["virtual-size"].as_u64().unwrap()
}

#[test]
fn created_qcow2_passes_qemu_check() {
    if !have_qemu("created_qcow2_passes_qemu_check") {
        return;
    }
    let d = TempDir::new("create");
    for (name, opts) in [
        ("a.qcow2", "cluster_size=65536"),
        ("b.qcow2", "cluster_size=512"),
        ("c.qcow2", "cluster_size=2M"),
    ] {
        let f = d.path(name);
        img(&["create", "-q", "-f", "qcow2", "-o", opts, &f, "3G"]);
        ok("qemu-img", &["check", &f]);
        // Written by qemu, still consistent for both checkers.
        ok("qemu-io", &["-c", "write -P 0x5a 1M 200k", &f]);
        ok("qemu-img", &["check", &f]);
        img(&["check", &f]);
    }
}

#[test]
fn qemu_io_data_over_backing_reads_back_after_convert() {
    if !have_qemu("qemu_io_data_over_backing_reads_back_after_convert") {
        return;
    }
    let d = TempDir::new("backing");
    let (base, top) = (d.path("base.qcow2"), d.path("top.qcow2"));
    ok("qemu-img", &["create", "-q", "-f", "qcow2", &base, "64M"]);
    ok("qemu-io", &["-c", "write -P 0x11 0 8M", &base]);
    ok(
        "qemu-img",
        &[
            "create", "-q", "-f", "qcow2", "-b", &base, "-F", "qcow2", &top,
        ],
    );
    ok("qemu-io", &["-c", "write -P 0xab 1M 64k", &top]);
    ok("qemu-io", &["-c", "write -P 0xab 4100k 12k", &top]);
    let raw = d.path("out.raw");
    img(&["convert", "-O", "raw", &top, &raw]);
    let bytes = std::fs::read(&raw).unwrap();
    assert_eq!(bytes.len(), 64 << 20);
    let expect = |i: usize| -> u8 {
        if (1 << 20..(1 << 20) + (64 << 10)).contains(&i) || (4100 << 10..4112 << 10).contains(&i) {
            0xab
        } else if i < 8 << 20 {
            0x11
        } else {
            0
        }
    };
    for (i, &b) in bytes.iter().enumerate() {
        assert_eq!(b, expect(i), "byte {i}");
    }
    // And qemu agrees that the raw output is the same disk.
    ok("qemu-img", &["compare", &top, &raw]);
    // Sparse input stays sparse: 56 MiB of zeros are holes.
    let used = std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(&raw).unwrap()) * 512;
    assert!(used <= 9 << 20, "raw output uses {used} bytes");
}

#[test]
fn convert_to_qcow2_compares_equal() {
    if !have_qemu("convert_to_qcow2_compares_equal") {
        return;
    }
    let d = TempDir::new("convert");
    let (src, out, z) = (d.path("src.qcow2"), d.path("out.qcow2"), d.path("z.qcow2"));
    ok("qemu-img", &["create", "-q", "-f", "qcow2", &src, "100M"]);
    ok(
        "qemu-io",
        &[
            "-c",
            "write -P 0xcd 0 3M",
            "-c",
            "write -P 0x01 50M 100k",
            "-c",
            "write -z 60M 2M",
            &src,
        ],
    );
    // A compressed copy exercises zlib clusters on read.
    ok("qemu-img", &["convert", "-c", "-O", "qcow2", &src, &z]);
    for input in [&src, &z] {
        img(&["convert", "-O", "qcow2", input, &out]);
        ok("qemu-img", &["compare", &src, &out]);
        ok("qemu-img", &["check", &out]);
    }
    // Two inputs concatenate.
    let cat = d.path("cat.raw");
    img(&["convert", "-q", "-O", "raw", &src, &z, &cat]);
    assert_eq!(std::fs::metadata(&cat).unwrap().len(), 200 << 20);
}

#[test]
fn info_json_agrees_with_qemu() {
    if !have_qemu("info_json_agrees_with_qemu") {
        return;
    }
    let d = TempDir::new("info");
    let (base, top, raw) = (d.path("base.raw"), d.path("top.qcow2"), d.path("r.raw"));
    ok("qemu-img", &["create", "-q", "-f", "raw", &base, "10M"]);
    img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "backing_file=base.raw,cluster_size=4096",
        &top,
    ]);
    ok("qemu-img", &["create", "-q", "-f", "raw", &raw, "1G"]);
    let other = d.path("q.qcow2");
    ok(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "cluster_size=128k",
            &other,
            "5G",
        ],
    );
    for f in [&top, &raw, &other] {
        let (ours, theirs) = (json(BIN, f), json("qemu-img", f));
        for key in [
            "virtual-size",
            "format",
            "cluster-size",
            "backing-filename",
            "backing-filename-format",
        ] {
            assert_eq!(ours[key], theirs[key], "{f}: {key}");
        }
    }
    assert_eq!(json(BIN, &top)["backing-filename"], "base.raw");
}

#[test]
fn resize_sequence_matches_qemu() {
    if !have_qemu("resize_sequence_matches_qemu") {
        return;
    }
    let d = TempDir::new("resize");
    for fmt in ["raw", "qcow2"] {
        let (ours, theirs) = (
            d.path(&format!("ours.{fmt}")),
            d.path(&format!("theirs.{fmt}")),
        );
        img(&["create", "-q", "-f", fmt, &ours, "300M"]);
        ok("qemu-img", &["create", "-q", "-f", fmt, &theirs, "300M"]);
        if fmt == "qcow2" {
            // Data past the shrink point must not come back after growing.
            ok("qemu-io", &["-c", "write -P 0x77 250M 1M", &ours]);
        }
        let steps: [&[&str]; 4] = [&["--shrink"], &[], &[], &["--shrink"]];
        let sizes = ["200M", "+200M", "-200M", "-200M"];
        for (flags, size) in steps.iter().zip(sizes) {
            let mut a = vec!["resize", "-f", fmt];
            a.extend_from_slice(flags);
            let (o, t) = (&ours, &theirs);
            let mut ao = a.clone();
            ao.extend([o.as_str(), "--", size]);
            let mut at = a.clone();
            at.extend([t.as_str(), "--", size]);
            let (ro, rt) = (run(BIN, &ao), run("qemu-img", &at));
            assert_eq!(
                ro.status.success(),
                rt.status.success(),
                "{fmt} resize {flags:?} {size}"
            );
            if !rt.status.success() {
                let (eo, et) = (
                    String::from_utf8_lossy(&ro.stderr),
                    String::from_utf8_lossy(&rt.stderr),
                );
                assert!(
                    et.contains("--shrink") && eo.contains("Use the --shrink option"),
                    "{eo} / {et}"
                );
            }
            assert_eq!(
                virtual_size(BIN, o),
                virtual_size("qemu-img", t),
                "{fmt} after {size}"
            );
        }
        assert_eq!(virtual_size(BIN, &ours), 200 << 20);
        if fmt == "qcow2" {
            ok("qemu-img", &["check", &ours]);
            img(&["resize", "-q", &ours, "300M"]);
            ok("qemu-io", &["-c", "read -P 0 200M 100M", &ours]);
        }
    }
}

#[test]
fn check_reports_corruption_and_leaks() {
    if !have_qemu("check_reports_corruption_and_leaks") {
        return;
    }
    let d = TempDir::new("check");
    let f = d.path("c.qcow2");
    ok("qemu-img", &["create", "-q", "-f", "qcow2", &f, "16M"]);
    ok("qemu-io", &["-c", "write -P 1 0 64k", &f]);
    // Zero the refcount of the data cluster (cluster 5 after header,
    // reftable, refblock, L1, L2): qemu-img and casemate-img both call it an error.
    let mut bytes = std::fs::read(&f).unwrap();
    let refblock = u64::from_be_bytes(bytes[65536..65544].try_into().unwrap()) as usize;
    let data_cluster = (bytes.len() / 65536) - 1;
    bytes[refblock + data_cluster * 2 + 1] = 0;
    std::fs::write(&f, &bytes).unwrap();
    let ours = run(BIN, &["check", &f]);
    assert_eq!(
        ours.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&ours.stdout)
    );
    assert_eq!(run("qemu-img", &["check", &f]).status.code(), Some(2));
    // A leak: an extra cluster at the end, counted but referenced by nothing.
    bytes[refblock + data_cluster * 2 + 1] = 1;
    bytes[refblock + (data_cluster + 1) * 2 + 1] = 1;
    bytes.resize(bytes.len() + 65536, 0);
    std::fs::write(&f, &bytes).unwrap();
    assert_eq!(run(BIN, &["check", &f]).status.code(), Some(3));
    assert_eq!(run("qemu-img", &["check", &f]).status.code(), Some(3));
    let raw = d.path("r.raw");
    img(&["create", "-q", &raw, "1M"]);
    assert_eq!(run(BIN, &["check", &raw]).status.code(), Some(63));
}

#[test]
fn backing_loop_is_an_error() {
    let d = TempDir::new("loop");
    let (a, b) = (d.path("a.qcow2"), d.path("b.qcow2"));
    img(&["create", "-q", "-f", "qcow2", &a, "1M"]);
    img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "backing_file=a.qcow2,backing_fmt=qcow2",
        &b,
    ]);
    // Rewrite a's header to point back at b. (Never run qemu-img check on this.)
    let mut h = std::fs::read(&a).unwrap();
    let bh = std::fs::read(&b).unwrap();
    h[..65536].copy_from_slice(&bh[..65536]);
    let name_off = u64::from_be_bytes(h[8..16].try_into().unwrap()) as usize;
    h[name_off..name_off + 8].copy_from_slice(b"b.qcow2\0");
    h[16..20].copy_from_slice(&7u32.to_be_bytes());
    std::fs::write(&a, &h).unwrap();
    let out = run(BIN, &["info", &b]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("loops"), "{err}");
    let _ = Path::new(&a);
}

#[test]
fn cli_help_version_and_errors() {
    assert!(img(&["--help"]).contains("convert"));
    assert!(img(&["-V"]).starts_with("casemate-img version"));
    let d = TempDir::new("cli");
    let f = d.path("x.raw");
    let out = run(BIN, &["create", "-f", "vmdk", &f, "1M"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown file format"));
    assert!(!run(BIN, &["create", &f]).status.success());
    img(&["create", "-q", &f, "1.5M"]);
    assert_eq!(std::fs::metadata(&f).unwrap().len(), 1536 << 10);
}

/// `info --backing-chain` lists every image of the chain, as qemu-img.
#[test]
fn info_backing_chain_lists_every_image_as_qemu() {
    if !have_qemu("info_backing_chain_lists_every_image_as_qemu") {
        return;
    }
    let d = TempDir::new("chain");
    let (base, mid, top) = (d.path("base.raw"), d.path("mid.qcow2"), d.path("top.qcow2"));
    ok("qemu-img", &["create", "-q", "-f", "raw", &base, "4M"]);
    let back = |b: &str, f: &str, p: &str| {
        ok(
            "qemu-img",
            &["create", "-q", "-f", "qcow2", "-b", b, "-F", f, p],
        );
    };
    back(&base, "raw", &mid);
    back(&mid, "qcow2", &top);
    let ours = img(&["info", "--backing-chain", &top]);
    let theirs = ok("qemu-img", &["info", "--backing-chain", &top]);
    let images = |t: &str| -> Vec<String> {
        t.lines()
            .filter_map(|l| l.strip_prefix("image: "))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        images(&ours),
        vec![top.clone(), mid.clone(), base.clone()],
        "{ours}"
    );
    assert_eq!(images(&ours), images(&theirs));
    let j: serde_json::Value =
        serde_json::from_str(&img(&["info", "--backing-chain", "--output=json", &top])).unwrap();
    let names: Vec<&str> = j
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["filename"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec![top.as_str(), mid.as_str(), base.as_str()]);
}
