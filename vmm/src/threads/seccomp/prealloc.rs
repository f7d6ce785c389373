//! `Prealloc` (`cm-preallocN`): populates guest RAM at start-up with
//! MADV_POPULATE_WRITE, with THP toggled per piece as configured.

use super::Rule;
use libc::*;

pub fn rules() -> Vec<Rule> {
    vec![
        Rule::arg(
            SYS_madvise,
            2,
            MADV_POPULATE_WRITE as u64,
            "populating guest RAM",
        ),
        Rule::arg(
            SYS_prctl,
            0,
            PR_SET_THP_DISABLE as u64,
            "small-page population where THP is off",
        ),
        Rule::arg(
            SYS_prctl,
            0,
            PR_GET_THP_DISABLE as u64,
            "small-page population where THP is off",
        ),
    ]
}
