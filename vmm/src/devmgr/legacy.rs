//! The chipset devices every machine has, on the port bus: COM1, the
//! i8042, the CMOS RTC, the machine's power-off registers (hardware-reduced
//! ACPI sleep control, PM1 blocks, or none) and the POST-code sink, each
//! wired to its interrupt through the hypervisor.

use std::sync::{Arc, Mutex};

use casemate_devices::legacy::{self, AcpiPm, AcpiSleep, Cmos, Ged, RtcBase, Serial, Sink, I8042};

use super::{Console, DevError, DeviceManager, Hypervisor};
use crate::arch::layout::{
    RamLayout, ACPI_PM_PORT, ACPI_SCI_IRQ, ACPI_SLEEP_PORT, GED_BASE, GED_GSI,
};
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
        let serial = Arc::new(Mutex::new(Serial::new(
            hv.irq_line("COM1", COM1_IRQ)?,
            console.writer()?,
        )));
        self.serial = Some(serial.clone());
        pio.insert("com1", COM1, 8, serial)?;
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
            PowerRegs::SleepControl => {
                pio.insert(
                    "acpi-sleep",
                    ACPI_SLEEP_PORT.into(),
                    legacy::acpi_sleep::LEN,
                    Arc::new(Mutex::new(AcpiSleep)),
                )?;
                let ged = Arc::new(Mutex::new(Ged::new(hv.irq_line("GED", GED_GSI)?)));
                self.power_button = Some(super::PowerButton::Ged(ged.clone()));
                self.buses
                    .mmio
                    .insert("ged", GED_BASE, legacy::ged::LEN, ged)?;
            }
            PowerRegs::Pm1 => {
                let sci = hv.intx(ACPI_SCI_IRQ.into())?;
                let pm = Arc::new(Mutex::new(AcpiPm::with_sci(sci)));
                self.power_button = Some(super::PowerButton::Pm1(pm.clone()));
                pio.insert("acpi-pm", ACPI_PM_PORT.into(), legacy::acpi_pm::LEN, pm)?
            }
            PowerRegs::None => {}
        }
        pio.insert("post", POST_PORT, 1, Arc::new(Mutex::new(Sink)))?;
        Ok(())
    }

    /// COM1, for console input.
    pub fn serial(&self) -> Option<Arc<Mutex<Serial>>> {
        self.serial.clone()
    }

    /// Press the ACPI power button (QMP `system_powerdown`). Returns
    /// false when the machine has none, or the guest has not enabled it.
    pub fn press_power_button(&self) -> bool {
        match &self.power_button {
            Some(super::PowerButton::Pm1(pm)) => pm
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .press_power_button(),
            Some(super::PowerButton::Ged(g)) => g
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .press_power_button(),
            None => false,
        }
    }
}
