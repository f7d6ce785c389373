//! `casemate-jailer` binary: parses the command line and hands off to the
//! library; every error ends as one line on stderr and a non-zero exit.

use casemate_jailer::cli::{self, Mode};
use casemate_jailer::{error_line, run};

fn main() {
    let code = match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("casemate-jailer: {}", error_line(e.as_ref()));
            1
        }
    };
    std::process::exit(code);
}

fn real_main() -> anyhow::Result<i32> {
    let args = cli::parse(std::env::args().skip(1))?;
    match args.mode {
        Mode::Help => {
            print!("{}", cli::USAGE);
            Ok(0)
        }
        Mode::Cleanup => {
            for path in run::cleanup(&args)? {
                println!("removed {}", path.display());
            }
            Ok(0)
        }
        Mode::Jail => Ok(run::jail(&args)?),
    }
}
