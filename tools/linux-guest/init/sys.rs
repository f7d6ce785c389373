//! The few Linux system calls the init makes, as thin wrappers over the
//! `syscall` instruction (and one `int $0x80`). Each returns `Err(errno)`
//! on failure. No libc: this is the whole interface to the kernel.

use core::arch::asm;

pub const O_RDONLY: usize = 0;
pub const O_RDWR: usize = 2;
pub const O_DIRECT: usize = 0o40000;
pub const O_CLOEXEC: usize = 0o2000000;
const SEEK_END: usize = 2;
/// ioctl TCSBRK with a non-zero argument: tcdrain(3), no break.
const TCSBRK: usize = 0x5409;
const CLOCK_BOOTTIME: usize = 7;
const LINUX_REBOOT_MAGIC1: usize = 0xfee1_dead;
const LINUX_REBOOT_MAGIC2: usize = 0x2812_1969;
const LINUX_REBOOT_CMD_RESTART: usize = 0x0123_4567;
const LINUX_REBOOT_CMD_POWER_OFF: usize = 0x4321_fedc;

mod nr {
    pub const READ: usize = 0;
    pub const WRITE: usize = 1;
    pub const OPEN: usize = 2;
    pub const POLL: usize = 7;
    pub const SYNC: usize = 162;
    pub const CLOSE: usize = 3;
    pub const IOCTL: usize = 16;
    pub const LSEEK: usize = 8;
    pub const PREAD64: usize = 17;
    pub const PWRITE64: usize = 18;
    pub const NANOSLEEP: usize = 35;
    pub const GETPID: usize = 39;
    pub const SOCKET: usize = 41;
    pub const CONNECT: usize = 42;
    pub const SENDTO: usize = 44;
    pub const RECVFROM: usize = 45;
    pub const SETSOCKOPT: usize = 54;
    pub const FORK: usize = 57;
    pub const EXIT: usize = 60;
    pub const WAIT4: usize = 61;
    pub const FSYNC: usize = 74;
    pub const MOUNT: usize = 165;
    pub const MKDIR: usize = 83;
    pub const REBOOT: usize = 169;
    pub const IOPERM: usize = 173;
    pub const CLOCK_GETTIME: usize = 228;
    /// getpid in the i386 table, for `int $0x80`.
    pub const I386_GETPID: usize = 20;
}

pub type Result<T> = core::result::Result<T, i32>;

fn check(ret: isize) -> Result<usize> {
    if (-4095..0).contains(&ret) {
        Err(-ret as i32)
    } else {
        Ok(ret as usize)
    }
}

fn syscall6(n: usize, a: [usize; 6]) -> isize {
    let ret: isize;
    // SAFETY: a raw system call; every caller passes arguments that are
    // valid for that call (pointers to live buffers of the stated length).
    // The kernel clobbers only rcx and r11.
    unsafe {
        asm!("syscall",
             inlateout("rax") n as isize => ret,
             in("rdi") a[0], in("rsi") a[1], in("rdx") a[2],
             in("r10") a[3], in("r8") a[4], in("r9") a[5],
             lateout("rcx") _, lateout("r11") _,
             options(nostack));
    }
    ret
}

fn sys(n: usize, a0: usize, a1: usize, a2: usize, a3: usize) -> Result<usize> {
    check(syscall6(n, [a0, a1, a2, a3, 0, 0]))
}

/// A NUL-terminated path for the kernel; callers pass literals like `c"/proc"`.
pub type Path = &'static core::ffi::CStr;

pub fn write(fd: usize, b: &[u8]) -> Result<usize> {
    sys(nr::WRITE, fd, b.as_ptr() as usize, b.len(), 0)
}

pub fn read(fd: usize, b: &mut [u8]) -> Result<usize> {
    sys(nr::READ, fd, b.as_mut_ptr() as usize, b.len(), 0)
}

pub fn open(path: Path, flags: usize) -> Result<usize> {
    open_c(path, flags)
}

/// open(2) of a path built at run time.
pub fn open_c(path: &core::ffi::CStr, flags: usize) -> Result<usize> {
    sys(nr::OPEN, path.as_ptr() as usize, flags | O_CLOEXEC, 0, 0)
}

/// One `struct pollfd`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct PollFd {
    fd: i32,
    events: i16,
    revents: i16,
}

impl PollFd {
    const POLLIN: i16 = 1;

    pub fn readable(fd: usize) -> Self {
        PollFd {
            fd: fd as i32,
            events: Self::POLLIN,
            revents: 0,
        }
    }

    pub fn fd(&self) -> usize {
        self.fd as usize
    }

    pub fn ready(&self) -> bool {
        self.revents & Self::POLLIN != 0
    }
}

/// poll(2) without a timeout; returns how many are ready.
pub fn poll(fds: &mut [PollFd]) -> Result<usize> {
    let minus_one = -1isize as usize;
    sys(nr::POLL, fds.as_mut_ptr() as usize, fds.len(), minus_one, 0)
}

/// sync(2): the power-off that follows must not lose written data.
pub fn sync() {
    syscall6(nr::SYNC, [0; 6]);
}

/// Waits until everything written to the terminal `fd` has left the UART:
/// the serial driver sends in the background, and a VM ended right after
/// write(2) returns would lose the tail of the console output.
pub fn drain(fd: usize) -> Result<usize> {
    sys(nr::IOCTL, fd, TCSBRK, 1, 0)
}

pub fn close(fd: usize) -> Result<usize> {
    sys(nr::CLOSE, fd, 0, 0, 0)
}

pub fn size_by_seek(fd: usize) -> Result<u64> {
    sys(nr::LSEEK, fd, 0, SEEK_END, 0).map(|v| v as u64)
}

pub fn pread(fd: usize, b: &mut [u8], off: u64) -> Result<usize> {
    sys(nr::PREAD64, fd, b.as_mut_ptr() as usize, b.len(), off as usize)
}

pub fn pwrite(fd: usize, b: &[u8], off: u64) -> Result<usize> {
    sys(nr::PWRITE64, fd, b.as_ptr() as usize, b.len(), off as usize)
}

pub fn fsync(fd: usize) -> Result<usize> {
    sys(nr::FSYNC, fd, 0, 0, 0)
}

pub fn mount(src: Path, target: Path, fstype: Path) -> Result<usize> {
    sys(
        nr::MOUNT,
        src.as_ptr() as usize,
        target.as_ptr() as usize,
        fstype.as_ptr() as usize,
        0,
    )
}

/// A read-only mount (MS_RDONLY): a CD-ROM refuses any other.
pub fn mount_ro(src: Path, target: Path, fstype: Path) -> Result<usize> {
    sys(
        nr::MOUNT,
        src.as_ptr() as usize,
        target.as_ptr() as usize,
        fstype.as_ptr() as usize,
        1,
    )
}

pub fn mkdir(path: Path) -> Result<usize> {
    sys(nr::MKDIR, path.as_ptr() as usize, 0o755, 0, 0)
}

/// Milliseconds since the kernel started (CLOCK_BOOTTIME).
pub fn uptime_ms() -> Result<u64> {
    let mut ts = [0i64; 2];
    sys(nr::CLOCK_GETTIME, CLOCK_BOOTTIME, ts.as_mut_ptr() as usize, 0, 0)?;
    Ok(ts[0] as u64 * 1000 + ts[1] as u64 / 1_000_000)
}

/// getpid through the 32-bit `int $0x80` gate (the `int80` quirk's path).
pub fn getpid_int80() -> Result<usize> {
    let ret: i32;
    // SAFETY: i386 getpid takes no arguments and touches no memory; the
    // gate preserves every register but eax.
    unsafe {
        asm!("int 0x80", inlateout("eax") nr::I386_GETPID as i32 => ret, options(nostack));
    }
    check(ret as isize)
}

/// Sleep `ms` milliseconds (nanosleep; an interruption cuts it short).
pub fn sleep_ms(ms: u64) {
    let ts = [(ms / 1000) as i64, ((ms % 1000) * 1_000_000) as i64];
    let _ = sys(nr::NANOSLEEP, ts.as_ptr() as usize, 0, 0, 0);
}

pub fn getpid() -> Result<usize> {
    sys(nr::GETPID, 0, 0, 0, 0)
}

/// fork(2): Ok(0) in the child, Ok(pid) in the parent.
pub fn fork() -> Result<usize> {
    sys(nr::FORK, 0, 0, 0, 0)
}

/// Waits for any child; returns its exit code.
pub fn wait_any() -> Result<u8> {
    let mut status: i32 = 0;
    let minus_one = -1isize as usize;
    sys(nr::WAIT4, minus_one, &mut status as *mut i32 as usize, 0, 0)?;
    Ok(((status >> 8) & 0xff) as u8)
}

pub fn exit(code: u8) -> ! {
    loop {
        syscall6(nr::EXIT, [code as usize, 0, 0, 0, 0, 0]);
    }
}

/// Lets this process use `len` ports from `from` with in/out (TSS bitmap).
pub fn ioperm(from: u16, len: u16) -> Result<usize> {
    sys(nr::IOPERM, from as usize, len as usize, 1, 0)
}

/// A 32-bit `out` (after `ioperm`).
pub fn outl(port: u16, v: u32) {
    // SAFETY: port I/O the kernel allowed through ioperm; no memory effects.
    unsafe { asm!("out dx, eax", in("dx") port, in("eax") v, options(nostack, nomem)) };
}

/// reboot(2) RESTART: with `reboot=k` the kernel resets through the i8042.
pub fn restart() -> Result<usize> {
    sys(
        nr::REBOOT,
        LINUX_REBOOT_MAGIC1,
        LINUX_REBOOT_MAGIC2,
        LINUX_REBOOT_CMD_RESTART,
        0,
    )
}

/// reboot(2) POWER_OFF: ACPI S5 on pc/q35 and microvm.
pub fn power_off() -> Result<usize> {
    sys(
        nr::REBOOT,
        LINUX_REBOOT_MAGIC1,
        LINUX_REBOOT_MAGIC2,
        LINUX_REBOOT_CMD_POWER_OFF,
        0,
    )
}

/// ioctl(2) with a pointer (or plain) argument.
pub fn ioctl(fd: usize, req: usize, arg: usize) -> Result<usize> {
    sys(nr::IOCTL, fd, req, arg, 0)
}

pub fn socket(domain: usize, kind: usize) -> Result<usize> {
    sys(nr::SOCKET, domain, kind | O_CLOEXEC, 0, 0)
}

/// An IPv4 `sockaddr_in`: family, port (big-endian), address, padding.
#[repr(C)]
pub struct SockaddrIn {
    pub family: u16,
    pub port_be: u16,
    pub addr: [u8; 4],
    pub zero: [u8; 8],
}

impl SockaddrIn {
    pub fn new(addr: [u8; 4], port: u16) -> Self {
        SockaddrIn {
            family: 2, // AF_INET
            port_be: port.to_be(),
            addr,
            zero: [0; 8],
        }
    }
}

const SOCKADDR_IN_LEN: usize = core::mem::size_of::<SockaddrIn>();

pub fn connect(fd: usize, to: &SockaddrIn) -> Result<usize> {
    sys(nr::CONNECT, fd, to as *const SockaddrIn as usize, SOCKADDR_IN_LEN, 0)
}

/// sendto(2); `to` None on a connected socket.
pub fn sendto(fd: usize, b: &[u8], to: Option<&SockaddrIn>) -> Result<usize> {
    let (p, l) = to.map_or((0, 0), |t| (t as *const SockaddrIn as usize, SOCKADDR_IN_LEN));
    check(syscall6(nr::SENDTO, [fd, b.as_ptr() as usize, b.len(), 0, p, l]))
}

pub fn recv(fd: usize, b: &mut [u8]) -> Result<usize> {
    check(syscall6(nr::RECVFROM, [fd, b.as_mut_ptr() as usize, b.len(), 0, 0, 0]))
}

/// SO_RCVTIMEO and SO_SNDTIMEO of `secs` seconds, so a lost peer fails the
/// mode instead of hanging the VM.
pub fn set_timeouts(fd: usize, secs: i64) -> Result<()> {
    const SOL_SOCKET: usize = 1;
    const SO_RCVTIMEO: usize = 20;
    const SO_SNDTIMEO: usize = 21;
    let tv = [secs, 0i64];
    for opt in [SO_RCVTIMEO, SO_SNDTIMEO] {
        check(syscall6(
            nr::SETSOCKOPT,
            [fd, SOL_SOCKET, opt, tv.as_ptr() as usize, 16, 0],
        ))?;
    }
    Ok(())
}
