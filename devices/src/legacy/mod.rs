//! Legacy PC platform devices: each a `BusDevice` on the port I/O bus.

pub mod acpi_pm;
pub mod acpi_sleep;
pub mod cmos;
pub mod ged;
pub mod i8042;
pub mod keymap;
pub mod serial;
pub mod sink;

pub use acpi_pm::AcpiPm;
pub use acpi_sleep::AcpiSleep;
pub use cmos::{unix_from_civil, Cmos, RtcBase};
pub use ged::Ged;
pub use i8042::I8042;
pub use serial::Serial;
pub use sink::Sink;
