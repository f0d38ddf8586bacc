//! How both processes log: to `writer` (stderr, or the indexer's progress-aware writer), at
//! the levels `RUST_LOG` asks for (else `default_filter`), as plain text — with colours only
//! when stderr is a terminal, so files and pipes get no escape codes — or, with
//! `LOG_FORMAT=json`, as one JSON object per line (timestamp, level, target, fields) for log
//! collectors. Any other `LOG_FORMAT` is refused by name.

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; `Err` names a `LOG_FORMAT` it does not know.
pub fn init<W>(default_filter: &str, writer: W) -> Result<(), String>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| default_filter.into());
    let builder = tracing_subscriber::fmt()
        .with_writer(writer)
        .with_env_filter(filter);
    match std::env::var("LOG_FORMAT").as_deref() {
        Ok("json") => builder.json().init(),
        Ok("text") | Err(_) => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        Ok(other) => {
            builder.with_ansi(false).init();
            return Err(format!(
                "LOG_FORMAT={other:?}: use \"text\" (the default) or \"json\""
            ));
        }
    }
    Ok(())
}
