//! Flat CPU profiles with `perf` (when present): where the machine's time goes during a load.
//!
//! The recording is system-wide, so it also shows what the load generator and Postgres cost:
//! on two shared cores the client's share decides much of a throughput figure. Processes are
//! told apart by thread name: the indexer's and query-api's runtime threads are named after
//! their process, the benchmark's own `bench-client`, Postgres' backends `postgres`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

/// The thread names (perf's `comm`, at most 15 bytes) of our processes: the runtimes', the
/// engine's own threads and tantivy's (indexing, doc store compression, merges); and the
/// graph builder's insert pool, `graph-insert-N`.
const OURS: &[&str] = &[
    "indexer",
    "indexer-search",
    "query-api",
    "applier",
    "committer",
    "graph-builder",
    "thrd-tantivy-in",
    "docstore-compre",
    "merge_thread_0",
    "merge_thread_1",
    "segment_updater",
];

/// Records into files under `dir`.
pub struct Profiler {
    dir: PathBuf,
}

/// perf's sampling rate, per core.
const HZ: f64 = 499.0;

/// A flat `perf report` of `data` with `args` added: its text, empty when perf fails.
async fn report(data: &Path, args: &[&str]) -> String {
    tokio::process::Command::new("perf")
        .args(["report", "--stdio", "--no-children", "-g", "none"])
        .args(args)
        .arg("-i")
        .arg(data)
        .output()
        .await
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Which process a thread name belongs to.
fn process_of(comm: &str) -> &'static str {
    match comm {
        "query-api" => "query-api",
        "bench-client" | "bench" => "load generator",
        "postgres" => "postgres",
        c if OURS.contains(&c) || c.starts_with("graph-insert-") => "indexer",
        c if c.starts_with("swapper") || c.starts_with("kworker") || c.starts_with("ksoftirq") => {
            "kernel threads"
        }
        _ => "other",
    }
}

impl Profiler {
    pub fn new(dir: &Path) -> Profiler {
        Profiler {
            dir: dir.to_owned(),
        }
    }

    /// A profile of the whole machine for `seconds`: `cpu`, the cores each process used
    /// (`{"indexer": 0.7, …}`, idle excluded); `hot`, our processes' hottest symbols (over 2%
    /// of their threads' samples, at most 8) as `[percent, "thread symbol"]`. Empty when perf is
    /// missing or fails.
    pub async fn record(&self, seconds: f64, name: &str) -> Value {
        let data = self.dir.join(format!(
            "perf-{}.data",
            name.replace([' ', '/', '(', ')'], "_")
        ));
        // BENCH_CALL_GRAPH=1 also records call stacks (DWARF), for `perf report` on the data
        // files kept under BENCH_DIR; the flat figures stay the same.
        let graph: &[&str] = match std::env::var_os("BENCH_CALL_GRAPH") {
            Some(_) => &["--call-graph", "dwarf,32768"],
            None => &[],
        };
        let recorded = tokio::process::Command::new("perf")
            .args(["record", "-q", "-a", "-F", &HZ.to_string(), "-o"])
            .arg(&data)
            .args(graph)
            .args(["--", "sleep", &format!("{seconds}")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .await
            .is_ok_and(|s| s.success());
        if !recorded {
            return json!({});
        }
        // Samples per thread name → cores per process (a core sampled at HZ for `seconds`).
        let mut cpu: BTreeMap<&str, f64> = BTreeMap::new();
        for line in report(&data, &["-n", "--sort", "comm"]).await.lines() {
            let mut it = line.split_whitespace();
            let (Some(_pct), Some(n), Some(comm)) = (it.next(), it.next(), it.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<f64>() else { continue };
            if comm == "swapper" {
                continue; // idle
            }
            *cpu.entry(process_of(comm)).or_default() += n / (HZ * seconds);
        }
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let inserts = (0..cores).map(|i| format!("graph-insert-{i}"));
        let comms: Vec<String> = OURS.iter().map(|c| c.to_string()).chain(inserts).collect();
        let comms = comms.join(",");
        let text = report(
            &data,
            &[
                "--comms",
                &comms,
                "--percentage",
                "relative",
                "--sort",
                "comm,sym",
                "--percent-limit",
                "2",
            ],
        )
        .await;
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
        json!({"cpu": cpu, "hot": hot})
    }
}

#[cfg(test)]
mod tests {
    use super::process_of;

    #[test]
    fn threads_are_counted_to_their_process() {
        assert_eq!(process_of("indexer"), "indexer");
        assert_eq!(process_of("thrd-tantivy-in"), "indexer");
        assert_eq!(process_of("query-api"), "query-api");
        assert_eq!(process_of("bench-client"), "load generator");
        assert_eq!(process_of("postgres"), "postgres");
        assert_eq!(process_of("sshd"), "other");
    }
}
