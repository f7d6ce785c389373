//! casemate-init: the Linux guest tier's /init. A static, libc-free x86_64
//! program (built by ../build.sh with plain rustc) that the kernel runs as
//! PID 1 from an uncompressed cpio. It reports on the console as
//! `init: key=value` lines, ends with `init: done status=ok|fail reason=R`,
//! then ends the VM: `casemate.exit=debug` first writes the status to QEMU's
//! isa-debug-exit (port 0xf4), then reboot(2), which with `reboot=k` resets
//! through the i8042 (`-no-reboot` makes that an exit); after
//! `powerbtn` saw the button it powers off (ACPI S5) instead.
//!
//! Kernel command line: `casemate.mode=hello|blk|rng|net|ata|fb|powerbtn` or a
//! comma-separated list of them (default hello), `casemate.int80=1` (one getpid through
//! `int $0x80`), `casemate.fork=1` (a child that exits 7),
//! `casemate.exit=debug`; for `net`: `casemate.ip=A.B.C.D/N`,
//! `casemate.host=IP`, `casemate.udp=PORT`, `casemate.tcp=PORT`,
//! `casemate.tcp_bytes=N` (net.rs); for `fb`: `casemate.hold=MS` (fb.rs).
//! Every system call costs
//! milliseconds on the project's host, so the init makes few of them.
#![no_std]
#![no_main]

mod ata;
mod blk;
mod fb;
mod line;
#[path = "../../probe/src/mem.rs"]
mod mem;
mod net;
mod powerbtn;
mod rng;
mod sys;

use core::arch::global_asm;

use line::Line;

// The kernel enters with rsp at argc, 16-byte aligned; nothing to set up.
global_asm!(
    ".globl _start",
    "_start:",
    "xor ebp, ebp",
    "call init_main",
    "ud2",
);

/// Why a mode failed: a reason word for the `done` line.
pub type Outcome = Result<(), &'static str>;

/// Reports a failed system call and turns it into a reason word.
pub fn failed(op: &str, errno: i32, reason: &'static str) -> &'static str {
    Line::topic("error")
        .word("op", op)
        .u("errno", errno as u64)
        .emit();
    reason
}

#[no_mangle]
extern "C" fn init_main() -> ! {
    // First line first: a bench times the console's first `init:` line.
    Line::topic("boot")
        .u("uptime_ms", sys::uptime_ms().unwrap_or(0))
        .emit();
    let mut buf = [0u8; 4096];
    let (outcome, n) = match setup(&mut buf) {
        Ok(n) => (Ok(()), n),
        Err(reason) => (Err(reason), 0),
    };
    let args = Args(&buf[..n]);
    let outcome = outcome.and_then(|()| {
        Line::topic("cmdline").text("value", args.0).emit();
        run(&args)
    });
    finish(outcome, args.get("exit") == Some(b"debug"))
}

/// Mounts proc, sysfs and devtmpfs, then reads the kernel command line.
fn setup(cmdline: &mut [u8]) -> Result<usize, &'static str> {
    sys::mount(c"proc", c"/proc", c"proc").map_err(|e| failed("mount-proc", e, "mount"))?;
    sys::mount(c"sysfs", c"/sys", c"sysfs").map_err(|e| failed("mount-sysfs", e, "mount"))?;
    sys::mount(c"devtmpfs", c"/dev", c"devtmpfs")
        .map_err(|e| failed("mount-devtmpfs", e, "mount"))?;
    let n = read_small(c"/proc/cmdline", cmdline)?;
    Ok(trim(&cmdline[..n]).len())
}

fn run(args: &Args) -> Outcome {
    let modes = args.get("mode").unwrap_or(b"hello");
    for mode in modes.split(|&b| b == b',') {
        match mode {
            b"hello" => hello(args)?,
            b"blk" => blk::run()?,
            b"rng" => rng::run()?,
            b"net" => net::run(args)?,
            b"ata" => ata::run()?,
            b"fb" => fb::run(args.get("hold").and_then(parse_u64).unwrap_or(0))?,
            b"powerbtn" => powerbtn::run()?,
            other => {
                Line::topic("unknown_mode").text("mode", other).emit();
                return Err("unknown-mode");
            }
        }
    }
    Ok(())
}

/// CPUs online, MemTotal, and the optional int80 and fork checks.
fn hello(args: &Args) -> Outcome {
    let mut buf = [0u8; 4096];
    let n = read_small(c"/sys/devices/system/cpu/online", &mut buf)?;
    let online = trim(&buf[..n]);
    let cpus = count_cpus(online).ok_or("bad-cpu-list")?;
    let mut line = Line::topic("hello")
        .text("cpus_online", online)
        .u("cpus", cpus);
    let n = read_small(c"/proc/meminfo", &mut buf)?;
    let kib = mem_total_kib(&buf[..n]).ok_or("no-memtotal")?;
    line = line.u("mem_total_kib", kib);
    line.emit();
    if args.get("int80") == Some(b"1") {
        let pid = sys::getpid_int80().map_err(|e| failed("int80-getpid", e, "int80"))?;
        Line::topic("int80").u("getpid", pid as u64).emit();
        if pid != sys::getpid().map_err(|e| failed("getpid", e, "getpid"))? {
            return Err("int80-mismatch");
        }
    }
    if args.get("fork") == Some(b"1") {
        match sys::fork().map_err(|e| failed("fork", e, "fork"))? {
            0 => sys::exit(7),
            _ => {
                let code = sys::wait_any().map_err(|e| failed("wait4", e, "fork"))?;
                Line::topic("fork").u("child_exit", code as u64).emit();
                if code != 7 {
                    return Err("fork-exit-code");
                }
            }
        }
    }
    Ok(())
}

fn finish(outcome: Outcome, exit_debug: bool) -> ! {
    let line = Line::topic("done");
    match outcome {
        Ok(()) => line.word("status", "ok").emit(),
        Err(reason) => line.word("status", "fail").word("reason", reason).emit(),
    }
    // The report must be on the host before the VM ends.
    let _ = sys::drain(1);
    if exit_debug && sys::ioperm(0xf4, 4).is_ok() {
        // QEMU's isa-debug-exit ends with (value << 1) | 1: 1 ok, 3 fail.
        sys::outl(0xf4, u32::from(outcome.is_err()));
    }
    let power_off = powerbtn::POWER_OFF.load(core::sync::atomic::Ordering::Relaxed);
    let ended = if power_off {
        sys::power_off()
    } else {
        sys::restart()
    };
    if let Err(e) = ended {
        failed("reboot", e, "reboot");
    }
    // Exiting PID 1 panics the kernel; `panic=-1` then resets.
    sys::exit(1)
}

/// Reads a /proc or /sys file of less than a page: such files are produced
/// whole by the first read(2), so one read is enough.
fn read_small(path: sys::Path, buf: &mut [u8]) -> Result<usize, &'static str> {
    let name = path.to_str().unwrap_or("?");
    let fd = sys::open(path, sys::O_RDONLY).map_err(|e| failed(name, e, "open"))?;
    let n = sys::read(fd, buf).map_err(|e| failed(name, e, "read"));
    let _ = sys::close(fd);
    n
}

fn trim(b: &[u8]) -> &[u8] {
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace() && *c != 0)
        .map_or(0, |i| i + 1);
    &b[..end]
}

/// The number of CPUs in a list like `0-3,5`.
fn count_cpus(list: &[u8]) -> Option<u64> {
    let mut n = 0;
    for part in list.split(|&b| b == b',') {
        let mut ends = part.splitn(2, |&b| b == b'-');
        let lo = parse_u64(ends.next()?)?;
        let hi = match ends.next() {
            Some(h) => parse_u64(h)?,
            None => lo,
        };
        n += hi.checked_sub(lo)? + 1;
    }
    Some(n)
}

/// `MemTotal:  123456 kB` from /proc/meminfo.
fn mem_total_kib(meminfo: &[u8]) -> Option<u64> {
    let line = meminfo
        .split(|&b| b == b'\n')
        .find(|l| l.starts_with(b"MemTotal:"))?;
    let digits = line[9..]
        .split(|&b| b == b' ')
        .find(|w| !w.is_empty())?;
    parse_u64(digits)
}

pub fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &c| {
        c.is_ascii_digit()
            .then(|| acc.checked_mul(10)?.checked_add(u64::from(c - b'0')))?
    })
}

/// The kernel command line; `casemate.KEY=VALUE` words are the init's.
pub struct Args<'a>(&'a [u8]);

impl Args<'_> {
    fn get(&self, key: &str) -> Option<&[u8]> {
        self.0.split(|&b| b == b' ').find_map(|w| {
            let rest = w.strip_prefix(b"casemate.")?.strip_prefix(key.as_bytes())?;
            rest.strip_prefix(b"=")
        })
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    finish(Err("panic"), false)
}

/// The precompiled `core` references the unwinding personality even with
/// panic=abort; nothing unwinds here, so it is never called.
#[no_mangle]
extern "C" fn rust_eh_personality() {}
