//! The SIGSYS handler behind the trap action: a syscall outside the
//! calling thread's filter ends the process with one line on stderr that
//! names the thread's role, the syscall (number and name) and its first
//! two arguments (for `ioctl`, the request). Only async-signal-safe calls:
//! the line is formatted into a stack buffer, written with `write(2)`,
//! and the process leaves with `_exit`.

use std::cell::Cell;

/// The exit status after a forbidden syscall (128 + SIGSYS, as a shell
/// reports a process killed by SIGSYS).
pub const EXIT_CODE: i32 = 128 + libc::SIGSYS;

thread_local! {
    // Const-initialised and without a destructor: reading it from the
    // signal handler allocates nothing and registers nothing.
    static ROLE: Cell<&'static str> = const { Cell::new("unconfined") };
}

/// Record the calling thread's role for the handler's message.
pub fn set_thread_role(name: &'static str) {
    ROLE.with(|r| r.set(name));
}

/// The kernel's `siginfo_t` for SIGSYS (`_sigsys` in the union), x86_64.
#[repr(C)]
struct SigsysInfo {
    signo: i32,
    errno: i32,
    code: i32,
    _pad: i32,
    call_addr: *mut libc::c_void,
    syscall: i32,
    arch: u32,
}

/// A fixed buffer formatted without allocation.
struct Line {
    buf: [u8; 256],
    len: usize,
}

impl Line {
    fn push(&mut self, s: &[u8]) {
        for &b in s {
            if self.len < self.buf.len() {
                self.buf[self.len] = b;
                self.len += 1;
            }
        }
    }

    fn dec(&mut self, mut v: u64) {
        let mut d = [0u8; 20];
        let mut i = d.len();
        loop {
            i -= 1;
            d[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.push(&d[i..]);
    }

    fn hex(&mut self, v: u64) {
        self.push(b"0x");
        let mut started = false;
        for shift in (0..16).rev() {
            let n = ((v >> (shift * 4)) & 0xf) as u8;
            if n != 0 || started || shift == 0 {
                started = true;
                self.push(&[if n < 10 { b'0' + n } else { b'a' + n - 10 }]);
            }
        }
    }
}

extern "C" fn on_sigsys(_: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SIGSYS, laid out as
    // `SigsysInfo` on x86_64 (SA_SIGINFO handler).
    let nr = unsafe { (*info.cast::<SigsysInfo>()).syscall };
    let (a0, a1) = if ctx.is_null() {
        (0, 0)
    } else {
        // SAFETY: with SA_SIGINFO the third argument is the interrupted
        // thread's ucontext; the syscall's arguments are in its registers.
        let g = unsafe { &(*ctx.cast::<libc::ucontext_t>()).uc_mcontext.gregs };
        (
            g[libc::REG_RDI as usize] as u64,
            g[libc::REG_RSI as usize] as u64,
        )
    };
    let mut l = Line {
        buf: [0; 256],
        len: 0,
    };
    l.push(b"casemate: seccomp: thread role ");
    l.push(ROLE.with(|r| r.get()).as_bytes());
    l.push(b" made forbidden syscall ");
    l.dec(nr as u64);
    l.push(b" (");
    l.push(syscall_name(i64::from(nr)).as_bytes());
    l.push(b", args ");
    l.hex(a0);
    l.push(b" ");
    l.hex(a1);
    l.push(b"); ending the VM\n");
    // SAFETY: write(2) and _exit(2) are async-signal-safe; the buffer is
    // on this stack frame.
    unsafe {
        libc::write(2, l.buf.as_ptr().cast(), l.len);
        libc::_exit(EXIT_CODE);
    }
}

/// Install the handler for the whole process (before any filter).
pub fn install_handler() -> std::io::Result<()> {
    // SAFETY: a zeroed sigaction is a valid starting value; every field
    // the kernel reads is set below.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = on_sigsys as *const () as usize;
    sa.sa_flags = libc::SA_SIGINFO;
    // SAFETY: `sa` is initialised and the handler only makes
    // async-signal-safe calls.
    let rc = unsafe { libc::sigaction(libc::SIGSYS, &sa, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

macro_rules! names {
    ($nr:expr; $($s:ident),* $(,)?) => {
        match $nr {
            $(x if x == paste_sys!($s) => stringify!($s),)*
            _ => "?",
        }
    };
}

macro_rules! paste_sys {
    ($s:ident) => {
        sys::$s
    };
}

/// Syscall numbers by name, for the message only.
mod sys {
    #![allow(non_upper_case_globals)]
    pub use libc::{
        SYS_accept as accept, SYS_bind as bind, SYS_chmod as chmod, SYS_chown as chown,
        SYS_clone as clone, SYS_clone3 as clone3, SYS_connect as connect, SYS_dup as dup,
        SYS_execve as execve, SYS_execveat as execveat, SYS_fork as fork,
        SYS_io_uring_setup as io_uring_setup, SYS_ioctl as ioctl, SYS_kill as kill,
        SYS_landlock_restrict_self as landlock_restrict_self, SYS_mkdir as mkdir, SYS_mmap as mmap,
        SYS_mount as mount, SYS_mprotect as mprotect, SYS_open as open, SYS_openat as openat,
        SYS_openat2 as openat2, SYS_prctl as prctl, SYS_ptrace as ptrace, SYS_read as read,
        SYS_rename as rename, SYS_seccomp as seccomp, SYS_setrlimit as setrlimit,
        SYS_setuid as setuid, SYS_socket as socket, SYS_unlink as unlink, SYS_unshare as unshare,
        SYS_vfork as vfork, SYS_write as write,
    };
}

/// A name for the syscalls a message is likely to show; "?" otherwise
/// (the number is always printed).
pub fn syscall_name(nr: i64) -> &'static str {
    names!(nr; accept, bind, chmod, chown, clone, clone3, connect, dup, execve, execveat,
        fork, io_uring_setup, ioctl, kill, landlock_restrict_self, mkdir, mmap, mount,
        mprotect, open, openat, openat2, prctl, ptrace, read, rename, seccomp, setrlimit,
        setuid, socket, unlink, unshare, vfork, write)
}
