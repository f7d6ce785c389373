//! `casemate-membench`: 4 GiB guest RAM with prealloc, from process start to
//! "ready", for Casemate (to the probe's power-off), QEMU 7.2 (to its monitor
//! prompt after `-S` prealloc; then `quit`) and the raw kernel methods, in
//! both memory states (warm: right after a 4 GiB populate-and-free; cold:
//! after idling), candidates alternating, and prints medians and ratios.

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
    casemate: std::path::PathBuf,
}

fn opts() -> anyhow::Result<Opts> {
    let mut o = Opts {
        runs: 5,
        cold_idle: Duration::from_secs(15),
        casemate: peers::find_casemate()?,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut v = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--runs" => o.runs = v()?.parse()?,
            "--cold-idle" => o.cold_idle = Duration::from_secs(v()?.parse()?),
            "--casemate" => o.casemate = v()?.into(),
            "-h" | "--help" => {
                println!("usage: casemate-membench [--runs N (5)] [--cold-idle SECONDS (15)] [--casemate PATH]");
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
        r(How::Touch, 1, false),
        r(How::Touch, n, false),
        r(How::MapPopulate, 1, false),
        r(How::PopulateWrite, 1, false),
        r(How::PopulateWrite, n, false),
        r(How::Touch, n, true),
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
    let pool = peers::HugePool::reserve(SIZE as u64 / (2 << 20));
    if let Err(e) = &pool {
        eprintln!("membench: hugetlb candidates skipped: {e}");
    }
    let cands = candidates(n, pool.is_ok());
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
        for (si, state) in ["warm", "cold"].iter().enumerate() {
            for (ci, c) in cands.iter().enumerate() {
                if si == 0 {
                    warm_up(n)?;
                } else {
                    std::thread::sleep(o.cold_idle);
                }
                let t = match c {
                    Cand::Peer(p) => p.run(&o.casemate)?,
                    Cand::Raw(r) => r.run(SIZE)?,
                };
                let ms = t.as_secs_f64() * 1000.0;
                eprintln!("run {} {state:4} {:32} {ms:8.1} ms", run + 1, c.name());
                samples[si][ci].push(ms);
            }
        }
    }
    drop(pool);
    report(&cands, &samples, n, o.runs);
    Ok(())
}

fn report(cands: &[Cand], samples: &[Vec<Vec<f64>>], n: usize, runs: usize) {
    println!("\n4 GiB prealloc, medians of {runs} runs (ms), N={n} threads");
    println!("{:34} {:>10} {:>10}", "candidate", "warm", "cold");
    let med: Vec<[f64; 2]> = (0..cands.len())
        .map(|i| [median(&samples[0][i]), median(&samples[1][i])])
        .collect();
    for (c, m) in cands.iter().zip(&med) {
        println!("{:34} {:>10.1} {:>10.1}", c.name(), m[0], m[1]);
    }
    let find = |name: &str| cands.iter().position(|c| c.name() == name);
    let (Some(cm), Some(q)) = (find(Peer::Casemate.name()), find(Peer::Qemu.name())) else {
        return;
    };
    println!(
        "\nratios (goal)                      {:>10} {:>10}",
        "warm", "cold"
    );
    let ratio = |a: usize, b: usize, s: usize| med[a][s] / med[b][s];
    println!(
        "{:34} {:>10.2} {:>10.2}",
        "casemate / qemu (<= 0.70)",
        ratio(cm, q, 0),
        ratio(cm, q, 1)
    );
    let best_raw = |s: usize| {
        (0..cands.len())
            .filter(|&i| matches!(&cands[i], Cand::Raw(r) if !r.hugetlb))
            .min_by(|&a, &b| med[a][s].total_cmp(&med[b][s]))
    };
    if let (Some(w), Some(c)) = (best_raw(0), best_raw(1)) {
        println!(
            "{:34} {:>10.2} {:>10.2}",
            "casemate / fastest raw (<= 1.25)",
            ratio(cm, w, 0),
            ratio(cm, c, 1)
        );
        println!(
            "  fastest raw: warm {}, cold {}",
            cands[w].name(),
            cands[c].name()
        );
    }
    let hr = cands
        .iter()
        .position(|c| matches!(c, Cand::Raw(r) if r.hugetlb));
    if let (Some(ch), Some(hr)) = (find(Peer::CasemateHugetlb.name()), hr) {
        println!(
            "{:34} {:>10.2} {:>10.2}",
            "casemate hugetlb / raw hugetlb (<= 1.5)",
            ratio(ch, hr, 0),
            ratio(ch, hr, 1)
        );
    }
}
