//! Validated config -> a running VM -> how it ended. Set-up steps read top to
//! bottom; a reset that should reboot the guest builds the VM afresh.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::arch::cpuid::{self, VcpuIdentity};
use crate::arch::layout::{
    self, RamLayout, ACPI_START, CMDLINE_ROOM, MPTABLE, PCI_ECAM, PCI_ECAM_SIZE, PCI_MMIO64_SIZE,
};
use crate::arch::regs::{self, Entry};
use crate::arch::topology::Topology;
use crate::arch::{acpi, mptable};
use crate::boot::{self, BootError};
use crate::config::{MachineKind, VmConfig};
use crate::devmgr::{self, DevError};
use crate::loader::{self, KernelKind, LoadError};
use crate::memory::{self, MemoryError, RamOptions};
use crate::vstate::exit::Outcome;
use crate::vstate::kick;
use crate::vstate::vcpu::{VcpuRunner, VcpuStop};
use crate::vstate::vm::{Vm, VmError};
use crate::workers::Workers;

/// bzImage `xloadflags` bit: the kernel has a 64-bit entry at +0x200.
const XLF_KERNEL_64: u16 = 1;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Boot(#[from] BootError),
    #[error(transparent)]
    Devices(#[from] DevError),
    #[error("kernel {0}: bzImage has no 64-bit entry point (xloadflags)")]
    No64BitEntry(String),
    #[error("writing {0} to guest memory")]
    Tables(&'static str, #[source] vm_memory::GuestMemoryError),
    #[error("configuring vCPU {index}")]
    Vcpu {
        index: u32,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("starting vCPU thread {0}")]
    Thread(u32, #[source] std::io::Error),
    #[error("installing the vCPU kick signal handler")]
    Signal(#[source] vmm_sys_util::errno::Error),
    #[error("every vCPU thread ended without reporting why")]
    NoVcpuReport,
}

/// How a VM run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmEnd {
    PowerOff,
    /// A reset with `-no-reboot`.
    Reset,
    TripleFault {
        vcpu: u32,
        regs: String,
    },
    Fatal {
        vcpu: u32,
        why: String,
        regs: String,
    },
}

/// Run the VM until it powers off or fails, rebooting on reset unless the
/// config says not to. `probe` is the embedded guest, used without -kernel.
pub fn run(config: &VmConfig, probe: &[u8]) -> Result<VmEnd, BuildError> {
    kick::install().map_err(BuildError::Signal)?;
    let console = devmgr::Console::open(&config.serial)?;
    loop {
        match boot_once(config, &console, probe)? {
            VmEnd::Reset if !config.no_reboot => log::info!("guest reset: rebooting"),
            end => return Ok(end),
        }
    }
}

fn vcpu_err(index: u32) -> impl Fn(Box<dyn std::error::Error + Send + Sync>) -> BuildError {
    move |source| BuildError::Vcpu { index, source }
}

fn boot_once(
    config: &VmConfig,
    console: &devmgr::Console,
    probe: &[u8],
) -> Result<VmEnd, BuildError> {
    let kvm = Vm::open_kvm()?;
    let ram = RamLayout::new(config.memory);
    // With prealloc=on the pages are populated in the background while the
    // VM, its devices and vCPUs are created; guest RAM is written only
    // after `populated` (on kernels without MADV_POPULATE_WRITE the
    // population writes zeros over it).
    let mut guest_ram = memory::build(
        &config.ram_backend(),
        &ram.ranges(),
        RamOptions {
            thp: config.thp,
            mem_lock: config.mem_lock,
            sysfs: Path::new(memory::hugetlb::SYSFS),
        },
    )?;
    let vm = Vm::new(kvm)?;
    vm.map_memory(&guest_ram.mem)?;
    vm.create_irqchip()?;

    let topo = Topology::new(&config.smp);
    let apic_ids: Vec<u32> = (0..config.smp.cpus).map(|i| topo.apic_id(i)).collect();
    let workers = Arc::new(Workers::default());
    let mut buses = devmgr::build(&vm, config, console, &ram)?;
    let virtio_mmio = match config.machine {
        MachineKind::Microvm => {
            devmgr::add_virtio_mmio_drives(&vm, config, &guest_ram.mem, &workers, &mut buses)?
        }
        MachineKind::Pc | MachineKind::Q35 => {
            devmgr::add_pci(&vm, config, &guest_ram.mem, &ram, &workers, &mut buses)?;
            Vec::new()
        }
    };
    let buses = Arc::new(buses);

    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel::<VcpuStop>();
    let supported = vm
        .kvm
        .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .map_err(|e| BuildError::Vm(VmError::Kvm("get_supported_cpuid", e)))?;
    let mut runners = Vec::new();
    for (index, &apic_id) in apic_ids.iter().enumerate() {
        let index = index as u32;
        let err = vcpu_err(index);
        let fd = vm
            .fd
            .create_vcpu(apic_id.into())
            .map_err(|e| err(e.into()))?;
        let tsc_khz = fd.get_tsc_khz().unwrap_or(0);
        let mut entries = supported.as_slice().to_vec();
        cpuid::patch(
            &mut entries,
            &VcpuIdentity {
                apic_id,
                topology: topo,
                model: config.cpu,
                tsc_khz,
            },
        );
        let table = kvm_bindings::CpuId::from_entries(&entries)
            .map_err(|e| err(format!("{e:?}").into()))?;
        fd.set_cpuid2(&table).map_err(|e| err(e.into()))?;
        regs::setup_msrs(&fd, index).map_err(|e| err(e.into()))?;
        regs::setup_fpu(&fd, index).map_err(|e| err(e.into()))?;
        regs::setup_lapic(&fd, index).map_err(|e| err(e.into()))?;
        runners.push(VcpuRunner {
            fd,
            index,
            buses: buses.clone(),
            stop: stop.clone(),
            events: tx.clone(),
        });
    }

    guest_ram.populated()?;
    let mem = &guest_ram.mem;
    let guest = GuestTables {
        apic_ids: &apic_ids,
        virtio_mmio: &virtio_mmio,
    };
    let entry = load_guest(config, probe, mem, &ram, &guest)?;
    if let Some(boot) = runners.first() {
        regs::setup_boot_vcpu(&boot.fd, boot.index, mem, entry)
            .map_err(|e| vcpu_err(boot.index)(e.into()))?;
    }
    drop(tx);
    let mut handles = Vec::new();
    for r in runners {
        let index = r.index;
        handles.push(r.spawn().map_err(|e| BuildError::Thread(index, e))?);
    }
    let first = rx.recv();
    stop.store(true, Ordering::Release);
    handles.iter().for_each(kick::kick);
    for h in handles {
        // A panicking vCPU thread aborts the process (panic = abort).
        let _ = h.join();
    }
    // In-flight requests finish before the VM is torn down.
    workers.stop_all();
    let VcpuStop {
        index,
        outcome,
        regs,
    } = first.map_err(|_| BuildError::NoVcpuReport)?;
    let regs = regs.unwrap_or_default();
    Ok(match outcome {
        Outcome::PowerOff => VmEnd::PowerOff,
        Outcome::Reset => VmEnd::Reset,
        Outcome::TripleFault => VmEnd::TripleFault { vcpu: index, regs },
        Outcome::Fatal(why) => VmEnd::Fatal {
            vcpu: index,
            why,
            regs,
        },
        Outcome::Continue => VmEnd::Fatal {
            vcpu: index,
            why: "vCPU stopped without a reason".into(),
            regs,
        },
    })
}

/// What the firmware tables describe besides memory.
struct GuestTables<'a> {
    apic_ids: &'a [u32],
    virtio_mmio: &'a [acpi::VirtioMmioSlot],
}

/// Kernel, initrd, firmware tables and boot info into guest memory; returns
/// how the boot vCPU enters.
fn load_guest(
    config: &VmConfig,
    probe: &[u8],
    mem: &GuestMemoryMmap,
    ram: &RamLayout,
    guest: &GuestTables<'_>,
) -> Result<Entry, BuildError> {
    let apic_ids = guest.apic_ids;
    // Without ACPI (as QEMU's microvm,acpi=off) the transports go on the
    // command line; Linux then has its legacy PIC, so IRQ n is GSI n.
    let cmdline = if config.acpi {
        config.append.clone()
    } else {
        format!(
            "{}{}",
            config.append,
            devmgr::virtio_mmio_cmdline(guest.virtio_mmio)
        )
    };
    let cmdline = cmdline.as_str();
    let (path, image) = match &config.kernel {
        Some(p) => (p.clone(), None),
        None => ("<embedded probe>".into(), Some(probe)),
    };
    let kernel = loader::load_kernel(mem, ram, &path, image)?;

    let mmio64_start = layout::pci_mmio64_start(ram);
    let mmio64 = (mmio64_start, mmio64_start + PCI_MMIO64_SIZE);
    let (platform, ecam) = match config.machine {
        MachineKind::Microvm => (acpi::Platform::Microvm, None),
        MachineKind::Pc => (
            acpi::Platform::Pci {
                ecam: false,
                mmio64,
            },
            None,
        ),
        MachineKind::Q35 => (
            acpi::Platform::Pci { ecam: true, mmio64 },
            Some((PCI_ECAM, PCI_ECAM_SIZE)),
        ),
    };
    let mut rsdp = 0;
    if config.acpi {
        let tables = acpi::build(ACPI_START, apic_ids, platform, guest.virtio_mmio);
        mem.write_slice(&tables.bytes, GuestAddress(tables.base))
            .map_err(|e| BuildError::Tables("ACPI tables", e))?;
        rsdp = tables.rsdp;
    }
    let mp = mptable::build(MPTABLE, apic_ids);
    mem.write_slice(&mp, GuestAddress(MPTABLE))
        .map_err(|e| BuildError::Tables("MP table", e))?;
    let e820 = layout::e820(ram, ecam);

    let (cmdline_max, initrd_limit) = match kernel.kind {
        KernelKind::BzImage { header, .. } => {
            let size = if header.version >= 0x206 {
                header.cmdline_size as usize + 1
            } else {
                256
            };
            (
                size.min(CMDLINE_ROOM),
                u64::from(header.initrd_addr_max) + 1,
            )
        }
        KernelKind::Elf { .. } => (boot::ELF_CMDLINE_MAX, layout::MMIO_HOLE_START),
    };
    boot::write_cmdline(mem, cmdline, cmdline_max)?;
    let initrd = match &config.initrd {
        Some(p) => Some(loader::load_initrd(mem, ram, p, kernel.end, initrd_limit)?),
        None => None,
    };
    let cmdline_len = cmdline.len() + 1;
    Ok(match kernel.kind {
        KernelKind::Elf {
            pvh_entry: Some(entry),
            ..
        } => Entry::Pvh {
            entry,
            start_info: boot::write_pvh(mem, &e820, rsdp, initrd)?,
        },
        KernelKind::Elf {
            entry,
            pvh_entry: None,
        } => Entry::Linux64 {
            entry,
            zero_page: boot::write_zero_page(mem, None, &e820, rsdp, cmdline_len, initrd)?,
        },
        KernelKind::BzImage { load, header } => {
            if header.xloadflags & XLF_KERNEL_64 == 0 {
                return Err(BuildError::No64BitEntry(path.display().to_string()));
            }
            Entry::Linux64 {
                entry: load + 0x200,
                zero_page: boot::write_zero_page(
                    mem,
                    Some(header),
                    &e820,
                    rsdp,
                    cmdline_len,
                    initrd,
                )?,
            }
        }
    })
}
