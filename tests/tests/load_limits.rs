//! Kernels and initrds that are not what they claim: endless (`/dev/zero`),
//! huge and sparse, larger than guest RAM. Each must be refused before it is
//! read, quickly, with a message naming the file and the limit; no reading a
//! whole 4 GiB file to find out it is not a kernel.

use std::time::{Duration, Instant};

use casemate_tests::{casemate, kvm_or_skip, Scratch};

/// Runs casemate, expects a failure within `limit` whose stderr holds every
/// one of `needles`.
fn refuses_fast(args: &[&str], needles: &[&str], limit: Duration) {
    let t = Instant::now();
    let out = casemate(args);
    let took = t.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(!err.contains("panicked"), "{args:?} panicked:\n{err}");
    for n in needles {
        assert!(err.contains(n), "{args:?}: expected '{n}' in:\n{err}");
    }
    assert!(took < limit, "{args:?} took {took:?} to fail");
}

fn sparse(s: &Scratch, name: &str, size: u64, head: &[(u64, &[u8])]) -> String {
    use std::os::unix::fs::FileExt;
    let p = s.path(name);
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(size).unwrap();
    for (off, b) in head {
        f.write_all_at(b, *off).unwrap();
    }
    p.to_string_lossy().into_owned()
}

#[test]
fn endless_kernel_and_initrd_are_refused_unread() {
    if !kvm_or_skip("endless_kernel_and_initrd_are_refused_unread") {
        return;
    }
    let limit = Duration::from_secs(5);
    refuses_fast(
        &["-m", "128M", "-kernel", "/dev/zero"],
        &["kernel /dev/zero is not a regular file"],
        limit,
    );
    let s = Scratch::new("endless");
    let probe = s.probe();
    refuses_fast(
        &["-m", "128M", "-kernel", &probe, "-initrd", "/dev/zero"],
        &["initrd /dev/zero is not a regular file"],
        limit,
    );
}

#[test]
fn huge_sparse_files_fail_in_well_under_a_second() {
    if !kvm_or_skip("huge_sparse_files_fail_in_well_under_a_second") {
        return;
    }
    let s = Scratch::new("huge");
    let limit = Duration::from_millis(900);
    // Not a kernel at all: only its first bytes are read.
    let junk = sparse(&s, "junk", 4 << 30, &[]);
    refuses_fast(
        &["-m", "128M", "-kernel", &junk],
        &[&junk, "not an ELF or bzImage kernel"],
        limit,
    );
    // Looks like a bzImage but is larger than guest RAM.
    let bz = sparse(&s, "bz", 4 << 30, &[(0x202, b"HdrS")]);
    refuses_fast(
        &["-m", "128M", "-kernel", &bz],
        &[
            &bz,
            "4294967296 bytes, larger than the",
            "bytes of guest RAM",
        ],
        limit,
    );
    // An initrd larger than the RAM it must fit into.
    let probe = s.probe();
    let initrd = sparse(&s, "initrd", 4 << 30, &[]);
    refuses_fast(
        &["-m", "128M", "-kernel", &probe, "-initrd", &initrd],
        &[
            &initrd,
            "4294967296 bytes, larger than the",
            "bytes of guest RAM",
        ],
        limit,
    );
}
