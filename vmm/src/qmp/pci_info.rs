//! `query-pci` in QEMU 7.2's shape, read live from the PCI root: each
//! function's ids, class (with QEMU's description where it has one), its
//! interrupt pin and line, and its regions: the BARs that decode now,
//! with their address, size and type. A BAR the guest has not enabled is
//! left out (QEMU lists it at address -1); reading its size would mean
//! writing the BAR behind the guest's back.

use casemate_devices::pci::root::lock;
use casemate_devices::pci::BarKind;
use serde_json::{json, Value};

use super::Hub;

/// QEMU's names for the classes Casemate's devices use (hw/pci/pci.c).
const CLASSES: &[(u64, &str)] = &[
    (0x0100, "SCSI controller"),
    (0x0101, "IDE controller"),
    (0x0106, "SATA controller"),
    (0x0180, "Storage controller"),
    (0x0200, "Ethernet controller"),
    (0x0280, "Network controller"),
    (0x0300, "VGA controller"),
    (0x0380, "Display controller"),
    (0x0600, "Host bridge"),
    (0x0601, "ISA bridge"),
    (0x0604, "PCI bridge"),
    (0x0c05, "SMBus"),
];

pub fn class_desc(class: u64) -> Option<&'static str> {
    CLASSES.iter().find(|(c, _)| *c == class).map(|(_, d)| *d)
}

pub fn query_pci(hub: &Hub) -> Value {
    let Some(root) = hub.pci_root() else {
        return json!([]);
    };
    let rd = |bdf, off: u16, n: usize| {
        let mut b = [0u8; 4];
        root.config_read(bdf, off, &mut b[..n]);
        u32::from_le_bytes(b)
    };
    let devices: Vec<Value> = root
        .functions()
        .into_iter()
        .map(|(bdf, dev)| {
            let class = u64::from(rd(bdf, 0x0a, 2));
            let mut class_info = json!({"class": class});
            if let Some(desc) = class_desc(class) {
                class_info["desc"] = json!(desc);
            }
            let regions: Vec<Value> = lock(&dev).active_bars().iter().map(region).collect();
            let mut d = json!({
                "bus": bdf.bus,
                "slot": bdf.dev,
                "function": bdf.func,
                "class_info": class_info,
                "id": {
                    "vendor": rd(bdf, 0x00, 2),
                    "device": rd(bdf, 0x02, 2),
                    "subsystem-vendor": rd(bdf, 0x2c, 2),
                    "subsystem": rd(bdf, 0x2e, 2),
                },
                "qdev_id": "",
                "regions": regions,
            });
            let pin = rd(bdf, 0x3d, 1);
            if pin != 0 {
                d["irq_pin"] = json!(pin);
                d["irq"] = json!(rd(bdf, 0x3c, 1));
            }
            d
        })
        .collect();
    json!([{"bus": 0, "devices": devices}])
}

fn region(b: &casemate_devices::pci::BarRange) -> Value {
    match b.kind {
        BarKind::Io => json!({"bar": b.index, "type": "io", "address": b.addr, "size": b.size}),
        BarKind::Mem32 | BarKind::Mem64 { .. } => json!({
            "bar": b.index,
            "type": "memory",
            "address": b.addr,
            "size": b.size,
            "prefetch": matches!(b.kind, BarKind::Mem64 { prefetchable: true }),
            "mem_type_64": matches!(b.kind, BarKind::Mem64 { .. }),
        }),
    }
}

/// HMP's line for one region, as QEMU prints it.
pub fn region_line(r: &Value) -> String {
    let addr = r["address"].as_u64().unwrap_or(0);
    let end = addr
        .wrapping_add(r["size"].as_u64().unwrap_or(0))
        .wrapping_sub(1);
    let bar = r["bar"].as_u64().unwrap_or(0);
    if r["type"] == "io" {
        format!("      BAR{bar}: I/O at 0x{addr:04x} [0x{end:04x}].\n")
    } else {
        format!(
            "      BAR{bar}: {} bit{} memory at 0x{addr:08x} [0x{end:08x}].\n",
            if r["mem_type_64"] == true { 64 } else { 32 },
            if r["prefetch"] == true {
                " prefetchable"
            } else {
                ""
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use casemate_devices::pci::BarRange;

    #[test]
    fn regions_have_qemus_shape_and_hmp_wording() {
        let io = region(&BarRange {
            index: 0,
            kind: BarKind::Io,
            addr: 0xc000,
            size: 0x80,
        });
        assert_eq!(
            io,
            json!({"bar": 0, "type": "io", "address": 0xc000, "size": 0x80})
        );
        assert_eq!(region_line(&io), "      BAR0: I/O at 0xc000 [0xc07f].\n");
        let m = region(&BarRange {
            index: 4,
            kind: BarKind::Mem64 { prefetchable: true },
            addr: 0xfe00_0000,
            size: 0x4000,
        });
        assert_eq!(m["prefetch"], true);
        assert_eq!(m["mem_type_64"], true);
        assert_eq!(
            region_line(&m),
            "      BAR4: 64 bit prefetchable memory at 0xfe000000 [0xfe003fff].\n"
        );
        let m32 = region(&BarRange {
            index: 1,
            kind: BarKind::Mem32,
            addr: 0xfebd_1000,
            size: 0x1000,
        });
        assert_eq!(
            region_line(&m32),
            "      BAR1: 32 bit memory at 0xfebd1000 [0xfebd1fff].\n"
        );
        assert_eq!(class_desc(0x0106), Some("SATA controller"));
        assert_eq!(class_desc(0x00ff), None);
    }
}
