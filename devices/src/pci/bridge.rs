//! Chipset functions that exist only to be found: the host bridge and the
//! ISA/LPC bridge of the `pc` (i440FX + PIIX3) and `q35` (Q35 + ICH9)
//! machines. Each is a header with ids and class codes and nothing
//! behind it: no BARs, no capabilities, no chipset registers (PAM, SMRAM,
//! PIRQ routing); the VMM's firmware tables describe the platform instead.
//! Runs on vCPU threads.

use super::{BarRange, PciConfig, PciDevice, PciIds};
use crate::bus::BusAction;

const INTEL: u16 = 0x8086;
/// QEMU's subsystem ids for its chipset functions; guests key quirks on
/// the device ids, not these, but an all-zero subsystem looks broken.
const SUBSYS_VENDOR: u16 = 0x1af4;
const SUBSYS_ID: u16 = 0x1100;
const CLASS_BRIDGE: u8 = 0x06;
const SUBCLASS_HOST: u8 = 0x00;
const SUBCLASS_ISA: u8 = 0x01;

/// A configuration-space-only PCI function (see the module doc).
pub struct PlainFunction {
    name: &'static str,
    cfg: PciConfig,
}

impl PlainFunction {
    fn new(name: &'static str, device: u16, revision: u8, subclass: u8) -> Self {
        let mut cfg = PciConfig::new(&PciIds {
            vendor: INTEL,
            device,
            revision,
            class: CLASS_BRIDGE,
            subclass,
            prog_if: 0,
            subsys_vendor: SUBSYS_VENDOR,
            subsys_id: SUBSYS_ID,
        });
        // Bridges decode their own ranges regardless of BARs; firmware
        // leaves memory and I/O enabled.
        cfg.set_command(super::config::CMD_IO | super::config::CMD_MEMORY);
        Self { name, cfg }
    }

    /// i440FX host bridge (8086:1237), `-machine pc` slot 0.
    pub fn i440fx() -> Self {
        Self::new("i440fx", 0x1237, 0x02, SUBCLASS_HOST)
    }

    /// PIIX3 PCI-to-ISA bridge (8086:7000), `-machine pc` slot 1.
    pub fn piix3() -> Self {
        Self::new("piix3", 0x7000, 0x00, SUBCLASS_ISA)
    }

    /// Q35 (MCH) host bridge (8086:29c0), `-machine q35` slot 0.
    pub fn q35_host() -> Self {
        Self::new("q35-host", 0x29c0, 0x00, SUBCLASS_HOST)
    }

    /// The same function announcing more functions in its slot (header
    /// type bit 7), as PIIX3 does for its IDE function at 01.1.
    pub fn multifunction(mut self) -> Self {
        self.cfg.set_u8(0x0e, 0x80);
        self
    }

    /// ICH9 LPC bridge (8086:2918), `-machine q35` slot 31.
    pub fn ich9_lpc() -> Self {
        Self::new("ich9-lpc", 0x2918, 0x02, SUBCLASS_ISA)
    }
}

impl PciDevice for PlainFunction {
    fn name(&self) -> &str {
        self.name
    }
    fn config_read(&mut self, offset: u16, data: &mut [u8]) {
        self.cfg.read(offset, data);
    }
    fn config_write(&mut self, offset: u16, data: &[u8]) -> BusAction {
        self.cfg.write(offset, data);
        BusAction::None
    }
    fn active_bars(&self) -> Vec<BarRange> {
        Vec::new()
    }
    fn bar_read(&mut self, _bar: u8, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn bar_write(&mut self, _bar: u8, _offset: u64, _data: &[u8]) -> BusAction {
        BusAction::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r32(f: &mut PlainFunction, off: u16) -> u32 {
        let mut b = [0u8; 4];
        f.config_read(off, &mut b);
        u32::from_le_bytes(b)
    }

    #[test]
    fn ids_and_classes() {
        let cases = [
            (PlainFunction::i440fx(), 0x1237_8086, 0x0600),
            (PlainFunction::piix3(), 0x7000_8086, 0x0601),
            (PlainFunction::q35_host(), 0x29c0_8086, 0x0600),
            (PlainFunction::ich9_lpc(), 0x2918_8086, 0x0601),
        ];
        for (mut f, ids, class) in cases {
            assert_eq!(r32(&mut f, 0), ids, "{}", f.name());
            assert_eq!(r32(&mut f, 8) >> 16, class, "{}", f.name());
            assert_eq!(r32(&mut f, 0x0c) >> 16 & 0xff, 0, "type 0, single function");
            f.config_write(0x10, &[0xff; 4]);
            assert_eq!(r32(&mut f, 0x10), 0, "no BARs");
            assert_eq!(r32(&mut f, 0x34) & 0xff, 0, "no capabilities");
            assert!(f.active_bars().is_empty());
            f.config_write(0, &[0; 4]);
            assert_eq!(r32(&mut f, 0), ids);
        }
    }
}
