//! The server's log output. The libraries emit `tracing` events (leveled, with fields); this
//! module alone decides how they are written: text lines by default, or one JSON object per
//! line for log collectors (Azure Monitor's container insights reads either from stdout).

use std::str::FromStr;

/// How each event is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?} (text or json)")),
        }
    }
}

/// Installs the process's subscriber: events at `level` and above go to stdout, where the
/// server has always written its start-up lines.
pub fn init(format: LogFormat, level: tracing::Level) {
    let builder = tracing_subscriber::fmt().with_writer(std::io::stdout).with_max_level(level).with_ansi(false);
    match format {
        LogFormat::Text => builder.with_target(false).init(),
        LogFormat::Json => builder.json().with_current_span(false).init(),
    }
}
