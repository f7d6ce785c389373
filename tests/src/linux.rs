//! The Linux guest tier's harness: finds the kernel and initramfs that
//! `tools/linux-guest/build.sh` built, knows the kernel command line this
//! host needs, builds Casemate and QEMU command lines for one boot, and
//! parses the init's `init: key=value` report.
//!
//! A machine type is one small function returning a `MachineBoot` (its `-M`
//! value and the kernel image it boots): microvm boots `vmlinux` through
//! PVH; pc and q35 will boot `bzImage` through the Linux boot protocol.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::{bin, in_ci, run_with_limit, Report};

/// What every boot needs: the console on COM1, a reset through the i8042
/// (which `-no-reboot` turns into the end of the VM), and a reset on panic.
pub const BASE_CMDLINE: &str = "console=ttyS0 reboot=k panic=-1";

/// What this host's nested KVM needs on top (tools/linux-guest/README.md):
/// no XSAVE and none of the instructions its CPL0 emulator lacks, no
/// calibration loops, the kernel patch's `pvm_quirks=all`, and less CPL0
/// work where it is only a cost here (`rodata=off` skips 3-7 s of page
/// attribute changes, `percpu_alloc=page` ~1 s of zeroing 2 MiB per-CPU
/// units). An ordinary KVM host needs none of it.
pub const HOST_CMDLINE: &str = "noxsave \
    clearcpuid=cx16,popcnt,rdrand,rdseed,fsgsbase,smap,pcid,invpcid,erms,fsrm,rdpid,umip,pku \
    mitigations=off nokaslr lpj=29000000 tsc=reliable rodata=off percpu_alloc=page pvm_quirks=all";

/// A Linux boot here takes 20-30 s (the guest kernel runs through KVM's
/// instruction emulator); a hung one fails after this.
pub const BOOT_LIMIT: Duration = Duration::from_secs(180);

/// The built kernel images and initramfs.
#[derive(Debug, Clone)]
pub struct Artifacts {
    pub vmlinux: PathBuf,
    pub bzimage: PathBuf,
    pub initramfs: PathBuf,
}

impl Artifacts {
    /// `$CASEMATE_LINUX_GUEST` (a directory), else the links build.sh keeps
    /// in `target/linux-guest/current`.
    pub fn find() -> Result<Self, String> {
        let dir = std::env::var_os("CASEMATE_LINUX_GUEST").map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/linux-guest/current"),
            PathBuf::from,
        );
        let a = Self {
            vmlinux: dir.join("vmlinux"),
            bzimage: dir.join("bzImage"),
            initramfs: dir.join("initramfs.cpio"),
        };
        for p in [&a.vmlinux, &a.bzimage, &a.initramfs] {
            if !p.exists() {
                return Err(format!("{} is missing", p.display()));
            }
        }
        Ok(a)
    }
}

/// The artifacts, or None after a SKIP line; under `CI=true` it fails.
pub fn artifacts_or_skip(test: &str) -> Option<Artifacts> {
    match Artifacts::find() {
        Ok(a) => Some(a),
        Err(why) => {
            assert!(
                !in_ci(),
                "{test}: {why}; under CI=true the test command must build it \
                 (tools/linux-guest/build.sh)"
            );
            println!("SKIP {test}: {why} (run tools/linux-guest/build.sh)");
            None
        }
    }
}

/// One machine type: its `-M` value and the kernel image it boots.
#[derive(Debug, Clone)]
pub struct MachineBoot {
    pub machine: &'static str,
    pub kernel: PathBuf,
}

/// `-M microvm` boots the uncompressed ELF through its PVH note.
pub fn microvm(a: &Artifacts) -> MachineBoot {
    MachineBoot {
        machine: "microvm",
        kernel: a.vmlinux.clone(),
    }
}

/// `-M pc` or `-M q35` with the bzImage through the Linux boot protocol;
/// disks are virtio-blk-pci there.
pub fn pci_machine(a: &Artifacts, machine: &'static str) -> MachineBoot {
    MachineBoot {
        machine,
        kernel: a.bzimage.clone(),
    }
}

/// One Linux boot: machine, size, disks and the init's `casemate.*` words.
#[derive(Debug, Clone)]
pub struct LinuxBoot {
    pub machine: MachineBoot,
    pub initramfs: PathBuf,
    pub smp: u32,
    pub mem_mib: u64,
    /// Words for the init, e.g. `casemate.mode=blk`.
    pub init_args: Vec<String>,
    /// Raw disk images, attached as virtio-blk in order (/dev/vda, ...).
    pub disks: Vec<String>,
    /// A virtio-rng device fed from the host's /dev/urandom.
    pub rng: bool,
    /// A virtio-net NIC (eth0 in the guest) on this `-netdev` (without
    /// its `id=`), e.g. `tap,ifname=tap0,...` or `user`.
    pub netdev: Option<String>,
    /// Extra `-device virtio-net-*` properties, e.g. `,mq=on`.
    pub nic_opts: String,
}

impl LinuxBoot {
    pub fn new(machine: MachineBoot, a: &Artifacts) -> Self {
        Self {
            machine,
            initramfs: a.initramfs.clone(),
            smp: 1,
            mem_mib: 256,
            init_args: Vec::new(),
            disks: Vec::new(),
            rng: false,
            netdev: None,
            nic_opts: String::new(),
        }
    }

    pub fn smp(mut self, n: u32) -> Self {
        self.smp = n;
        self
    }

    pub fn mem_mib(mut self, m: u64) -> Self {
        self.mem_mib = m;
        self
    }

    pub fn init_arg(mut self, word: &str) -> Self {
        self.init_args.push(word.to_string());
        self
    }

    pub fn disk(mut self, raw_image: &str) -> Self {
        self.disks.push(raw_image.to_string());
        self
    }

    pub fn rng(mut self) -> Self {
        self.rng = true;
        self
    }

    /// A NIC on the existing tap `ifname`.
    pub fn tap(self, ifname: &str) -> Self {
        self.netdev(&format!(
            "tap,ifname={ifname},script=no,downscript=no,vhost=off"
        ))
    }

    /// Extra properties for the NIC's `-device` (starting with `,`).
    pub fn nic_opts(mut self, opts: &str) -> Self {
        self.nic_opts = opts.to_string();
        self
    }

    pub fn netdev(mut self, spec: &str) -> Self {
        self.netdev = Some(spec.to_string());
        self
    }

    /// virtio-mmio on microvm, virtio-pci on pc and q35: the device name's
    /// suffix for `-device virtio-blk-*` and `virtio-rng-*`.
    fn virtio_suffix(&self) -> &'static str {
        if self.machine.machine == "microvm" {
            "device"
        } else {
            "pci"
        }
    }

    /// The same `-object`/`-netdev`/`-device` options on both VMMs
    /// (QEMU's syntax).
    fn device_args(&self, c: &mut Command) {
        if self.rng {
            c.args(["-object", "rng-random,id=rng0,filename=/dev/urandom"])
                .args([
                    "-device",
                    &format!("virtio-rng-{},rng=rng0", self.virtio_suffix()),
                ]);
        }
        if let Some(n) = &self.netdev {
            c.args([
                "-netdev",
                &format!("{n},id=n0"),
                "-device",
                &format!(
                    "virtio-net-{},netdev=n0{}",
                    self.virtio_suffix(),
                    self.nic_opts
                ),
            ]);
        }
    }

    /// The kernel command line: base, host work-arounds, init words.
    pub fn append(&self) -> String {
        let mut s = format!("{BASE_CMDLINE} {HOST_CMDLINE}");
        for w in &self.init_args {
            s.push(' ');
            s.push_str(w);
        }
        s
    }

    fn common(&self, c: &mut Command, append: &str) {
        c.args(["-M", self.machine.machine])
            .args(["-smp", &self.smp.to_string()])
            .args(["-m", &format!("{}M", self.mem_mib)])
            .arg("-kernel")
            .arg(&self.machine.kernel)
            .arg("-initrd")
            .arg(&self.initramfs)
            .args(["-append", append, "-nographic", "-no-reboot"]);
    }

    /// `casemate` with QEMU's syntax; the i8042 reset ends it with exit 0.
    pub fn casemate(&self) -> Command {
        self.casemate_at(&bin("casemate"))
    }

    pub fn casemate_at(&self, casemate: &Path) -> Command {
        let mut c = Command::new(casemate);
        self.common(&mut c, &self.append());
        for d in &self.disks {
            c.args(["-drive", &format!("file={d},format=raw,if=virtio")]);
        }
        self.device_args(&mut c);
        c
    }

    /// QEMU 7.2, the reference. Its microvm has no i8042, so the init ends
    /// it through isa-debug-exit (`casemate.exit=debug`): exit status 1
    /// means `done status=ok`. `-cpu host` (minus arch-capabilities, which
    /// QEMU 7.2 cannot set here) rather than qemu64: on that model the
    /// kernel's AMD FXSAVE-leak work-around runs `fnclex` at CPL0, which
    /// this host's emulator lacks. Modern virtio-mmio needs force-legacy off.
    pub fn qemu(&self) -> Command {
        let mut c = Command::new("qemu-system-x86_64");
        c.args(["-enable-kvm", "-cpu", "host,-arch-capabilities"])
            .args(["-nodefaults", "-serial", "stdio"]);
        self.common(&mut c, &format!("{} casemate.exit=debug", self.append()));
        c.args(["-device", "isa-debug-exit,iobase=0xf4,iosize=4"]);
        if self.machine.machine == "microvm" {
            c.args(["-global", "virtio-mmio.force-legacy=false"]);
        }
        let suffix = self.virtio_suffix();
        for (i, d) in self.disks.iter().enumerate() {
            c.args(["-drive", &format!("id=d{i},file={d},format=raw,if=none")])
                .args(["-device", &format!("virtio-blk-{suffix},drive=d{i}")]);
        }
        self.device_args(&mut c);
        c
    }
}

/// Runs a boot to its end (failing after `BOOT_LIMIT`) and parses the
/// init's report from the console.
pub fn run(cmd: Command) -> (Report, Output) {
    let out = run_with_limit(cmd, BOOT_LIMIT);
    let console = String::from_utf8_lossy(&out.stdout).into_owned();
    (Report::with_prefix(&console, "init: "), out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake() -> Artifacts {
        Artifacts {
            vmlinux: "/k/vmlinux".into(),
            bzimage: "/k/bzImage".into(),
            initramfs: "/k/initramfs.cpio".into(),
        }
    }

    fn args(c: &Command) -> Vec<String> {
        c.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn casemate_and_qemu_get_the_same_guest() {
        let a = fake();
        let b = LinuxBoot::new(microvm(&a), &a)
            .smp(2)
            .init_arg("casemate.mode=blk")
            .disk("/d.raw");
        let cm = args(&b.casemate_at(Path::new("casemate")));
        let q = args(&b.qemu());
        for v in [&cm, &q] {
            let at = |k: &str| v.iter().position(|x| x == k).map(|i| v[i + 1].as_str());
            assert_eq!(at("-M"), Some("microvm"));
            assert_eq!(at("-kernel"), Some("/k/vmlinux"));
            assert_eq!(at("-initrd"), Some("/k/initramfs.cpio"));
            assert_eq!(at("-smp"), Some("2"));
            assert_eq!(at("-m"), Some("256M"));
            let append = at("-append").unwrap();
            assert!(append.starts_with(BASE_CMDLINE), "{append}");
            assert!(
                append.contains("pvm_quirks=all casemate.mode=blk"),
                "{append}"
            );
        }
        assert!(cm.contains(&"file=/d.raw,format=raw,if=virtio".to_string()));
        assert!(q.contains(&"virtio-blk-device,drive=d0".to_string()));
        assert!(q
            .iter()
            .any(|x| x.ends_with("casemate.mode=blk casemate.exit=debug")));
        assert!(!cm.iter().any(|x| x.contains("casemate.exit")));
    }

    #[test]
    fn rng_and_disks_are_virtio_pci_on_q35_for_both_vmms() {
        let a = fake();
        let b = LinuxBoot::new(pci_machine(&a, "q35"), &a)
            .disk("/d.raw")
            .rng()
            .tap("tap0");
        let cm = args(&b.casemate_at(Path::new("casemate")));
        let q = args(&b.qemu());
        for v in [&cm, &q] {
            assert!(v.contains(&"rng-random,id=rng0,filename=/dev/urandom".to_string()));
            assert!(v.contains(&"virtio-rng-pci,rng=rng0".to_string()));
            assert!(v.contains(&"virtio-net-pci,netdev=n0".to_string()));
            assert!(
                v.contains(&"tap,ifname=tap0,script=no,downscript=no,vhost=off,id=n0".to_string())
            );
        }
        assert!(q.contains(&"virtio-blk-pci,drive=d0".to_string()));
        assert!(!q.iter().any(|x| x.contains("force-legacy")));
    }
}
