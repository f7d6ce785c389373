//! `casemate-img`: create, inspect, convert, resize and check disk images
//! (raw and qcow2), with qemu-img's command names, options and messages where
//! users script against them. All image logic lives in `casemate-disk`.

mod args;
mod cmd;
mod progress;
mod size;

use std::process::ExitCode;

const USAGE: &str = "\
usage: casemate-img COMMAND [OPTIONS]

Commands:
  create [-q] [-f FMT] [-b BACKING [-F BACKING_FMT]] [-o OPTIONS] FILENAME [SIZE]
  info [-U] [-f FMT] [--output=human|json] [--backing-chain] FILENAME
  convert [-q] [-p] [-c] [-U] [-S SIZE] [-f FMT] [-O FMT] [-o OPTIONS] INPUT... OUTPUT
  resize [-q] [-f FMT] [--shrink] FILENAME [+|-]SIZE
  check [-q] [-U] [-f FMT] [--output=human|json] FILENAME

FMT is raw or qcow2 (probed when -f is missing). SIZE takes the suffixes
K, M, G, T, P, E (powers of 1024). OPTIONS for qcow2: backing_file=NAME,
backing_fmt=FMT, cluster_size=SIZE. Images are locked as QEMU locks them;
-U (force share) reads an image that another process is writing.

  -h, --help     show this help
  -V, --version  show the version
";

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = argv.first() else {
        eprint!("{USAGE}");
        return ExitCode::from(1);
    };
    let rest = &argv[1..];
    let result = match cmd.as_str() {
        "-h" | "--help" | "help" => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        "-V" | "--version" => {
            println!("casemate-img version {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        "create" => cmd::create::run(rest),
        "info" => cmd::info::run(rest),
        "convert" => cmd::convert::run(rest),
        "resize" => cmd::resize::run(rest),
        "check" => cmd::check::run(rest),
        other => Err(anyhow::anyhow!("unknown command '{other}' (see --help)")),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("casemate-img: {e:#}");
            ExitCode::from(1)
        }
    }
}
