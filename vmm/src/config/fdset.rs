//! `-add-fd fd=N,set=S[,opaque=STR]`: a file descriptor the VMM inherited
//! (from the jailer, or any launcher), filed in set S so that options
//! taking a path can name it as `/dev/fdset/S`, as QEMU does.

use serde::{Deserialize, Serialize};

/// The path prefix that names a set instead of a file.
pub const FDSET_PREFIX: &str = "/dev/fdset/";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FdSetConfig {
    pub fd: i32,
    pub set: u32,
    #[serde(default)]
    pub opaque: Option<String>,
}

/// The set a `/dev/fdset/S` path names, if it is one.
pub fn fdset_of(path: &std::path::Path) -> Option<Result<u32, String>> {
    let s = path.to_str()?.strip_prefix(FDSET_PREFIX)?;
    Some(
        s.parse()
            .map_err(|_| format!("'{}' does not name an fd set number", path.display())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_fdset_paths() {
        assert_eq!(fdset_of("/dev/fdset/3".as_ref()), Some(Ok(3)));
        assert!(matches!(fdset_of("/dev/fdset/x".as_ref()), Some(Err(_))));
        assert_eq!(fdset_of("/tmp/disk.img".as_ref()), None);
    }
}
