//! `casemate-membench`: 4 GiB guest RAM with prealloc, from process start to
//! "ready", for Casemate (to the probe's power-off), QEMU 7.2 (to its monitor
//! prompt after `-S` prealloc; then `quit`) and the raw kernel methods, in
//! both memory states (warm: right after a 4 GiB populate-and-free, itself
//! after the previous run's memory settled; cold: after idling), candidates
//! alternating in a new shuffled order each pass, and prints medians (with the
//! min-max spread), ratios and whether each goal is met.
//!
//! Reading the results on this host (a guest whose freed memory the outer
//! host reclaims; its page reporting sends free blocks of 2 MiB and up):
//! - Cold, THP memory needs free 2 MiB blocks, all of them reclaimed, so
//!   every 4 KiB of it refaults in the outer host while the kernel zeroes
//!   it (~10 us of CPU each; 98% of samples in `clear_page_erms`). Small
//!   pages come first from free fragments under 2 MiB, which are never
//!   reported: they are several times faster cold until those run out
//!   (1.3-2.2 GiB of them between runs here), then a little slower than
//!   huge pages. So raw methods without THP are the fastest cold, plain
//!   THP-backed population (QEMU's) is ~2x slower, and Casemate steers
//!   between the two kinds as it goes (vmm/src/memory/steer.rs); the
//!   "same page kind" lines compare like with like.
//! - Warmth decays within tens of ms of the free: populating 0 ms after it
//!   took 558-581 ms, 20 ms after 532-4178 ms, 3 s after 3895-6494 ms (THP,
//!   2 threads, 4 runs each). Raw methods start at once, Casemate ~1.3 ms
//!   after exec, QEMU tens of ms later; a lost race shows as a warm sample
//!   several times the median.
//! - Every candidate shares the 2 CPUs with whatever else runs: read the
//!   spreads before the medians.

mod peers;
mod raw;

use std::time::Duration;

use anyhow::Context;
use peers::Peer;
use raw::{How, Raw};

const SIZE: usize = 4 << 30;

enum Cand {
    Peer(Peer),
    Raw(Raw),
}

impl Cand {
    fn name(&self) -> String {
        match self {
            Cand::Peer(p) => p.name().into(),
            Cand::Raw(r) => r.name(),
        }
    }
}

struct Opts {
    runs: usize,
    cold_idle: Duration,
    /// Warm runs: idle time after the previous candidate, before the warm-up.
    settle: Duration,
    casemate: std::path::PathBuf,
    /// Substrings: run only candidates whose name contains one.
    only: Vec<String>,
    /// Indexes into STATES.
    states: Vec<usize>,
}

const STATES: [&str; 2] = ["warm", "cold"];

const USAGE: &str = "usage: casemate-membench [--runs N (5)] [--cold-idle SECONDS (15)] \
[--settle SECONDS (3)] [--casemate PATH] [--states warm,cold] [--only SUBSTR,SUBSTR...]
  --only keeps the candidates whose name contains one of the substrings
  (e.g. --only casemate,+THP); the goal ratios need casemate, qemu and the raw ones.";

fn opts() -> anyhow::Result<Opts> {
    let mut o = Opts {
        runs: 5,
        cold_idle: Duration::from_secs(15),
        settle: Duration::from_secs(3),
        casemate: peers::find_casemate()?,
        only: Vec::new(),
        states: vec![0, 1],
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut v = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--runs" => o.runs = v()?.parse()?,
            "--cold-idle" => o.cold_idle = Duration::from_secs(v()?.parse()?),
            "--settle" => o.settle = Duration::from_secs(v()?.parse()?),
            "--casemate" => o.casemate = v()?.into(),
            "--only" => o.only = v()?.split(',').map(str::to_string).collect(),
            "--states" => {
                o.states = v()?
                    .split(',')
                    .map(|s| {
                        STATES
                            .iter()
                            .position(|x| *x == s)
                            .with_context(|| format!("--states: unknown state {s}"))
                    })
                    .collect::<anyhow::Result<_>>()?;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => anyhow::bail!("unknown argument {a}"),
        }
    }
    Ok(o)
}

fn candidates(n: usize, huge: bool) -> Vec<Cand> {
    let r = |how, threads, thp| {
        Cand::Raw(Raw {
            how,
            threads,
            thp,
            hugetlb: false,
        })
    };
    let mut c = vec![
        Cand::Peer(Peer::Casemate),
        Cand::Peer(Peer::Qemu),
        Cand::Peer(Peer::CasemateNoThp),
        r(How::Touch, 1, false),
        r(How::Touch, n, false),
        r(How::MapPopulate, 1, false),
        r(How::PopulateWrite, 1, false),
        r(How::PopulateWrite, n, false),
        r(How::Touch, 1, true),
        r(How::Touch, n, true),
        r(How::TouchHuge, n, true),
        r(How::PopulateWrite, 1, true),
        r(How::PopulateWrite, n, true),
    ];
    if huge {
        c.push(Cand::Peer(Peer::CasemateHugetlb));
        c.push(Cand::Raw(Raw {
            how: How::PopulateWrite,
            threads: n,
            thp: false,
            hugetlb: true,
        }));
    }
    c
}

/// Warm: populate 4 GiB and free it, so the outer host has backed it again.
fn warm_up(n: usize) -> anyhow::Result<()> {
    Raw {
        how: How::PopulateWrite,
        threads: n,
        thp: true,
        hugetlb: false,
    }
    .run(SIZE)
    .map(drop)
}

/// The candidates' order for one pass: shuffled, seeded by the pass, so
/// the same list every time the bench runs but a different predecessor for
/// each candidate in every pass. A fixed order gave each candidate a fixed
/// predecessor, and what that one freed shows in the next run: Casemate's
/// hugetlb, always after a raw 4 GiB THP run, measured 1.64x the raw
/// hugetlb run that always followed it, and 1.0x when the two were run
/// alone, alternating.
fn order(n: usize, pass: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    // xorshift64*, enough to shuffle a few candidates.
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ (pass as u64 + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    for i in (1..n).rev() {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let j = (x.wrapping_mul(0x2545_f491_4f6c_dd1d) % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
    v
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return f64::NAN;
    }
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    }
}

fn main() -> anyhow::Result<()> {
    let o = opts()?;
    let n = std::thread::available_parallelism().map_or(1, |x| x.get());
    let want = |c: &Cand| o.only.is_empty() || o.only.iter().any(|s| c.name().contains(s.as_str()));
    let huge_wanted = candidates(n, true)
        .iter()
        .any(|c| want(c) && c.name().contains("hugetlb"));
    let pool = if huge_wanted {
        peers::HugePool::reserve(SIZE as u64 / (2 << 20))
    } else {
        Err(anyhow::anyhow!("not selected"))
    };
    if let Err(e) = &pool {
        eprintln!("membench: hugetlb candidates skipped: {e}");
    }
    let cands: Vec<Cand> = candidates(n, pool.is_ok())
        .into_iter()
        .filter(|c| want(c))
        .collect();
    if pool.is_ok() {
        // The pool's pages come straight from the (cold) buddy allocator:
        // touch them once so the first hugetlb run is not an outlier.
        Raw {
            how: How::PopulateWrite,
            threads: n,
            thp: false,
            hugetlb: true,
        }
        .run(SIZE)?;
    }
    // samples[state][candidate], ms
    let mut samples = vec![vec![Vec::new(); cands.len()]; 2];
    for run in 0..o.runs {
        for &si in &o.states {
            let state = STATES[si];
            for ci in order(cands.len(), run * STATES.len() + si) {
                let c = &cands[ci];
                if si == 0 {
                    // The previous candidate's freed memory is still being
                    // handed back to the outer host for a few seconds, which
                    // slowed the next run by up to a third (hugetlb after a
                    // THP run): let it finish, so every candidate starts from
                    // the same state.
                    std::thread::sleep(o.settle);
                    warm_up(n)?;
                } else {
                    std::thread::sleep(o.cold_idle);
                }
                let t = match c {
                    Cand::Peer(p) => p.run(&o.casemate)?,
                    Cand::Raw(r) => r.run(SIZE)?,
                };
                let ms = t.as_secs_f64() * 1000.0;
                eprintln!("run {} {state:4} {:34} {ms:8.1} ms", run + 1, c.name());
                samples[si][ci].push(ms);
            }
        }
    }
    drop(pool);
    report(&cands, &samples, n, o.runs);
    Ok(())
}

/// "min-max" of one candidate's samples: the noise seen.
fn spread(v: &[f64]) -> String {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if v.is_empty() {
        "-".into()
    } else {
        format!("{lo:.0}-{hi:.0}")
    }
}

/// Which raw candidates a "fastest raw" comparison draws from.
#[derive(Clone, Copy)]
enum Pages {
    /// Every raw method except hugetlb (the goal's comparison).
    Any,
    Thp,
    Small,
}

fn report(cands: &[Cand], samples: &[Vec<Vec<f64>>], n: usize, runs: usize) {
    println!("\n4 GiB prealloc, medians of {runs} runs (ms; min-max), N={n} threads");
    println!(
        "{:36} {:>8} {:>13} {:>8} {:>13}",
        "candidate", "warm", "", "cold", ""
    );
    let med: Vec<[f64; 2]> = (0..cands.len())
        .map(|i| [median(&samples[0][i]), median(&samples[1][i])])
        .collect();
    for (i, (c, m)) in cands.iter().zip(&med).enumerate() {
        println!(
            "{:36} {:>8.1} {:>13} {:>8.1} {:>13}",
            c.name(),
            m[0],
            spread(&samples[0][i]),
            m[1],
            spread(&samples[1][i])
        );
    }
    let find = |name: &str| cands.iter().position(|c| c.name() == name);
    let fastest = |s: usize, pages: Pages| {
        (0..cands.len())
            .filter(|&i| match (&cands[i], pages) {
                (Cand::Raw(r), Pages::Any) => !r.hugetlb,
                (Cand::Raw(r), Pages::Thp) => !r.hugetlb && r.thp,
                (Cand::Raw(r), Pages::Small) => !r.hugetlb && !r.thp,
                _ => false,
            })
            .filter(|&i| !med[i][s].is_nan())
            .min_by(|&a, &b| med[a][s].total_cmp(&med[b][s]))
    };
    // One ratio line: candidate `a` against `b(state)` in each state.
    let line = |label: &str, goal: f64, a: Option<usize>, b: &dyn Fn(usize) -> Option<usize>| {
        let Some(a) = a else { return };
        let mut cols = String::new();
        let mut against = Vec::new();
        for s in 0..2 {
            match b(s).map(|b| (b, med[a][s] / med[b][s])) {
                Some((b, r)) if !r.is_nan() => {
                    let v = if r <= goal { "met" } else { "NOT met" };
                    cols.push_str(&format!(" {r:>6.2} {v:>8}"));
                    against.push(format!("{} {}", STATES[s], cands[b].name()));
                }
                _ => cols.push_str(&format!(" {:>6} {:>8}", "-", "")),
            }
        }
        if !against.is_empty() {
            println!("{label:42}{cols}");
            println!("  against: {}", against.join("; "));
        }
    };
    println!("\n{:42} {:>15} {:>15}", "ratios (goal)", "warm", "cold");
    let cm = find(Peer::Casemate.name());
    let qemu = find(Peer::Qemu.name());
    line("casemate / qemu (<= 0.70)", 0.70, cm, &|_| qemu);
    line("casemate / fastest raw (<= 1.25)", 1.25, cm, &|s| {
        fastest(s, Pages::Any)
    });
    let hr = cands
        .iter()
        .position(|c| matches!(c, Cand::Raw(r) if r.hugetlb));
    line(
        "casemate hugetlb / raw hugetlb (<= 1.5)",
        1.5,
        find(Peer::CasemateHugetlb.name()),
        &|_| hr,
    );
    // Like for like, not goals: THP-backed Casemate against THP-backed raw
    // methods, small-page Casemate against the small-page ones.
    println!("\ninformational, same page kind (<= 1.25)");
    line("casemate / fastest raw +THP", 1.25, cm, &|s| {
        fastest(s, Pages::Thp)
    });
    line(
        "casemate --thp off / fastest raw no THP",
        1.25,
        find(Peer::CasemateNoThp.name()),
        &|s| fastest(s, Pages::Small),
    );
}

#[cfg(test)]
mod tests {
    use super::order;

    #[test]
    fn every_pass_is_a_permutation_and_passes_differ() {
        let a = order(15, 0);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..15).collect::<Vec<_>>());
        assert_ne!(a, order(15, 1));
        assert_eq!(a, order(15, 0), "the same pass, the same order");
    }
}
