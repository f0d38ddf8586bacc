//! What the run knows of the machine and its files: the machine's description, a process's
//! resident set, the bytes under a directory, and the working directory of the run.

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde_json::{json, Value};

/// Runs `cmd` and returns its trimmed standard output (empty when it fails).
pub fn sh(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// The value of the first `field: value` line of a /proc file.
pub fn proc_field(path: &str, field: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default()
}

/// A process's resident set in MB.
pub fn rss_mb(pid: Option<u32>) -> f64 {
    pid.map_or(0.0, |pid| {
        proc_field(&format!("/proc/{pid}/status"), "VmRSS")
            .trim_end_matches(" kB")
            .parse::<f64>()
            .unwrap_or(0.0)
            / 1024.0
    })
}

/// A process's memory in MB: resident (`rss_mb`), of which anonymous (`anon_mb`: the heap,
/// what the process holds itself) and file-backed (`file_mb`: mapped index files, which the
/// kernel may drop and read again), and its peak resident set (`peak_mb`, `VmHWM`).
pub fn memory(pid: Option<u32>) -> Value {
    let field = |f: &str| {
        pid.and_then(|pid| e2e::status_mb(pid, f).ok())
            .unwrap_or(f64::NAN)
    };
    json!({"rss_mb": field("VmRSS:"), "anon_mb": field("RssAnon:"), "file_mb": field("RssFile:"),
           "peak_mb": field("VmHWM:")})
}

/// The bytes of the unnamed files (deleted, or made without a name) that process `pid` holds
/// open under `dir`: the indexer's mapped vector files, which take disk but are in no
/// directory listing.
pub fn unnamed_bytes(pid: Option<u32>, dir: &Path) -> u64 {
    let Some(pid) = pid else { return 0 };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten();
    fds.filter_map(|fd| {
        let target = std::fs::read_link(fd.path()).ok()?;
        let target = target.to_str()?.strip_suffix(" (deleted)")?;
        Path::new(target).starts_with(dir).then_some(())?;
        // The link leads to the file itself, name or not; its given-back blocks are holes,
        // so what it takes on disk is its allocated blocks, not its length.
        use std::os::unix::fs::MetadataExt;
        Some(std::fs::metadata(fd.path()).ok()?.blocks() * 512)
    })
    .sum()
}

/// The bytes of the files under `p`; with `only`, of the files under directories so named.
pub fn dir_bytes(p: &Path, only: Option<&str>) -> u64 {
    let mut total = 0;
    let mut stack = vec![(p.to_path_buf(), only.is_none())];
    while let Some((d, counted)) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => {
                    let named = only.is_some_and(|n| e.file_name() == n);
                    stack.push((e.path(), counted || named));
                }
                Ok(m) if counted => total += m.len(),
                _ => {}
            }
        }
    }
    total
}

/// Where a run keeps its files: `BENCH_DIR` keeps the data directories and logs (for a
/// post-mortem); a temporary directory otherwise.
pub enum Workdir {
    Temp(tempfile::TempDir),
    Kept(PathBuf),
}

impl Workdir {
    pub fn from_env() -> Result<Workdir> {
        Ok(match std::env::var("BENCH_DIR") {
            Ok(d) => Workdir::Kept(
                tempfile::Builder::new()
                    .prefix("bench-")
                    .tempdir_in(d)?
                    .keep(),
            ),
            Err(_) => Workdir::Temp(tempfile::tempdir()?),
        })
    }

    pub fn path(&self) -> &Path {
        match self {
            Workdir::Temp(t) => t.path(),
            Workdir::Kept(p) => p,
        }
    }
}
