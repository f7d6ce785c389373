//! The policies as data: every rule has a reason, every role compiles,
//! and the properties the module doc promises hold for each role.

use super::*;

fn has_ioctl(role: Role, req: u64) -> bool {
    rules(role).iter().any(|r| {
        r.nr == libc::SYS_ioctl && matches!(r.args, Args::Eq { idx: 1, val } if val == req)
    })
}

#[test]
fn every_rule_says_why_and_every_role_compiles() {
    for &role in ROLES {
        let list = rules(role);
        assert!(list.iter().all(|r| r.why.len() > 10), "{role:?}");
        for m in [
            SeccompAction::Trap,
            SeccompAction::KillProcess,
            SeccompAction::Log,
        ] {
            assert!(!compile(role, &list, m).unwrap().is_empty());
        }
    }
}

#[test]
fn ioctl_is_by_request_and_code_is_never_mapped() {
    for &role in ROLES {
        for r in rules(role) {
            match r.nr {
                libc::SYS_ioctl => assert!(matches!(r.args, Args::Eq { idx: 1, .. }), "{r:?}"),
                libc::SYS_mmap | libc::SYS_mprotect => assert_eq!(
                    r.args,
                    Args::Clear {
                        idx: 2,
                        mask: libc::PROT_EXEC as u64
                    },
                    "{role:?}"
                ),
                n => {
                    for bad in [
                        libc::SYS_socket,
                        libc::SYS_open,
                        libc::SYS_openat,
                        libc::SYS_openat2,
                        libc::SYS_execve,
                        libc::SYS_execveat,
                        libc::SYS_ptrace,
                        libc::SYS_mount,
                        libc::SYS_unshare,
                        libc::SYS_pkey_mprotect,
                        libc::SYS_setrlimit,
                        libc::SYS_prlimit64,
                    ] {
                        assert_ne!(n, bad, "{role:?} allows {}", syscall_name(bad));
                    }
                }
            }
        }
    }
}

#[test]
fn kvm_requests_belong_to_their_roles() {
    use kvm::*;
    let own = |r: Role| {
        ROLES
            .iter()
            .filter(move |x| **x == r || **x == Role::Spawner)
    };
    for role in ROLES {
        let run = has_ioctl(*role, KVM_RUN);
        assert_eq!(
            run,
            own(Role::Vcpu).any(|r| r == role),
            "KVM_RUN in {role:?}"
        );
        let create = has_ioctl(*role, KVM_CREATE_VM) || has_ioctl(*role, KVM_CREATE_VCPU);
        assert_eq!(
            create,
            own(Role::Ctl).any(|r| r == role),
            "KVM_CREATE_* in {role:?}"
        );
        // Asked once by resources::Resources::open, before any filter.
        assert!(
            !has_ioctl(*role, KVM_GET_SUPPORTED_CPUID),
            "KVM_GET_SUPPORTED_CPUID in {role:?}"
        );
    }
    for role in [Role::Worker("blk"), Role::IoHelper, Role::Prealloc] {
        assert!(
            !rules(role).iter().any(|r| r.nr == libc::SYS_ioctl),
            "{role:?} needs no ioctl"
        );
    }
    // Main's only ioctls put the terminal back at exit (the console) and
    // wait for a pty console's client to read the last output.
    for r in rules(Role::Main).iter().filter(|r| r.nr == libc::SYS_ioctl) {
        let terminal =
            [libc::TCSETS, libc::TCGETS, libc::FIONREAD].map(|req| Args::Eq { idx: 1, val: req });
        assert!(terminal.contains(&r.args), "Main ioctl {r:?}");
    }
}

#[test]
fn the_spawner_covers_every_role() {
    let all = rules(Role::Spawner);
    for &role in ROLES {
        for r in rules(role) {
            assert!(all.contains(&r), "spawner lacks {r:?} of {role:?}");
        }
    }
}

#[test]
fn duplicate_rules_add_no_bpf() {
    let trap = || seccompiler::SeccompAction::Trap;
    // The spawner's union repeats every role's base list: the program is
    // what the distinct rules give.
    let union = rules(Role::Spawner);
    let mut distinct: Vec<Rule> = Vec::new();
    for r in &union {
        if !distinct.iter().any(|d| d.nr == r.nr && d.args == r.args) {
            distinct.push(*r);
        }
    }
    assert!(distinct.len() < union.len(), "no duplicates to test with");
    let a = compile(Role::Spawner, &union, trap()).unwrap();
    let b = compile(Role::Spawner, &distinct, trap()).unwrap();
    assert_eq!(a.len(), b.len());
    assert!(a
        .iter()
        .zip(&b)
        .all(|(x, y)| (x.code, x.jt, x.jf, x.k) == (y.code, y.jt, y.jf, y.k)));
}
