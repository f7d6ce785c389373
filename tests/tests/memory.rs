//! Guest RAM backends on a live VM: every backend boots with the right size,
//! memfd RAM is readable by another process, prealloc fills RSS, madvise
//! flags and hugepages show in /proc/PID/smaps, and a short hugepage pool
//! fails with numbers. Live checks wait on the probe's `spin` line (blocking
//! reads), never on sleeps.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use casemate_tests::{bin, boot_probe, casemate, in_ci, kvm_or_skip, Scratch};

/// Hugepage tests change the global pool: one at a time.
static HUGE: Mutex<()> = Mutex::new(());

/// A VM running `probe=spin`, killed on drop.
struct Live {
    child: Child,
}

impl Live {
    /// Start casemate and block until the probe's spin line is out.
    fn start(args: &[&str], append: &str) -> Self {
        let mut child = Command::new(bin("casemate"))
            .args(args)
            .args(["-append", append])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn casemate");
        // Reading blocks until the spin line or EOF: bound a hung VMM.
        let dog = casemate_tests::Watchdog::arm(child.id(), std::time::Duration::from_secs(120));
        let out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut seen = String::new();
        for line in out.lines() {
            let line = line.expect("read console");
            seen.push_str(&line);
            seen.push('\n');
            if line.starts_with("probe: spin") {
                assert!(
                    !dog.disarm(),
                    "casemate {args:?} took over 120 s to reach the spin line"
                );
                return Self { child };
            }
        }
        let _ = child.kill();
        dog.disarm();
        let err = child
            .wait_with_output()
            .map(|o| o.stderr)
            .unwrap_or_default();
        panic!(
            "casemate {args:?} ended before the spin line:\n{seen}\nstderr:\n{}",
            String::from_utf8_lossy(&err)
        );
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn proc(&self, file: &str) -> String {
        std::fs::read_to_string(format!("/proc/{}/{file}", self.pid())).expect("read /proc")
    }

    /// smaps entries (header line + fields) of mappings at least `min` bytes.
    fn big_mappings(&self, min: u64) -> Vec<String> {
        let mut out: Vec<(bool, String)> = Vec::new();
        for l in self.proc("smaps").lines() {
            let first = l.split_whitespace().next().unwrap_or_default();
            // Field lines start with `Name:`; headers with `start-end`.
            if let (false, Some((a, b))) = (first.ends_with(':'), first.split_once('-')) {
                let len = u64::from_str_radix(b, 16).unwrap_or(0)
                    - u64::from_str_radix(a, 16).unwrap_or(0);
                out.push((len >= min, l.to_string()));
            } else if let Some((_, cur)) = out.last_mut() {
                cur.push('\n');
                cur.push_str(l);
            }
        }
        out.into_iter().filter(|m| m.0).map(|m| m.1).collect()
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn vm_flags(mapping: &str) -> Vec<&str> {
    mapping
        .lines()
        .find_map(|l| l.strip_prefix("VmFlags:"))
        .map(|f| f.split_whitespace().collect())
        .unwrap_or_default()
}

fn kib(status: &str, key: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in\n{status}"))
}

#[test]
fn every_backend_boots_with_the_right_size() {
    if !kvm_or_skip("every_backend_boots_with_the_right_size") {
        return;
    }
    let s = Scratch::new("backends");
    let file = s.path("ram.img");
    let objects = [
        ("256M", "memory-backend-ram,id=m,size=256M".to_string()),
        (
            "256M",
            "memory-backend-ram,id=m,size=256M,prealloc=on,share=on".into(),
        ),
        (
            "256M",
            "memory-backend-memfd,id=m,size=256M,prealloc=on".into(),
        ),
        (
            "256M",
            "memory-backend-memfd,id=m,size=256M,share=off".into(),
        ),
        ("5G", "memory-backend-memfd,id=m,size=5G".into()),
        (
            "256M",
            format!(
                "memory-backend-file,id=m,size=256M,mem-path={}",
                file.display()
            ),
        ),
        (
            "256M",
            format!(
                "memory-backend-file,id=m,size=256M,mem-path={},share=on",
                s.0.display()
            ),
        ),
    ];
    for (m, obj) in &objects {
        let (r, _) = boot_probe(&[
            "-m",
            m,
            "-object",
            obj,
            "-M",
            "memory-backend=m",
            "-append",
            "probe=hello",
        ]);
        r.assert_ok();
        let mib = if *m == "5G" { 5 << 10 } else { 256 };
        assert_eq!(r.want("mem_mib"), mib.to_string(), "{obj}:\n{}", r.raw);
    }
    assert_eq!(
        std::fs::metadata(&file).unwrap().len(),
        256 << 20,
        "file sized to RAM"
    );
}

#[test]
fn size_mismatch_names_both_values() {
    let out = casemate(&[
        "-m",
        "512M",
        "-object",
        "memory-backend-ram,id=m,size=1G",
        "-M",
        "memory-backend=m",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("size=1 GiB") && err.contains("-m 512 MiB"),
        "{err}"
    );
}

#[test]
fn memfd_share_on_is_visible_to_another_process() {
    if !kvm_or_skip("memfd_share_on_is_visible_to_another_process") {
        return;
    }
    const MARK_GPA: u64 = 0x200_0000;
    for (share, visible) in [("on", true), ("off", false)] {
        let obj = format!("memory-backend-memfd,id=guestram,size=128M,share={share}");
        let vm = Live::start(
            &[
                "-m",
                "128M",
                "-object",
                &obj,
                "-M",
                "memory-backend=guestram",
            ],
            &format!("probe=spin ms=30000 mark={MARK_GPA:#x}"),
        );
        // The memfd is named after the backend id: find it among the fds.
        let fd_dir = format!("/proc/{}/fd", vm.pid());
        let fd = std::fs::read_dir(&fd_dir)
            .unwrap()
            .filter_map(Result::ok)
            .find(|e| {
                std::fs::read_link(e.path())
                    .is_ok_and(|l| l.to_string_lossy().starts_with("/memfd:guestram"))
            })
            .unwrap_or_else(|| panic!("no /memfd:guestram in {fd_dir}"))
            .path();
        // A second process maps nothing of ours: it reads the memfd by path.
        let out = Command::new("dd")
            .arg(format!("if={}", fd.display()))
            .args([
                "iflag=skip_bytes",
                &format!("skip={MARK_GPA}"),
                "bs=16",
                "count=1",
                "status=none",
            ])
            .output()
            .expect("run dd");
        assert!(
            out.status.success(),
            "dd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            out.stdout == b"casemate-mark-ok",
            visible,
            "share={share}: second process read {:?}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[test]
fn prealloc_fills_rss_before_the_guest_runs() {
    if !kvm_or_skip("prealloc_fills_rss_before_the_guest_runs") {
        return;
    }
    for (prealloc, expect_full) in [("on", true), ("off", false)] {
        let obj = format!("memory-backend-ram,id=m,size=512M,prealloc={prealloc}");
        let vm = Live::start(
            &["-m", "512M", "-object", &obj, "-M", "memory-backend=m"],
            "probe=spin ms=30000",
        );
        let rss = kib(&vm.proc("status"), "VmRSS:");
        if expect_full {
            assert!(rss >= 512 << 10, "prealloc=on: VmRSS {rss} kB < 512 MiB");
        } else {
            assert!(
                rss < 256 << 10,
                "prealloc=off: VmRSS {rss} kB: RAM was populated"
            );
        }
    }
}

type SmapsCase = (
    &'static str,
    &'static [&'static str],
    &'static [&'static str],
    &'static [&'static str],
);

#[test]
fn madvise_flags_show_in_smaps() {
    if !kvm_or_skip("madvise_flags_show_in_smaps") {
        return;
    }
    // (object, extra options, VmFlags wanted, VmFlags not wanted)
    let cases: [SmapsCase; 3] = [
        (
            "memory-backend-ram,id=m,size=256M,dump=off",
            &[],
            &["dd", "hg", "mg"],
            &[],
        ),
        (
            "memory-backend-ram,id=m,size=256M,merge=off",
            &["--thp", "off"],
            &["nh"],
            &["dd", "hg", "mg"],
        ),
        (
            "memory-backend-ram,id=m,size=256M,prealloc=on",
            &["-overcommit", "mem-lock=on"],
            &["lo"],
            &["dd"],
        ),
    ];
    for (obj, extra, want, not) in cases {
        let mut args = vec!["-m", "256M", "-object", obj, "-M", "memory-backend=m"];
        args.extend_from_slice(extra);
        let vm = Live::start(&args, "probe=spin ms=30000");
        // Guest RAM above its low 2 MiB: THP is not advised below that
        // (memory::advice), which splits the mapping in two.
        let maps = vm.big_mappings(254 << 20);
        assert_eq!(
            maps.len(),
            1,
            "{obj}: one guest RAM mapping expected:\n{maps:#?}"
        );
        let flags = vm_flags(&maps[0]);
        if want.contains(&"hg") {
            let start = maps[0].split('-').next().unwrap_or_default();
            let low = vm
                .big_mappings(0)
                .into_iter()
                .find(|m| {
                    let head = m.split_whitespace().next().unwrap_or_default();
                    head.split_once('-').map(|(_, end)| end) == Some(start)
                })
                .unwrap_or_else(|| panic!("{obj}: no mapping just below guest RAM at {start}"));
            let low_flags = vm_flags(&low);
            assert!(
                !low_flags.contains(&"hg") && low_flags.contains(&"dd"),
                "{obj}: low 2 MiB of guest RAM: VmFlags {low_flags:?}"
            );
        }
        for w in want {
            assert!(
                flags.contains(w),
                "{obj} {extra:?}: VmFlags {flags:?} lacks {w}"
            );
        }
        for n in not {
            assert!(
                !flags.contains(n),
                "{obj} {extra:?}: VmFlags {flags:?} has {n}"
            );
        }
    }
}

/// Raises the 2 MiB pool by `pages` for one test and puts it back on drop.
struct PoolGuard {
    old: u64,
}

const NR: &str = "/proc/sys/vm/nr_hugepages";
const POOL: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB";

fn pool_value(name: &str) -> u64 {
    std::fs::read_to_string(format!("{POOL}/{name}"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

impl PoolGuard {
    fn raise(pages: u64) -> Result<Self, String> {
        let old: u64 = std::fs::read_to_string(NR)
            .map_err(|e| format!("{NR}: {e}"))?
            .trim()
            .parse()
            .map_err(|_| format!("{NR} unreadable"))?;
        std::fs::write(NR, (old + pages).to_string()).map_err(|e| format!("writing {NR}: {e}"))?;
        let g = Self { old };
        let avail = pool_value("free_hugepages") - pool_value("resv_hugepages");
        if avail < pages {
            return Err(format!(
                "asked for {pages} more 2 MiB pages, the kernel has {avail} free"
            ));
        }
        Ok(g)
    }
}

impl Drop for PoolGuard {
    fn drop(&mut self) {
        let _ = std::fs::write(NR, self.old.to_string());
    }
}

/// Skip (printing why) unless in CI with hugetlb support in the kernel.
fn skip_huge(test: &str, why: &str) {
    assert!(
        !(in_ci() && std::path::Path::new(POOL).exists()),
        "{test}: {why} (CI=true and the kernel has hugetlb)"
    );
    println!("SKIP {test}: {why}");
}

#[test]
fn hugetlb_backends_use_huge_pages() {
    let test = "hugetlb_backends_use_huge_pages";
    if !kvm_or_skip(test) {
        return;
    }
    let _one = HUGE.lock().unwrap_or_else(|p| p.into_inner());
    let _pool = match PoolGuard::raise(64) {
        Ok(g) => g,
        Err(why) => return skip_huge(test, &why),
    };
    let obj = "memory-backend-memfd,id=m,size=128M,hugetlb=on,hugetlbsize=2M,prealloc=on";
    let vm = Live::start(
        &["-m", "128M", "-object", obj, "-M", "memory-backend=m"],
        "probe=spin ms=30000",
    );
    let maps = vm.big_mappings(128 << 20);
    assert_eq!(maps.len(), 1, "{maps:#?}");
    let m = &maps[0];
    assert!(vm_flags(m).contains(&"ht"), "not a hugetlb mapping:\n{m}");
    assert!(m.contains("KernelPageSize:     2048 kB"), "{m}");
    // A page mapped by one process only counts as private, even in a memfd.
    let used = kib(m, "Shared_Hugetlb:") + kib(m, "Private_Hugetlb:");
    assert_eq!(used, 128 << 10, "prealloc=on used every hugepage:\n{m}");
}

#[test]
fn short_hugepage_pool_fails_with_numbers() {
    let test = "short_hugepage_pool_fails_with_numbers";
    if !kvm_or_skip(test) {
        return;
    }
    if !std::path::Path::new(POOL).exists() {
        return skip_huge(test, "the kernel has no 2 MiB hugepages");
    }
    let _one = HUGE.lock().unwrap_or_else(|p| p.into_inner());
    let avail = pool_value("free_hugepages") - pool_value("resv_hugepages");
    let want = avail + 8;
    let size = format!("{}M", want * 2);
    let obj = format!("memory-backend-memfd,id=m,size={size},hugetlb=on");
    let out = casemate(&["-m", &size, "-object", &obj, "-M", "memory-backend=m"]);
    assert!(!out.status.success(), "started with a short pool");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("needs {want} pages of 2 MiB"))
            && err.contains(&format!("only {avail} are free")),
        "{err}"
    );
}
