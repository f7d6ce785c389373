//! Host resources opened once per `casemate` run, before the first boot:
//! the KVM fd, guest RAM (populated once), the console, the kernel and
//! initrd files, disk images (and their `-snapshot` overlays: a temp file
//! for an image given by path, a memfd for one given as an inherited fd),
//! entropy sources, and the inherited fds of `-add-fd`. A guest reboot rebuilds
//! the VM, its vCPUs and every device's state from these, and reopens
//! nothing: after start-up the VMM needs no path, which is what lets the
//! jailer hand everything over as fds. Owns no per-boot state.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use casemate_disk::{
    create_overlay_with, open_image, open_image_file_with, overlay_on_file_with, DiskImage, Format,
    HandedBacking, OpenOptions,
};
use kvm_ioctls::Kvm;

use crate::arch::layout::RamLayout;
use crate::config::fdset::fdset_of;
use crate::config::{CacheConfig, DriveConfig, FdSetConfig, ValidConfig};
use crate::devmgr::kinds::{self, DeviceFactory};
use crate::devmgr::{Console, DevError};
use crate::memory::{self, GuestRam, MemoryError, RamOptions};
use crate::vstate::vm::{Vm, VmError};

#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error(transparent)]
    Device(#[from] DevError),
    #[error("-smp: {cpus} cpus exceed this host's KVM limit of {max}")]
    TooManyCpus { cpus: u32, max: u32 },
    #[error("cannot open {what} {path}")]
    Open {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {path}: {why}")]
    FdSet {
        what: &'static str,
        path: PathBuf,
        why: String,
    },
    #[error("net {id}")]
    Net {
        id: String,
        #[source]
        source: casemate_devices::virtio::net::tap::TapError,
    },
    #[error("net {id}")]
    Bridge {
        id: String,
        #[source]
        source: casemate_devices::virtio::net::bridge::BridgeError,
    },
    #[error("net {id}")]
    Passt {
        id: String,
        #[source]
        source: casemate_devices::virtio::net::passt::PasstError,
    },
    #[error("vfio-user-pci {id}: cannot connect to its server at {path}")]
    VfioUser {
        id: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("vfio-pci {id}")]
    VfioPci {
        id: String,
        #[source]
        source: casemate_devices::vfio::kernel::KernelError,
    },
    #[error("vfio-pci {id}: give host= or sysfsdev= ({bdf})")]
    VfioPciNotYet { id: String, bdf: String },
    #[error("vfio-pci {id}: opening {bdf} through VFIO")]
    VfioPciOpen {
        id: String,
        bdf: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} fd={fd}: not an open file descriptor of this process")]
    InheritedFd {
        what: &'static str,
        fd: i32,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Display(#[from] crate::display::DisplayError),
    #[error("-add-fd fd={fd}: not an open file descriptor of this process")]
    BadFd {
        fd: i32,
        #[source]
        source: std::io::Error,
    },
}

/// A file the VMM opened, or an inherited one, with the name messages use.
#[derive(Debug)]
pub struct OpenedFile {
    pub path: PathBuf,
    pub file: File,
}

/// The `-add-fd` sets, each fd owned by the VMM from start-up on.
#[derive(Default)]
pub struct FdSets {
    /// (set, the fd number the launcher gave, our duplicate of it)
    sets: Vec<(u32, i32, OwnedFd)>,
}

impl FdSets {
    pub fn adopt(list: &[FdSetConfig]) -> Result<Self, ResourceError> {
        let mut sets = Vec::new();
        let mut originals: Vec<i32> = Vec::new();
        for e in list {
            if e.fd < 3 {
                return Err(ResourceError::BadFd {
                    fd: e.fd,
                    source: std::io::Error::other("fds 0, 1 and 2 are the standard streams"),
                });
            }
            // As QEMU: each set holds its own duplicate (close-on-exec), so
            // one fd named in two sets is neither closed twice nor shared.
            // SAFETY: F_DUPFD_CLOEXEC only duplicates the descriptor.
            let dup = unsafe { libc::fcntl(e.fd, libc::F_DUPFD_CLOEXEC, 3) };
            if dup < 0 {
                return Err(ResourceError::BadFd {
                    fd: e.fd,
                    source: std::io::Error::last_os_error(),
                });
            }
            // SAFETY: `dup` was just created and is owned by nothing else.
            sets.push((e.set, e.fd, unsafe { OwnedFd::from_raw_fd(dup) }));
            if !originals.contains(&e.fd) {
                originals.push(e.fd);
            }
        }
        for fd in originals {
            // SAFETY: the launcher handed these fds to the VMM (`-add-fd`);
            // each is closed once, its duplicates live on in the sets.
            unsafe { libc::close(fd) };
        }
        Ok(Self { sets })
    }

    /// A duplicate of inherited fd `fd` (QEMU's `fd=N`): from the `-add-fd`
    /// that named it, else the raw inherited descriptor.
    pub fn dup_fd(&self, what: &'static str, fd: i32) -> Result<OwnedFd, ResourceError> {
        let err = |source| ResourceError::InheritedFd { what, fd, source };
        if let Some((_, _, owned)) = self.sets.iter().find(|(_, orig, _)| *orig == fd) {
            return owned.try_clone().map_err(err);
        }
        // SAFETY: F_DUPFD_CLOEXEC creates a new descriptor and touches
        // nothing else; it fails on a descriptor that is not open.
        let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
        if new < 0 {
            return Err(err(std::io::Error::last_os_error()));
        }
        // SAFETY: `new` was just created by fcntl and nothing else owns it.
        Ok(unsafe { OwnedFd::from_raw_fd(new) })
    }

    /// Open `path`, or a duplicate of the fd in set `/dev/fdset/N` whose
    /// access mode allows `write` (as QEMU picks from a set).
    pub fn open(
        &self,
        what: &'static str,
        path: &Path,
        write: bool,
    ) -> Result<File, ResourceError> {
        let Some(set) = fdset_of(path) else {
            return std::fs::OpenOptions::new()
                .read(true)
                .write(write)
                .open(path)
                .map_err(|source| ResourceError::Open {
                    what,
                    path: path.into(),
                    source,
                });
        };
        let fdset_err = |why: String| ResourceError::FdSet {
            what,
            path: path.into(),
            why,
        };
        let set = set.map_err(&fdset_err)?;
        let mut found = false;
        for (s, _, fd) in self.sets.iter().filter(|(s, _, _)| *s == set) {
            found = true;
            // SAFETY: F_GETFL only queries the descriptor's flags.
            let fl = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
            let mode = fl & libc::O_ACCMODE;
            let ok = if write {
                mode == libc::O_RDWR
            } else {
                mode == libc::O_RDONLY || mode == libc::O_RDWR
            };
            if ok {
                let dup = fd
                    .try_clone()
                    .map_err(|e| fdset_err(format!("set {s}: {e}")))?;
                return Ok(File::from(dup));
            }
        }
        Err(fdset_err(if found {
            format!(
                "no fd in set {set} is open {}",
                if write { "read-write" } else { "for reading" }
            )
        } else {
            format!("no -add-fd names set {set}")
        }))
    }
}

/// See the module doc.
pub struct Resources {
    pub kvm: Kvm,
    /// `KVM_GET_SUPPORTED_CPUID`, asked once: ~0.7 ms here (the host
    /// kernel runs CPUID for every leaf, each a trap on a nested host).
    /// Asked on the main thread while the spawner thread confines itself,
    /// rather than on each boot's control thread on the way to the vCPU.
    pub supported_cpuid: kvm_bindings::CpuId,
    pub layout: RamLayout,
    /// Guest RAM; `populated()` is waited for once, by the first boot.
    pub ram: std::sync::Mutex<GuestRam>,
    /// The same memory, for everything that reads or writes it.
    pub mem: vm_memory::GuestMemoryMmap,
    pub console: Console,
    pub kernel: Option<OpenedFile>,
    pub initrd: Option<OpenedFile>,
    /// One per `config.drives` entry, in order.
    pub disks: Vec<Arc<dyn DiskImage>>,
    /// One per virtio `config.devices` entry, in order.
    pub devices: Vec<Box<dyn DeviceFactory>>,
    /// One per assigned (`vfio-user-pci`) `config.devices` entry, in
    /// order: the connection outlives reboots, as the device process does.
    pub assigned: Vec<Arc<casemate_devices::vfio::user::VfioUserDevice>>,
    /// One per `vfio-pci` `config.devices` entry, in order.
    pub host_assigned: Vec<Arc<casemate_devices::vfio::kernel::KernelVfio>>,
    /// The VNC display (`-vnc`), showing the first graphics device.
    pub display: Option<crate::display::Display>,
    /// Where the display's key events go: each boot's i8042.
    pub keyboard: Arc<crate::display::keyboard::KeyboardLink>,
    /// Guest RAM has never been written: anonymous or memfd RAM before the
    /// first boot (a file backend may hold anything).
    fresh_ram: std::sync::atomic::AtomicBool,
}

impl Resources {
    /// Open everything `config` names. Guest RAM population starts in the
    /// background; the builder waits for it before writing the guest.
    pub fn open(config: &ValidConfig) -> Result<Self, ResourceError> {
        let fds = FdSets::adopt(&config.fdsets)?;
        let kvm = Vm::open_kvm()?;
        let supported_cpuid = kvm
            .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
            .map_err(|e| VmError::Kvm("get_supported_cpuid", e))?;
        let max = kvm.get_max_vcpus() as u32;
        if config.smp.cpus > max {
            return Err(ResourceError::TooManyCpus {
                cpus: config.smp.cpus,
                max,
            });
        }
        let layout = RamLayout::new(config.memory);
        let backend = config.ram_backend();
        let ram = memory::build(
            &backend,
            &layout.ranges(),
            RamOptions {
                thp: config.thp,
                mem_lock: config.mem_lock,
                sysfs: Path::new(memory::hugetlb::SYSFS),
            },
        )?;
        let console = Console::open(&config.serial)?;
        let opened = |what, p: &PathBuf| -> Result<OpenedFile, ResourceError> {
            Ok(OpenedFile {
                path: p.clone(),
                file: fds.open(what, p, false)?,
            })
        };
        let kernel = config
            .kernel
            .as_ref()
            .map(|p| opened("kernel", p))
            .transpose()?;
        let initrd = config
            .initrd
            .as_ref()
            .map(|p| opened("initrd", p))
            .transpose()?;
        let disks = config
            .drives
            .iter()
            .map(|d| open_disk(d, &fds))
            .collect::<Result<_, _>>()?;
        let devices: Vec<Box<dyn DeviceFactory>> = config
            .devices
            .iter()
            .filter_map(|d| kinds::spec(d).map(|s| s.open(&fds)))
            .collect::<Result<_, _>>()?;
        let assigned = config
            .devices
            .iter()
            .filter_map(|d| d.assigned())
            .map(kinds::vfio_user::connect)
            .collect::<Result<_, _>>()?;
        let host_assigned = kinds::vfio_pci::open_all(&config.devices)?;
        let surface = devices.iter().find_map(|d| d.surface());
        let display = crate::display::Display::open(&config.display, surface)?;
        let fresh = backend.kind != crate::config::BackendKind::File;
        Ok(Self {
            fresh_ram: std::sync::atomic::AtomicBool::new(fresh),
            kvm,
            supported_cpuid,
            layout,
            mem: ram.mem.clone(),
            ram: std::sync::Mutex::new(ram),
            console,
            kernel,
            initrd,
            disks,
            devices,
            assigned,
            host_assigned,
            display,
            keyboard: Arc::default(),
        })
    }
}

impl Resources {
    /// Whether guest RAM is still all zero; true at most once (the first
    /// boot), since the guest dirties it.
    pub fn take_fresh_ram(&self) -> bool {
        self.fresh_ram
            .swap(false, std::sync::atomic::Ordering::AcqRel)
    }
}

/// Open a drive's image as its config asks: format, read-only, O_DIRECT
/// for cache=none, and a discarded qcow2 overlay for snapshot mode, so
/// that writes survive a guest reboot and vanish at exit, as on QEMU.
fn open_disk(d: &DriveConfig, fds: &FdSets) -> Result<Arc<dyn DiskImage>, ResourceError> {
    let err = |source| {
        ResourceError::Device(DevError::Disk {
            id: d.id.clone(),
            path: d.file.clone(),
            source,
        })
    };
    let format = d.format.as_deref().and_then(Format::from_name);
    let opts = OpenOptions {
        format,
        read_only: d.read_only,
        direct: d.cache == CacheConfig::None,
        locking: d.locking,
        ..Default::default()
    };
    // A backing chain given with the drive (`backing.file.filename=`, as
    // the jailer hands one over) is opened here, each level read-only.
    let chain = d
        .backing
        .iter()
        .map(|b| {
            Ok(HandedBacking {
                file: fds.open("drive backing file", &b.file, false)?,
                name: b.file.clone(),
                format: b.format.as_deref().and_then(Format::from_name),
            })
        })
        .collect::<Result<Vec<_>, ResourceError>>()?;
    let image = if fdset_of(&d.file).is_some() || !chain.is_empty() {
        if d.snapshot {
            // No path to name as a backing file: the overlay sits on the
            // open image, its storage a memfd (casemate-disk's overlay.rs).
            let file = fds.open("drive", &d.file, false)?;
            return Ok(Arc::from(
                overlay_on_file_with(file, &d.file, &opts, chain).map_err(err)?,
            ));
        }
        let file = fds.open("drive", &d.file, !d.read_only)?;
        open_image_file_with(file, &d.file, &opts, chain).map_err(err)?
    } else if d.snapshot {
        let base = OpenOptions {
            read_only: true,
            ..opts
        };
        create_overlay_with(&d.file, &base, None).map_err(err)?
    } else {
        open_image(&d.file, &opts).map_err(err)?
    };
    Ok(Arc::from(image))
}
