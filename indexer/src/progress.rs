//! Progress bars on the terminal, and log lines that do not tear them: when stderr is a
//! terminal, log lines are written above the bars (the bars are cleared, the line written,
//! the bars drawn again); otherwise there are no bars and log lines go straight to stderr.

use std::io::{IsTerminal, Write};
use std::sync::OnceLock;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

fn bars() -> &'static MultiProgress {
    static BARS: OnceLock<MultiProgress> = OnceLock::new();
    BARS.get_or_init(|| {
        let target = if std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        MultiProgress::with_draw_target(target)
    })
}

/// A bar for copying about `estimate` rows (Postgres' estimate; 0: unknown, a spinner).
pub fn rows_bar(estimate: u64) -> ProgressBar {
    let bar = if estimate > 0 {
        ProgressBar::new(estimate).with_style(
            ProgressStyle::with_template(
                "snapshot {bar:40} {human_pos}/{human_len} rows, {per_sec:0}, about {eta} left",
            )
            .expect("a valid template"),
        )
    } else {
        ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("snapshot {spinner} {human_pos} rows, {per_sec:0}")
                .expect("a valid template"),
        )
    };
    bars().add(bar)
}

/// Where log lines go (`tracing_subscriber`'s writer).
#[derive(Clone, Copy, Default)]
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        bars().suspend(|| std::io::stderr().write_all(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> LogWriter {
        LogWriter
    }
}
