//! A drive's backing chain given on the command line instead of read from
//! the image's header: QEMU's `-drive ...,backing.file.filename=F
//! [,backing.driver=FMT][,backing.backing.file.filename=...]`. This is how
//! the jailer hands a qcow2's backing files over as `/dev/fdset/N` (a
//! jailed VMM cannot open the paths the headers name). Parsing lives in
//! cli/backing.rs, opening in resources.rs.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// One level of a drive's backing chain, top first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackingConfig {
    /// A path or `/dev/fdset/N`.
    pub file: PathBuf,
    /// `raw` or `qcow2`; None probes it.
    #[serde(default)]
    pub format: Option<String>,
}
