//! `lwsysctl`: parse the command line, run it against the daemon, exit
//! with its status (0 ok, 1 error reply, 2 usage or connection failure).

use clap::Parser;
use lwsys_ctl::{run_on_terminal, Cli, Terminal};

fn main() {
    let cli = Cli::parse();
    let code = run_on_terminal(
        cli,
        Terminal::detect(),
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    );
    std::process::exit(code);
}
