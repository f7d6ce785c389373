//! Linux guest tier: the kernel and init from tools/linux-guest (built and
//! cached by `tools/linux-guest/build.sh`, which the test command runs)
//! boot on Casemate's microvm (vmlinux through PVH, -initrd, -append), on
//! pc and q35 (bzImage through the Linux boot protocol, virtio-blk-pci) and,
//! as the reference, on QEMU 7.2's microvm and q35 (q35 booted with
//! `acpi=off`, its devices' interrupts found in the MP table). A boot takes
//! 20-40 s here, so each test is one boot that proves every device it can
//! carry (CPUs and memory, virtio-blk, virtio-rng through /dev/hwrng).

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

/// Where the host writes a pattern before boot for the init to read back
/// (tools/linux-guest/init/blk.rs): LBA 4096, 8 sectors, pass 100.
const HOST_LBA: usize = 4096;
const HOST_PASS: usize = 100;

/// microvm, one boot for everything its virtio-mmio devices and the
/// kernel's entry need: two CPUs and the memory size, int $0x80 and fork,
/// a virtio-blk disk whose guest writes land in the host file, and
/// virtio-rng behind /dev/hwrng.
#[test]
fn microvm_smp2_userspace_virtio_blk_and_rng() {
    let test = "microvm_smp2_userspace_virtio_blk_and_rng";
    if !kvm_or_skip(test) {
        return;
    }
    let Some(a) = artifacts_or_skip(test) else {
        return;
    };
    let s = Scratch::new("linux-microvm");
    let size = 16usize << 20;
    let disk = disk_with_host_pattern(&s, size);
    let mem_mib = 256;
    let boot = LinuxBoot::new(microvm(&a), &a)
        .smp(2)
        .mem_mib(mem_mib)
        .init_arg("casemate.mode=hello,blk,rng")
        .init_arg("casemate.int80=1")
        .init_arg("casemate.fork=1")
        .disk(&disk)
        .rng();
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
    rng_checks(&r, test, &log);
}

#[test]
fn qemu_microvm_boots_the_same_kernel_and_init_and_reads_virtio_rng() {
    let test = "qemu_microvm_boots_the_same_kernel_and_init_and_reads_virtio_rng";
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
        .init_arg("casemate.mode=hello,rng")
        .rng();
    let (r, out) = run(boot.qemu());
    let log = console(&out);
    r.assert_ok();
    assert_eq!(r.want("cpus"), "2", "{log}");
    rng_checks(&r, test, &log);
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
/// routes (seen in the VMM's debug log) or stayed on INTx; `rng` adds a
/// virtio-rng-pci read through /dev/hwrng to the same boot.
fn pci_machine_boot(machine: &'static str, smp: u32, extra: Option<&str>, msi: bool, rng: bool) {
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
        .init_arg(if rng {
            "casemate.mode=hello,blk,rng"
        } else {
            "casemate.mode=hello,blk"
        })
        .disk(&disk);
    if rng {
        boot = boot.rng();
    }
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
    if rng {
        rng_checks(&r, &test, &log);
    }
}

#[test]
fn q35_bzimage_smp2_virtio_blk_and_rng_pci_with_msix() {
    pci_machine_boot("q35", 2, None, true, true);
}

#[test]
fn pc_bzimage_virtio_blk_pci_on_intx() {
    // pci=nomsi: the driver falls back to INTx, routed by the DSDT's _PRT
    // and re-raised after EOI through KVM's resample eventfd.
    pci_machine_boot("pc", 1, Some("pci=nomsi"), false, false);
}

/// The init's rng mode: Linux's virtio_rng behind /dev/hwrng gave 32
/// bytes, not all equal.
fn rng_checks(r: &Report, test: &str, log: &str) {
    assert_eq!(r.want("current"), "virtio_rng.0", "{test}\n{log}");
    assert_eq!(r.want("bytes"), "32", "{test}\n{log}");
    assert!(num(r, "distinct") > 1, "{test}\n{log}");
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

/// QEMU q35 with `acpi=off`: no _PRT, so Linux routes the virtio-blk-pci
/// INTx through the MP table SeaBIOS writes (CONFIG_X86_MPPARSE); the disk
/// must still work. `pci=nomsi` keeps it on that interrupt. The same boot
/// reads virtio-rng-pci through /dev/hwrng.
#[test]
fn qemu_q35_acpi_off_disk_and_rng_work_through_the_mp_table() {
    let test = "qemu_q35_acpi_off_disk_and_rng_work_through_the_mp_table";
    let Some(a) = qemu_linux_or_skip(test) else {
        return;
    };
    let s = Scratch::new("linux-q35-acpi-off");
    let size = 16usize << 20;
    let disk = disk_with_host_pattern(&s, size);
    let boot = LinuxBoot::new(pci_machine(&a, "q35"), &a)
        .init_arg("acpi=off")
        .init_arg("pci=nomsi")
        .init_arg("casemate.mode=hello,blk,rng")
        .disk(&disk)
        .rng();
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
