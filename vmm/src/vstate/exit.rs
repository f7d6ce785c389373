//! A KVM exit as a small owned-or-borrowed value, and its dispatch to the
//! buses: hop one of the exit path (vCPU -> bus -> device).
//!
//! `dispatch` is a free function over plain data so tests drive it with
//! synthetic exits and no vCPU. It knows no device addresses.

use casemate_devices::{Bus, BusAction, PlatformRequest};

/// The two address spaces a vCPU exit can target.
pub struct Buses {
    pub pio: Bus,
    pub mmio: Bus,
}

/// A decoded vCPU exit.
#[derive(Debug)]
pub enum Exit<'a> {
    PioRead {
        port: u16,
        data: &'a mut [u8],
    },
    PioWrite {
        port: u16,
        data: &'a [u8],
    },
    MmioRead {
        addr: u64,
        data: &'a mut [u8],
    },
    MmioWrite {
        addr: u64,
        data: &'a [u8],
    },
    /// HLT reached the VMM (only without an in-kernel LAPIC): keep going.
    Halt,
    /// Triple fault.
    Shutdown,
    /// KVM reported a reset or power-off system event.
    SystemReset,
    SystemOff,
    /// Anything the VMM can't continue from, with KVM's description.
    Fatal(String),
    /// Exits that need nothing from us (interrupt window, signals).
    Ignore,
}

/// What the vCPU loop does after an exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Continue,
    /// Hand this to the control thread and wait for it, then continue.
    Platform(PlatformRequest),
    Reset,
    PowerOff,
    TripleFault,
    Fatal(String),
}

impl From<BusAction> for Outcome {
    fn from(a: BusAction) -> Self {
        match a {
            BusAction::None => Outcome::Continue,
            BusAction::Reset => Outcome::Reset,
            BusAction::PowerOff => Outcome::PowerOff,
            BusAction::Platform(r) => Outcome::Platform(r),
        }
    }
}

/// Route one exit. Reads of unassigned addresses float high (all ones), as
/// an undriven ISA bus does; writes to them are dropped.
pub fn dispatch(exit: Exit<'_>, buses: &Buses) -> Outcome {
    match exit {
        Exit::PioRead { port, data } => {
            if !buses.pio.read(port.into(), data) {
                data.fill(0xff);
            }
            Outcome::Continue
        }
        Exit::PioWrite { port, data } => buses
            .pio
            .write(port.into(), data)
            .map_or(Outcome::Continue, Outcome::from),
        Exit::MmioRead { addr, data } => {
            if !buses.mmio.read(addr, data) {
                data.fill(0xff);
            }
            Outcome::Continue
        }
        Exit::MmioWrite { addr, data } => buses
            .mmio
            .write(addr, data)
            .map_or(Outcome::Continue, Outcome::from),
        Exit::Halt | Exit::Ignore => Outcome::Continue,
        Exit::Shutdown => Outcome::TripleFault,
        Exit::SystemReset => Outcome::Reset,
        Exit::SystemOff => Outcome::PowerOff,
        Exit::Fatal(why) => Outcome::Fatal(why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use casemate_devices::legacy::{AcpiSleep, Sink};
    use std::sync::{Arc, Mutex};

    fn buses() -> Buses {
        let pio = Bus::new();
        pio.insert("acpi", 0x600, 3, Arc::new(Mutex::new(AcpiSleep)))
            .unwrap();
        pio.insert("post", 0x80, 1, Arc::new(Mutex::new(Sink)))
            .unwrap();
        Buses {
            pio,
            mmio: Bus::new(),
        }
    }

    #[test]
    fn synthetic_exits_route_to_devices() {
        let b = buses();
        assert_eq!(
            dispatch(
                Exit::PioWrite {
                    port: 0x600,
                    data: &[(5 << 2) | 0x20]
                },
                &b
            ),
            Outcome::PowerOff
        );
        assert_eq!(
            dispatch(
                Exit::PioWrite {
                    port: 0x602,
                    data: &[1]
                },
                &b
            ),
            Outcome::Reset
        );
        assert_eq!(
            dispatch(
                Exit::PioWrite {
                    port: 0x80,
                    data: &[1]
                },
                &b
            ),
            Outcome::Continue
        );
        let mut d = [0u8; 4];
        assert_eq!(
            dispatch(
                Exit::MmioRead {
                    addr: 0xc000_0000,
                    data: &mut d
                },
                &b
            ),
            Outcome::Continue
        );
        assert_eq!(d, [0xff; 4]);
        let mut d = [0u8; 1];
        dispatch(
            Exit::PioRead {
                port: 0x600,
                data: &mut d,
            },
            &b,
        );
        assert_eq!(d, [0]);
        assert_eq!(dispatch(Exit::Shutdown, &b), Outcome::TripleFault);
    }
}
