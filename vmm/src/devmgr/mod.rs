//! The one owner of the buses and the devices on them.
//!
//! Builds the legacy platform for a machine: COM1, the i8042, the CMOS RTC,
//! the ACPI sleep registers (microvm) or PM1 blocks (pc, q35) and the
//! POST-code sink, each wired to its interrupt through an irqfd; then the
//! machine's disks on virtio-mmio (microvm) or virtio-pci (pc, q35).

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;

mod pci;
mod virtio_mmio;

pub use pci::add_pci;
use std::sync::{Arc, Mutex};
pub use virtio_mmio::{add_virtio_mmio_drives, virtio_mmio_cmdline, VIRTIO_MMIO_BASE};

use casemate_devices::legacy::{self, AcpiPm, AcpiSleep, Cmos, RtcBase, Serial, Sink, I8042};
use casemate_devices::virtio::blk::{BlockConfig, BlockDevice, CacheMode};
use casemate_devices::{Bus, BusError};
use casemate_disk::{create_overlay, open_image, DiskError, DiskImage, Format, OpenOptions};

use crate::arch::layout::{RamLayout, ACPI_PM_PORT, ACPI_SLEEP_PORT};
use crate::config::{CacheConfig, DriveConfig, MachineKind, RtcConfig, SerialConfig, VmConfig};
use crate::vstate::exit::Buses;
use crate::vstate::vm::{Vm, VmError};

const COM1: u64 = 0x3f8;
const COM1_IRQ: u32 = 4;
const I8042_BASE: u64 = 0x60;
const I8042_IRQ: u32 = 1;
const CMOS_BASE: u64 = 0x70;
const POST_PORT: u64 = 0x80;

#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error("cannot create serial output file {path}")]
    SerialFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("wiring device interrupts")]
    Irq(#[from] VmError),
    #[error("placing a device on the bus")]
    Bus(#[from] BusError),
    #[error("drive {id}: cannot open {path}")]
    Disk {
        id: String,
        path: PathBuf,
        #[source]
        source: DiskError,
    },
    #[error("drive {id}: creating its queue eventfds")]
    EventFd {
        id: String,
        #[source]
        source: std::io::Error,
    },
    #[error("placing a PCI device")]
    Pci(#[from] casemate_devices::pci::PciError),
    #[error("drive {id}: the 32-bit PCI window is full")]
    PciSpace { id: String },
    #[error("drive {id}: building its virtio-pci function")]
    PciDevice {
        id: String,
        #[source]
        source: std::io::Error,
    },
    #[error("starting the INTx resample thread")]
    Thread(#[source] std::io::Error),
    #[error("drive {id}: registering a queue ioeventfd")]
    IoEvent {
        id: String,
        #[source]
        source: kvm_ioctls::Error,
    },
}

/// Where COM1's bytes go, opened once per `casemate` run so that a guest
/// reboot keeps appending to the same file instead of truncating it.
pub enum Console {
    Stdout,
    File(PathBuf, File),
    None,
}

impl Console {
    pub fn open(c: &SerialConfig) -> Result<Self, DevError> {
        Ok(match c {
            SerialConfig::Stdio => Console::Stdout,
            SerialConfig::None => Console::None,
            SerialConfig::File(path) => {
                let f = File::create(path).map_err(|source| DevError::SerialFile {
                    path: path.clone(),
                    source,
                })?;
                Console::File(path.clone(), f)
            }
        })
    }

    fn writer(&self) -> Result<Box<dyn Write + Send>, DevError> {
        Ok(match self {
            Console::Stdout => Box::new(std::io::stdout()),
            Console::None => Box::new(std::io::sink()),
            Console::File(path, f) => {
                Box::new(f.try_clone().map_err(|source| DevError::SerialFile {
                    path: path.clone(),
                    source,
                })?)
            }
        })
    }
}

/// The legacy devices of every machine type, on a fresh port-I/O bus.
pub fn build(
    vm: &Vm,
    config: &VmConfig,
    console: &Console,
    ram: &RamLayout,
) -> Result<Buses, DevError> {
    let mut pio = Bus::new();
    let com1_irq = Arc::new(vm.irqfd("COM1", COM1_IRQ)?);
    let serial = Serial::new(com1_irq, console.writer()?);
    pio.insert("com1", COM1, 8, Arc::new(Mutex::new(serial)))?;
    let kbd_irq = Arc::new(vm.irqfd("i8042", I8042_IRQ)?);
    pio.insert(
        "i8042",
        I8042_BASE,
        legacy::i8042::LEN,
        Arc::new(Mutex::new(I8042::new(kbd_irq))),
    )?;
    let base = match config.rtc {
        RtcConfig::Utc => RtcBase::Utc,
        RtcConfig::Localtime => RtcBase::LocalTime,
        RtcConfig::At(t) => RtcBase::At(t),
    };
    let cmos = Cmos::new(base, ram.low_end, ram.high_size);
    pio.insert(
        "cmos",
        CMOS_BASE,
        legacy::cmos::LEN,
        Arc::new(Mutex::new(cmos)),
    )?;
    if config.machine == MachineKind::Microvm {
        pio.insert(
            "acpi-sleep",
            ACPI_SLEEP_PORT.into(),
            legacy::acpi_sleep::LEN,
            Arc::new(Mutex::new(AcpiSleep)),
        )?;
    } else {
        pio.insert(
            "acpi-pm",
            ACPI_PM_PORT.into(),
            legacy::acpi_pm::LEN,
            Arc::new(Mutex::new(AcpiPm::default())),
        )?;
    }
    pio.insert("post", POST_PORT, 1, Arc::new(Mutex::new(Sink)))?;
    Ok(Buses {
        pio,
        mmio: Bus::new(),
    })
}

/// Open a drive's image as its config asks: format, read-only, O_DIRECT for
/// cache=none, and a discarded qcow2 overlay for snapshot mode.
fn open_disk(d: &DriveConfig) -> Result<Arc<dyn DiskImage>, DevError> {
    let err = |source| DevError::Disk {
        id: d.id.clone(),
        path: d.file.clone(),
        source,
    };
    let format = d.format.as_deref().and_then(Format::from_name);
    let image = if d.snapshot {
        create_overlay(&d.file, format, None).map_err(err)?
    } else {
        let opts = OpenOptions {
            format,
            read_only: d.read_only,
            direct: d.cache == CacheConfig::None,
            ..Default::default()
        };
        open_image(&d.file, &opts).map_err(err)?
    };
    Ok(Arc::from(image))
}

/// The virtio-blk device model for drive `index`, its image opened.
pub(crate) fn block_device(index: usize, d: &DriveConfig) -> Result<BlockDevice, DevError> {
    Ok(BlockDevice::new(BlockConfig {
        name: format!("blk{index}"),
        serial: d.id.clone(),
        disk: open_disk(d)?,
        read_only: d.read_only,
        cache: cache_mode(d.cache),
        num_queues: d.num_queues,
    }))
}

fn cache_mode(c: CacheConfig) -> CacheMode {
    match c {
        CacheConfig::Writeback => CacheMode::Writeback,
        CacheConfig::None => CacheMode::None,
        CacheConfig::Writethrough => CacheMode::Writethrough,
        CacheConfig::Unsafe => CacheMode::Unsafe,
    }
}
