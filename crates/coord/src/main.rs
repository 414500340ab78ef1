//! `coord`: the command-line client and the daemon launcher.
//!
//! A thin binary: it parses arguments (clap), calls coord-client or
//! coord-daemon, and turns results into output and exit codes
//! (`docs/PROTOCOL.md` §11). Logic about sessions, locks and the log lives
//! in the library crates, never here.

mod cli;
mod output;
mod run;

use std::process::ExitCode;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some(run::GATE) {
        return run::gate(&argv[2..]);
    }
    let args = <cli::Cli as clap::Parser>::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(if args.is_daemon() { 2 } else { 1 })
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("coord: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(cli::run(args)) {
        Ok(code) => code,
        Err(err) => {
            if output::is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            eprintln!("coord: {err:#}");
            ExitCode::from(output::exit_code(&err))
        }
    }
}
