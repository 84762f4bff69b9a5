//! `lwsysd`: the lwsys supervisor daemon. Parses the command line and runs
//! the library's daemon; exit 0 clean, 64 bad usage or config, 70 internal.

use clap::Parser;
use lwsys::config::Cli;
use lwsys::daemon;

fn main() {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { daemon::EXIT_USAGE } else { daemon::EXIT_OK };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    std::process::exit(daemon::run(cli));
}
