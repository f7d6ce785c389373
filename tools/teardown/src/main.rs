//! Measures what a KVM VM costs to create and to tear down on this host, per
//! component (memslot, irqchip, PIT, split irqchip, vCPUs, irqfds, ioeventfds),
//! and what a parent sees from spawn to waitpid depending on how the VMM ends.
//! Findings: ../TEARDOWN.md.
//!
//! Modes:
//!   scratch-teardown bench [REPS]          in-process, all variants alternating
//!   scratch-teardown spawn [REPS]          parent: spawn children, time spawn->waitpid
//!   scratch-teardown child VARIANT END     one VM, then END = exit | drop | helper | reaper
//!   scratch-teardown trace VARIANT         one teardown with sched_switch stack traces
//!                                          (TRACE_BUILD=1: the build too); pipe into
//!                                          summarize_trace.py
//!   scratch-teardown untrace TID           disarm and print (after child with TRACE_EXIT=1)
//!   scratch-teardown caps                  the CPUID bits Linux needs to run without a PIT
//!
//! Times are wall-clock (CLOCK_MONOTONIC); "cpu" columns are this thread's CPU time.

use std::io::Write;
use std::time::Instant;

use kvm_bindings::*;
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use vmm_sys_util::eventfd::EventFd;

const MEM_SIZE: usize = 128 << 20;
const CODE_ADDR: u64 = 0x1000;

#[derive(Clone, Copy, PartialEq)]
enum Irq {
    None,
    Full,
    Split,
}

#[derive(Clone, Copy)]
struct Spec {
    name: &'static str,
    mem: bool,
    irq: Irq,
    pit: bool,
    /// irqchip (or split cap) before the memslot
    irq_first: bool,
    vcpus: u64,
    run: bool,
    irqfds: u32,
    tss: bool,
    /// ioeventfds (MMIO, 4 bytes, no datamatch), registered after the irqfds
    ioeventfds: u32,
    /// sleep between the irqchip and the memslot (irq_first only)
    gap_ms: u64,
    /// sleep between building and closing
    delay_ms: u64,
}

const fn s(name: &'static str) -> Spec {
    Spec { name, mem: false, irq: Irq::None, pit: false, irq_first: false, vcpus: 0, run: false, irqfds: 0, tss: false, ioeventfds: 0, gap_ms: 0, delay_ms: 0 }
}

const VARIANTS: &[Spec] = &[
    s("bare"),
    Spec { mem: true, ..s("mem") },
    Spec { irq: Irq::Full, ..s("irqchip") },
    Spec { irq: Irq::Full, pit: true, ..s("irqchip+pit") },
    Spec { irq: Irq::Split, ..s("split") },
    Spec { mem: true, irq: Irq::Full, irq_first: true, ..s("irqchip,mem") },
    Spec { mem: true, irq: Irq::Full, ..s("mem,irqchip") },
    Spec { mem: true, irq: Irq::Split, irq_first: true, ..s("split,mem") },
    Spec { mem: true, irq: Irq::Split, ..s("mem,split") },
    Spec { mem: true, irq: Irq::Full, irq_first: true, gap_ms: 5, ..s("irqchip,5ms,mem") },
    Spec { mem: true, irq: Irq::Full, irq_first: true, gap_ms: 20, ..s("irqchip,20ms,mem") },
    Spec { irq: Irq::Full, delay_ms: 5, ..s("irqchip,5ms,close") },
    Spec { irq: Irq::Full, delay_ms: 20, ..s("irqchip,20ms,close") },
    Spec { irq: Irq::Full, pit: true, delay_ms: 20, ..s("irqchip+pit,20ms,close") },
    Spec { irq: Irq::Full, pit: true, delay_ms: 100, ..s("irqchip+pit,100ms,close") },
    Spec { vcpus: 1, ..s("1vcpu") },
    Spec { vcpus: 2, ..s("2vcpu") },
    Spec { mem: true, vcpus: 1, run: true, ..s("mem+1vcpu+run") },
    Spec { irq: Irq::Full, pit: true, vcpus: 1, ..s("irqchip+pit+1vcpu") },
    Spec { irq: Irq::Full, pit: true, vcpus: 2, ..s("irqchip+pit+2vcpu") },
    Spec { irq: Irq::Full, irqfds: 4, ..s("irqchip+4irqfd") },
    Spec { mem: true, irq: Irq::Split, vcpus: 1, run: true, irqfds: 4, ..s("mem,split+1vcpu+run+4irqfd") },
    Spec { irq: Irq::Split, ioeventfds: 1, ..s("split+1ioeventfd") },
    Spec { irq: Irq::Split, ioeventfds: 1, delay_ms: 20, ..s("split+1ioeventfd,20ms,close") },
    Spec { mem: true, irq: Irq::Split, vcpus: 1, run: true, irqfds: 4, ioeventfds: 4, ..s("mem,split+1vcpu+run+4irqfd+4ioeventfd") },
    Spec { mem: true, irq: Irq::Full, vcpus: 1, run: true, irqfds: 4, tss: true, ..s("mem,irqchip+1vcpu+run+4irqfd+tss") },
    // What Firecracker builds (irqchip+PIT, TSS, irqfds, vCPU), irqchip after memslot.
    Spec { mem: true, irq: Irq::Full, pit: true, vcpus: 1, run: true, irqfds: 4, tss: true, ..s("full(mem,irqchip+pit+1vcpu+run+4irqfd+tss)") },
];

fn spec(name: &str) -> Spec {
    if name == "noop" {
        return s("noop");
    }
    *VARIANTS.iter().find(|v| v.name == name).unwrap_or_else(|| panic!("unknown variant {name}"))
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn thread_cpu_ms() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 * 1e3 + ts.tv_nsec as f64 / 1e6
}

struct Vm {
    vm: VmFd,
    vcpus: Vec<VcpuFd>,
    irqfds: Vec<EventFd>,
    mem: *mut libc::c_void,
}

#[derive(Default, Clone)]
struct Times {
    create: f64,
    irq: f64,
    pit: f64,
    mem: f64,
    tss: f64,
    vcpu: f64,
    run: f64,
    irqfd: f64,
    close_vcpus: f64,
    close_vm: f64,
    close_vm_cpu: f64,
    munmap: f64,
    total: f64,
}

fn build(kvm: &Kvm, sp: &Spec, t: &mut Times) -> Vm {
    let t0 = Instant::now();
    let vm = kvm.create_vm().expect("KVM_CREATE_VM");
    t.create = ms(t0);

    let mut mem = std::ptr::null_mut();
    let do_irq = |vm: &VmFd, t: &mut Times| {
        let t0 = Instant::now();
        match sp.irq {
            Irq::None => {}
            Irq::Full => vm.create_irq_chip().expect("KVM_CREATE_IRQCHIP"),
            Irq::Split => {
                let mut cap = kvm_enable_cap { cap: KVM_CAP_SPLIT_IRQCHIP, ..Default::default() };
                cap.args[0] = 24;
                vm.enable_cap(&cap).expect("KVM_CAP_SPLIT_IRQCHIP");
            }
        }
        t.irq = ms(t0);
        if sp.pit {
            let t0 = Instant::now();
            let cfg = kvm_pit_config { flags: KVM_PIT_SPEAKER_DUMMY, ..Default::default() };
            vm.create_pit2(cfg).expect("KVM_CREATE_PIT2");
            t.pit = ms(t0);
        }
    };
    if sp.irq_first {
        do_irq(&vm, t);
        std::thread::sleep(std::time::Duration::from_millis(sp.gap_ms));
    }
    if sp.mem {
        mem = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                MEM_SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        assert_ne!(mem, libc::MAP_FAILED);
        // mov al,0x41; out 0x10,al x3; out 0x11,al (done); jmp $
        let code: [u8; 12] = [0xb0, 0x41, 0xe6, 0x10, 0xe6, 0x10, 0xe6, 0x10, 0xe6, 0x11, 0xeb, 0xfe];
        unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), (mem as *mut u8).add(CODE_ADDR as usize), code.len()) };
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: MEM_SIZE as u64,
            userspace_addr: mem as u64,
        };
        let t0 = Instant::now();
        unsafe { vm.set_user_memory_region(region).expect("KVM_SET_USER_MEMORY_REGION") };
        t.mem = ms(t0);
    }
    if !sp.irq_first {
        do_irq(&vm, t);
    }
    if sp.tss {
        let t0 = Instant::now();
        vm.set_tss_address(0xfffb_d000).expect("KVM_SET_TSS_ADDR");
        t.tss = ms(t0);
    }
    let t0 = Instant::now();
    let vcpus: Vec<VcpuFd> = (0..sp.vcpus).map(|i| vm.create_vcpu(i).expect("KVM_CREATE_VCPU")).collect();
    t.vcpu = ms(t0);
    if sp.run {
        let v = &vcpus[0];
        let t0 = Instant::now();
        let mut sregs = v.get_sregs().unwrap();
        sregs.cs.base = 0;
        sregs.cs.selector = 0;
        v.set_sregs(&sregs).unwrap();
        let regs = kvm_regs { rip: CODE_ADDR, rflags: 2, ..Default::default() };
        v.set_regs(&regs).unwrap();
        let mut outs = 0;
        let mut vcpu = vcpus.into_iter().collect::<Vec<_>>();
        loop {
            match vcpu[0].run().expect("KVM_RUN") {
                VcpuExit::IoOut(0x10, _) => outs += 1,
                VcpuExit::IoOut(0x11, _) => break,
                e => panic!("unexpected exit {e:?}"),
            }
        }
        assert_eq!(outs, 3);
        t.run = ms(t0);
        let t0 = Instant::now();
        let irqfds = register_irqfds(&vm, sp);
        t.irqfd = ms(t0);
        return Vm { vm, vcpus: vcpu, irqfds, mem };
    }
    let t0 = Instant::now();
    let irqfds = register_irqfds(&vm, sp);
    t.irqfd = ms(t0);
    Vm { vm, vcpus, irqfds, mem }
}

fn register_irqfds(vm: &VmFd, sp: &Spec) -> Vec<EventFd> {
    let io: Vec<EventFd> = (0..sp.ioeventfds)
        .map(|i| {
            let e = EventFd::new(libc::EFD_NONBLOCK).unwrap();
            vm.register_ioevent(&e, &kvm_ioctls::IoEventAddress::Mmio(0xd000_0050 + 0x1000 * i as u64), kvm_ioctls::NoDatamatch)
                .expect("KVM_IOEVENTFD");
            e
        })
        .collect();
    let irq: Vec<EventFd> = (0..sp.irqfds)
        .map(|i| {
            let e = EventFd::new(libc::EFD_NONBLOCK).unwrap();
            vm.register_irqfd(&e, 5 + i).expect("KVM_IRQFD");
            e
        })
        .collect();
    io.into_iter().chain(irq).collect()
}

/// Closes vCPU fds first (they hold references on the VM), then the VM fd:
/// the VM fd's close is the one that runs kvm_destroy_vm.
fn teardown(v: Vm, sp: &Spec, t: &mut Times) {
    std::thread::sleep(std::time::Duration::from_millis(sp.delay_ms));
    let Vm { vm, vcpus, irqfds, mem } = v;
    let t0 = Instant::now();
    drop(vcpus);
    t.close_vcpus = ms(t0);
    let c0 = thread_cpu_ms();
    let t0 = Instant::now();
    drop(vm);
    t.close_vm = ms(t0);
    t.close_vm_cpu = thread_cpu_ms() - c0;
    drop(irqfds);
    if !mem.is_null() {
        let t0 = Instant::now();
        unsafe { libc::munmap(mem, MEM_SIZE) };
        t.munmap = ms(t0);
    }
}

fn stats(mut xs: Vec<f64>) -> (f64, f64) {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = xs.len();
    let med = if n % 2 == 1 { xs[n / 2] } else { (xs[n / 2 - 1] + xs[n / 2]) / 2.0 };
    let p90 = xs[((n as f64 * 0.9).ceil() as usize).saturating_sub(1).min(n - 1)];
    (med, p90)
}

fn bench(reps: usize) {
    let kvm = Kvm::new().expect("/dev/kvm");
    let mut all: Vec<Vec<Times>> = vec![Vec::new(); VARIANTS.len()];
    for rep in 0..reps {
        // Rotate the order each repetition so no variant always follows the same one.
        for k in 0..VARIANTS.len() {
            let i = (k + rep) % VARIANTS.len();
            let sp = &VARIANTS[i];
            let mut t = Times::default();
            let t0 = Instant::now();
            let vm = build(&kvm, sp, &mut t);
            teardown(vm, sp, &mut t);
            t.total = ms(t0);
            all[i].push(t);
        }
    }
    println!("# bench: {reps} reps per variant, ms, median/p90");
    println!(
        "| variant | create VM | irqchip/split | PIT | memslot 128M | TSS | vCPUs | run | irqfds | close vCPUs | close VM | close VM cpu | munmap | total |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (sp, ts) in VARIANTS.iter().zip(&all) {
        let col = |f: fn(&Times) -> f64| {
            let (m, p) = stats(ts.iter().map(f).collect());
            format!("{m:.3}/{p:.3}")
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            sp.name,
            col(|t| t.create),
            col(|t| t.irq),
            col(|t| t.pit),
            col(|t| t.mem),
            col(|t| t.tss),
            col(|t| t.vcpu),
            col(|t| t.run),
            col(|t| t.irqfd),
            col(|t| t.close_vcpus),
            col(|t| t.close_vm),
            col(|t| t.close_vm_cpu),
            col(|t| t.munmap),
            col(|t| t.total),
        );
    }
}

/// One VMM-like process: build a VM, then end as asked. Reports its own set-up
/// time (from main) and the time of the explicit drop on stdout.
fn child(start: Instant, name: &str, end: &str) -> ! {
    let sp = spec(name);
    let mut t = Times::default();
    let mut out = String::new();
    if sp.name != "noop" {
        let kvm = Kvm::new().expect("/dev/kvm");
        let vm = build(&kvm, &sp, &mut t);
        out += &format!("setup={:.3} ", ms(start));
        match end {
            "exit" => {
                // exit_group with every fd still open.
                std::mem::forget(vm);
                std::mem::forget(kvm);
            }
            "drop" => {
                teardown(vm, &sp, &mut t);
                out += &format!("close_vm={:.3} ", t.close_vm);
            }
            "helper" => {
                // Hand the last reference on the VM to a forked helper that
                // outlives this whole process: it holds copies of every fd and
                // waits on a pidfd of this process, which becomes readable only
                // once the whole thread group has exited (including KVM's
                // kvm-nx-lpage-recovery worker, whose exit_mmap drops the vCPU
                // kvm_run mappings: waiting for a pipe to close is not enough).
                if !vm.mem.is_null() {
                    unsafe { libc::madvise(vm.mem, MEM_SIZE, libc::MADV_DONTFORK) };
                }
                let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0) } as i32;
                assert!(pidfd >= 0, "pidfd_open");
                let t0 = Instant::now();
                let pid = unsafe { libc::fork() };
                if pid == 0 {
                    unsafe {
                        // Not the stdout pipe a parent may read to EOF.
                        libc::close(0);
                        libc::close(1);
                        libc::close(2);
                        let mut p = libc::pollfd { fd: pidfd, events: libc::POLLIN, revents: 0 };
                        while libc::poll(&mut p, 1, -1) != 1 {}
                        libc::_exit(0);
                    }
                }
                out += &format!("fork={:.3} ", ms(t0));
                std::mem::forget(vm);
                std::mem::forget(kvm);
            }
            "reaper" => {
                // Like "helper", but the helper shares this process's memory
                // (clone(CLONE_VM), no page-table copy) and gets a copy of the
                // fd table: when we exit, the mm is not released by us (not
                // even the mmu-notifier SRCU wait in exit_mmap) and no KVM file
                // reaches its last reference; the reaper releases them all when
                // it exits, after our whole thread group is gone.
                let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0) } as i32;
                assert!(pidfd >= 0, "pidfd_open");
                let t0 = Instant::now();
                spawn_reaper(pidfd);
                out += &format!("clone={:.3} ", ms(t0));
                std::mem::forget(vm);
                std::mem::forget(kvm);
            }
            _ => panic!("end must be exit|drop|helper|reaper"),
        }
    }
    out += &format!("pre_exit={:.3}\n", ms(start));
    // TRACE_EXIT=1: trace this thread through exit; read the trace and
    // disarm afterwards with `scratch-teardown untrace TID`.
    if std::env::var_os("TRACE_EXIT").is_some() {
        let tid = unsafe { libc::gettid() };
        out = format!("# trace {name} {end} (exit) tid {tid}\n{out}");
        arm_trace(tid);
    }
    let _ = std::io::stdout().write_all(out.as_bytes());
    let _ = std::io::stdout().flush();
    std::process::exit(0);
}

static mut REAPER_STACK: [u8; 16384] = [0; 16384];

/// The reaper: raw system calls only (it shares our memory and TLS).
extern "C" fn reaper(arg: *mut libc::c_void) -> libc::c_int {
    let mut p = libc::pollfd { fd: arg as usize as i32, events: libc::POLLIN, revents: 0 };
    unsafe {
        // Its own fd table: drop stdio so no one reading our output waits for it.
        for fd in 0..3 {
            libc::syscall(libc::SYS_close, fd);
        }
        while libc::syscall(libc::SYS_poll, &mut p as *mut libc::pollfd, 1, -1) != 1 {}
        libc::syscall(libc::SYS_exit, 0);
    }
    0
}

fn spawn_reaper(pidfd: i32) {
    unsafe {
        let stack = (&raw mut REAPER_STACK as *mut u8).add(16384 - 64) as *mut libc::c_void;
        let r = libc::clone(reaper, stack, libc::CLONE_VM, pidfd as usize as *mut libc::c_void);
        assert!(r > 0, "clone");
    }
}

fn spawn(reps: usize) {
    let exe = std::env::current_exe().unwrap();
    let cases: &[(&str, &str)] = &[
        ("noop", "exit"),
        ("bare", "exit"),
        ("bare", "drop"),
        ("mem,irqchip", "exit"),
        ("irqchip+pit", "exit"),
        ("irqchip+pit", "drop"),
        ("mem,split+1vcpu+run+4irqfd", "exit"),
        ("mem,split+1vcpu+run+4irqfd", "drop"),
        ("mem,split+1vcpu+run+4irqfd+4ioeventfd", "exit"),
        ("mem,irqchip+1vcpu+run+4irqfd+tss", "exit"),
        ("full(mem,irqchip+pit+1vcpu+run+4irqfd+tss)", "exit"),
        ("full(mem,irqchip+pit+1vcpu+run+4irqfd+tss)", "drop"),
        ("full(mem,irqchip+pit+1vcpu+run+4irqfd+tss)", "helper"),
        ("full(mem,irqchip+pit+1vcpu+run+4irqfd+tss)", "reaper"),
        ("mem,split+1vcpu+run+4irqfd", "helper"),
        ("mem,split+1vcpu+run+4irqfd+4ioeventfd", "helper"),
        ("mem,split+1vcpu+run+4irqfd+4ioeventfd", "reaper"),
    ];
    let mut wall: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut inner: Vec<Vec<(String, f64)>> = vec![Vec::new(); cases.len()];
    for rep in 0..reps {
        for k in 0..cases.len() {
            let i = (k + rep) % cases.len();
            let (v, e) = cases[i];
            let t0 = Instant::now();
            let child = std::process::Command::new(&exe)
                .args(["child", v, e])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let o = child.wait_with_output().unwrap();
            let w = ms(t0);
            assert!(o.status.success(), "{v} {e}: {:?}", o.status);
            wall[i].push(w);
            for kv in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                if let Some((k, val)) = kv.split_once('=') {
                    inner[i].push((k.to_string(), val.parse().unwrap()));
                }
            }
            // Let a helper (if any) finish its teardown before the next case.
            std::thread::sleep(std::time::Duration::from_millis(40));
        }
    }
    println!("# spawn: {reps} reps per case, ms, median/p90; spawn->waitpid from the parent, inner times from the child's main");
    println!("| variant | end | spawn->waitpid | child-reported |");
    println!("|---|---|---|---|");
    for (i, (v, e)) in cases.iter().enumerate() {
        let (m, p) = stats(wall[i].clone());
        let mut keys: Vec<String> = inner[i].iter().map(|(k, _)| k.clone()).collect();
        keys.dedup();
        keys.sort();
        keys.dedup();
        let rep: Vec<String> = keys
            .iter()
            .map(|k| {
                let (m, p) = stats(inner[i].iter().filter(|(kk, _)| kk == k).map(|(_, x)| *x).collect());
                format!("{k} {m:.2}/{p:.2}")
            })
            .collect();
        println!("| {v} | {e} | {m:.2}/{p:.2} | {} |", rep.join(", "));
    }
}

/// One teardown of VARIANT with the kernel's sched_switch stack traces for this
/// thread, to see where close() sleeps.
fn trace(name: &str) {
    let sp = spec(name);
    let kvm = Kvm::new().expect("/dev/kvm");
    let tid = unsafe { libc::gettid() };
    let mut t = Times::default();
    // TRACE_BUILD=1: trace the build too (the close then follows it at once).
    let whole = std::env::var_os("TRACE_BUILD").is_some();
    let arm = || arm_trace(tid);
    if whole {
        arm();
    }
    let vm = build(&kvm, &sp, &mut t);
    std::thread::sleep(std::time::Duration::from_millis(sp.delay_ms));
    if !whole {
        arm();
    }
    let Vm { vm, vcpus, irqfds, mem } = vm;
    drop(vcpus);
    let t0 = Instant::now();
    drop(vm);
    let d = ms(t0);
    disarm_trace(tid);
    drop(irqfds);
    if !mem.is_null() {
        unsafe { libc::munmap(mem, MEM_SIZE) };
    }
    eprintln!("# trace {name}: irqchip {:.3} ms, pit {:.3} ms, memslot {:.3} ms, close VM {d:.3} ms, tid {tid}", t.irq, t.pit, t.mem);
    print!("{}", std::fs::read_to_string(format!("{TR}/trace")).unwrap());
}

const TR: &str = "/sys/kernel/tracing";

fn tw(p: &str, s: &str) {
    std::fs::write(format!("{TR}/{p}"), s).unwrap_or_else(|e| panic!("{p}: {e}"));
}

/// sched_switch (with a kernel stack when `tid` leaves the CPU) and sched_wakeup for `tid`.
fn arm_trace(tid: i32) {
    tw("trace", "");
    tw("events/sched/sched_wakeup/filter", &format!("pid == {tid}"));
    tw("events/sched/sched_wakeup/enable", "1");
    tw("events/sched/sched_switch/filter", &format!("prev_pid == {tid} || next_pid == {tid}"));
    tw("events/sched/sched_switch/trigger", &format!("stacktrace if prev_pid == {tid}"));
    tw("events/sched/sched_switch/enable", "1");
    tw("tracing_on", "1");
}

fn disarm_trace(tid: i32) {
    tw("tracing_on", "0");
    tw("events/sched/sched_switch/enable", "0");
    tw("events/sched/sched_wakeup/enable", "0");
    tw("events/sched/sched_wakeup/filter", "0");
    tw("events/sched/sched_switch/trigger", &format!("!stacktrace if prev_pid == {tid}"));
    tw("events/sched/sched_switch/filter", "0");
}

fn main() {
    let start = Instant::now();
    let args: Vec<String> = std::env::args().collect();
    let reps = |i: usize| args.get(i).map(|s| s.parse().unwrap()).unwrap_or(20);
    match args.get(1).map(String::as_str) {
        Some("bench") => bench(reps(2)),
        Some("spawn") => spawn(reps(2)),
        Some("child") => child(start, &args[2], &args[3]),
        Some("trace") => trace(&args[2]),
        Some("caps") => {
            let kvm = Kvm::new().expect("/dev/kvm");
            let c = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).unwrap();
            let get = |f: u32| c.as_slice().iter().find(|e| e.function == f && e.index == 0).copied();
            let l1 = get(1).unwrap();
            let l6 = get(6);
            println!(
                "TSC_DEADLINE(1.ecx24)={} X2APIC(1.ecx21)={} ARAT(6.eax2)={} KVM_CAP_TSC_DEADLINE_TIMER={} kvmclock(0x40000001.eax0|3)={:?}",
                l1.ecx >> 24 & 1,
                l1.ecx >> 21 & 1,
                l6.map(|e| e.eax >> 2 & 1).unwrap_or(0),
                kvm.check_extension(kvm_ioctls::Cap::TscDeadlineTimer),
                get(0x4000_0001).map(|e| e.eax & 0b1001),
            );
        }
        Some("untrace") => {
            disarm_trace(args[2].parse().unwrap());
            print!("{}", std::fs::read_to_string(format!("{TR}/trace")).unwrap());
        }
        _ => {
            eprintln!("usage: scratch-teardown bench [REPS] | spawn [REPS] | child VARIANT END | trace VARIANT | untrace TID | caps");
            std::process::exit(2);
        }
    }
}
