//! sentrynet's rust-libp2p 0.56 reference node: `sentrynet-rust-node --config node.toml`.
//!
//! It reads the node.toml the harness renders (docs/contracts.md section 1), uses the same
//! key file format as the Python node (so peer ids match), and serves the part of the HTTP
//! API the checks read (`/status`, `/events`), and runs our chain (src/chain/). Exit
//! codes: 2 for a bad config (the message names the key), 1 when it cannot start (key
//! file, listen address, API port).

mod api;
mod chain;
mod config;
mod events;
mod keys;
mod node;
mod px;
mod state;

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: sentrynet-rust-node --config FILE";

fn config_path() -> Result<PathBuf, String> {
    let mut args = std::env::args().skip(1);
    let mut path = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" => path = args.next().map(PathBuf::from),
            a if a.starts_with("--config=") => path = Some(PathBuf::from(&a[9..])),
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    path.ok_or_else(|| USAGE.to_string())
}

fn main() -> ExitCode {
    let path = match config_path() {
        Ok(p) => p,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    let cfg = match config::load(&path) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("config error: {e}");
            return ExitCode::from(2);
        }
    };
    let key = match keys::load_or_create(&cfg.key_file) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(1);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: tokio runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(node::run(cfg, key)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
