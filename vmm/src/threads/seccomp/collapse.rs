//! `Collapse` (`cm-thp-collapse`): after a delay, collapses small-page
//! guest RAM into huge pages at the lowest priority.

use super::Rule;
use libc::*;

pub fn rules() -> Vec<Rule> {
    vec![
        Rule::arg(
            SYS_madvise,
            2,
            MADV_COLLAPSE as u64,
            "collapsing guest RAM into huge pages",
        ),
        Rule::arg(
            SYS_setpriority,
            0,
            PRIO_PROCESS as u64,
            "lowering its own priority",
        ),
        Rule::any(SYS_clock_nanosleep, "the delay before collapsing"),
        Rule::any(SYS_nanosleep, "the delay before collapsing"),
    ]
}
