//! `coord`: the command-line client and the daemon launcher.
//!
//! A thin binary: it parses arguments (clap), calls coord-client or
//! coord-daemon, and turns results into output and exit codes
//! (`docs/PROTOCOL.md` §11). Logic about sessions, locks and the log lives
//! in the library crates, never here.

mod args;
mod autostart;
mod cli;
mod cmd;
mod follow;
mod hooks;
mod output;
mod paths;
mod procfs;
mod run;
mod top;
mod tree;

use std::process::ExitCode;

/// The daemon allocates per request and per event (parsed JSON, event
/// lines, answers) from several threads; glibc's allocator spent about
/// 15 % of its CPU under a 16-writer load in its arena locks and free-list
/// upkeep. mimalloc's thread-local free lists cost less (figures in
/// docs/BENCHMARKS.md, "The write path").
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some(run::GATE) {
        return run::gate(&argv[2..]);
    }
    let json = argv.iter().any(|a| a == "--json");
    let args = match <cli::Cli as clap::Parser>::try_parse_from(&argv) {
        Ok(a) => a,
        Err(e) if json && e.use_stderr() => {
            // A usage mistake under --json: still exit 2, but say it in
            // JSON so scripts never parse prose.
            let msg = e.kind().as_str().map_or_else(
                || e.to_string().lines().next().unwrap_or_default().to_string(),
                str::to_string,
            );
            let full = e.to_string();
            let detail = full
                .lines()
                .next()
                .map(|l| l.trim_start_matches("error: ").to_string())
                .unwrap_or(msg);
            eprintln!(
                "{}",
                serde_json::json!({"error": {"code": "usage", "message": detail}})
            );
            return ExitCode::from(2);
        }
        Err(e) => e.exit(),
    };
    if args.is_daemon() {
        cmd::daemon::take_systemd_socket();
    }
    // The daemon's runtime has `--threads` workers (one: a current-thread
    // runtime, where the writer and the connections hand over through its
    // local run queue); a client needs one worker.
    let built = match args.daemon_threads() {
        Some(1) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Some(n) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
        None => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build(),
    };
    let rt = match built {
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
            if json {
                eprintln!("{}", output::error_json(&err));
            } else {
                eprintln!("coord: {err:#}");
            }
            ExitCode::from(output::exit_code(&err))
        }
    }
}
