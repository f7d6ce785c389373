//! The steps that carry out a [`JailPlan`], one small function each. Every
//! step takes the paths it works on (jail root, cgroup files, host files), so
//! the ones that do not change the calling process are tested against temp
//! dirs; the ones that do (namespaces, pivot_root, privilege drop, exec) are
//! covered by the integration test in `tests/jail.rs`.
//!
//! The VMM binary is never copied into the jail: [`open_exec`] opens it
//! before `pivot_root` and [`exec`] runs it from that fd. Afterwards the VMM
//! reaches its binary only as `/proc/self/exe`, and only with a pid
//! namespace (without one the jail has no `/proc`). It cannot write it
//! (ETXTBSY while it runs, and a binary the VMM's uid does not own), and
//! after its set-up Landlock denies opening it at all (tests/sandbox.rs).

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;

use crate::cli::Resource;
use crate::plan::{Access, CgroupStep, CleanupPlan, DeviceNode, HandedFile, HandedTap, JailPlan};

/// A step failed. Messages name the step and its path; the cause is the
/// source, so the binary prints both on one line.
#[derive(Debug, Error)]
pub enum StepError {
    #[error("exec file {0} does not exist")]
    ExecMissing(PathBuf, #[source] io::Error),
    #[error("exec file {0} is not an executable regular file")]
    ExecNotExecutable(PathBuf),
    #[error("exec file {path} is not executable by uid {uid} gid {gid} (mode {mode:o}), which the VMM runs as")]
    ExecNotExecutableBy {
        path: PathBuf,
        uid: u32,
        gid: u32,
        mode: u32,
    },
    #[error("jail {0} already exists (a VM with this id is running or was not cleaned up: see --cleanup)")]
    JailExists(PathBuf),
    #[error("cgroup {0} already exists (a VM with this id is running or was not cleaned up: see --cleanup)")]
    CgroupExists(PathBuf),
    #[error("cannot write cgroup file {file} (value {value:?})")]
    CgroupWrite {
        file: PathBuf,
        value: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot open {path} for {option}")]
    OpenHanded {
        path: PathBuf,
        option: &'static str,
        #[source]
        source: io::Error,
    },
    /// Attaching a tap for the VM; the message names the tap and why.
    #[error(transparent)]
    Tap(#[from] casemate_tap::AttachError),
    #[error("fd {fd} meant for {path} is already open in the jailer")]
    FdInUse { fd: RawFd, path: PathBuf },
    #[error("{0} is not a character device")]
    NotCharDevice(PathBuf),
    /// Any other system call; `step` says what the jailer was doing.
    #[error("cannot {step}")]
    Sys {
        step: String,
        #[source]
        source: io::Error,
    },
}

impl StepError {
    /// The OS error behind this failure, if any (for the privilege hint).
    pub fn os_error(&self) -> Option<&io::Error> {
        match self {
            StepError::ExecMissing(_, e)
            | StepError::CgroupWrite { source: e, .. }
            | StepError::OpenHanded { source: e, .. }
            | StepError::Sys { source: e, .. }
            | StepError::Tap(
                casemate_tap::AttachError::OpenTun { source: e, .. }
                | casemate_tap::AttachError::Attach { source: e, .. },
            ) => Some(e),
            _ => None,
        }
    }
}

fn sys(step: impl Into<String>) -> impl FnOnce(io::Error) -> StepError {
    let step = step.into();
    move |source| StepError::Sys { step, source }
}

/// Turns a libc `-1` return into the step's error.
fn check(ret: libc::c_long, step: impl Into<String>) -> Result<libc::c_long, StepError> {
    if ret == -1 {
        Err(sys(step)(io::Error::last_os_error()))
    } else {
        Ok(ret)
    }
}

fn cstr(p: &Path) -> CString {
    // Paths from the plan come from argv or our own joins: no NUL inside.
    CString::new(p.as_os_str().as_bytes()).unwrap_or_default()
}

/// Checks what must hold before anything is changed: the exec file is an
/// executable regular file and no jail for this id exists. (The id itself
/// was checked when the plan was made.)
pub fn validate(exec_file: &Path, jail_dir: &Path) -> Result<(), StepError> {
    let meta =
        fs::metadata(exec_file).map_err(|e| StepError::ExecMissing(exec_file.to_path_buf(), e))?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(StepError::ExecNotExecutable(exec_file.to_path_buf()));
    }
    if fs::symlink_metadata(jail_dir).is_ok() {
        return Err(StepError::JailExists(jail_dir.to_path_buf()));
    }
    Ok(())
}

/// Closes every fd above stderr, so nothing the caller left open leaks into
/// the jail: only the fds the plan hands over are passed on.
pub fn close_inherited_fds() -> Result<(), StepError> {
    // SAFETY: close_range takes plain integers and only closes fds; no Rust
    // object owns an fd above 2 at this point in the jailer's main.
    let r = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    check(r, "close inherited file descriptors").map(drop)
}

/// Empties the environment: the VMM is exec'd with none, so nothing from
/// the caller (LD_PRELOAD, RUST_LOG...) crosses into the jail.
pub fn clear_environment() {
    for (k, _) in std::env::vars_os() {
        std::env::remove_var(k);
    }
}

/// Opens the files the VMM gets as `-add-fd`, as root before privileges are
/// dropped, and places each at its planned fd number without `O_CLOEXEC`;
/// every other fd the jailer opens keeps `O_CLOEXEC`. The returned fds must
/// stay alive until exec.
pub fn open_handed_files(files: &[HandedFile]) -> Result<Vec<OwnedFd>, StepError> {
    let mut opened = Vec::with_capacity(files.len());
    for f in files {
        let file = OpenOptions::new()
            .read(true)
            .write(f.access == Access::ReadWrite)
            .open(&f.host)
            .map_err(|source| StepError::OpenHanded {
                path: f.host.clone(),
                option: f.option,
                source,
            })?;
        opened.push((OwnedFd::from(file), f.fd, f.host.clone()));
    }
    place_fds(opened)
}

/// Attaches the taps the VMM gets as `-add-fd` (TUNSETIFF as root, in the
/// network namespace joined before) and places each queue's fd at its
/// planned number, as `open_handed_files` does for files.
pub fn attach_handed_taps(taps: &[HandedTap]) -> Result<Vec<OwnedFd>, StepError> {
    let mut opened = Vec::with_capacity(taps.len());
    // The name queue 0 of the current netdev got (the kernel's, when none
    // was given): its other queues join that tap.
    let mut named = String::new();
    for t in taps {
        let name = if t.queue == 0 { &t.ifname } else { &named };
        let a = casemate_tap::attach(name, t.multi_queue)?;
        named = a.name;
        opened.push((a.fd, t.fd, PathBuf::from(format!("tap {named}"))));
    }
    place_fds(opened)
}

/// Puts each opened fd at its target number (dup2, so without
/// `O_CLOEXEC`), refusing a target that is already open; the fds are
/// first moved above every target so that placing one cannot clobber
/// another. `what` names each in errors.
fn place_fds(opened: Vec<(OwnedFd, RawFd, PathBuf)>) -> Result<Vec<OwnedFd>, StepError> {
    let Some(max_target) = opened.iter().map(|o| o.1).max() else {
        return Ok(Vec::new());
    };
    let mut moved = Vec::with_capacity(opened.len());
    for (fd, target, what) in opened {
        let fd = if fd.as_raw_fd() <= max_target {
            // SAFETY: F_DUPFD_CLOEXEC only creates a new fd; `fd` is valid.
            let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, max_target + 1) };
            check(r.into(), format!("move the fd of {}", what.display()))?;
            // SAFETY: `r` is a fresh fd that nothing else owns.
            unsafe { OwnedFd::from_raw_fd(r) }
        } else {
            fd
        };
        moved.push((fd, target, what));
    }
    let mut placed = Vec::with_capacity(moved.len());
    for (fd, target, what) in &moved {
        // SAFETY: F_GETFD only queries the flags of a possibly closed fd.
        if unsafe { libc::fcntl(*target, libc::F_GETFD) } != -1 {
            return Err(StepError::FdInUse {
                fd: *target,
                path: what.clone(),
            });
        }
        // SAFETY: the target was checked free above; dup2 gives a new fd
        // without O_CLOEXEC, which is the point: it survives exec.
        let r = unsafe { libc::dup2(fd.as_raw_fd(), *target) };
        check(
            r.into(),
            format!("place {} at fd {}", what.display(), target),
        )?;
        // SAFETY: `target` now refers to the new duplicate, owned only here.
        placed.push(unsafe { OwnedFd::from_raw_fd(*target) });
    }
    Ok(placed)
}

/// Joins the network namespace at `path` (e.g. /var/run/netns/NAME).
pub fn join_netns(path: &Path) -> Result<(), StepError> {
    let ns = File::open(path).map_err(sys(format!("open network namespace {}", path.display())))?;
    // SAFETY: setns on a valid namespace fd; it changes only this process.
    let r = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    check(
        r.into(),
        format!("join network namespace {} (setns)", path.display()),
    )
    .map(drop)
}

fn write_cgroup_file(file: &Path, value: &str) -> Result<(), StepError> {
    let err = |source| StepError::CgroupWrite {
        file: file.to_path_buf(),
        value: value.to_string(),
        source,
    };
    // No O_CREAT: a file the kernel did not make is a wrong name, and should
    // fail as "No such file" rather than kernfs's EACCES for a create.
    // O_TRUNC as a shell's `>`: ignored by cgroupfs, needed in temp dirs.
    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(file)
        .map_err(err)?;
    // One write: cgroupfs parses each write() as a whole value.
    f.write_all(value.as_bytes()).map_err(err)
}

/// Carries out the cgroup steps in order. Appends each directory it creates
/// to `created` (newest last, also when a later step fails), so a failed
/// jail can remove exactly those again.
pub fn apply_cgroup_steps(
    steps: &[CgroupStep],
    created: &mut Vec<PathBuf>,
) -> Result<(), StepError> {
    for step in steps {
        match step {
            CgroupStep::Mkdir { dir, exclusive } => match fs::create_dir(dir) {
                Ok(()) => created.push(dir.clone()),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    if *exclusive {
                        return Err(StepError::CgroupExists(dir.clone()));
                    }
                }
                Err(e) => return Err(sys(format!("create cgroup {}", dir.display()))(e)),
            },
            CgroupStep::InheritIfEmpty { file } => {
                let read = |p: &Path| {
                    fs::read_to_string(p).map_err(|source| StepError::CgroupWrite {
                        file: p.to_path_buf(),
                        value: String::new(),
                        source,
                    })
                };
                if !read(file)?.trim().is_empty() {
                    continue;
                }
                let (Some(dir), Some(name)) = (file.parent(), file.file_name()) else {
                    continue;
                };
                let Some(parent) = dir.parent() else { continue };
                let value = read(&parent.join(name))?;
                write_cgroup_file(file, value.trim())?;
            }
            CgroupStep::Write { file, value } => write_cgroup_file(file, value)?,
        }
    }
    Ok(())
}

/// Moves process `pid` (the VMM to be) into each VM cgroup.
pub fn join_cgroups(procs_files: &[PathBuf], pid: libc::pid_t) -> Result<(), StepError> {
    procs_files
        .iter()
        .try_for_each(|f| write_cgroup_file(f, &pid.to_string()))
}

/// Sets each limit as both soft and hard, so the VMM cannot raise it.
pub fn set_rlimits(limits: &[(Resource, u64)]) -> Result<(), StepError> {
    for &(resource, value) in limits {
        let which = match resource {
            Resource::NoFile => libc::RLIMIT_NOFILE,
            Resource::FSize => libc::RLIMIT_FSIZE,
        };
        let lim = libc::rlimit {
            rlim_cur: value,
            rlim_max: value,
        };
        // SAFETY: setrlimit reads the struct we pass; it changes only limits.
        let r = unsafe { libc::setrlimit(which, &lim) };
        check(
            r.into(),
            format!("set resource limit {}={value}", resource.name()),
        )?;
    }
    Ok(())
}

/// `unshare(CLONE_NEWPID)`: the next child forked becomes pid 1 of a new
/// pid namespace (this process stays where it is).
pub fn unshare_pid_ns() -> Result<(), StepError> {
    // SAFETY: unshare with a flag constant; affects only future children.
    let r = unsafe { libc::unshare(libc::CLONE_NEWPID) };
    check(r.into(), "unshare the pid namespace").map(drop)
}

/// Enters a new mount namespace and makes every mount in it private, so the
/// jail's mounts and `pivot_root` never propagate to the host.
pub fn unshare_mount_ns() -> Result<(), StepError> {
    // SAFETY: unshare with a flag constant; changes only this process.
    let r = unsafe { libc::unshare(libc::CLONE_NEWNS) };
    check(r.into(), "unshare the mount namespace")?;
    let root = cstr(Path::new("/"));
    // SAFETY: NULL source/fstype/data are allowed for a propagation change.
    let r = unsafe {
        libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    };
    check(r.into(), "make all mounts private").map(drop)
}

/// `mkdir -p` with mode 0755: never wider than that, whatever the caller's
/// umask (std's create_dir_all would use 0777 minus the umask).
fn mkdir_p(dir: &Path) -> Result<(), StepError> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(sys(format!("create {}", dir.display())))
}

/// Creates `<jail_dir>` (refusing an existing one, which closes the race
/// with a concurrent jailer for the same id) and `<jail_dir>/root` owned by
/// the VMM's uid/gid, so the VMM can create its files (serial log, sockets)
/// in its `/`.
pub fn create_jail_dirs(jail_dir: &Path, root: &Path, uid: u32, gid: u32) -> Result<(), StepError> {
    if let Some(parent) = jail_dir.parent() {
        mkdir_p(parent)?;
    }
    match fs::create_dir(jail_dir) {
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            return Err(StepError::JailExists(jail_dir.to_path_buf()))
        }
        r => r.map_err(sys(format!("create {}", jail_dir.display())))?,
    }
    fs::set_permissions(jail_dir, fs::Permissions::from_mode(0o755))
        .map_err(sys(format!("chmod {}", jail_dir.display())))?;
    fs::create_dir(root).map_err(sys(format!("create {}", root.display())))?;
    fs::set_permissions(root, fs::Permissions::from_mode(0o755))
        .map_err(sys(format!("chmod {}", root.display())))?;
    std::os::unix::fs::chown(root, Some(uid), Some(gid))
        .map_err(sys(format!("chown {} to {uid}:{gid}", root.display())))
}

/// Bind-mounts the jail root onto itself: `pivot_root` needs the new root
/// to be a mount point.
pub fn bind_root(root: &Path) -> Result<(), StepError> {
    let p = cstr(root);
    // SAFETY: valid C strings; NULL fstype/data are allowed for MS_BIND.
    let r = unsafe {
        libc::mount(
            p.as_ptr(),
            p.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND | libc::MS_REC,
            std::ptr::null(),
        )
    };
    check(
        r.into(),
        format!("bind-mount {} onto itself", root.display()),
    )
    .map(drop)
}

/// Recreates each device node under `root` with the host node's major/minor
/// and permission bits, owned by uid/gid.
pub fn make_device_nodes(
    root: &Path,
    devices: &[DeviceNode],
    uid: u32,
    gid: u32,
) -> Result<(), StepError> {
    for d in devices {
        let meta =
            fs::metadata(&d.host).map_err(sys(format!("stat device {}", d.host.display())))?;
        if meta.mode() & libc::S_IFMT != libc::S_IFCHR {
            return Err(StepError::NotCharDevice(d.host.clone()));
        }
        let target = root.join(d.jail.strip_prefix("/").unwrap_or(&d.jail));
        if let Some(parent) = target.parent() {
            mkdir_p(parent)?;
        }
        let c = cstr(&target);
        let mode = libc::S_IFCHR | (meta.mode() & 0o777);
        // SAFETY: valid C string; mknod creates a node and touches nothing else.
        let r = unsafe { libc::mknod(c.as_ptr(), mode, meta.rdev()) };
        check(r.into(), format!("mknod {}", target.display()))?;
        // mknod applies the umask; set the host's bits exactly.
        fs::set_permissions(&target, fs::Permissions::from_mode(meta.mode() & 0o777))
            .map_err(sys(format!("chmod {}", target.display())))?;
        std::os::unix::fs::chown(&target, Some(uid), Some(gid))
            .map_err(sys(format!("chown {} to {uid}:{gid}", target.display())))?;
    }
    Ok(())
}

/// Opens the exec file for [`exec`] (`O_PATH | O_CLOEXEC`), as root and
/// before `pivot_root`, and checks what it opened (not the path, which could
/// change in between) is a regular file that `uid`/`gid` (with no
/// supplementary groups, as after the drop) may execute. Nothing is copied
/// into the jail and no host path of the binary is visible there: the VMM
/// is started from this fd with `execveat(AT_EMPTY_PATH)`, and `O_CLOEXEC`
/// closes it during that exec, so the VMM does not inherit it.
pub fn open_exec(exec_file: &Path, uid: u32, gid: u32) -> Result<OwnedFd, StepError> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(exec_file)
        .map_err(|e| StepError::ExecMissing(exec_file.to_path_buf(), e))?;
    let meta = file
        .metadata()
        .map_err(sys(format!("stat {}", exec_file.display())))?;
    let mode = meta.permissions().mode();
    if !meta.is_file() || mode & 0o111 == 0 {
        return Err(StepError::ExecNotExecutable(exec_file.to_path_buf()));
    }
    // The kernel's check for an unprivileged caller: owner bits, else
    // group bits, else other bits (never a fall-through).
    let bit = if meta.uid() == uid {
        0o100
    } else if meta.gid() == gid {
        0o010
    } else {
        0o001
    };
    if mode & bit == 0 {
        return Err(StepError::ExecNotExecutableBy {
            path: exec_file.to_path_buf(),
            uid,
            gid,
            mode: mode & 0o7777,
        });
    }
    Ok(OwnedFd::from(file))
}

/// Makes `root` the process's `/` and detaches the old root, so no host
/// path is reachable any more (unlike chroot, which a privileged process
/// can escape).
pub fn pivot_into(root: &Path) -> Result<(), StepError> {
    std::env::set_current_dir(root).map_err(sys(format!("chdir to {}", root.display())))?;
    let dot = cstr(Path::new("."));
    // SAFETY: pivot_root(".", ".") stacks the old root on top of the new one
    // (pivot_root(2), "NOTES"); both arguments are valid C strings.
    let r = unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) };
    check(r, format!("pivot_root into {}", root.display()))?;
    // SAFETY: detaches the old root now mounted on "."; valid C string.
    let r = unsafe { libc::umount2(dot.as_ptr(), libc::MNT_DETACH) };
    check(r.into(), "detach the old root (umount2)")?;
    std::env::set_current_dir("/").map_err(sys("chdir to the new /"))
}

/// Mounts a procfs at `/proc` (after `pivot_root`, in a new pid namespace:
/// it then shows only the jail's processes).
pub fn mount_proc() -> Result<(), StepError> {
    match fs::create_dir("/proc") {
        Err(e) if e.kind() != ErrorKind::AlreadyExists => return Err(sys("create /proc")(e)),
        _ => {}
    }
    let proc_ = cstr(Path::new("proc"));
    let target = cstr(Path::new("/proc"));
    // SAFETY: valid C strings; a plain procfs mount with no data.
    let r = unsafe {
        libc::mount(
            proc_.as_ptr(),
            target.as_ptr(),
            proc_.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            std::ptr::null(),
        )
    };
    check(r.into(), "mount /proc in the jail").map(drop)
}

/// Drops every privilege, in the only order that works: the bounding and
/// ambient sets need CAP_SETPCAP, so they go first; then supplementary
/// groups, gid, uid; then the capability sets are zeroed (this matters when
/// uid is 0) and no_new_privs is set so no exec can regain anything.
pub fn drop_privileges(uid: u32, gid: u32) -> Result<(), StepError> {
    for cap in 0..64 {
        // SAFETY: prctl with integer arguments; changes only this process.
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
        if r == -1 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINVAL) {
                break; // past the kernel's last capability
            }
            return Err(sys(format!("drop capability {cap} from the bounding set"))(
                e,
            ));
        }
    }
    // SAFETY: as above.
    let r = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    check(r.into(), "clear the ambient capability set")?;
    // SAFETY: setgroups with size 0 reads nothing from the pointer.
    let r = unsafe { libc::setgroups(0, std::ptr::null()) };
    check(r.into(), "clear supplementary groups (setgroups)")?;
    // SAFETY: integer arguments only.
    let r = unsafe { libc::setresgid(gid, gid, gid) };
    check(r.into(), format!("set gid {gid} (setresgid)"))?;
    // SAFETY: integer arguments only.
    let r = unsafe { libc::setresuid(uid, uid, uid) };
    check(r.into(), format!("set uid {uid} (setresuid)"))?;
    #[repr(C)]
    struct CapHeader {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct CapData {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let header = CapHeader {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3: two data words
        pid: 0,
    };
    let data = [CapData {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capset reads a v3 header and two data structs, which we pass.
    let r = unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) };
    check(r, "clear the capability sets (capset)")?;
    // SAFETY: prctl with integer arguments.
    let r = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    check(r.into(), "set no_new_privs").map(drop)
}

/// Opens `/dev/null` (close-on-exec) while the host's /dev is still visible,
/// for [`daemonize`] after `pivot_root`, at an fd above `above`, the highest
/// fd the plan hands over: those numbers must stay free until the handed
/// fds are placed on them.
pub fn open_dev_null(above: RawFd) -> Result<OwnedFd, StepError> {
    let null = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map(OwnedFd::from)
        .map_err(sys("open /dev/null"))?;
    if null.as_raw_fd() > above {
        return Ok(null);
    }
    // SAFETY: F_DUPFD_CLOEXEC only creates a new fd; `null` is valid.
    let r = unsafe { libc::fcntl(null.as_raw_fd(), libc::F_DUPFD_CLOEXEC, above + 1) };
    check(r.into(), "move the fd of /dev/null")?;
    // SAFETY: `r` is a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

/// Detaches from the caller: forks (the caller sees exit 0 at once), starts
/// a new session in the child and points its stdio at `/dev/null`.
pub fn daemonize(dev_null: &OwnedFd) -> Result<(), StepError> {
    // SAFETY: the jailer is single-threaded, so fork cannot leave a lock
    // held by another thread in the child.
    let pid = unsafe { libc::fork() };
    check(pid.into(), "fork to daemonize")?;
    if pid > 0 {
        // SAFETY: the parent leaves at once without running destructors,
        // which belong to the child now.
        unsafe { libc::_exit(0) };
    }
    // SAFETY: setsid takes no arguments; the child is not a group leader.
    let r = unsafe { libc::setsid() };
    check(r.into(), "start a new session (setsid)")?;
    for fd in 0..3 {
        // SAFETY: `dev_null` is a valid fd; dup2 onto stdio replaces it.
        let r = unsafe { libc::dup2(dev_null.as_raw_fd(), fd) };
        check(r.into(), "point stdio at /dev/null")?;
    }
    Ok(())
}

/// Execs the VMM from the fd [`open_exec`] made, with an empty environment
/// (`execveat(fd, "", AT_EMPTY_PATH)`, as `fexecve`). Returns only on
/// failure; `name` is the exec file's name, for the error.
pub fn exec(exec_fd: &OwnedFd, name: &str, argv: &[String]) -> StepError {
    let args: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(a.as_bytes()).unwrap_or_default())
        .collect();
    let mut ptrs: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let env: [*const libc::c_char; 1] = [std::ptr::null()];
    // SAFETY: a valid fd, an empty C string and NULL-terminated arrays of
    // valid C strings that outlive the call.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            exec_fd.as_raw_fd(),
            c"".as_ptr(),
            ptrs.as_ptr(),
            env.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    sys(format!("exec {name} (execveat of the exec file's fd)"))(io::Error::last_os_error())
}

/// rmdir of a cgroup, retried while the kernel still counts exiting tasks
/// (EBUSY for a moment after the last one was reaped).
fn remove_cgroup(dir: &Path) -> Result<bool, StepError> {
    for _ in 0..100 {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => return Err(sys(format!("remove cgroup {}", dir.display()))(e)),
        }
    }
    Err(sys(format!(
        "remove cgroup {} (processes still in it)",
        dir.display()
    ))(io::Error::from_raw_os_error(libc::EBUSY)))
}

/// Removes what a jail left behind: the VM cgroups (only once empty; a
/// cgroup is removed with rmdir, never recursively), the default parent
/// cgroups and `<base>/<exec-name>` when empty, and the jail directory.
/// Idempotent: what is already gone is skipped. Returns what it removed.
pub fn cleanup(plan: &CleanupPlan) -> Result<Vec<PathBuf>, StepError> {
    let mut removed = Vec::new();
    for dir in &plan.cgroup_dirs {
        if remove_cgroup(dir)? {
            removed.push(dir.clone());
        }
    }
    for dir in &plan.cgroup_parents {
        // Shared with other VMs from the same binary: only if empty.
        if fs::remove_dir(dir).is_ok() {
            removed.push(dir.clone());
        }
    }
    match fs::symlink_metadata(&plan.jail_dir) {
        Ok(_) => {
            // remove_dir_all does not follow symlinks the VMM may have left.
            fs::remove_dir_all(&plan.jail_dir)
                .map_err(sys(format!("remove {}", plan.jail_dir.display())))?;
            removed.push(plan.jail_dir.clone());
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(sys(format!("stat {}", plan.jail_dir.display()))(e)),
    }
    if fs::remove_dir(&plan.exec_dir).is_ok() {
        removed.push(plan.exec_dir.clone());
    }
    Ok(removed)
}

/// Blocks on `fd` until one byte arrives; `false` on EOF (the parent died
/// or gave up before the child was placed in its cgroups).
pub fn wait_for_go(fd: OwnedFd) -> bool {
    let mut f = File::from(fd);
    let mut b = [0u8; 1];
    matches!(f.read(&mut b), Ok(1))
}

/// Where [`jail_and_exec`] failed: before `pivot_root` the host's paths are
/// still reachable and the caller can roll back; after it they are not.
#[derive(Debug)]
pub struct JailFailure {
    pub error: StepError,
    pub after_pivot: bool,
}

/// Everything from the mount namespace to exec, in the process that becomes
/// the VMM (the jail tree and device nodes are already made, the exec file
/// is open as `exec_fd`). Returns only on failure.
pub fn jail_and_exec(
    plan: &JailPlan,
    exec_fd: &OwnedFd,
    dev_null: Option<&OwnedFd>,
) -> JailFailure {
    let before = |error| JailFailure {
        error,
        after_pivot: false,
    };
    let after = |error| JailFailure {
        error,
        after_pivot: true,
    };
    if let Err(e) = unshare_mount_ns()
        .and_then(|()| bind_root(&plan.root))
        .and_then(|()| pivot_into(&plan.root))
    {
        return before(e);
    }
    let rest = || -> Result<(), StepError> {
        if plan.mount_proc {
            mount_proc()?;
        }
        // Limits after the jailer's own file work (the jail tree must not be
        // cut short by the VMM's RLIMIT_FSIZE) and before the privilege drop
        // (raising a hard limit needs CAP_SYS_RESOURCE).
        set_rlimits(&plan.rlimits)?;
        drop_privileges(plan.uid, plan.gid)?;
        // In --new-pid-ns mode the supervising parent already daemonized.
        if let (Some(null), false) = (dev_null, plan.new_pid_ns) {
            daemonize(null)?;
        }
        Ok(())
    };
    match rest() {
        Ok(()) => after(exec(exec_fd, &plan.exec_name, &plan.argv)),
        Err(e) => after(e),
    }
}

/// Detaches the jail root's bind mount if this process made one, so a
/// failed jail's directory can be removed.
pub fn unmount_root(root: &Path) {
    let p = cstr(root);
    // SAFETY: valid C string; failure (nothing mounted) is ignored.
    unsafe { libc::umount2(p.as_ptr(), libc::MNT_DETACH) };
}

#[cfg(test)]
mod tests;
