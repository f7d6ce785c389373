//! The chipset devices every machine has, on the port bus: COM1, the
//! i8042, the CMOS RTC, the machine's power-off registers (hardware-reduced
//! ACPI sleep control, PM1 blocks, or none) and the POST-code sink, each
//! wired to its interrupt through the hypervisor.

use std::sync::{Arc, Mutex};

use casemate_devices::legacy::{self, AcpiPm, AcpiSleep, Cmos, RtcBase, Serial, Sink, I8042};

use super::{Console, DevError, DeviceManager, Hypervisor};
use crate::arch::layout::{RamLayout, ACPI_PM_PORT, ACPI_SLEEP_PORT};
use crate::config::RtcConfig;
use crate::machine::PowerRegs;

const COM1: u64 = 0x3f8;
const COM1_IRQ: u32 = 4;
const I8042_BASE: u64 = 0x60;
const I8042_IRQ: u32 = 1;
const CMOS_BASE: u64 = 0x70;
const POST_PORT: u64 = 0x80;

impl DeviceManager {
    /// Place the legacy devices of this machine.
    pub fn add_legacy(
        &mut self,
        hv: &dyn Hypervisor,
        console: &Console,
        rtc: RtcConfig,
        ram: &RamLayout,
    ) -> Result<(), DevError> {
        let pio = &self.buses.pio;
        let serial = Serial::new(hv.irq_line("COM1", COM1_IRQ)?, console.writer()?);
        pio.insert("com1", COM1, 8, Arc::new(Mutex::new(serial)))?;
        let kbd = Arc::new(Mutex::new(I8042::new(hv.irq_line("i8042", I8042_IRQ)?)));
        pio.insert("i8042", I8042_BASE, legacy::i8042::LEN, kbd.clone())?;
        self.i8042 = Some(kbd);
        let base = match rtc {
            RtcConfig::Utc => RtcBase::Utc,
            RtcConfig::Localtime => RtcBase::LocalTime,
            RtcConfig::At(t) => RtcBase::At(t),
        };
        let cmos = Cmos::new(base, ram.low_end, ram.high_size);
        pio.insert(
            "cmos",
            CMOS_BASE,
            legacy::cmos::LEN,
            Arc::new(Mutex::new(cmos)),
        )?;
        match self.machine.power {
            PowerRegs::SleepControl => pio.insert(
                "acpi-sleep",
                ACPI_SLEEP_PORT.into(),
                legacy::acpi_sleep::LEN,
                Arc::new(Mutex::new(AcpiSleep)),
            )?,
            PowerRegs::Pm1 => pio.insert(
                "acpi-pm",
                ACPI_PM_PORT.into(),
                legacy::acpi_pm::LEN,
                Arc::new(Mutex::new(AcpiPm::default())),
            )?,
            PowerRegs::None => {}
        }
        pio.insert("post", POST_PORT, 1, Arc::new(Mutex::new(Sink)))?;
        Ok(())
    }
}
