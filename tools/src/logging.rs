//! The server's log output. The libraries emit `tracing` events (leveled, with fields); this
//! module alone decides how they are written: text lines by default, or one JSON object per
//! line for log collectors (Azure Monitor's container insights reads either from stdout).
//! `ferrite bench` and `ferrite admin` are command-line tools and install no subscriber.

use clap::{Args, ValueEnum};

/// How each event is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The log settings of `ferrite server`.
#[derive(Args, Debug)]
#[command(next_help_heading = "Logging")]
pub struct LogArgs {
    /// How events are written to stdout: text lines, or one JSON object per line
    #[arg(long, env = "FERRITE_LOG_FORMAT", value_enum, ignore_case = true, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// The least severe events written: error, warn, info, debug or trace
    #[arg(long, env = "FERRITE_LOG_LEVEL", value_name = "LEVEL", default_value = "info", value_parser = level)]
    pub log_level: tracing::Level,
}

fn level(value: &str) -> Result<tracing::Level, String> {
    value.parse().map_err(|_| format!("unknown log level {value:?} (error, warn, info, debug, trace)"))
}

/// Installs the process's subscriber: events at the chosen level and above go to stdout,
/// where the server has always written its start-up lines.
pub fn init(args: &LogArgs) {
    let builder =
        tracing_subscriber::fmt().with_writer(std::io::stdout).with_max_level(args.log_level).with_ansi(false);
    match args.log_format {
        LogFormat::Text => builder.with_target(false).init(),
        LogFormat::Json => builder.json().with_current_span(false).init(),
    }
}
