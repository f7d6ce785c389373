//! The I/O paths the benchmark drives: for each, the machine, how each
//! VMM gets the disk, the probe mode that drives it and the workloads
//! the path can run. Owns no process handling (see `vm`).

use crate::table::Workload;

/// How the disk reaches the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attach {
    /// `-drive if=ide` (IDE on pc, AHCI on q35), on both VMMs.
    Ide,
    /// virtio-blk: `-drive if=virtio` on Casemate, an explicit device on
    /// QEMU (virtio-blk-device on microvm, virtio-blk-pci on q35).
    Virtio,
    /// virtio-blk served by `casemate-vfio-user-blk`, assigned with
    /// `-device vfio-user-pci` over memfd RAM; Casemate only (QEMU 7.2
    /// has no vfio-user client).
    VfioUser,
}

pub struct IoPath {
    pub name: &'static str,
    pub machine: &'static str,
    pub attach: Attach,
    /// The probe mode, before the workload words.
    pub probe: &'static str,
    /// Whether a queue exists: the ATA paths run one request at a time
    /// (IDE has no queue; the AHCI model offers no NCQ).
    pub queued: bool,
}

impl IoPath {
    pub fn on_qemu(&self) -> bool {
        self.attach != Attach::VfioUser
    }

    /// 4 KiB random read and write at QD1 (and QD32 where queued), then
    /// sequential reads: 1 MiB, or 64 KiB on the ATA paths (the probe's
    /// ATA driver puts a request in one 64 KiB PRD entry).
    pub fn workloads(&self) -> Vec<Workload> {
        let qds: &[u32] = if self.queued { &[1, 32] } else { &[1] };
        let mut v = Vec::new();
        for mode in ["randread", "randwrite"] {
            for &qd in qds {
                v.push(Workload { mode, bs: 4096, qd });
            }
        }
        let bs = if self.queued { 1 << 20 } else { 64 << 10 };
        v.push(Workload {
            mode: "seqread",
            bs,
            qd: 1,
        });
        v
    }

    /// The probe's command line for `w`; `n=0` measures the boot alone.
    pub fn append(&self, w: &Workload, len: &str) -> String {
        format!(
            "probe={} mode={} bs={} qd={} {len}",
            self.probe, w.mode, w.bs, w.qd
        )
    }
}

pub const PATHS: [IoPath; 6] = [
    IoPath {
        name: "ide-pio",
        machine: "pc",
        attach: Attach::Ide,
        probe: "ata-bench path=ide-pio",
        queued: false,
    },
    IoPath {
        name: "ide-dma",
        machine: "pc",
        attach: Attach::Ide,
        probe: "ata-bench path=ide-dma",
        queued: false,
    },
    IoPath {
        name: "ahci",
        machine: "q35",
        attach: Attach::Ide,
        probe: "ata-bench path=ahci",
        queued: false,
    },
    IoPath {
        name: "virtio-mmio",
        machine: "microvm",
        attach: Attach::Virtio,
        probe: "blk-bench",
        queued: true,
    },
    IoPath {
        name: "virtio-pci",
        machine: "q35",
        attach: Attach::Virtio,
        probe: "blk-bench",
        queued: true,
    },
    IoPath {
        name: "vfio-user",
        machine: "q35",
        attach: Attach::VfioUser,
        probe: "blk-bench",
        queued: true,
    },
];

/// Why kernel VFIO has no row of figures here.
pub fn kernel_vfio_absent() -> String {
    if std::path::Path::new("/dev/vfio").exists() {
        "absent: /dev/vfio exists, but the benchmark does not bind a host device to vfio-pci".into()
    } else {
        "absent: no /dev/vfio on this host (kernel without CONFIG_VFIO)".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emulated_paths_run_qd1_only_and_smaller_sequential_requests() {
        let ide = PATHS[0].workloads();
        assert!(ide.iter().all(|w| w.qd == 1));
        assert_eq!(ide.last().unwrap().bs, 64 << 10);
        let v = PATHS[4].workloads();
        assert_eq!(v.len(), 5);
        assert!(v.iter().any(|w| w.qd == 32 && w.mode == "randwrite"));
        assert_eq!(v.last().unwrap().bs, 1 << 20);
        assert!(!PATHS[5].on_qemu() && PATHS[4].on_qemu());
        assert_eq!(
            PATHS[1].append(&ide[0], "ms=10"),
            "probe=ata-bench path=ide-dma mode=randread bs=4096 qd=1 ms=10"
        );
    }
}
