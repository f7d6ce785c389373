//! The VM description: plain data, validated before anything is built.
//!
//! Owns the config types (`VmConfig` and its parts), their defaults and
//! `validate()`, which reports every problem at once. No I/O, no KVM: the CLI
//! and the JSON loader produce a `VmConfig`; the builder consumes it.

pub mod ata;
pub mod backing;
pub mod control;
pub mod device;
pub mod display;
pub mod fdset;
pub mod gpu;
pub mod json;
pub mod memory;
pub mod net;
pub mod rng;
pub mod sandbox;
pub mod size;
pub mod validate;
pub mod vfio;
pub mod vga;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use ata::{DriveAttach, DriveInterface};
pub use control::{ControlConfig, Endpoint, MonitorConfig, MonitorMode};
pub use device::DeviceConfig;
pub use display::DisplayConfig;
pub use fdset::FdSetConfig;
pub use gpu::GpuConfig;
pub use memory::{BackendKind, MemoryBackendConfig};
pub use net::{HostFwd, NetBackendConfig, NetConfig};
pub use rng::{RngBackendConfig, RngConfig};
pub use sandbox::{LandlockMode, SandboxConfig, SeccompMode};
pub use validate::{ConfigError, Problems, ValidConfig};
pub use vfio::{VfioPciConfig, VfioUserConfig};

/// A whole VM, as `casemate` or `--config FILE` describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VmConfig {
    pub machine: MachineKind,
    pub cpu: CpuModel,
    pub smp: SmpConfig,
    /// Guest RAM in bytes.
    pub memory: u64,
    /// The backend guest RAM comes from (`-machine memory-backend=ID`);
    /// None: anonymous memory, as QEMU's implicit RAM.
    pub memory_backend: Option<MemoryBackendConfig>,
    /// Transparent huge pages for guest RAM that is not on hugetlb
    /// (MADV_HUGEPAGE, as QEMU does); false sets MADV_NOHUGEPAGE.
    pub thp: bool,
    /// `-overcommit mem-lock=on`: mlock guest RAM.
    pub mem_lock: bool,
    /// None boots the embedded probe guest.
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub append: String,
    pub serial: SerialConfig,
    pub rtc: RtcConfig,
    /// An i8042 or ACPI reset ends the VM (exit 0) instead of rebooting it.
    pub no_reboot: bool,
    /// Block devices, in the order their transports are created.
    pub drives: Vec<DriveConfig>,
    /// Every other device, in the order they are created (after drives).
    pub devices: Vec<DeviceConfig>,
    /// Already-open files handed to the VMM (`-add-fd`), used wherever a
    /// path may be `/dev/fdset/N`.
    pub fdsets: Vec<FdSetConfig>,
    /// ACPI tables for the guest (`-machine acpi=on|off`); None takes the
    /// machine's default (on, but off for isapc). Off, as QEMU does: only
    /// the MP table (with PCI interrupt routing on pc and q35), and
    /// virtio-mmio transports announced on the kernel command line
    /// (`virtio_mmio.device=`) instead of in the DSDT; no ACPI power-off.
    pub acpi: Option<bool>,
    /// Seccomp filters per thread role and Landlock (`-sandbox`,
    /// `--seccomp`); on by default.
    pub sandbox: SandboxConfig,
    /// Monitors and process control (`-qmp`, `-monitor`, `-S`, `-name`).
    pub control: ControlConfig,
    /// The VNC server showing the guest's screen, if any.
    pub display: DisplayConfig,
}

/// One virtio-blk disk (`-drive` plus its `-device`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriveConfig {
    pub id: String,
    pub file: PathBuf,
    /// `raw` or `qcow2`; None probes the image.
    pub format: Option<String>,
    #[serde(default)]
    pub read_only: bool,
    #[serde(default)]
    pub cache: CacheConfig,
    /// Writes go to a temporary overlay discarded at exit (`-snapshot`).
    #[serde(default)]
    pub snapshot: bool,
    #[serde(default = "one")]
    pub num_queues: u16,
    /// The `-device` that carries it; None: the machine's own (virtio-mmio
    /// on microvm, virtio-pci on pc and q35), as QEMU's `if=virtio`.
    #[serde(default)]
    pub transport: Option<Transport>,
    /// QEMU-compatible image locks (`file.locking=off` turns them off).
    #[serde(default = "yes")]
    pub locking: bool,
    /// `discard=ignore|unmap` (QEMU's default: ignore).
    #[serde(default)]
    pub discard: DiscardConfig,
    /// `detect-zeroes=off|on|unmap` (unmap needs discard=unmap).
    #[serde(default)]
    pub detect_zeroes: DetectZeroesConfig,
    /// `aio=threads|native|io_uring`; None: io_uring where the image and
    /// kernel allow, else threads.
    #[serde(default)]
    pub aio: Option<AioConfig>,
    /// `if=`, `media=`, `index=`/`bus=`/`unit=` (see `ata`).
    #[serde(default)]
    pub attach: DriveAttach,
    /// The backing chain, top first, in place of the one the image's
    /// header names (`backing.file.filename=`; see `backing`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backing: Vec<backing::BackingConfig>,
    /// How long a virtio-blk worker polls for the guest's next request
    /// before it sleeps, in ns (`-object iothread,poll-max-ns=`); None:
    /// QEMU's IOThread default, 32 us; 0 never polls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_max_ns: Option<u64>,
}

/// `-drive discard=`: whether the guest's discards may free space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiscardConfig {
    #[default]
    Ignore,
    Unmap,
}

/// `-drive detect-zeroes=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DetectZeroesConfig {
    #[default]
    Off,
    On,
    Unmap,
}

/// `-drive aio=`: the block I/O engine. `native` (Linux AIO in QEMU) runs
/// on io_uring, the asynchronous engine Casemate has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AioConfig {
    Threads,
    Native,
    IoUring,
}

fn yes() -> bool {
    true
}

/// How a virtio device reaches the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Mmio,
    Pci,
}

impl Transport {
    /// `mmio` or `pci`, the QEMU device name a kind has on this transport.
    pub fn pick(self, mmio: &'static str, pci: &'static str) -> &'static str {
        match self {
            Self::Mmio => mmio,
            Self::Pci => pci,
        }
    }

    /// The QEMU device name of a block device on this transport.
    pub fn blk_device(self) -> &'static str {
        self.pick("virtio-blk-device", "virtio-blk-pci")
    }
}

fn one() -> u16 {
    1
}

/// `-drive cache=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheConfig {
    #[default]
    Writeback,
    None,
    Writethrough,
    Unsafe,
}

impl Default for VmConfig {
    fn default() -> Self {
        Self {
            machine: MachineKind::Microvm,
            cpu: CpuModel::Host,
            smp: SmpConfig::default(),
            memory: 128 << 20,
            memory_backend: None,
            thp: true,
            mem_lock: false,
            kernel: None,
            initrd: None,
            append: String::new(),
            serial: SerialConfig::Stdio,
            rtc: RtcConfig::default(),
            no_reboot: false,
            drives: Vec::new(),
            devices: Vec::new(),
            fdsets: Vec::new(),
            acpi: None,
            sandbox: SandboxConfig::default(),
            control: ControlConfig::default(),
            display: DisplayConfig::None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MachineKind {
    Microvm,
    Pc,
    Q35,
    Isapc,
}

impl VmConfig {
    /// The backend guest RAM is built from: the named one or the implicit one.
    pub fn ram_backend(&self) -> MemoryBackendConfig {
        self.memory_backend
            .clone()
            .unwrap_or_else(|| MemoryBackendConfig::implicit(self.memory))
    }
}

impl VmConfig {
    /// Whether the guest gets ACPI tables: as asked, else the machine's
    /// default.
    pub fn acpi_on(&self) -> bool {
        self.acpi
            .unwrap_or_else(|| crate::machine::model(self.machine).acpi_default)
    }
}

/// The CPUID template (`-cpu`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CpuModel {
    /// Everything KVM supports on this host.
    Host,
    /// QEMU's `kvm64` baseline.
    Kvm64,
    /// QEMU's `qemu64` baseline.
    Qemu64,
}

/// `-smp cpus=N,sockets=S,cores=C,threads=T`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmpConfig {
    pub cpus: u32,
    pub sockets: u32,
    pub cores: u32,
    pub threads: u32,
}

impl Default for SmpConfig {
    fn default() -> Self {
        Self {
            cpus: 1,
            sockets: 1,
            cores: 1,
            threads: 1,
        }
    }
}

/// Where COM1's output goes (`-serial`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SerialConfig {
    Stdio,
    File(PathBuf),
    None,
    /// A listening unix or tcp socket; its one client is the console.
    Socket(control::Endpoint),
    /// A new pseudo-terminal, named on stderr.
    Pty,
}

/// `-rtc base=utc|localtime|DATETIME`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RtcConfig {
    #[default]
    Utc,
    Localtime,
    /// Seconds since the Unix epoch, UTC.
    At(i64),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trips_and_rejects_unknown_fields() {
        let c = VmConfig {
            smp: SmpConfig {
                cpus: 2,
                sockets: 1,
                cores: 2,
                threads: 1,
            },
            serial: SerialConfig::File("/tmp/console".into()),
            rtc: RtcConfig::At(86_400),
            ..Default::default()
        };
        let text = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<VmConfig>(&text).unwrap(), c);
        let partial: VmConfig = serde_json::from_str(r#"{"memory": 1073741824}"#).unwrap();
        assert_eq!(partial.memory, 1 << 30);
        assert_eq!(partial.smp.cpus, 1, "missing fields take defaults");
        let e = serde_json::from_str::<VmConfig>(r#"{"memroy": 1}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `memroy`"), "{e}");
    }
}
