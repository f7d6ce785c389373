//! What the Linux guest tier's `ata` mode needs from the host side: a raw
//! disk given as a plain `-drive` (IDE on pc, AHCI on q35, as QEMU's
//! default interface) and an ISO 9660 image from `-cdrom` holding a file
//! whose size and FNV-1a hash the init reports back; and the checks on
//! what the guest printed. It rides along in another test's boot (a Linux
//! boot costs 20-60 s here, so one boot proves several drivers).

use std::process::Command;

use crate::blkcheck::check_lines;
use crate::{Report, Scratch};

/// The disk and disc of one boot; `Scratch` removes them.
pub struct AtaRig {
    pub disk: String,
    pub iso: std::path::PathBuf,
    data: Vec<u8>,
    _scratch: Scratch,
}

fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

impl AtaRig {
    /// A 16 MiB zeroed disk and an ISO (made by genisoimage) with a 7000
    /// byte file: three CD blocks and a bit, so reads cross sectors.
    pub fn new(name: &str) -> Self {
        let s = Scratch::new(name);
        let disk = s.file("disk.raw", &vec![0u8; 16 << 20]);
        let data: Vec<u8> = (0..7000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        std::fs::create_dir_all(s.path("iso")).unwrap();
        std::fs::write(s.path("iso").join("data.bin"), &data).unwrap();
        let iso = s.path("cd.iso");
        let st = Command::new("genisoimage")
            .args(["-quiet", "-R", "-o"])
            .arg(&iso)
            .arg(s.path("iso"))
            .status()
            .unwrap();
        assert!(st.success(), "genisoimage failed");
        Self {
            disk,
            iso,
            data,
            _scratch: s,
        }
    }

    /// The disk as a plain `-drive` and the ISO as `-cdrom`.
    pub fn args(&self, c: &mut Command) {
        c.args(["-drive", &format!("file={},format=raw", self.disk)])
            .arg("-cdrom")
            .arg(&self.iso);
    }

    /// The `ata` mode's lines in `console`: Linux's `driver` drove the
    /// controller, sr0 was found, the round trip on /dev/sda matched and
    /// landed in the host file, and the file read from the CD is ours.
    pub fn check(&self, console: &str, driver: &str) {
        let r = Report::with_prefix(console, "init: ");
        assert!(
            console.contains(&format!("scsi host0: {driver}")),
            "Linux's {driver} drove it\n{console}"
        );
        assert!(console.contains("[sr0]"), "the CD-ROM was found\n{console}");
        assert_eq!(r.want("disk"), "/dev/sda", "{console}");
        assert_eq!(r.want("mismatches"), "0", "{console}");
        let after = std::fs::read(&self.disk).unwrap();
        let n =
            check_lines(console, &after, "init: blk ").unwrap_or_else(|e| panic!("{e}\n{console}"));
        assert!(n >= 35, "only {n} sectors checked\n{console}");
        assert_eq!(r.want("bytes"), self.data.len().to_string(), "{console}");
        assert_eq!(r.want("fnv"), fnv1a(&self.data).to_string(), "{console}");
    }
}
