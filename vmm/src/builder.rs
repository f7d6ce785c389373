//! Validated config -> a running VM -> how it ended. `run` opens the
//! process's resources once, then each boot (the first, and one per guest
//! reset unless `-no-reboot`) runs on a fresh control thread (`cm-ctl`):
//! VM, devices and vCPUs are rebuilt from those resources, set-up steps
//! read top to bottom, and the control loop serves the vCPUs until one
//! stops. Meanwhile the main thread waits on the termination signals
//! (`signals`) and forwards them to the control loop, which ends the boot
//! like a power-off; every image is flushed before `run` returns. The
//! monitors (`qmp`) run on their own thread for the whole process and
//! reach each boot through the `Hub`; the lifecycle events (SHUTDOWN,
//! RESET) are emitted here, where each boot's end is known.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::sync::Arc;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::arch::cpuid::{self, VcpuIdentity};
use crate::arch::layout::{self, RamLayout, ACPI_START, CMDLINE_ROOM, MPTABLE};
use crate::arch::regs::{self, Entry};
use crate::arch::topology::Topology;
use crate::arch::{acpi, mptable};
use crate::boot::{self, BootError};
use crate::config::{SerialConfig, ValidConfig};
use crate::control::{self, BootEnd, CtlMsg, HostAction};
use crate::devmgr::kinds::blk::block_device;
use crate::devmgr::{self, DevError, DeviceManager, Wiring};
use crate::loader::{self, KernelKind, LoadError};
use crate::machine::{self, MachineModel};
use crate::memory::MemoryError;
use crate::qmp::{self, commands::VmInfo, Hub};
use crate::resources::{ResourceError, Resources};
use crate::signals::{self, TermSignals, Termination};
use crate::threads::{self, spawn_with_role, Role};
use crate::vstate::exit::Outcome;
use crate::vstate::intx::ResampleWorker;
use crate::vstate::kick;
use crate::vstate::platform::KvmHypervisor;
use crate::vstate::reaper;
use crate::vstate::vcpu::{VcpuRunner, VcpuStop};
use crate::vstate::vm::{Vm, VmError};
use crate::workers::Workers;
use casemate_devices::virtio::WorkerHost;

/// bzImage `xloadflags` bit: the kernel has a 64-bit entry at +0x200.
const XLF_KERNEL_64: u16 = 1;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Resources(#[from] ResourceError),
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
    #[error("starting the {0} thread")]
    Service(&'static str, #[source] std::io::Error),
    #[error("installing the vCPU kick signal handler")]
    Signal(#[source] vmm_sys_util::errno::Error),
    #[error(transparent)]
    Sandbox(#[from] threads::SandboxError),
    #[error("every vCPU thread ended without reporting why")]
    NoVcpuReport,
    #[error("setting up the monitors")]
    Monitor(#[source] std::io::Error),
    #[error(transparent)]
    Listen(#[from] qmp::listen::ListenError),
    #[error(transparent)]
    Process(#[from] crate::process::ProcessError),
    #[error("watching for termination signals")]
    TermSignals(#[source] std::io::Error),
    #[error("drive {id}: flushing the image at exit")]
    Flush {
        id: String,
        #[source]
        source: casemate_disk::DiskError,
    },
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
    /// SIGTERM, SIGINT or SIGHUP ended it (as a power-off: exit 0).
    Signal(Termination),
    /// A monitor's `system_reset` with `-no-reboot`.
    HostReset,
    /// A monitor's `quit`.
    Quit,
}

/// Run the VM until it powers off or fails, rebooting on reset unless the
/// config says not to. `probe` is the embedded guest, used without -kernel.
pub fn run(config: ValidConfig, probe: &'static [u8]) -> Result<VmEnd, BuildError> {
    // Both fork: before any thread starts.
    let daemon = config
        .control
        .daemonize
        .then(crate::process::daemonize)
        .transpose()?;
    let _pidfile = config
        .control
        .pidfile
        .as_deref()
        .map(crate::process::pidfile)
        .transpose()?;
    if let Some(p) = &config.control.process_name {
        set_process_name(p);
    }
    // Before any thread starts, so that every thread inherits the mask.
    let signals =
        TermSignals::block_for(config.control.daemonize).map_err(BuildError::TermSignals)?;
    threads::install(config.sandbox.seccomp)?;
    kick::install().map_err(BuildError::Signal)?;
    let mut res = Resources::open(&config)?;
    let keys = res.keyboard.clone();
    if let Some(d) = &mut res.display {
        d.start(Some(keys)).map_err(ResourceError::from)?;
    }
    let res = Arc::new(res);
    let hub = Arc::new(Hub::new(config.control.start_paused).map_err(BuildError::Monitor)?);
    if let Some(d) = &res.display {
        hub.set_screendump(Arc::new(crate::display::QmpScreendump::new(
            d,
            &config.sandbox,
        )));
    }
    let listeners = qmp::listen::open(&config.control.monitors)?;
    // The pid file and unix monitor sockets go when the process ends.
    let mut leftovers: Vec<&std::path::Path> =
        config.control.pidfile.iter().map(|p| p.as_path()).collect();
    leftovers.extend(
        config
            .control
            .monitors
            .iter()
            .filter_map(|m| match &m.endpoint {
                crate::config::Endpoint::Unix(p) => Some(p.as_path()),
                _ => None,
            }),
    );
    if let SerialConfig::Socket(crate::config::Endpoint::Unix(p)) = &config.serial {
        leftovers.push(p.as_path());
    }
    let _remover = if leftovers.is_empty() {
        None
    } else {
        crate::process::Remover::spawn(&leftovers)
            .map_err(|e| log::warn!("{leftovers:?} will stay after exit: {e}"))
            .ok()
    };
    // The keyboard reaches COM1 when the console is on stdio; the
    // terminal is raw until this guard drops, on every return below.
    let console = config.serial == SerialConfig::Stdio
        && !config.control.daemonize
        && qmp::tty::stdin_has_input();
    let _tty = console.then(qmp::tty::RawTty::enter).flatten();
    if let Some(d) = daemon {
        d.ready()?;
    }
    // Every file and socket is open: from here on the process needs no path.
    threads::confine_main(&config)?;
    let link = res.console.link();
    let monitors = (!listeners.is_empty() || console || link.is_some())
        .then(|| {
            let info = VmInfo::new(&config, &res);
            qmp::server::start(hub.clone(), info, listeners, console, link)
        })
        .transpose()
        .map_err(|e| BuildError::Service("QMP", e))?;
    let config = Arc::new(config);
    let end = boot_until_end(&config, &res, &signals, probe, &hub);
    // Images are flushed whatever the end (qcow2: data, refcounts, then
    // L2/L1); the devices that wrote them are gone with their boot.
    let flushed = flush_images(&config, &res);
    if let Some(l) = res.console.link() {
        l.drain();
    }
    if let Ok(end) = &end {
        if let Some((guest, reason)) = shutdown_cause(end) {
            hub.emit(
                "SHUTDOWN",
                Some(serde_json::json!({"guest": guest, "reason": reason})),
            );
        }
    }
    if let Some(m) = monitors {
        // The SHUTDOWN event reaches the clients before they are closed.
        m.finish();
    }
    match (end, flushed) {
        (Ok(end), Ok(())) => Ok(end),
        (Err(e), Err(f)) => {
            log::error!("{f}: {}", f.source_text());
            Err(e)
        }
        (Err(e), _) | (_, Err(e)) => Err(e),
    }
}

/// `-name process=`: the calling (main) thread's name, cut to the 15
/// bytes the kernel keeps, as QEMU does.
fn set_process_name(name: &str) {
    let mut buf = [0u8; 16];
    let n = name.len().min(15);
    buf[..n].copy_from_slice(&name.as_bytes()[..n]);
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, buf.as_ptr()) };
}

/// QMP's SHUTDOWN `guest` and `reason` for how the VM ended.
fn shutdown_cause(end: &VmEnd) -> Option<(bool, &'static str)> {
    Some(match end {
        VmEnd::PowerOff => (true, "guest-shutdown"),
        VmEnd::Reset | VmEnd::TripleFault { .. } => (true, "guest-reset"),
        VmEnd::HostReset => (false, "host-qmp-system-reset"),
        VmEnd::Quit => (false, "host-qmp-quit"),
        VmEnd::Signal(_) => (false, "host-signal"),
        VmEnd::Fatal { .. } => return None,
    })
}

impl BuildError {
    /// The error's cause, for a log line when a second error is reported.
    fn source_text(&self) -> String {
        std::error::Error::source(self).map_or_else(String::new, ToString::to_string)
    }
}

/// Boot (again after each guest reset unless `-no-reboot`) until the VM
/// ends, forwarding termination signals to the running boot.
fn boot_until_end(
    config: &Arc<ValidConfig>,
    res: &Arc<Resources>,
    signals: &TermSignals,
    probe: &'static [u8],
    hub: &Arc<Hub>,
) -> Result<VmEnd, BuildError> {
    use std::os::fd::AsRawFd;
    loop {
        if let Some(t) = signals.take() {
            return Ok(VmEnd::Signal(t));
        }
        if hub.quit_asked() {
            return Ok(VmEnd::Quit);
        }
        let (c, r, h) = (config.clone(), res.clone(), hub.clone());
        let (tx, rx) = mpsc::channel::<CtlMsg>();
        let ctl_tx = tx.clone();
        let done = vmm_sys_util::eventfd::EventFd::new(libc::EFD_CLOEXEC)
            .map_err(|e| BuildError::Service("control", e))?;
        let done_ctl = done
            .try_clone()
            .map_err(|e| BuildError::Service("control", e))?;
        let ctl = spawn_with_role(Role::Ctl, "cm-ctl".into(), move || {
            let end = boot_once(&c, &r, probe, ctl_tx, &rx, &h);
            // Wakes the main thread to join.
            let _ = done_ctl.write(1);
            end
        })
        .map_err(|e| BuildError::Service("control", e))?;
        let mut signalled = None;
        loop {
            let ready = signals::wait_readable(&[signals.as_raw_fd(), done.as_raw_fd()])
                .map_err(BuildError::TermSignals)?;
            if ready[0] {
                if let Some(t) = signals.take() {
                    signalled.get_or_insert(t);
                    // A boot that already ended has dropped its receiver.
                    let _ = tx.send(CtlMsg::Terminate(t));
                }
            }
            if ready[1] {
                break;
            }
        }
        // A panicking thread aborts the process (panic = abort).
        let end = ctl.join().map_err(|_| BuildError::NoVcpuReport)??;
        match (end, signalled) {
            // The guest's own end came first; a signal after it changes
            // nothing but stops a reboot.
            (VmEnd::Reset | VmEnd::HostReset, Some(t)) if !config.no_reboot => {
                return Ok(VmEnd::Signal(t))
            }
            (VmEnd::Reset, None) if !config.no_reboot => {
                log::info!("guest reset: rebooting");
                hub.emit(
                    "RESET",
                    Some(serde_json::json!({"guest": true, "reason": "guest-reset"})),
                );
            }
            (VmEnd::HostReset, None) if !config.no_reboot => {
                hub.emit(
                    "RESET",
                    Some(serde_json::json!({"guest": false, "reason": "host-qmp-system-reset"})),
                );
            }
            (end, _) => return Ok(end),
        }
    }
}

/// Flush every drive's image, reporting the first failure.
fn flush_images(config: &ValidConfig, res: &Resources) -> Result<(), BuildError> {
    let mut first = Ok(());
    for (d, disk) in config.drives.iter().zip(&res.disks) {
        if disk.is_read_only() {
            continue;
        }
        if let Err(source) = disk.flush() {
            let e = BuildError::Flush {
                id: d.id.clone(),
                source,
            };
            if first.is_ok() {
                first = Err(e);
            } else {
                log::error!("{e}: {}", e.source_text());
            }
        }
    }
    first
}

fn vcpu_err(index: u32) -> impl Fn(Box<dyn std::error::Error + Send + Sync>) -> BuildError {
    move |source| BuildError::Vcpu { index, source }
}

/// The devices of this boot, placed by the device manager.
fn place_devices(
    config: &ValidConfig,
    res: &Resources,
    hv: &KvmHypervisor<'_>,
    machine: &'static MachineModel,
) -> Result<DeviceManager, BuildError> {
    let mut dm = DeviceManager::new(machine);
    dm.add_legacy(hv, &res.console, config.rtc, &res.layout)?;
    let w = Wiring { hv, mem: &res.mem };
    for (i, (d, disk)) in config.drives.iter().zip(&res.disks).enumerate() {
        if !d.is_ata(machine) {
            dm.add_virtio(&w, &d.id, Box::new(block_device(i, d, disk)), d.transport)?;
        }
    }
    if machine.ide_buses > 0 {
        let units = devmgr::ata::ata_units(&config.drives, &res.disks, machine);
        if machine.ahci {
            dm.add_ahci(hv, &res.mem, units)?;
        } else {
            dm.add_ide(hv, &res.mem, units)?;
        }
    }
    let mut count: HashMap<&str, usize> = HashMap::new();
    let virtio = config
        .devices
        .iter()
        .filter(|d| d.assigned().is_none() && d.host_assigned().is_none());
    for (d, f) in virtio.zip(&res.devices) {
        let n = count.entry(f.kind()).or_default();
        let name = format!("{}{n}", f.kind());
        *n += 1;
        let k = d.kind();
        match f.pci_display() {
            Some(disp) => dm.add_display(&w, k.id(), name, disp)?,
            None => dm.add_virtio(&w, k.id(), f.build(name), k.transport())?,
        }
    }
    let assigned = config.devices.iter().filter_map(|d| d.assigned());
    for (i, (c, dev)) in assigned.zip(&res.assigned).enumerate() {
        dm.add_vfio(&w, &c.id, format!("vfio-user{i}"), dev.clone(), dev.clone())?;
    }
    let host = config.devices.iter().filter_map(|d| d.host_assigned());
    for (i, (c, dev)) in host.zip(&res.host_assigned).enumerate() {
        dm.add_vfio(&w, &c.id, format!("vfio{i}"), dev.clone(), dev.clone())?;
    }
    dm.finish()?;
    res.keyboard.attach(dm.i8042());
    Ok(dm)
}

/// Register `ports` as coalesced PIO zones and map the VM's ring through
/// its first vCPU (devices that register MMIO zones themselves, AHCI, need
/// the ring too).
fn coalesced_ring(
    vm: &Vm,
    vcpu: &kvm_ioctls::VcpuFd,
    ports: &[(u64, u32)],
) -> Result<crate::vstate::coalesced::CoalescedRing, BuildError> {
    for &(port, len) in ports {
        vm.fd
            .register_coalesced_mmio(kvm_ioctls::IoEventAddress::Pio(port), len)
            .map_err(|e| BuildError::Vm(VmError::Kvm("register_coalesced_mmio", e)))?;
    }
    crate::vstate::coalesced::CoalescedRing::map(vcpu)
        .map_err(|e| BuildError::Vm(VmError::Kvm("mapping the coalesced I/O ring", e.into())))
}

fn boot_once(
    config: &ValidConfig,
    res: &Resources,
    probe: &[u8],
    tx: mpsc::Sender<CtlMsg>,
    rx: &mpsc::Receiver<CtlMsg>,
    hub: &Hub,
) -> Result<VmEnd, BuildError> {
    let vm = Vm::new(&res.kvm)?;
    let end = run_vm(config, res, probe, &vm, tx, rx, hub);
    hub.set_boot(Default::default());
    // A boot that ends the process leaves its VM to the exit reaper, so
    // nobody waits for KVM's teardown; a reboot closes it here.
    let rebooting = matches!(end, Ok(VmEnd::Reset | VmEnd::HostReset)) && !config.no_reboot;
    if !rebooting {
        reaper::park(vm.fd.clone());
    }
    end
}

fn run_vm(
    config: &ValidConfig,
    res: &Resources,
    probe: &[u8],
    vm: &Vm,
    tx: mpsc::Sender<CtlMsg>,
    rx: &mpsc::Receiver<CtlMsg>,
    hub: &Hub,
) -> Result<VmEnd, BuildError> {
    let machine = machine::model(config.machine);
    vm.map_memory(&res.mem)?;
    vm.create_irqchip()?;

    let topo = Topology::new(&config.smp);
    let apic_ids: Vec<u32> = (0..config.smp.cpus).map(|i| topo.apic_id(i)).collect();
    let workers = Arc::new(Workers::default());
    let hv = KvmHypervisor::new(vm);
    let mut dm = place_devices(config, res, &hv, machine)?;
    for (name, w) in dm.take_display_workers() {
        workers
            .start(name, w)
            .map_err(|e| BuildError::Service("display refresh", e))?;
    }
    let intx = hv.take_intx();
    if !intx.is_empty() {
        workers
            .start("intx".into(), Box::new(ResampleWorker { lines: intx }))
            .map_err(|e| BuildError::Service("INTx resample", e))?;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let supported = &res.supported_cpuid;
    let mut runners = Vec::new();
    let mut coalesced = None;
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
        if coalesced.is_none() && dm.needs_coalesced_ring() {
            coalesced = Some(Arc::new(coalesced_ring(vm, &fd, dm.coalesced_pio())?));
        }
        runners.push(VcpuRunner {
            fd,
            index,
            buses: dm.buses.clone(),
            stop: stop.clone(),
            ctl: tx.clone(),
            coalesced: coalesced.clone(),
            pause: hub.pause.clone(),
        });
    }

    res.ram
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .populated()?;
    let mem = &res.mem;
    let guest = GuestTables {
        apic_ids: &apic_ids,
        virtio_mmio: &dm.mmio_slots(),
        machine,
    };
    let entry = load_guest(config, probe, res, &guest)?;
    if let Some(boot) = runners.first() {
        regs::setup_boot_vcpu(&boot.fd, boot.index, mem, entry)
            .map_err(|e| vcpu_err(boot.index)(e.into()))?;
    }
    hub.set_boot(qmp::BootLinks {
        ctl: Some(tx.clone()),
        pci: dm.pci_root().cloned(),
        serial: dm.serial(),
    });
    drop(tx);
    let mut handles = Vec::new();
    for r in runners {
        let index = r.index;
        handles.push(r.spawn().map_err(|e| BuildError::Thread(index, e))?);
    }
    let first = control::run(rx, &dm, workers.as_ref(), &stop, &hub.pause, handles);
    hub.set_boot(Default::default());
    // A monitor request that came after the loop ended is the next boot's.
    while let Ok(msg) = rx.try_recv() {
        if let CtlMsg::Host(a) = msg {
            hub.requeue(a);
        }
    }
    // In-flight requests finish before the VM is torn down.
    workers.stop_all();
    let first = match first.ok_or(BuildError::NoVcpuReport)? {
        BootEnd::Signal(t) => return Ok(VmEnd::Signal(t)),
        BootEnd::Host(HostAction::Quit) => return Ok(VmEnd::Quit),
        BootEnd::Host(_) => return Ok(VmEnd::HostReset),
        BootEnd::Vcpu(s) => s,
    };
    let VcpuStop {
        index,
        outcome,
        regs,
    } = first;
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
        Outcome::Continue | Outcome::Platform(_) => VmEnd::Fatal {
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
    machine: &'static MachineModel,
}

/// Kernel, initrd, firmware tables and boot info into guest memory; returns
/// how the boot vCPU enters.
fn load_guest(
    config: &ValidConfig,
    probe: &[u8],
    res: &Resources,
    guest: &GuestTables<'_>,
) -> Result<Entry, BuildError> {
    let (mem, ram): (&GuestMemoryMmap, &RamLayout) = (&res.mem, &res.layout);
    let apic_ids = guest.apic_ids;
    let acpi_on = config.acpi_on();
    // Without ACPI (as QEMU's microvm,acpi=off) the transports go on the
    // command line; Linux then has its legacy PIC, so IRQ n is GSI n.
    let cmdline = if acpi_on {
        config.append.clone()
    } else {
        format!(
            "{}{}",
            config.append,
            devmgr::virtio_mmio_cmdline(guest.virtio_mmio)
        )
    };
    let cmdline = cmdline.as_str();
    let (path, image) = match &res.kernel {
        Some(f) => (f.path.clone(), loader::KernelImage::File(&f.file)),
        None => ("<embedded probe>".into(), loader::KernelImage::Bytes(probe)),
    };
    let kernel = loader::load_kernel(mem, ram, &path, image, res.take_fresh_ram())?;

    let platform = guest.machine.acpi_platform(ram);
    let ecam = guest.machine.ecam();
    let mut rsdp = 0;
    if acpi_on {
        let tables = acpi::build(ACPI_START, apic_ids, platform, guest.virtio_mmio);
        mem.write_slice(&tables.bytes, GuestAddress(tables.base))
            .map_err(|e| BuildError::Tables("ACPI tables", e))?;
        rsdp = tables.rsdp;
    }
    let mp = mptable::build(MPTABLE, apic_ids, guest.machine.pci.is_some());
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
    let initrd = match &res.initrd {
        Some(f) => Some(loader::load_initrd(
            mem,
            ram,
            &f.path,
            &f.file,
            kernel.end,
            initrd_limit,
        )?),
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
