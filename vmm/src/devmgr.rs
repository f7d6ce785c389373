//! The one owner of the buses and the devices on them.
//!
//! Builds the legacy platform for a machine: COM1, the i8042, the CMOS RTC,
//! the ACPI sleep registers and the POST-code sink, each wired to its
//! interrupt through an irqfd. Later issues add PCI and virtio here.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use casemate_devices::legacy::{self, AcpiSleep, Cmos, RtcBase, Serial, Sink, I8042};
use casemate_devices::virtio::blk::{BlockConfig, BlockDevice, CacheMode};
use casemate_devices::virtio::mmio::{MmioTransport, MMIO_LEN, QUEUE_NOTIFY};
use casemate_devices::virtio::WorkerHost;
use casemate_devices::{Bus, BusError};
use casemate_disk::{create_overlay, open_image, DiskError, DiskImage, Format, OpenOptions};
use kvm_ioctls::IoEventAddress;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::arch::acpi::VirtioMmioSlot;
use crate::arch::layout::{RamLayout, ACPI_SLEEP_PORT};
use crate::config::{CacheConfig, DriveConfig, RtcConfig, SerialConfig, VmConfig};
use crate::vstate::exit::Buses;
use crate::vstate::vm::{Vm, VmError};
use crate::workers::Workers;

const COM1: u64 = 0x3f8;
const COM1_IRQ: u32 = 4;
const I8042_BASE: u64 = 0x60;
const I8042_IRQ: u32 = 1;
const CMOS_BASE: u64 = 0x70;
const POST_PORT: u64 = 0x80;
/// virtio-mmio windows, as on QEMU's microvm: 512 bytes each from here.
pub const VIRTIO_MMIO_BASE: u64 = 0xfeb0_0000;
/// IOAPIC pins for virtio-mmio devices: everything the legacy devices and
/// the RTC's conventional IRQ 8 leave free.
const VIRTIO_GSIS: [u32; 16] = [5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21];

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
    pio.insert(
        "acpi-sleep",
        ACPI_SLEEP_PORT.into(),
        legacy::acpi_sleep::LEN,
        Arc::new(Mutex::new(AcpiSleep)),
    )?;
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

fn cache_mode(c: CacheConfig) -> CacheMode {
    match c {
        CacheConfig::Writeback => CacheMode::Writeback,
        CacheConfig::None => CacheMode::None,
        CacheConfig::Writethrough => CacheMode::Writethrough,
        CacheConfig::Unsafe => CacheMode::Unsafe,
    }
}

/// The kernel command-line words that announce `slots` to a guest without
/// ACPI (`-machine acpi=off`), each with a leading space, as Linux parses
/// them: `virtio_mmio.device=<size>@<base>:<irq>`.
pub fn virtio_mmio_cmdline(slots: &[VirtioMmioSlot]) -> String {
    slots
        .iter()
        .map(|s| format!(" virtio_mmio.device={}@{:#x}:{}", s.len, s.base, s.gsi))
        .collect()
}

/// One virtio-mmio block device per drive on the MMIO bus; returns the
/// transports for the DSDT to announce (see `acpi::VirtioMmioSlot` for why
/// not the kernel command line).
pub fn add_virtio_mmio_drives(
    vm: &Vm,
    config: &VmConfig,
    mem: &GuestMemoryMmap,
    workers: &Arc<Workers>,
    buses: &mut Buses,
) -> Result<Vec<VirtioMmioSlot>, DevError> {
    let mut slots = Vec::new();
    for (i, (d, gsi)) in config.drives.iter().zip(VIRTIO_GSIS).enumerate() {
        let base = VIRTIO_MMIO_BASE + i as u64 * MMIO_LEN;
        let disk = open_disk(d)?;
        let dev = BlockDevice::new(BlockConfig {
            name: format!("blk{i}"),
            serial: d.id.clone(),
            disk,
            read_only: d.read_only,
            cache: cache_mode(d.cache),
            num_queues: d.num_queues,
        });
        let mut notify = Vec::new();
        for q in 0..u32::from(d.num_queues.max(1)) {
            let evt = EventFd::new(EFD_NONBLOCK).map_err(|source| DevError::EventFd {
                id: d.id.clone(),
                source,
            })?;
            // Notifications never reach the exit loop: KVM signals the
            // worker's eventfd directly when the guest writes this queue's
            // index to QueueNotify.
            vm.fd
                .register_ioevent(&evt, &IoEventAddress::Mmio(base + QUEUE_NOTIFY), q)
                .map_err(|source| DevError::IoEvent {
                    id: d.id.clone(),
                    source,
                })?;
            notify.push(evt);
        }
        let line = Arc::new(vm.irqfd("virtio-mmio", gsi)?);
        let host: Arc<dyn WorkerHost> = workers.clone();
        let t = MmioTransport::new(Box::new(dev), mem.clone(), notify, line, host);
        buses.mmio.insert(
            &format!("virtio-mmio-{i}"),
            base,
            MMIO_LEN,
            Arc::new(Mutex::new(t)),
        )?;
        slots.push(VirtioMmioSlot {
            base,
            len: MMIO_LEN,
            gsi,
        });
    }
    Ok(slots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_words_for_guests_without_acpi() {
        let slots = [
            VirtioMmioSlot {
                base: 0xfeb0_0000,
                len: 0x200,
                gsi: 5,
            },
            VirtioMmioSlot {
                base: 0xfeb0_0200,
                len: 0x200,
                gsi: 6,
            },
        ];
        assert_eq!(
            virtio_mmio_cmdline(&slots),
            " virtio_mmio.device=512@0xfeb00000:5 virtio_mmio.device=512@0xfeb00200:6"
        );
        assert_eq!(virtio_mmio_cmdline(&[]), "");
    }
}
