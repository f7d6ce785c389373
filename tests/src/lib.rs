//! Harness for process-level tests: locating binaries, running VMs, parsing probe reports.
