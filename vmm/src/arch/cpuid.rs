//! The CPUID table each vCPU sees: KVM's supported set, narrowed by the
//! `-cpu` template, with this vCPU's APIC id and the VM's topology written
//! into the leaves guests read them from (1, 4, 0xB, 0x1F, 0x8000_0008,
//! 0x8000_001E), and a hypervisor timing leaf (0x4000_0010) with the TSC
//! frequency so guests need not calibrate against slow emulated timers.

use kvm_bindings::{kvm_cpuid_entry2, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};

use super::topology::Topology;
use crate::config::CpuModel;

/// Leaf 1 ECX bit 31: running under a hypervisor.
const ECX_HYPERVISOR: u32 = 1 << 31;
/// Leaf 1 EDX bit 28: more than one logical processor per package.
const EDX_HTT: u32 = 1 << 28;

/// QEMU's kvm64 leaf-1 EDX/ECX and 0x8000_0001 EDX/ECX feature sets.
const KVM64_1_EDX: u32 = 0x0781_abfd; // fpu..sse2 without pse36/ds/acpi/ss/tm/pbe
const KVM64_1_ECX: u32 = (1 << 0) | (1 << 13); // sse3, cx16
const KVM64_X1_EDX: u32 = (1 << 11) | (1 << 20) | (1 << 29); // syscall, nx, lm
const KVM64_X1_ECX: u32 = 0;
/// qemu64 adds lahf_lm, abm, sse4a to the extended ECX set.
const QEMU64_X1_ECX: u32 = (1 << 0) | (1 << 5) | (1 << 6);

/// What the patching needs to know about one vCPU.
#[derive(Debug, Clone, Copy)]
pub struct VcpuIdentity {
    pub apic_id: u32,
    pub topology: Topology,
    pub model: CpuModel,
    /// Guest TSC frequency; 0 when KVM did not report one.
    pub tsc_khz: u32,
}

fn is_amd(entries: &[kvm_cpuid_entry2]) -> bool {
    entries
        .iter()
        .find(|e| e.function == 0)
        .is_some_and(|e| e.ebx == u32::from_le_bytes(*b"Auth"))
}

fn entry(function: u32, index: u32, regs: [u32; 4]) -> kvm_cpuid_entry2 {
    kvm_cpuid_entry2 {
        function,
        index,
        flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
        eax: regs[0],
        ebx: regs[1],
        ecx: regs[2],
        edx: regs[3],
        ..Default::default()
    }
}

/// Patch KVM's supported CPUID `entries` for one vCPU.
pub fn patch(entries: &mut Vec<kvm_cpuid_entry2>, id: &VcpuIdentity) {
    let topo = id.topology;
    let per_pkg = topo.threads_per_package();
    let amd = is_amd(entries);
    apply_template(entries, id.model);
    for e in entries.iter_mut() {
        match e.function {
            1 => {
                e.ebx = (id.apic_id << 24) | (per_pkg.min(255) << 16) | (e.ebx & 0xffff);
                e.ecx |= ECX_HYPERVISOR;
                if per_pkg > 1 {
                    e.edx |= EDX_HTT;
                } else {
                    e.edx &= !EDX_HTT;
                }
            }
            4 if e.eax & 0x1f != 0 => {
                let level = (e.eax >> 5) & 0x7;
                let sharing = if level >= 3 { per_pkg } else { topo.threads };
                e.eax = (e.eax & 0x3fff)
                    | ((sharing - 1).min(0xfff) << 14)
                    | ((topo.cores - 1).min(0x3f) << 26);
            }
            0x8000_0008 if amd => {
                e.ecx = (e.ecx & !0xf0ff)
                    | (per_pkg - 1).min(0xff)
                    | ((topo.core_bits() + topo.thread_bits()) << 12);
            }
            0x8000_001e if amd => {
                let core = id.apic_id >> topo.thread_bits();
                e.eax = id.apic_id;
                e.ebx = ((topo.threads - 1) << 8) | (core & 0xff);
                e.ecx = 0;
            }
            _ => {}
        }
    }
    set_extended_topology(entries, id);
    set_timing_leaf(entries, id.tsc_khz);
}

/// Leaves 0xB and 0x1F: SMT and core levels, with the x2APIC id in EDX.
fn set_extended_topology(entries: &mut Vec<kvm_cpuid_entry2>, id: &VcpuIdentity) {
    let t = id.topology;
    let max_basic = entries
        .iter()
        .find(|e| e.function == 0)
        .map_or(0, |e| e.eax);
    let leaves: &[u32] = if max_basic >= 0x1f {
        &[0xb, 0x1f]
    } else {
        &[0xb]
    };
    entries.retain(|e| !leaves.contains(&e.function));
    for &leaf in leaves {
        let smt = t.thread_bits();
        let core = smt + t.core_bits();
        entries.push(entry(leaf, 0, [smt, t.threads, 1 << 8, id.apic_id]));
        entries.push(entry(
            leaf,
            1,
            [core, t.threads_per_package(), (2 << 8) | 1, id.apic_id],
        ));
        entries.push(entry(leaf, 2, [0, 0, 2, id.apic_id]));
    }
}

/// 0x4000_0010: EAX = TSC kHz, EBX = LAPIC timer kHz (KVM's is 1 GHz).
fn set_timing_leaf(entries: &mut Vec<kvm_cpuid_entry2>, tsc_khz: u32) {
    if tsc_khz == 0 {
        return;
    }
    let Some(base) = entries.iter_mut().find(|e| e.function == 0x4000_0000) else {
        return;
    };
    base.eax = base.eax.max(0x4000_0010);
    entries.retain(|e| e.function != 0x4000_0010);
    let mut e = entry(0x4000_0010, 0, [tsc_khz, 1_000_000, 0, 0]);
    e.flags = 0;
    entries.push(e);
}

/// Narrow features to QEMU's named baselines; `host` keeps KVM's set.
fn apply_template(entries: &mut [kvm_cpuid_entry2], model: CpuModel) {
    let x1_ecx = match model {
        CpuModel::Host => return,
        CpuModel::Kvm64 => KVM64_X1_ECX,
        CpuModel::Qemu64 => QEMU64_X1_ECX,
    };
    for e in entries.iter_mut() {
        match e.function {
            1 => {
                e.edx &= KVM64_1_EDX;
                e.ecx &= KVM64_1_ECX;
            }
            // Structured extended features (AVX2, SMAP, ...) and XSAVE state.
            7 | 0xd | 0x14 | 0x19 | 0x24 => {
                e.eax = 0;
                e.ebx = 0;
                e.ecx = 0;
                e.edx = 0;
            }
            0x8000_0001 => {
                e.edx &= KVM64_X1_EDX | KVM64_1_EDX;
                e.ecx &= x1_ecx;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_like() -> Vec<kvm_cpuid_entry2> {
        let mut v = vec![
            entry(0, 0, [0x1f, u32::from_le_bytes(*b"Auth"), 0, 0]),
            entry(1, 0, [0x800f12, 0x0001_0800, 0xfff8_3203, 0x178b_fbff]),
            entry(7, 0, [0, 0x219c_91a9, 0x0040_069c, 0]),
            entry(0xb, 0, [9, 9, 9, 9]),
            entry(0x4000_0000, 0, [0x4000_0001, 0, 0, 0]),
            entry(0x8000_0001, 0, [0, 0, 0x75c2_37ff, 0x2fd3_fbff]),
            entry(0x8000_0008, 0, [0x3030, 0, 0, 0]),
            entry(0x8000_001e, 0, [0, 0, 0, 0]),
        ];
        v.iter_mut().for_each(|e| e.flags = 0);
        v
    }

    fn find(v: &[kvm_cpuid_entry2], f: u32, i: u32) -> kvm_cpuid_entry2 {
        *v.iter().find(|e| e.function == f && e.index == i).unwrap()
    }

    #[test]
    fn topology_reaches_the_guest_visible_leaves() {
        let mut v = host_like();
        let topology = Topology {
            sockets: 2,
            cores: 2,
            threads: 2,
        };
        patch(
            &mut v,
            &VcpuIdentity {
                apic_id: 5,
                topology,
                model: CpuModel::Host,
                tsc_khz: 2_000_000,
            },
        );
        let l1 = find(&v, 1, 0);
        assert_eq!(l1.ebx >> 24, 5);
        assert_eq!((l1.ebx >> 16) & 0xff, 4);
        assert_ne!(l1.edx & EDX_HTT, 0);
        assert_ne!(l1.ecx & ECX_HYPERVISOR, 0);
        assert_eq!(find(&v, 0xb, 0).ebx, 2);
        assert_eq!(find(&v, 0xb, 1).eax, 2);
        assert_eq!(find(&v, 0xb, 1).edx, 5);
        assert_eq!(find(&v, 0x1f, 1).ebx, 4);
        assert_eq!(v.iter().filter(|e| e.function == 0xb).count(), 3);
        assert_eq!(find(&v, 0x8000_0008, 0).ecx & 0xff, 3);
        assert_eq!(find(&v, 0x4000_0010, 0).eax, 2_000_000);
        assert_eq!(find(&v, 0x4000_0000, 0).eax, 0x4000_0010);
    }

    #[test]
    fn kvm64_masks_host_features() {
        let mut v = host_like();
        let topology = Topology {
            sockets: 1,
            cores: 1,
            threads: 1,
        };
        patch(
            &mut v,
            &VcpuIdentity {
                apic_id: 0,
                topology,
                model: CpuModel::Kvm64,
                tsc_khz: 0,
            },
        );
        assert_eq!(find(&v, 7, 0).ebx, 0, "no AVX2/SMAP etc.");
        assert_eq!(
            find(&v, 1, 0).ecx & !ECX_HYPERVISOR,
            KVM64_1_ECX & 0xfff8_3203
        );
        assert_eq!(find(&v, 1, 0).edx & EDX_HTT, 0);
        assert!(
            v.iter().all(|e| e.function != 0x4000_0010),
            "no TSC leaf without a frequency"
        );
    }
}
