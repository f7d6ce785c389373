//! Boot and exit-path benchmarks, Casemate and QEMU 7.2 side by side in one
//! run (criterion groups with one function per VMM):
//! - `first_serial_byte`: process start to the probe's first COM1 byte;
//! - `power_off`: process start to the VMM's exit after the probe powers off;
//! - `pio_exit` / `mmio_exit`: one port-I/O or MMIO exit round trip, as the
//!   probe measures it from inside the guest (time per iteration = per exit).
//!
//! - `tiny_first_byte` / `tiny_exit`: the same for a 40-byte PVH guest
//!   (benches/tiny/tiny.S: one byte to COM1, then isa-debug-exit and the
//!   ACPI sleep register), so the VMM's own start and end are what is
//!   measured, not the probe's work.
//!
//! QEMU runs `-M microvm` (its fastest machine) with isa-debug-exit; it is
//! skipped with a printed reason when not installed. Needs /dev/kvm.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use casemate_tests::{bin, have, qemu_microvm_probe, Report, Scratch};
use criterion::{criterion_group, criterion_main, Criterion};

fn casemate_cmd(append: &str) -> Command {
    let mut c = Command::new(bin("casemate"));
    c.args(["-m", "128M", "-append", append]);
    c
}

/// Spawn, time the first stdout byte and the exit; returns both and the output.
fn timed(mut c: Command) -> (Duration, Duration, String) {
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let t0 = Instant::now();
    let mut child = c.spawn().expect("spawn VMM");
    let mut out = child.stdout.take().expect("piped stdout");
    let mut first = [0u8; 1];
    out.read_exact(&mut first).expect("VMM printed nothing");
    let t_first = t0.elapsed();
    let mut rest = String::new();
    out.read_to_string(&mut rest).expect("read console");
    child.wait().expect("wait VMM");
    let t_exit = t0.elapsed();
    (t_first, t_exit, format!("{}{rest}", first[0] as char))
}

/// A VMM under test: its row name and how to start it with a command line.
type Vmm = (&'static str, Box<dyn Fn(&str) -> Command>);

fn vmms(s: &Scratch) -> Vec<Vmm> {
    let mut v: Vec<Vmm> = vec![("casemate", Box::new(|a: &str| casemate_cmd(a)))];
    if have("qemu-system-x86_64") {
        let probe = s.probe();
        v.push((
            "qemu-microvm",
            Box::new(move |a: &str| qemu_microvm_probe(&probe, "1", a)),
        ));
    } else {
        println!("SKIP qemu rows: qemu-system-x86_64 is not installed");
    }
    v
}

fn boot(c: &mut Criterion) {
    let s = Scratch::new("bench-boot");
    let vmms = vmms(&s);
    for (group, pick) in [("first_serial_byte", 0usize), ("power_off", 1)] {
        let mut g = c.benchmark_group(group);
        g.sample_size(20).measurement_time(Duration::from_secs(5));
        for (name, cmd) in &vmms {
            g.bench_function(*name, |b| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| {
                            let (f, e, _) = timed(cmd("probe=hello"));
                            [f, e][pick]
                        })
                        .sum()
                })
            });
        }
        g.finish();
    }
}

/// Assemble benches/tiny into `dir` with binutils; None (and a line) when
/// that is not possible here.
fn tiny_guest(s: &Scratch) -> Option<String> {
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/tiny");
    let obj = s.path("tiny.o");
    let elf = s.path("tiny.elf");
    let ok = Command::new("as")
        .args(["--32", "-o"])
        .arg(&obj)
        .arg(format!("{src}/tiny.S"))
        .status()
        .is_ok_and(|s| s.success())
        && Command::new("ld")
            .args(["-m", "elf_i386", "-T", &format!("{src}/link.ld"), "-o"])
            .arg(&elf)
            .arg(&obj)
            .status()
            .is_ok_and(|s| s.success());
    if !ok {
        println!("SKIP tiny guest benches: binutils (as, ld) could not build benches/tiny");
        return None;
    }
    Some(elf.to_string_lossy().into_owned())
}

fn tiny(c: &mut Criterion) {
    let s = Scratch::new("bench-tiny");
    let Some(elf) = tiny_guest(&s) else {
        return;
    };
    let mut vmms: Vec<(&str, Command)> = Vec::new();
    let mut cm = Command::new(bin("casemate"));
    cm.args(["-m", "128M", "-kernel", &elf]);
    vmms.push(("casemate", cm));
    let mut off = Command::new(bin("casemate"));
    off.args(["-m", "128M", "-kernel", &elf, "-sandbox", "off"]);
    vmms.push(("casemate-sandbox-off", off));
    if have("qemu-system-x86_64") {
        let mut q = Command::new("qemu-system-x86_64");
        q.args(["-enable-kvm", "-M", "microvm", "-m", "128M", "-nodefaults"])
            .args(["-nographic", "-serial", "stdio", "-kernel", &elf])
            .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=4"]);
        vmms.push(("qemu-microvm", q));
    }
    let copy = |c: &Command| {
        let mut n = Command::new(c.get_program());
        n.args(c.get_args());
        n
    };
    for (group, pick) in [("tiny_first_byte", 0usize), ("tiny_exit", 1)] {
        let mut g = c.benchmark_group(group);
        g.sample_size(30).measurement_time(Duration::from_secs(5));
        for (name, cmd) in &vmms {
            g.bench_function(*name, |b| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| {
                            let (f, e, out) = timed(copy(cmd));
                            assert!(out.starts_with('x'), "{name}: {out:?}");
                            [f, e][pick]
                        })
                        .sum()
                })
            });
        }
        g.finish();
    }
}

fn exits(c: &mut Criterion) {
    let s = Scratch::new("bench-exits");
    let vmms = vmms(&s);
    for (group, key) in [("pio_exit", "pio_ns"), ("mmio_exit", "mmio_ns")] {
        let mut g = c.benchmark_group(group);
        g.sample_size(10).measurement_time(Duration::from_secs(5));
        for (name, cmd) in &vmms {
            g.bench_function(*name, |b| {
                b.iter_custom(|iters| {
                    let n = iters.clamp(100, 20_000);
                    let (_, _, console) = timed(cmd(&format!("probe=exits n={n}")));
                    let r = Report::parse(&console);
                    let ns: f64 = r.want(key).parse().expect("numeric exit time");
                    Duration::from_nanos((ns * iters as f64) as u64)
                })
            });
        }
        g.finish();
    }
}

criterion_group!(benches, boot, tiny, exits);
criterion_main!(benches);
