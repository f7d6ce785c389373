//! Disk images behind the `DiskImage` trait (raw, qcow2). See issue 4.
