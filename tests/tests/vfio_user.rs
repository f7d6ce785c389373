//! VFIO device assignment end to end over vfio-user: the probe guest's
//! virtio-pci driver drives a virtio-blk function that lives in another
//! process (`casemate-vfio-user-blk`), through the VMM's VFIO PCI model, on
//! q35 and pc; the data lands in the server's image. Also: the JSON
//! `-device` form, refusals (microvm, RAM that cannot be shared), and a
//! server killed mid-I/O (the VMM logs it, keeps running, powers off
//! cleanly on SIGTERM).

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use casemate_tests::blkcheck::check;
use casemate_tests::{bin, boot_probe, casemate, kvm_or_skip, Scratch, Watchdog};

const DISK: usize = 16 << 20;

/// The device process, killed and reaped on drop.
struct Server {
    child: Child,
    sock: PathBuf,
    log: Option<std::thread::JoinHandle<String>>,
}

impl Server {
    /// Its log, once it has ended (it does when the VMM disconnects).
    fn finish(mut self) -> String {
        let _ = self.child.wait();
        self.log
            .take()
            .map(|t| t.join().unwrap())
            .unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start the server on `image`; returns once it listens (it says so on
/// stderr at info level).
fn server(s: &Scratch, image: &str) -> Server {
    server_logging(s, image, "info")
}

fn server_logging(s: &Scratch, image: &str, level: &str) -> Server {
    let sock = s.path("vfu.sock");
    let mut child = Command::new(bin("casemate-vfio-user-blk"))
        .arg("--socket")
        .arg(&sock)
        .args(["--image", image, "--format", "raw"])
        .env("CASEMATE_LOG", level)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let dog = Watchdog::arm(child.id(), Duration::from_secs(30));
    let mut line = String::new();
    loop {
        line.clear();
        assert_ne!(err.read_line(&mut line).unwrap(), 0, "server ended early");
        if line.contains("listening on") {
            break;
        }
    }
    assert!(!dog.disarm(), "the server never listened");
    let log = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = err.read_to_string(&mut rest);
        rest
    });
    Server {
        child,
        sock,
        log: Some(log),
    }
}

/// Shared memfd RAM and the assigned device, key=value form.
fn vm_args(machine: &str, sock: &str) -> Vec<String> {
    [
        "-M",
        machine,
        "-m",
        "128M",
        "-object",
        "memory-backend-memfd,id=mem,size=128M",
        "-machine",
        "memory-backend=mem",
        "-device",
        &format!("vfio-user-pci,socket={sock}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn probe_blk_lands_in_the_servers_image(machine: &str) {
    if !kvm_or_skip(&format!("vfio-user blk on {machine}")) {
        return;
    }
    let s = Scratch::new(&format!("{machine}-vfu-blk"));
    let d = s.file("d.raw", &vec![0u8; DISK]);
    let srv = server(&s, &d);
    let mut args = vm_args(machine, &srv.sock.to_string_lossy());
    args.extend(["-append".into(), "probe=blk".into()]);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let (r, out) = boot_probe(&a);
    r.assert_ok();
    assert_eq!(r.want("transport"), "pci");
    let console = String::from_utf8_lossy(&out.stdout);
    assert!(
        console.contains("vendor=0x1af4 device=0x1042"),
        "the assigned function is a modern virtio-blk:\n{console}"
    );
    drop(srv);
    let image = std::fs::read(&d).unwrap();
    let n = check(&console, &image).unwrap_or_else(|e| panic!("{e}\n{console}"));
    assert!(n >= 19, "only {n} sectors checked");
}

#[test]
fn probe_blk_lands_in_the_servers_image_q35() {
    probe_blk_lands_in_the_servers_image("q35");
}

#[test]
fn probe_blk_lands_in_the_servers_image_pc() {
    probe_blk_lands_in_the_servers_image("pc");
}

#[test]
fn json_device_form_and_blk_bench() {
    if !kvm_or_skip("vfio-user JSON -device with blk-bench") {
        return;
    }
    let s = Scratch::new("vfu-json");
    let d = s.file("d.raw", &vec![0u8; DISK]);
    let srv = server(&s, &d);
    let json = format!(
        r#"{{"driver":"vfio-user-pci","socket":{{"path":"{}","type":"unix"}}}}"#,
        srv.sock.display()
    );
    let (r, out) = boot_probe(&[
        "-M",
        "q35",
        "-m",
        "128M",
        "-object",
        "memory-backend-memfd,id=mem,size=128M",
        "-machine",
        "memory-backend=mem",
        "-device",
        &json,
        "-append",
        "probe=blk-bench mode=randwrite bs=4096 qd=8 n=500",
    ]);
    r.assert_ok();
    let console = String::from_utf8_lossy(&out.stdout);
    let b = casemate_tests::Report::with_prefix(&console, "probe: blk-bench ");
    assert_eq!(b.want("ops"), "500", "{console}");
    assert_eq!(b.want("errors"), "0", "{console}");
}

#[test]
fn microvm_and_unshareable_ram_are_refused_with_reasons() {
    let out = casemate(&[
        "-M",
        "microvm",
        "-device",
        "vfio-user-pci,socket=/nonexistent.sock",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("microvm has none"), "{err}");
    let out = casemate(&[
        "-M",
        "q35",
        "-device",
        "vfio-user-pci,socket=/nonexistent.sock",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("memory-backend-ram without share=on cannot be shared"),
        "{err}"
    );
    let out = casemate(&["-M", "q35", "-device", "vfio-user-pci"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("socket=PATH is required"), "{err}");
    let out = casemate(&[
        "-M",
        "q35",
        "-device",
        r#"{"driver":"vfio-user-pci","socket":{"path":"/x","type":"inet"}}"#,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("only a \"unix\" socket"), "{err}");
    let mut args = vm_args("q35", "/nonexistent/vfu.sock");
    args.extend(["-append".into(), "probe=hello".into()]);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = casemate(&a);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("cannot connect to its server at /nonexistent/vfu.sock"),
        "{err}"
    );
}

#[test]
fn a_server_killed_mid_io_is_logged_and_the_vm_powers_off_cleanly() {
    if !kvm_or_skip("vfio-user server killed mid-I/O") {
        return;
    }
    let s = Scratch::new("vfu-kill");
    let d = s.file("d.raw", &vec![0u8; DISK]);
    let mut srv = server(&s, &d);
    let mut args = vm_args("q35", &srv.sock.to_string_lossy());
    args.extend([
        "-append".into(),
        "probe=blk-bench mode=randwrite bs=4096 qd=8 ms=60000".into(),
    ]);
    let mut vm = Command::new(bin("casemate"))
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let dog = Watchdog::arm(vm.id(), Duration::from_secs(90));
    // The guest is writing once the image has data.
    let mut out = BufReader::new(vm.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("probe: blk ") && !line.contains("probe: pci ") {
        line.clear();
        assert_ne!(out.read_line(&mut line).unwrap(), 0, "the VM ended early");
    }
    let stdout = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = out.read_to_string(&mut rest);
        rest
    });
    srv.child.kill().unwrap();
    srv.child.wait().unwrap();
    // The VMM notices on the next access and says so.
    let mut err = BufReader::new(vm.stderr.take().unwrap());
    let mut logged = String::new();
    loop {
        let mut l = String::new();
        assert_ne!(err.read_line(&mut l).unwrap(), 0, "VMM ended: {logged}");
        logged.push_str(&l);
        if l.contains("VFIO device vfio-user0") {
            break;
        }
    }
    assert!(vm.try_wait().unwrap().is_none(), "the VMM keeps running");
    // SAFETY: kill(2) on our own child, not reaped yet.
    assert_eq!(unsafe { libc::kill(vm.id() as i32, libc::SIGTERM) }, 0);
    let status = vm.wait().unwrap();
    let _ = stdout.join();
    assert!(!dog.disarm(), "the VMM did not end after SIGTERM");
    assert_eq!(status.code(), Some(0), "clean power-off: {logged}");
}

/// The host pattern the Linux init reads back before writing its own
/// (as tests/linux.rs lays it out).
const HOST_LBA: usize = 4096;
const HOST_PASS: usize = 100;

/// Linux's virtio_blk on a disk served by the device process: the init's
/// blk mode reads the host pattern and writes its own, which must land in
/// the server's image; `msi` says whether Linux programmed MSI-X routes
/// (the VMM's debug log) or stayed on INTx (`pci=nomsi`).
fn linux_virtio_blk_through_vfio_user(machine: &'static str, extra: Option<&str>, msi: bool) {
    use casemate_tests::blkcheck::check_lines;
    use casemate_tests::linux::{artifacts_or_skip, pci_machine, run, LinuxBoot};
    let test = format!("linux virtio_blk through vfio-user on {machine}");
    if !kvm_or_skip(&test) {
        return;
    }
    let Some(a) = artifacts_or_skip(&test) else {
        return;
    };
    let s = Scratch::new(&format!("vfu-linux-{machine}"));
    let size = 16usize << 20;
    let mut image = vec![0u8; size];
    for (k, sector) in image[HOST_LBA * 512..(HOST_LBA + 8) * 512]
        .chunks_mut(512)
        .enumerate()
    {
        for (i, b) in sector.iter_mut().enumerate() {
            *b = (((HOST_LBA + k) * 7 + HOST_PASS + i) & 0xff) as u8;
        }
    }
    let disk = s.file("disk.raw", &image);
    let srv = server(&s, &disk);
    let mut boot = LinuxBoot::new(pci_machine(&a, machine), &a)
        .mem_mib(256)
        .init_arg("casemate.mode=blk");
    if let Some(w) = extra {
        boot = boot.init_arg(w);
    }
    let mut cmd = boot.casemate();
    cmd.args([
        "-object",
        "memory-backend-memfd,id=mem,size=256M",
        "-machine",
        "memory-backend=mem",
        "-device",
        &format!("vfio-user-pci,socket={}", srv.sock.display()),
        "--log",
        "debug",
    ]);
    let (r, out) = run(cmd);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let log = format!("{stdout}\n--- stderr ---\n{stderr}");
    r.assert_ok();
    assert!(out.status.success(), "exit {:?}\n{log}", out.status);
    assert_eq!(r.want("match"), "1", "host pattern not seen\n{log}");
    assert_eq!(r.want("mismatches"), "0", "{log}");
    drop(srv);
    let after = std::fs::read(&disk).unwrap();
    let n = check_lines(&stdout, &after, "init: blk ").unwrap_or_else(|e| panic!("{e}\n{log}"));
    assert!(n >= 35, "only {n} sectors checked\n{log}");
    assert_eq!(
        stderr.contains("MSI route: GSI"),
        msi,
        "MSI-X expected: {msi}\n{stderr}"
    );
}

/// One test for both boots: two Linux guests at once on this 2-core host
/// outrun the boot limit.
#[test]
fn linux_virtio_blk_through_vfio_user_msix_on_q35_intx_on_pc() {
    linux_virtio_blk_through_vfio_user("q35", None, true);
    // pci=nomsi: the driver falls back to INTx, whose resample fd is the
    // device's unmask.
    linux_virtio_blk_through_vfio_user("pc", Some("pci=nomsi"), false);
}

/// The guest moves the assigned function's BAR (decode off, new address,
/// decode on) and the whole blk sequence runs at the new address.
#[test]
fn a_guest_moved_bar_keeps_the_assigned_device_working() {
    if !kvm_or_skip("vfio-user BAR moved by the guest") {
        return;
    }
    let s = Scratch::new("vfu-barmove");
    let d = s.file("d.raw", &vec![0u8; DISK]);
    let srv = server(&s, &d);
    let mut args = vm_args("q35", &srv.sock.to_string_lossy());
    args.extend(["-append".into(), "probe=bar-move".into()]);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let (r, out) = boot_probe(&a);
    r.assert_ok();
    drop(srv);
    let console = String::from_utf8_lossy(&out.stdout);
    let image = std::fs::read(&d).unwrap();
    let n = check(&console, &image).unwrap_or_else(|e| panic!("{e}\n{console}"));
    assert!(n >= 19, "only {n} sectors checked");
}

/// A server that accepts and then never answers: the VMM gives up after
/// its per-request deadline with a clear error instead of hanging.
#[test]
fn a_server_that_never_answers_fails_the_start_with_a_timeout() {
    let s = Scratch::new("vfu-mute");
    let sock = s.path("mute.sock");
    let l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let hold = std::thread::spawn(move || {
        // Keep the connection open, silently, until the VMM hangs up.
        if let Ok((mut c, _)) = l.accept() {
            let mut sink = Vec::new();
            let _ = c.read_to_end(&mut sink);
        }
    });
    let mut args = vm_args("q35", &sock.to_string_lossy());
    args.extend(["-append".into(), "probe=hello".into()]);
    let mut cmd = Command::new(bin("casemate"));
    cmd.args(&args);
    let start = std::time::Instant::now();
    let out = casemate_tests::run_with_limit(cmd, Duration::from_secs(60));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot connect to its server"), "{err}");
    assert!(err.contains("no reply from the server in time"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(30));
    hold.join().unwrap();
}

/// A guest reset within one VMM run: the next boot resets the device,
/// maps guest RAM again and reads back what the first boot wrote.
#[test]
fn a_guest_reset_resets_the_device_and_keeps_its_data() {
    if !kvm_or_skip("vfio-user across a guest reset") {
        return;
    }
    let s = Scratch::new("vfu-reboot");
    let d = s.file("d.raw", &vec![0u8; DISK]);
    let srv = server(&s, &d);
    let mut args = vm_args("q35", &srv.sock.to_string_lossy());
    args.extend(["-append".into(), "probe=blk-reboot".into()]);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let (r, out) = boot_probe(&a);
    r.assert_ok();
    let console = String::from_utf8_lossy(&out.stdout);
    assert!(console.contains("blk-reboot phase=1"), "{console}");
    assert!(
        console.contains("blk-reboot phase=2 read=ok ok=1"),
        "{console}"
    );
}

/// 4 GiB of guest RAM: the part above the PCI hole is shared with the
/// server too, at its own offset in the memfd.
#[test]
fn ram_above_4g_is_dma_mapped_into_the_server() {
    if !kvm_or_skip("vfio-user with RAM above 4 GiB") {
        return;
    }
    let s = Scratch::new("vfu-4g");
    let d = s.file("d.raw", &vec![0u8; DISK]);
    let srv = server_logging(&s, &d, "debug");
    let sock = srv.sock.to_string_lossy().into_owned();
    let (r, _) = boot_probe(&[
        "-M",
        "q35",
        "-m",
        "4G",
        "-object",
        "memory-backend-memfd,id=mem,size=4G",
        "-machine",
        "memory-backend=mem",
        "-device",
        &format!("vfio-user-pci,socket={sock}"),
        "-append",
        "probe=blk",
    ]);
    r.assert_ok();
    let log = srv.finish();
    assert!(log.contains("DMA map 0x0+0xc0000000"), "{log}");
    assert!(log.contains("DMA map 0x100000000+0x40000000"), "{log}");
}
