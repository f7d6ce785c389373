//! N VMs started at once: one thread per VM, released together by a
//! barrier; each time is from that VM's own spawn to its first byte.

use std::sync::{Arc, Barrier};

use anyhow::{Context, Result};

use crate::timed::{self, Row, Samples};

/// The rows run at once (a jail without a pid namespace needs a cleanup
/// per VM, which would be timed with the others' starts).
pub const ROWS: &[&str] = &["unjailed", "jailed-pidns"];

pub fn at_once(row: &Row, n: usize) -> Result<Samples> {
    let go = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let (cmd, _) = row.command();
            let go = go.clone();
            std::thread::spawn(move || {
                go.wait();
                timed::once(cmd)
            })
        })
        .collect();
    let mut s = Samples::default();
    for t in threads {
        let (first, _) = t
            .join()
            .map_err(|_| anyhow::anyhow!("a load thread panicked"))?
            .with_context(|| row.name)?;
        s.push(first);
    }
    Ok(s)
}
