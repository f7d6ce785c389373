//! virtio-gpu 2D seen through VNC: the probe's `gpu` mode draws a known
//! pattern (tools/probe/src/probes/gpu.rs) and the tests' RFB client
//! captures exactly that pattern on microvm (virtio-mmio), pc and q35
//! (virtio-pci); `gpu-evil` gets every error it provokes, the memory cap
//! holds and the device draws afterwards; QEMU 7.2 shows the same screen
//! to the same client. One PNG per machine type is kept under
//! target/display-artefacts/ for a person to look at.

use std::process::Command;

use casemate_tests::rfb::free_display;
use casemate_tests::screen::{assert_same, capture, keep, pattern, spawn};
use casemate_tests::{bin, kvm_or_skip, qemu_or_skip, qemu_probe, Scratch};

fn casemate_gpu(machine: &str, device: &str, append: &str, n: u16) -> Command {
    let mut c = Command::new(bin("casemate"));
    c.args(["-M", machine, "-device", device])
        .args(["-vnc", &format!(":{n}"), "-append", append]);
    c
}

#[test]
fn the_pattern_drawn_through_virtio_gpu_is_captured_exactly() {
    if !kvm_or_skip("gpu capture") {
        return;
    }
    let want = pattern(256, 160);
    for (machine, device) in [
        ("microvm", "virtio-gpu-device"),
        ("pc", "virtio-gpu-pci"),
        ("q35", "virtio-gpu-pci"),
    ] {
        let n = free_display();
        let c = casemate_gpu(machine, device, "probe=gpu hold=60000", n);
        let (shot, lines, err, _) = capture(spawn(c), n, "probe: gpu-drawn", &want);
        let info = lines
            .iter()
            .find(|l| l.contains("xres="))
            .expect("display info line");
        assert!(
            info.contains("xres=1280 yres=800 enabled=1 edid_size=128 edid_header_ok=1"),
            "{info}"
        );
        assert_same(&shot, &want, machine);
        keep(&shot, &format!("gpu-{machine}.png"));
        assert!(!err.contains("SIGSYS") && !err.contains("refused"), "{err}");
    }
}

#[test]
fn gpu_evil_gets_its_errors_stays_capped_and_draws_after() {
    if !kvm_or_skip("gpu-evil") {
        return;
    }
    let want = pattern(256, 160);
    let n = free_display();
    let c = casemate_gpu(
        "q35",
        "virtio-gpu-pci,max_hostmem=32M",
        "probe=gpu-evil hold=60000",
        n,
    );
    let (shot, lines, err, hwm) = capture(spawn(c), n, "probe: gpu-drawn", &want);
    let sum = lines
        .iter()
        .find(|l| l.starts_with("probe: gpu-evil checks="))
        .unwrap_or_else(|| panic!("no summary: {lines:#?}"));
    // 28 refusals and successes in the table; 7 resources of 4 MiB fit
    // under 32 MiB with their bookkeeping, the 8th is refused.
    assert_eq!(sum.trim(), "probe: gpu-evil checks=28 capped_after=7");
    assert_same(&shot, &want, "after gpu-evil");
    // Guest RAM (128 MiB, mostly untouched) plus the 32 MiB cap plus the
    // VMM's own: far below what the refused resources would have taken.
    assert!(hwm < 160 * 1024, "VmHWM {hwm} KiB");
    // Guest errors are logged, but only a few times.
    assert!(
        err.lines().filter(|l| l.contains("refused")).count() <= 8,
        "{err}"
    );
}

#[test]
fn qemu_shows_the_same_screen() {
    if !kvm_or_skip("gpu qemu peer") || !qemu_or_skip("gpu qemu peer") {
        return;
    }
    let s = Scratch::new("gpu-qemu");
    let probe = s.probe();
    let want = pattern(256, 160);
    for (machine, device) in [("microvm", "virtio-gpu-device"), ("q35", "virtio-gpu-pci")] {
        let n = free_display();
        let ours = casemate_gpu(machine, device, "probe=gpu hold=60000", n);
        let (ours, ..) = capture(spawn(ours), n, "probe: gpu-drawn", &want);

        let n = free_display();
        let mut q = qemu_probe(machine, &probe, "1", "probe=gpu hold=60000");
        q.args(["-global", "virtio-mmio.force-legacy=false"]).args([
            "-device",
            device,
            "-vnc",
            &format!("127.0.0.1:{n}"),
        ]);
        let (theirs, ..) = capture(spawn(q), n, "probe: gpu-drawn", &want);
        keep(&theirs, &format!("gpu-{machine}-qemu.png"));
        assert_same(&theirs, &want, &format!("QEMU {machine}"));
        assert_eq!(ours, theirs, "{machine}");
    }
}

/// QMP's `screendump` writes the screen the guest drew as a PNG (with
/// `-sandbox off`), and a confined VMM refuses it with the reason instead
/// of dying on a syscall its monitor thread may not make.
#[test]
fn qmp_screendump_writes_the_guest_screen_as_png() {
    use casemate_tests::screen::{stop, wait_drawn};
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixStream;
    if !kvm_or_skip("qmp screendump") {
        return;
    }
    let want = pattern(256, 160);
    let s = Scratch::new("qmp-screendump");
    for confined in [false, true] {
        let sock = s
            .path(&format!("qmp-{confined}.sock"))
            .display()
            .to_string();
        let png = s
            .path(&format!("screen-{confined}.png"))
            .display()
            .to_string();
        let n = free_display();
        let mut c = casemate_gpu("microvm", "virtio-gpu-device", "probe=gpu hold=60000", n);
        c.args(["-qmp", &format!("unix:{sock},server=on,wait=off")]);
        if !confined {
            c.args(["-sandbox", "off"]);
        }
        let mut child = spawn(c);
        let dog = casemate_tests::Watchdog::arm(child.id(), std::time::Duration::from_secs(120));
        let (lines, _out) = wait_drawn(&mut child, "probe: gpu-drawn");
        let stream = UnixStream::connect(&sock).expect("QMP socket");
        let mut rd = BufReader::new(stream.try_clone().unwrap());
        let mut w = stream;
        let mut line = String::new();
        rd.read_line(&mut line).unwrap();
        assert!(line.contains("\"QMP\""), "{line}");
        let mut ask = |cmd: &str| -> String {
            writeln!(w, "{cmd}").unwrap();
            loop {
                let mut l = String::new();
                rd.read_line(&mut l).unwrap();
                assert!(!l.is_empty(), "QMP closed");
                if !l.contains("\"event\"") {
                    return l;
                }
            }
        };
        assert!(ask(r#"{"execute":"qmp_capabilities"}"#).contains("\"return\""));
        let reply = ask(&format!(
            r#"{{"execute":"screendump","arguments":{{"filename":"{png}","format":"png"}}}}"#
        ));
        assert!(!dog.disarm(), "ran too long: {lines:#?}");
        let err = stop(child);
        if confined {
            assert!(
                reply.contains("GenericError") && reply.contains("-sandbox off"),
                "{reply}"
            );
            assert!(!std::path::Path::new(&png).exists());
            assert!(!err.contains("SIGSYS"), "{err}");
            continue;
        }
        assert!(reply.contains("\"return\""), "{reply}\n{err}");
        let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).unwrap()));
        let mut r = dec.read_info().unwrap();
        let mut buf = vec![0; r.output_buffer_size().unwrap()];
        let info = r.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (256, 160));
        let step = info.color_type.samples();
        let got: Vec<u32> = buf[..info.buffer_size()]
            .chunks(step)
            .map(|p| u32::from(p[0]) << 16 | u32::from(p[1]) << 8 | u32::from(p[2]))
            .collect();
        assert!(got == want.pixels, "the PNG differs from the drawn pattern");
    }
}
