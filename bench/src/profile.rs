//! Flat CPU profiles with `perf` (when present): where the indexer's and the query-api's time
//! goes during a load.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

/// Records `pids` into files under `dir`.
pub struct Profiler {
    pids: Vec<u32>,
    dir: PathBuf,
}

impl Profiler {
    pub fn new(pids: impl IntoIterator<Item = u32>, dir: &Path) -> Profiler {
        Profiler {
            pids: pids.into_iter().collect(),
            dir: dir.to_owned(),
        }
    }

    /// A flat profile for `seconds`: the hottest symbols (over 2% of the samples, at most 8)
    /// as `[percent, "process symbol"]`; empty when perf is missing or fails.
    pub async fn record(&self, seconds: f64, name: &str) -> Value {
        let data = self
            .dir
            .join(format!("perf-{}.data", name.replace([' ', '/'], "_")));
        let pids: Vec<String> = self.pids.iter().map(u32::to_string).collect();
        // BENCH_CALL_GRAPH=1 also records call stacks (DWARF), for `perf report` on the data
        // files kept under BENCH_DIR; the flat figures stay the same.
        let graph: &[&str] = match std::env::var_os("BENCH_CALL_GRAPH") {
            Some(_) => &["--call-graph", "dwarf,32768"],
            None => &[],
        };
        let recorded = tokio::process::Command::new("perf")
            .args(["record", "-q", "-F", "499", "-p", &pids.join(","), "-o"])
            .arg(&data)
            .args(graph)
            .args(["--", "sleep", &format!("{seconds}")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .await
            .is_ok_and(|s| s.success());
        if !recorded {
            return json!([]);
        }
        let out = tokio::process::Command::new("perf")
            .args(["report", "--stdio", "--no-children", "-g", "none"])
            .args(["--sort", "comm,sym", "--percent-limit", "2", "-i"])
            .arg(&data)
            .output()
            .await;
        let text = out
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let hot: Vec<(f64, String)> = text
            .lines()
            .filter_map(|l| {
                let (pct, rest) = l.trim().split_once('%')?;
                let pct: f64 = pct.trim().parse().ok()?;
                let rest = rest
                    .trim()
                    .replacen("[.] ", "", 1)
                    .replacen("[k] ", "(kernel) ", 1);
                Some((pct, rest.split_whitespace().collect::<Vec<_>>().join(" ")))
            })
            .take(8)
            .collect();
        json!(hot)
    }
}
