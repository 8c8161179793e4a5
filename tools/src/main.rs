//! The `ferrite` binary: the command line (clap, parsed once here, flags and `FERRITE_*`
//! variables alike), then `ferrite server` (server.rs: wires the engine, the tier mover and
//! the S3 front together, one executor per core), `ferrite bench` or `ferrite admin`.

mod admin;
mod bench;
mod client;
mod executor;
mod fds;
mod logging;
mod server;
mod settings;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// Ferrite: an S3-compatible object store.
#[derive(Parser, Debug)]
#[command(name = "ferrite", version, arg_required_else_help = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve S3 on the given drives (every flag can also be set by the variable named beside it)
    Server(Box<settings::ServerArgs>),
    /// Load-test an S3 server (any, not only Ferrite), warp-style
    Bench(bench::BenchArgs),
    /// Heal, KMS key rotation, tiers and lifecycle passes of a running server
    Admin(admin::AdminArgs),
}

fn main() -> ExitCode {
    let cli = match parse() {
        Ok(cli) => cli,
        // --help and --version exit 0 with their text; usage errors exit 2.
        Err(e) => e.exit(),
    };
    match cli.command {
        Command::Server(args) => server(*args),
        Command::Bench(args) => bench(args),
        Command::Admin(args) => admin(args),
    }
}

/// The command line, with each setting's variable read once. A variable set to the empty
/// string counts as unset, as it always has (container manifests often leave them empty).
fn parse() -> Result<Cli, clap::Error> {
    let command = without_empty_variables(Cli::command());
    Cli::from_arg_matches_mut(&mut command.try_get_matches()?)
}

fn without_empty_variables(command: clap::Command) -> clap::Command {
    command
        .mut_args(|arg| {
            let empty = arg.get_env().and_then(std::env::var_os).is_some_and(|v| v.is_empty());
            if empty {
                arg.env(None)
            } else {
                arg
            }
        })
        .mut_subcommands(without_empty_variables)
}

fn server(args: settings::ServerArgs) -> ExitCode {
    logging::init(&args.log);
    // A server that cannot start says why on stderr, where shells and supervisors show it.
    let result = args.settings().and_then(server::run);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!(error = %message, "cannot start");
            eprintln!("ferrite: {message}");
            ExitCode::FAILURE
        }
    }
}

fn bench(args: bench::BenchArgs) -> ExitCode {
    match bench::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("ferrite bench: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Exit 0 when all is well, 1 when the server reports a problem (unrecoverable blocks,
/// drives offline, failed rewraps), 2 when the call itself failed.
fn admin(args: admin::AdminArgs) -> ExitCode {
    match admin::run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(message) => {
            eprintln!("ferrite admin: {message}");
            ExitCode::from(2)
        }
    }
}
