//! virtio-rng driven from inside the probe guest (`probe=rng`): over
//! virtio-mmio on microvm (`virtio-rng-device`) and virtio-pci on pc and
//! q35 (`virtio-rng-pci`), with QEMU's `-object rng-random` backend syntax.
//! Ignored until Casemate's virtio-rng device lands.

use casemate_tests::{boot_probe, kvm_or_skip};

/// The probe's transport and the `-device` that gives it, per machine.
fn rng_device(machine: &str) -> (&'static str, &'static str) {
    if machine == "microvm" {
        ("mmio", "virtio-rng-device,rng=rng0")
    } else {
        ("pci", "virtio-rng-pci,rng=rng0")
    }
}

macro_rules! pending_on {
    ($scenario:ident: $($machine:ident),+) => {
        mod $scenario {
            $(
                #[test]
                fn $machine() {
                    super::$scenario(stringify!($machine));
                }
            )+
        }
    };
}

pending_on!(guest_reads_random_bytes: microvm, pc, q35);

fn guest_reads_random_bytes(machine: &str) {
    if !kvm_or_skip(&format!("guest_reads_random_bytes on {machine}")) {
        return;
    }
    let (transport, device) = rng_device(machine);
    for (append, bytes) in [("probe=rng", "64"), ("probe=rng bytes=4096", "4096")] {
        let (r, _) = boot_probe(&[
            "-M",
            machine,
            "-object",
            "rng-random,id=rng0,filename=/dev/urandom",
            "-device",
            device,
            "-append",
            append,
        ]);
        r.assert_ok();
        assert_eq!(r.want("transport"), transport, "{}", r.raw);
        assert_eq!(r.want("bytes"), bytes, "{}", r.raw);
        let distinct: u32 = r.want("distinct").parse().unwrap();
        assert!(distinct > 1, "{}", r.raw);
    }
}
