//! Casemate probe guest: a freestanding x86_64 ELF that a VMM boots (PVH or
//! Linux 64-bit protocol) to check and measure itself. CPL0 only sets up
//! tables (boot.rs and friends); everything here runs at CPL3, reports on
//! COM1 as `probe: key=value` lines, and ends the VM (see CONTRACT.md).
#![no_std]
#![no_main]

mod acpi;
mod ahci;
mod ata;
mod boot;
mod bootinfo;
mod cmdline;
mod gdt;
mod idt;
mod io;
mod mem;
mod mptable;
mod once;
mod paging;
mod pci;
mod power;
mod probes;
mod report;
mod serial;
mod smp;
mod tsc;
mod virtio;

use core::sync::atomic::{AtomicBool, Ordering};

use bootinfo::{BootInfo, Entry};
use cmdline::Args;
use once::Once;
use report::{Line, TextBuf};

static BOOT: Once<BootInfo> = Once::new();

/// First Rust code, on the BSP at CPL3 (from boot.rs), with the entry kind
/// and the loader's boot structure address.
#[no_mangle]
extern "C" fn probe_main(kind: u32, info: u64) -> ! {
    // Firmware may leave the 8259 unmasked with vectors that collide with
    // exceptions (SeaBIOS: IRQ0 -> vector 8); nothing here wants IRQs.
    io::outb(0x21, 0xff);
    io::outb(0xa1, 0xff);

    let entry = Entry::from_kind(kind).unwrap_or(Entry::Pvh);
    // The first line goes out before any parsing so a bench can time the
    // first serial byte.
    Line::topic("boot").kv_word("entry", entry.name()).emit();

    let boot = match bootinfo::parse(entry, info) {
        Ok(b) => BOOT.set(b),
        Err(reason) => {
            // Still try ACPI (by scanning) so the VM ends cleanly.
            acpi::init(0);
            power::prepare();
            finish(Err(reason))
        }
    };
    acpi::init(boot.rsdp);
    power::prepare();

    let args = Args::new(boot.cmdline());
    power::set_exit_debug(args.exit_debug());
    virtio::want_event_idx(args.get("event_idx") == Some(b"1".as_slice()));
    let name = args.probe();
    let outcome = match probes::find(name) {
        Some(p) => (p.run)(&probes::Ctx { boot, args }),
        None => {
            Line::new().kv_str("unknown_probe", name).emit();
            Err("unknown-probe")
        }
    };
    finish(outcome)
}

static FINISHED: AtomicBool = AtomicBool::new(false);

/// Prints the final line and powers off. Only the first caller prints.
pub fn finish(outcome: probes::Outcome) -> ! {
    if !FINISHED.swap(true, Ordering::AcqRel) {
        match outcome {
            Ok(()) => Line::topic("done").kv_word("status", "ok").emit(),
            Err(reason) => Line::topic("done").kv_word("status", "fail").kv_word("reason", reason).emit(),
        }
    }
    power::off(outcome.is_ok())
}

/// Referenced by the prebuilt libcore (built with unwinding); with
/// panic=abort nothing ever unwinds, so it is never called.
#[no_mangle]
extern "C" fn rust_eh_personality() {}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    use core::fmt::Write;
    let mut msg = TextBuf::new();
    let _ = write!(msg, "{}", info.message());
    let mut l = Line::topic("panic");
    l.kv_str("msg", msg.as_bytes());
    if let Some(loc) = info.location() {
        let mut at = TextBuf::new();
        let _ = write!(at, "{}:{}", loc.file(), loc.line());
        l.kv_str("at", at.as_bytes());
    }
    l.emit();
    finish(Err("panic"))
}
