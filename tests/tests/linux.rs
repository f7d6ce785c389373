//! Linux guest tier: the kernel and init from tools/linux-guest (built and
//! cached by `tools/linux-guest/build.sh`, which the test command runs)
//! boot on Casemate's microvm (vmlinux through PVH, -initrd, -append), on
//! pc and q35 (bzImage through the Linux boot protocol, virtio-blk-pci) and,
//! as the reference, on QEMU 7.2's microvm, q35 and pc (virtio-rng through
//! /dev/hwrng; q35 booted with `acpi=off`, its disk's interrupt found in
//! the MP table). A boot takes 20-30 s here, so each test is one boot with
//! all its assertions.

use casemate_tests::blkcheck::check_lines;
use casemate_tests::linux::{artifacts_or_skip, microvm, pci_machine, run, LinuxBoot};
use casemate_tests::{have, in_ci, kvm_or_skip, Report, Scratch};

fn console(out: &std::process::Output) -> String {
    format!(
        "{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn num(r: &Report, key: &str) -> u64 {
    r.want(key)
        .parse()
        .unwrap_or_else(|e| panic!("{key}={}: {e}\n{}", r.want(key), r.raw))
}

#[test]
fn microvm_smp2_reaches_userspace_with_both_cpus_and_its_memory() {
    let test = "microvm_smp2_reaches_userspace_with_both_cpus_and_its_memory";
    if !kvm_or_skip(test) {
        return;
    }
    let Some(a) = artifacts_or_skip(test) else {
        return;
    };
    let mem_mib = 256;
    let boot = LinuxBoot::new(microvm(&a), &a)
        .smp(2)
        .mem_mib(mem_mib)
        .init_arg("casemate.mode=hello")
        .init_arg("casemate.int80=1")
        .init_arg("casemate.fork=1");
    let (r, out) = run(boot.casemate());
    let log = console(&out);
    r.assert_ok();
    assert!(out.status.success(), "exit {:?}\n{log}", out.status);
    // The init saw the whole command line we gave (Casemate may append).
    assert!(
        r.want("value").starts_with(&boot.append()),
        "cmdline seen by the guest: {}\n{log}",
        r.want("value")
    );
    assert_eq!(r.want("cpus"), "2", "{log}");
    assert_eq!(r.want("cpus_online"), "0-1", "{log}");
    // MemTotal is RAM less what the kernel keeps (image, memmap, holes):
    // at most -m, and not more than 24 MiB below it at this size.
    let total = num(&r, "mem_total_kib");
    let m = mem_mib * 1024;
    assert!(
        total <= m && total >= m - 24 * 1024,
        "MemTotal {total} KiB for -m {mem_mib}M\n{log}"
    );
    // int $0x80 and fork/exit/wait4 (the patch's int80 and fwait paths).
    assert_eq!(r.want("getpid"), "1", "{log}");
    assert_eq!(r.want("child_exit"), "7", "{log}");
}

/// Where the host writes a pattern before boot for the init to read back
/// (tools/linux-guest/init/blk.rs): LBA 4096, 8 sectors, pass 100.
const HOST_LBA: usize = 4096;
const HOST_PASS: usize = 100;

#[test]
fn microvm_virtio_blk_guest_writes_land_in_the_host_file() {
    let test = "microvm_virtio_blk_guest_writes_land_in_the_host_file";
    if !kvm_or_skip(test) {
        return;
    }
    let Some(a) = artifacts_or_skip(test) else {
        return;
    };
    let s = Scratch::new("linux-blk");
    let size = 16usize << 20;
    let mut image = vec![0u8; size];
    for (s, sector) in image[HOST_LBA * 512..(HOST_LBA + 8) * 512]
        .chunks_mut(512)
        .enumerate()
    {
        let lba = HOST_LBA + s;
        for (i, b) in sector.iter_mut().enumerate() {
            *b = ((lba * 7 + HOST_PASS + i) & 0xff) as u8;
        }
    }
    let disk = s.file("disk.raw", &image);
    let boot = LinuxBoot::new(microvm(&a), &a)
        .mem_mib(128)
        .init_arg("casemate.mode=blk")
        .disk(&disk);
    let (r, out) = run(boot.casemate());
    let log = console(&out);
    r.assert_ok();
    assert!(out.status.success(), "exit {:?}\n{log}", out.status);
    // The transport is announced in the DSDT, as QEMU's microvm does, not
    // as `virtio_mmio.device=...:5`: without a legacy PIC (hardware-reduced
    // ACPI) Linux IRQ 5 is not GSI 5 and the driver's probe would fail.
    assert!(!r.want("value").contains("virtio_mmio.device"), "{log}");
    assert_eq!(num(&r, "size_bytes"), size as u64, "{log}");
    // The guest read what the host wrote, past its page cache.
    assert_eq!(
        r.want("match"),
        "1",
        "host pattern not seen by the guest\n{log}"
    );
    assert_eq!(r.want("mismatches"), "0", "{log}");
    // And the host file holds what the guest wrote, at the right offsets.
    let after = std::fs::read(&disk).unwrap();
    assert_eq!(after.len(), size, "image size unchanged");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let n = check_lines(&stdout, &after, "init: blk ").unwrap_or_else(|e| panic!("{e}\n{log}"));
    assert!(n >= 35, "only {n} sectors checked\n{log}");
    // The last region is the disk's last 8 sectors.
    assert!(
        stdout.contains(&format!("blk wrote lba={} sectors=8", size / 512 - 8)),
        "{log}"
    );
}

#[test]
fn qemu_microvm_boots_the_same_kernel_and_init() {
    let test = "qemu_microvm_boots_the_same_kernel_and_init";
    if !kvm_or_skip(test) {
        return;
    }
    if !have("qemu-system-x86_64") {
        assert!(
            !in_ci(),
            "qemu-system-x86_64 missing in CI: the test command installs it"
        );
        println!("SKIP {test}: qemu-system-x86_64 is not installed");
        return;
    }
    let Some(a) = artifacts_or_skip(test) else {
        return;
    };
    let boot = LinuxBoot::new(microvm(&a), &a)
        .smp(2)
        .init_arg("casemate.mode=hello");
    let (r, out) = run(boot.qemu());
    let log = console(&out);
    r.assert_ok();
    assert_eq!(r.want("cpus"), "2", "{log}");
    // isa-debug-exit: (0 << 1) | 1 when the init reported ok.
    assert_eq!(out.status.code(), Some(1), "{log}");
}

/// The host pattern the init reads back before writing its own.
fn disk_with_host_pattern(s: &Scratch, size: usize) -> String {
    let mut image = vec![0u8; size];
    for (k, sector) in image[HOST_LBA * 512..(HOST_LBA + 8) * 512]
        .chunks_mut(512)
        .enumerate()
    {
        let lba = HOST_LBA + k;
        for (i, b) in sector.iter_mut().enumerate() {
            *b = ((lba * 7 + HOST_PASS + i) & 0xff) as u8;
        }
    }
    s.file("disk.raw", &image)
}

/// pc and q35: the bzImage through the Linux boot protocol, both modes in
/// one boot (a boot costs 20-50 s here): CPUs, MemTotal, and a virtio-blk-pci
/// disk whose guest writes land in the host file. `extra` goes on the
/// kernel command line; `msi` says whether Linux must have programmed MSI-X
/// routes (seen in the VMM's debug log) or stayed on INTx.
fn pci_machine_boot(machine: &'static str, smp: u32, extra: Option<&str>, msi: bool) {
    let test = format!("{machine}_linux_boot");
    if !kvm_or_skip(&test) {
        return;
    }
    let Some(a) = artifacts_or_skip(&test) else {
        return;
    };
    let s = Scratch::new(&format!("linux-{machine}"));
    let size = 16usize << 20;
    let disk = disk_with_host_pattern(&s, size);
    let mem_mib = 256;
    let mut boot = LinuxBoot::new(pci_machine(&a, machine), &a)
        .smp(smp)
        .mem_mib(mem_mib)
        .init_arg("casemate.mode=hello,blk")
        .disk(&disk);
    if let Some(w) = extra {
        boot = boot.init_arg(w);
    }
    let mut cmd = boot.casemate();
    cmd.args(["--log", "debug"]);
    let (r, out) = run(cmd);
    let log = console(&out);
    r.assert_ok();
    assert!(out.status.success(), "exit {:?}\n{log}", out.status);
    assert_eq!(r.want("cpus"), smp.to_string(), "{log}");
    let total = num(&r, "mem_total_kib");
    let m = mem_mib * 1024;
    assert!(
        total <= m && total >= m - 24 * 1024,
        "MemTotal {total} KiB for -m {mem_mib}M\n{log}"
    );
    assert_eq!(num(&r, "size_bytes"), size as u64, "{log}");
    assert_eq!(r.want("match"), "1", "host pattern not seen\n{log}");
    assert_eq!(r.want("mismatches"), "0", "{log}");
    let after = std::fs::read(&disk).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let n = check_lines(&stdout, &after, "init: blk ").unwrap_or_else(|e| panic!("{e}\n{log}"));
    assert!(n >= 35, "only {n} sectors checked\n{log}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.contains("MSI route: GSI"),
        msi,
        "MSI-X expected: {msi}\n{stderr}"
    );
}

#[test]
fn q35_bzimage_smp2_virtio_blk_pci_with_msix() {
    pci_machine_boot("q35", 2, None, true);
}

#[test]
fn pc_bzimage_virtio_blk_pci_on_intx() {
    // pci=nomsi: the driver falls back to INTx, routed by the DSDT's _PRT
    // and re-raised after EOI through KVM's resample eventfd.
    pci_machine_boot("pc", 1, Some("pci=nomsi"), false);
}

/// The init's rng mode: Linux's virtio_rng behind /dev/hwrng gives 32
/// bytes, not all equal.
fn hwrng_boot(boot: LinuxBoot, qemu: bool, test: &str) {
    let boot = boot.rng().init_arg("casemate.mode=rng");
    let (r, out) = run(if qemu { boot.qemu() } else { boot.casemate() });
    let log = console(&out);
    r.assert_ok();
    assert_eq!(r.want("current"), "virtio_rng.0", "{test}\n{log}");
    assert_eq!(r.want("bytes"), "32", "{test}\n{log}");
    assert!(num(&r, "distinct") > 1, "{test}\n{log}");
    // isa-debug-exit on QEMU: (0 << 1) | 1 when the init reported ok.
    let want = if qemu { Some(1) } else { Some(0) };
    assert_eq!(out.status.code(), want, "{test}\n{log}");
}

fn qemu_linux_or_skip(test: &str) -> Option<casemate_tests::linux::Artifacts> {
    if !kvm_or_skip(test) {
        return None;
    }
    if !have("qemu-system-x86_64") {
        assert!(
            !in_ci(),
            "qemu-system-x86_64 missing in CI: the test command installs it"
        );
        println!("SKIP {test}: qemu-system-x86_64 is not installed");
        return None;
    }
    artifacts_or_skip(test)
}

#[test]
fn qemu_microvm_hwrng_reads_virtio_rng_device() {
    let test = "qemu_microvm_hwrng_reads_virtio_rng_device";
    let Some(a) = qemu_linux_or_skip(test) else {
        return;
    };
    hwrng_boot(LinuxBoot::new(microvm(&a), &a), true, test);
}

#[test]
fn qemu_q35_hwrng_reads_virtio_rng_pci() {
    let test = "qemu_q35_hwrng_reads_virtio_rng_pci";
    let Some(a) = qemu_linux_or_skip(test) else {
        return;
    };
    hwrng_boot(LinuxBoot::new(pci_machine(&a, "q35"), &a), true, test);
}

/// QEMU q35 with `acpi=off`: no _PRT, so Linux routes the virtio-blk-pci
/// INTx through the MP table SeaBIOS writes (CONFIG_X86_MPPARSE); the disk
/// must still work. `pci=nomsi` keeps it on that interrupt.
#[test]
fn qemu_q35_acpi_off_disk_works_through_the_mp_table() {
    let test = "qemu_q35_acpi_off_disk_works_through_the_mp_table";
    let Some(a) = qemu_linux_or_skip(test) else {
        return;
    };
    let s = Scratch::new("linux-q35-acpi-off");
    let size = 16usize << 20;
    let disk = disk_with_host_pattern(&s, size);
    let boot = LinuxBoot::new(pci_machine(&a, "q35"), &a)
        .init_arg("acpi=off")
        .init_arg("pci=nomsi")
        .init_arg("casemate.mode=hello,blk")
        .disk(&disk);
    let (r, out) = run(boot.qemu());
    let log = console(&out);
    r.assert_ok();
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert_eq!(r.want("match"), "1", "host pattern not seen\n{log}");
    assert_eq!(r.want("mismatches"), "0", "{log}");
    let after = std::fs::read(&disk).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let n = check_lines(&stdout, &after, "init: blk ").unwrap_or_else(|e| panic!("{e}\n{log}"));
    assert!(n >= 35, "only {n} sectors checked\n{log}");
}

#[test]
fn casemate_microvm_hwrng_reads_virtio_rng_device() {
    let test = "casemate_microvm_hwrng_reads_virtio_rng_device";
    if !kvm_or_skip(test) {
        return;
    }
    let Some(a) = artifacts_or_skip(test) else {
        return;
    };
    hwrng_boot(LinuxBoot::new(microvm(&a), &a), false, test);
}

#[test]
fn casemate_q35_hwrng_reads_virtio_rng_pci() {
    let test = "casemate_q35_hwrng_reads_virtio_rng_pci";
    if !kvm_or_skip(test) {
        return;
    }
    let Some(a) = artifacts_or_skip(test) else {
        return;
    };
    hwrng_boot(LinuxBoot::new(pci_machine(&a, "q35"), &a), false, test);
}

/// A kernel told `acpi=off` on Casemate's q35 and pc (also without ACPI
/// tables, `-machine acpi=off`): it finds the PCI bus and every slot's
/// INTx routing in the MP table, and with `pci=nomsi` its virtio-blk-pci
/// disk works on that interrupt alone.
#[test]
fn casemate_pc_and_q35_acpi_off_disk_works_through_the_mp_table() {
    let test = "casemate_pc_and_q35_acpi_off_disk_works_through_the_mp_table";
    if !kvm_or_skip(test) {
        return;
    }
    let Some(a) = artifacts_or_skip(test) else {
        return;
    };
    for machine in ["q35", "pc"] {
        let s = Scratch::new(&format!("linux-{machine}-acpi-off"));
        let disk = disk_with_host_pattern(&s, 16 << 20);
        let boot = LinuxBoot::new(pci_machine(&a, machine), &a)
            .init_arg("acpi=off")
            .init_arg("pci=nomsi")
            .init_arg("casemate.mode=hello,blk")
            .disk(&disk);
        let mut cmd = boot.casemate();
        // -machine given twice: the later one adds acpi=off, as in QEMU.
        cmd.args(["-machine", &format!("{machine},acpi=off")]);
        let (r, out) = run(cmd);
        let log = console(&out);
        r.assert_ok();
        assert_eq!(
            r.want("match"),
            "1",
            "{machine}: host pattern not seen\n{log}"
        );
        assert_eq!(r.want("mismatches"), "0", "{machine}: {log}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let after = std::fs::read(&disk).unwrap();
        let n = check_lines(&stdout, &after, "init: blk ").unwrap_or_else(|e| panic!("{e}\n{log}"));
        assert!(n >= 35, "{machine}: only {n} sectors checked\n{log}");
    }
}
