//! The probe table: `probe=NAME` on the command line picks one entry. A
//! probe prints its own report lines and returns Err(reason) to fail; the
//! caller prints the final `done` line and powers off. Add new probes
//! (pci, blk, ...) as a module here plus one table row.

use crate::bootinfo::BootInfo;
use crate::cmdline::Args;

mod ahci;
mod ata_bench;
mod bar_move;
mod blk;
mod blk_bench;
mod blk_evil;
mod blk_reboot;
mod exits;
mod fault;
mod gpu;
mod hello;
mod ide;
mod monitor;
mod kbd;
mod net;
mod net_bench;
mod net_evil;
mod rng;
mod spin;
mod vga;

pub struct Ctx<'a> {
    pub boot: &'a BootInfo,
    pub args: Args<'a>,
}

/// Err carries the `reason=` word: lowercase, digits and dashes only.
pub type Outcome = Result<(), &'static str>;

pub struct Probe {
    pub name: &'static str,
    pub run: fn(&Ctx) -> Outcome,
}

pub const PROBES: &[Probe] = &[
    Probe { name: "hello", run: hello::run },
    Probe { name: "exits", run: exits::run },
    Probe { name: "fault", run: fault::run },
    Probe { name: "blk", run: blk::run },
    Probe { name: "blk-bench", run: blk_bench::run },
    Probe { name: "blk-evil", run: blk_evil::run },
    Probe { name: "spin", run: spin::run },
    Probe { name: "rng", run: rng::run },
    Probe { name: "bar-move", run: bar_move::run },
    Probe { name: "blk-reboot", run: blk_reboot::run },
    Probe { name: "net", run: net::run },
    Probe { name: "net-evil", run: net::run_evil },
    Probe { name: "net-bench", run: net_bench::run },
    Probe { name: "ide-pio", run: ide::run_pio },
    Probe { name: "ide-dma", run: ide::run_dma },
    Probe { name: "ide-evil", run: ide::run_evil },
    Probe { name: "ahci", run: ahci::run },
    Probe { name: "ahci-evil", run: ahci::run_evil },
    Probe { name: "ahci-cd", run: ahci::run_cd },
    Probe { name: "ata-bench", run: ata_bench::run },
    Probe { name: "powerbtn", run: monitor::powerbtn },
    Probe { name: "count", run: monitor::count },
    Probe { name: "echo", run: monitor::echo },
    Probe { name: "gpu", run: gpu::run },
    Probe { name: "gpu-evil", run: gpu::run_evil },
    Probe { name: "vga", run: vga::run },
    Probe { name: "kbd", run: kbd::run },
    Probe { name: "gpu-bench", run: gpu::run_bench },
];

pub fn find(name: &[u8]) -> Option<&'static Probe> {
    PROBES.iter().find(|p| p.name.as_bytes() == name)
}
