//! `casemate-jailer`: the privileged launcher that jails `casemate`.
//!
//! Not built yet: see jailer/README.md. It exits with an error rather than
//! pretending to jail anything.

fn main() {
    eprintln!("casemate-jailer: not implemented yet; run casemate directly");
    std::process::exit(2);
}
