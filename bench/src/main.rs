//! The benchmark harness (not a test): one run on this machine against a throwaway Postgres,
//! the release indexer and query-api, side by side with Postgres's own indexes (tsvector +
//! GIN + ts_rank_cd, PostGIS + GiST; pgvector when installed). Writes BENCHMARKS.md and the
//! raw figures as BENCHMARKS.json; every figure comes from this run.
//!
//!   scripts/bench [--rows N] [--seconds S]      # N: 30000 (the dev set) by default; 1000000 scales it
//!
//! Data: the dev set (../shared/data/dev: 30k GeoNames cities, 384-d MiniLM embeddings);
//! above 30k rows, seeded copies (`e2e::dev_data::Scaled` documents how).
//!
//! Long (~1,100 lines): the harness is one linear program (set up, ingest, freshness, queries,
//! recall, footprint, restart, report), each phase a function below; splitting it is open work.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use bytes::Bytes;
use e2e::{Indexer, PgServer, QueryApi};
use futures_util::SinkExt;
use serde_json::{json, Value};

/// Latency and throughput of one load.
#[derive(Clone, Copy, Debug, Default)]
struct Lat {
    p50: f64,
    p99: f64,
    max: f64,
    qps: f64,
    n: usize,
}

impl Lat {
    fn of(mut ms: Vec<f64>, seconds: f64) -> Lat {
        if ms.is_empty() {
            return Lat::default();
        }
        ms.sort_by(f64::total_cmp);
        let p = |q: f64| ms[((ms.len() as f64 - 1.0) * q).round() as usize];
        Lat {
            p50: p(0.5),
            p99: p(0.99),
            max: ms[ms.len() - 1],
            qps: ms.len() as f64 / seconds,
            n: ms.len(),
        }
    }

    fn json(&self) -> Value {
        json!({"p50_ms": self.p50, "p99_ms": self.p99, "max_ms": self.max, "qps": self.qps, "n": self.n})
    }
}

/// Figures as they are measured: printed at once, kept for the report.
struct Report {
    json: BTreeMap<String, Value>,
    md: Vec<String>,
}

impl Report {
    fn put(&mut self, key: &str, v: Value) {
        eprintln!("bench: {key} = {v}");
        self.json.insert(key.to_owned(), v);
    }
    fn line(&mut self, s: impl Into<String>) {
        self.md.push(s.into());
    }
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn sh(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn proc_field(path: &str, field: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default()
}

/// A process's resident set in MB.
fn rss_mb(pid: Option<u32>) -> f64 {
    pid.map_or(0.0, |pid| {
        proc_field(&format!("/proc/{pid}/status"), "VmRSS")
            .trim_end_matches(" kB")
            .parse::<f64>()
            .unwrap_or(0.0)
            / 1024.0
    })
}

fn dir_bytes(p: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// An index config: text always; geo and vector optional.
fn config(dir: &Path, name: &str, url: &str, geo: bool, vector: bool) -> Result<PathBuf> {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "[source]\ndatabase_url = \"{url}\"\npublication = \"bench_pub\"\nslot = \"bench_{name}\"\n\
             [storage]\ndata_dir = \"{}\"\n\
             [[index]]\nname = \"places\"\ntable = \"places\"\nregion = \"region\"\n\
             text_fields = [{{ column = \"name\", boost = 2.0 }}, \"body\"]\n{}{}\
             filter_fields = [\"population\", \"country_code\"]\nstored_fields = [\"name\", \"population\", \"country_code\"]\n",
            dir.join(name).display(),
            if geo { "geo = { lat = \"lat\", lon = \"lon\" }\n" } else { "" },
            if vector { "vector = { column = \"embedding\", dimension = 384 }\n" } else { "" },
        ),
    )?;
    Ok(path)
}

/// Waits until a per-partition counter of the indexer's `/status` sums to zero (a partition
/// without the counter counts as `missing`).
async fn until_zero(
    ix: &Indexer,
    what: &str,
    field: &str,
    missing: u64,
    timeout: Duration,
) -> Result<()> {
    e2e::eventually(what, timeout, || async {
        let s = ix.status().await?;
        let sum: u64 = s["partitions"]
            .as_array()
            .context("partitions")?
            .iter()
            .map(|p| p[field].as_u64().unwrap_or(missing))
            .sum();
        Ok((sum == 0).then_some(()))
    })
    .await
}

async fn graph_done(ix: &Indexer, timeout: Duration) -> Result<()> {
    until_zero(
        ix,
        "the graph to hold every vector",
        "vectors_pending_graph",
        1,
        timeout,
    )
    .await
}

/// Runs `bodies` round-robin against the public search from `c` clients for `budget`.
async fn http_load(
    http: &reqwest::Client,
    url: &str,
    bodies: &Arc<Vec<Value>>,
    c: usize,
    budget: Duration,
) -> Result<Lat> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..c {
        let (http, url, bodies, next) =
            (http.clone(), url.to_owned(), bodies.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while started.elapsed() < budget {
                let i = next.fetch_add(1, Ordering::Relaxed) % bodies.len();
                let t = Instant::now();
                let resp = http.post(&url).json(&bodies[i]).send().await?;
                let status = resp.status();
                let body = resp.bytes().await?;
                ensure!(
                    status.is_success(),
                    "{status}: {}",
                    String::from_utf8_lossy(&body)
                );
                lat.push(t.elapsed().as_secs_f64() * 1e3);
            }
            Ok(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    Ok(Lat::of(all, started.elapsed().as_secs_f64()))
}

/// A flat CPU profile of `pids` for `seconds` (perf, when present): the hottest symbols with
/// their share of samples, as `(percent, "process symbol")`.
async fn profile(pids: &[u32], seconds: f64, dir: &Path, name: &str) -> Vec<(f64, String)> {
    let data = dir.join(format!("perf-{}.data", name.replace(' ', "_")));
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    let recorded = tokio::process::Command::new("perf")
        .args(["record", "-q", "-F", "499", "-p", &pids.join(","), "-o"])
        .arg(&data)
        .args(["--", "sleep", &format!("{seconds}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success());
    if !recorded {
        return Vec::new();
    }
    let out = tokio::process::Command::new("perf")
        .args([
            "report",
            "--stdio",
            "--no-children",
            "-g",
            "none",
            "--sort",
            "comm,sym",
            "--percent-limit",
            "2",
            "-i",
        ])
        .arg(&data)
        .output()
        .await;
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let (pct, rest) = l.split_once('%')?;
            let pct: f64 = pct.trim().parse().ok()?;
            let rest = rest
                .trim()
                .replacen("[.] ", "", 1)
                .replacen("[k] ", "(kernel) ", 1);
            Some((pct, rest.split_whitespace().collect::<Vec<_>>().join(" ")))
        })
        .take(8)
        .collect()
}

/// Where a run keeps its files.
enum Workdir {
    Temp(tempfile::TempDir),
    Kept(PathBuf),
}

impl From<PathBuf> for Workdir {
    fn from(p: PathBuf) -> Workdir {
        Workdir::Kept(p)
    }
}

impl Workdir {
    fn path(&self) -> &Path {
        match self {
            Workdir::Temp(t) => t.path(),
            Workdir::Kept(p) => p,
        }
    }
}

/// One Postgres-side query: its SQL and parameters.
#[derive(Clone)]
enum PgQ {
    Text(String),
    Point(f64, f64),
    Radius(f64, f64, f64),
}

async fn pg_load(
    pg: &PgServer,
    db: &str,
    sql: &str,
    queries: &Arc<Vec<PgQ>>,
    c: usize,
    budget: Duration,
) -> Result<Lat> {
    let mut clients = Vec::new();
    for _ in 0..c {
        clients.push(pg.connect(db).await?);
    }
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in clients {
        let (queries, next, sql) = (queries.clone(), next.clone(), sql.to_owned());
        tasks.push(tokio::spawn(async move {
            let stmt = client.prepare(&sql).await?;
            let mut lat = Vec::new();
            while started.elapsed() < budget {
                let i = next.fetch_add(1, Ordering::Relaxed) % queries.len();
                let t = Instant::now();
                let rows = match &queries[i] {
                    PgQ::Text(q) => client.query(&stmt, &[q]).await?,
                    PgQ::Point(lat, lon) => client.query(&stmt, &[lat, lon]).await?,
                    PgQ::Radius(lat, lon, r) => client.query(&stmt, &[lat, lon, r]).await?,
                };
                std::hint::black_box(rows);
                lat.push(t.elapsed().as_secs_f64() * 1e3);
            }
            anyhow::Ok(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    Ok(Lat::of(all, started.elapsed().as_secs_f64()))
}

/// Commit-to-searchable through the public API: transactions of `txn_rows` new rows at
/// `rows_per_sec`, spread over 8 writer connections, each carrying a unique word. For a sample
/// of at most ~100 transactions a second (probing every one would load the machine being
/// measured), the clock starts when the commit returns and stops when a search for that word,
/// waiting on the commit's LSN, returns the row.
/// One freshness setting: the write rate, transaction size, duration and first new id.
struct WriteLoad {
    rows_per_sec: f64,
    txn_rows: usize,
    seconds: f64,
    first_id: i64,
}

async fn freshness(
    pg: &PgServer,
    db: &str,
    http: &reqwest::Client,
    api: &str,
    load: WriteLoad,
) -> Result<(Lat, f64)> {
    let WriteLoad {
        rows_per_sec,
        txn_rows,
        seconds,
        first_id,
    } = load;
    const WRITERS: usize = 8;
    let txn_rate = rows_per_sec / txn_rows as f64;
    let n_txn = ((txn_rate * seconds).ceil() as usize).max(10);
    let probe_every = ((txn_rate / 100.0).ceil() as usize).max(1);
    let started = Instant::now();
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let client = pg.connect(db).await?;
        let (http, url) = (http.clone(), format!("{api}/v1/indexes/places/search"));
        writers.push(tokio::spawn(async move {
            let regions = ["europe", "asia", "africa", "north_america", "south_america", "oceania"];
            let mut probes = Vec::new();
            for k in (w..n_txn).step_by(WRITERS) {
                let due = started + Duration::from_secs_f64(k as f64 / txn_rate);
                if let Some(d) = due.checked_duration_since(Instant::now()) {
                    tokio::time::sleep(d).await;
                }
                let first = first_id + (k * txn_rows) as i64;
                let values: Vec<String> = (0..txn_rows as i64)
                    .map(|j| {
                        let id = first + j;
                        format!(
                            "({id}, '{}', 'probe {id}', 'freshness probe fresh{first}', 1, 'ZZ', 0, 0)",
                            regions[id as usize % regions.len()]
                        )
                    })
                    .collect();
                let msgs = client
                    .simple_query(&format!(
                        "BEGIN; INSERT INTO places (id, region, name, body, population, country_code, lat, lon) VALUES {}; COMMIT; SELECT pg_current_wal_lsn()::text",
                        values.join(",")
                    ))
                    .await?;
                let committed = Instant::now();
                if k % probe_every != 0 {
                    continue;
                }
                let lsn = msgs
                    .iter()
                    .find_map(|m| match m {
                        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                        _ => None,
                    })
                    .context("no LSN")?;
                let (http, url) = (http.clone(), url.clone());
                probes.push(tokio::spawn(async move {
                    let body = json!({"q": format!("fresh{first}"), "limit": 1, "highlight": false,
                                      "consistency": {"min_lsn": lsn, "wait_timeout_ms": 25000}});
                    let v: Value = http.post(url).json(&body).send().await?.json().await?;
                    ensure!(v["hits"].as_array().is_some_and(|h| !h.is_empty()), "not found: {v}");
                    anyhow::Ok(committed.elapsed().as_secs_f64() * 1e3)
                }));
            }
            anyhow::Ok(probes)
        }));
    }
    let mut probes = Vec::new();
    for w in writers {
        probes.extend(w.await??);
    }
    let achieved = (n_txn * txn_rows) as f64 / started.elapsed().as_secs_f64();
    let mut lat = Vec::new();
    for p in probes {
        lat.push(p.await??);
    }
    Ok((Lat::of(lat, started.elapsed().as_secs_f64()), achieved))
}

fn embedding(q: &Value) -> Vec<f32> {
    q["embedding"]
        .as_array()
        .map(|a| a.iter().map(|x| x.as_f64().unwrap_or(0.0) as f32).collect())
        .unwrap_or_default()
}

use e2e::hit_keys as keys;

#[tokio::main]
async fn main() -> Result<()> {
    let rows: usize = arg("--rows").map_or(Ok(30_000), |s| s.parse())?;
    let seconds: f64 = arg("--seconds").map_or(Ok(3.0), |s| s.parse())?;
    let budget = Duration::from_secs_f64(seconds);
    let repo = std::fs::canonicalize(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."))?;
    let out_md = arg("--out").map_or_else(|| repo.join("BENCHMARKS.md"), PathBuf::from);
    let out_json = out_md.with_extension("json");
    ensure!(
        e2e::dev_data::dir().is_some(),
        "../shared/data/dev is needed (or BENCH_DATA)"
    );
    let mut r = Report {
        json: BTreeMap::new(),
        md: Vec::new(),
    };
    let run_started = Instant::now();

    // The machine and the versions.
    let cores = std::thread::available_parallelism()?.get();
    let cpu = proc_field("/proc/cpuinfo", "model name");
    let mem = proc_field("/proc/meminfo", "MemTotal");
    let pg = PgServer::start_with_watchdog()?;
    let db = pg.fresh_db().await?;
    let client = pg.connect(&db).await?;
    let pg_version: String = client.query_one("SHOW server_version", &[]).await?.get(0);
    let available = |name: &'static str| {
        let client = &client;
        async move {
            client
                .query_opt(
                    "SELECT default_version FROM pg_available_extensions WHERE name = $1",
                    &[&name],
                )
                .await
                .ok()
                .flatten()
                .map(|r| r.get::<_, String>(0))
        }
    };
    let postgis = available("postgis").await;
    let pgvector = available("vector").await;
    r.put(
        "machine",
        json!({"cores": cores, "cpu": cpu, "memory": mem, "kernel": sh("uname", &["-r"]),
               "date": sh("date", &["-u", "+%Y-%m-%d %H:%M UTC"]), "git": sh("git", &["-C", repo.to_str().unwrap(), "rev-parse", "--short", "HEAD"]),
               "postgres": pg_version, "postgis": postgis, "pgvector": pgvector, "rows": rows, "seconds_per_cell": seconds}),
    );

    // Load the rows.
    client.batch_execute(e2e::dev_data::PLACES).await?;
    let t = Instant::now();
    let mut scaled = e2e::dev_data::Scaled::new(rows)?;
    {
        let sink = client.copy_in("COPY places FROM STDIN").await?;
        futures_util::pin_mut!(sink);
        loop {
            let chunk = scaled.chunk(5_000)?;
            if chunk.is_empty() {
                break;
            }
            sink.send(Bytes::from(chunk.concat())).await?;
        }
        sink.finish().await?;
    }
    client.batch_execute("ANALYZE places").await?;
    r.put(
        "load.copy_rows_per_sec",
        json!(rows as f64 / t.elapsed().as_secs_f64()),
    );

    // 1. Snapshot ingest, searchable: text only; text + geo; text + geo + vector.
    // BENCH_DIR keeps the data directories and logs (for a post-mortem); a temp dir otherwise.
    let dir = match std::env::var("BENCH_DIR") {
        Ok(d) => tempfile::Builder::new()
            .prefix("bench-")
            .tempdir_in(d)?
            .keep()
            .into(),
        Err(_) => Workdir::Temp(tempfile::tempdir()?),
    };
    let url = pg.url(&db);
    for (name, geo, vector) in [("text", false, false), ("text_geo", true, false)] {
        let cfg = config(dir.path(), name, &url, geo, vector)?;
        let mut ix = Indexer::start(&cfg, &dir.path().join(name)).await?;
        let s = ix.wait_ready().await?;
        r.put(
            &format!("snapshot.{name}.rows_per_sec"),
            s["snapshot"]["rows_per_sec"].clone(),
        );
        ix.stop()?;
        client
            .batch_execute(&format!("SELECT pg_drop_replication_slot('bench_{name}')"))
            .await?;
    }
    let listen = format!("127.0.0.1:{}", e2e::free_port()?);
    let cfg = config(dir.path(), "full", &url, true, true)?;
    let data = dir.path().join("full");
    let t = Instant::now();
    let mut ix = Indexer::start_on(&cfg, &data, &listen).await?;
    // Where the snapshot's time goes: a profile of its first seconds.
    let snap_secs = (rows as f64 / 10_000.0).clamp(1.0, 10.0);
    let snap_pids: Vec<u32> = ix.pid().into_iter().collect();
    let (s, hot) = tokio::join!(
        ix.wait_ready(),
        profile(&snap_pids, snap_secs, dir.path(), "snapshot")
    );
    let s = s?;
    r.put("profile.snapshot", json!(hot));
    r.put(
        "snapshot.full.rows_per_sec",
        s["snapshot"]["rows_per_sec"].clone(),
    );
    graph_done(&ix, Duration::from_secs(7200)).await?;
    let graph_s = t.elapsed().as_secs_f64();
    r.put("graph.vectors_per_sec", json!(rows as f64 / graph_s));
    r.put("graph.seconds_from_start", json!(graph_s));

    // 2. Streaming apply at saturation: one transaction updating every row, then 1,000-row
    //    transactions back to back.
    let t = Instant::now();
    client
        .batch_execute("UPDATE places SET population = population + 1")
        .await?;
    let pg_commit = t.elapsed().as_secs_f64();
    ix.wait_applied(&e2e::current_lsn(&client).await?).await?;
    r.put(
        "stream.one_txn.rows_per_sec",
        json!({"rows_per_sec": rows as f64 / t.elapsed().as_secs_f64(), "postgres_commit_s": pg_commit, "total_s": t.elapsed().as_secs_f64()}),
    );
    let batches = (rows / 1000).clamp(1, 30) as i64;
    let t = Instant::now();
    for k in 0..batches {
        client
            .execute(
                "UPDATE places SET population = population + 1 WHERE id IN (SELECT id FROM places ORDER BY id OFFSET $1 LIMIT 1000)",
                &[&(k * 1000)],
            )
            .await?;
    }
    ix.wait_applied(&e2e::current_lsn(&client).await?).await?;
    r.put(
        "stream.txn_1000.rows_per_sec",
        json!(batches as f64 * 1000.0 / t.elapsed().as_secs_f64()),
    );

    // The public API in front of it.
    let api_cfg = dir.path().join("query-api.toml");
    std::fs::write(
        &api_cfg,
        format!(
            "[[shard]]\nurl = \"http://{listen}\"\n[auth]\nopen = true\n\
             [limits]\nrate_per_sec = 1000000.0\nburst = 1000000.0\nmax_concurrent_requests = 4096\n"
        ),
    )?;
    let api = QueryApi::start(&api_cfg, dir.path()).await?;
    let search_url = format!("{}/v1/indexes/places/search", api.url);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(60))
        .build()?;

    // 3. Freshness: commit to searchable through the public API.
    // The bulk writes are searchable; how long until they are durable too (the fresh layer,
    // which every query scans, is empty again)?
    let t = Instant::now();
    until_zero(
        &ix,
        "the bulk writes to be durable",
        "fresh_documents",
        0,
        Duration::from_secs(600),
    )
    .await?;
    r.put("stream.durable_after_s", json!(t.elapsed().as_secs_f64()));
    r.put("rss_mb.after_ingest", json!(rss_mb(ix.pid())));
    let writer = pg.connect(&db).await?;
    let mut next_id: i64 = 8_000_000_000;
    let mut fresh = Vec::new();
    for rate in [100.0, 1000.0, 5000.0] {
        for txn_rows in [1usize, 100] {
            let (lat, achieved) = freshness(
                &pg,
                &db,
                &http,
                &api.url,
                WriteLoad {
                    rows_per_sec: rate,
                    txn_rows,
                    seconds: 5.0,
                    first_id: next_id,
                },
            )
            .await?;
            next_id += 100_000_000;
            r.put(
                &format!("freshness.{rate}.{txn_rows}"),
                json!({"target_rows_per_sec": rate, "achieved_rows_per_sec": achieved, "txn_rows": txn_rows, "latency": lat.json()}),
            );
            fresh.push((rate, txn_rows, achieved, lat));
        }
    }
    writer
        .batch_execute("DELETE FROM places WHERE id >= 8000000000")
        .await?;
    ix.wait_applied(&e2e::current_lsn(&writer).await?).await?;
    r.put("rss_mb.after_freshness", json!(rss_mb(ix.pid())));

    // 4. Queries through the public API, concurrency 1 and 32.
    let text = e2e::dev_data::queries("queries_text.jsonl")?;
    let geo = e2e::dev_data::queries("queries_geo.jsonl")?;
    let vectors = e2e::dev_data::queries("queries_vector.jsonl")?;
    let texts = |kind: &str| -> Vec<String> {
        text.iter()
            .filter(|q| q["kind"] == kind)
            .filter_map(|q| q["query"].as_str().map(str::to_owned))
            .collect()
    };
    let (rare, common, phrase) = (
        texts("term_rare"),
        texts("term_common"),
        texts("gloss_phrase"),
    );
    let points: Vec<(f64, f64)> = geo
        .iter()
        .filter_map(|q| Some((q["lat"].as_f64()?, q["lon"].as_f64()?)))
        .collect();
    let ours: Vec<(&str, Vec<Value>)> = vec![
        ("text rare", rare.iter().map(|q| json!({"q": q, "highlight": false})).collect()),
        ("text common", common.iter().map(|q| json!({"q": q, "highlight": false})).collect()),
        ("text phrase", phrase.iter().map(|q| json!({"q": format!("\"{q}\""), "highlight": false})).collect()),
        ("geo radius 10 km", points.iter().map(|(a, o)| json!({"geo": {"within": {"lat": a, "lon": o, "radius_m": 10_000.0}}})).collect()),
        ("geo radius 200 km", points.iter().map(|(a, o)| json!({"geo": {"within": {"lat": a, "lon": o, "radius_m": 200_000.0}}})).collect()),
        ("geo nearest k=10", points.iter().map(|(a, o)| json!({"geo": {"nearest": {"lat": a, "lon": o, "k": 10}}})).collect()),
        ("vector k=10", vectors.iter().map(|q| json!({"vector": {"values": embedding(q), "k": 10}})).collect()),
        ("vector k=10 + filter", vectors.iter().map(|q| json!({"vector": {"values": embedding(q), "k": 10}, "filter": {"range": {"population": {"gte": 100000}}}})).collect()),
        ("hybrid (RRF)", vectors.iter().map(|q| {
            let words: Vec<&str> = q["text"].as_str().unwrap_or("city").split_whitespace().take(3).collect();
            json!({"text": {"q": words.join(" "), "operator": "or"}, "vector": {"values": embedding(q), "k": 10}, "hybrid": {}})
        }).collect()),
    ];
    let mut our_lat: BTreeMap<&str, (Lat, Lat)> = BTreeMap::new();
    let pids: Vec<u32> = [ix.pid(), api.pid()].into_iter().flatten().collect();
    for (name, bodies) in &ours {
        let bodies = Arc::new(bodies.clone());
        http_load(&http, &search_url, &bodies, 1, Duration::from_millis(300)).await?;
        let one = http_load(&http, &search_url, &bodies, 1, budget).await?;
        // Where the time goes at c=32: a flat perf profile of the indexer and query-api.
        let (many, hot) = tokio::join!(
            http_load(&http, &search_url, &bodies, 32, budget),
            profile(&pids, (seconds - 0.5).max(0.5), dir.path(), name)
        );
        let many = many?;
        r.put(&format!("profile.{name}"), json!(hot));
        r.put(
            &format!("query.{name}"),
            json!({"c1": one.json(), "c32": many.json()}),
        );
        our_lat.insert(name, (one, many));
    }
    // Recall@10 of the default (graph) mode against exact answers.
    let mut recall = 0.0;
    for q in &vectors {
        let v = embedding(q);
        let want: Vec<String> = if rows == 30_000 {
            q["top10_ids"]
                .as_array()
                .context("top10_ids")?
                .iter()
                .map(|x| x.to_string())
                .collect()
        } else {
            let body = json!({"vector": {"values": v, "k": 10, "exact": true}});
            keys(
                &http
                    .post(&search_url)
                    .json(&body)
                    .send()
                    .await?
                    .json()
                    .await?,
            )
        };
        let body = json!({"vector": {"values": v, "k": 10}});
        let got = keys(
            &http
                .post(&search_url)
                .json(&body)
                .send()
                .await?
                .json()
                .await?,
        );
        recall += got.iter().filter(|k| want.contains(k)).count() as f64 / want.len().max(1) as f64;
    }
    recall /= vectors.len() as f64;
    r.put("vector.recall_at_10", json!(recall));

    // 5. Footprint and restart.
    let rss_kb = rss_mb(ix.pid()) * 1024.0;
    let disk = dir_bytes(&data) as f64;
    r.put(
        "footprint",
        json!({"rss_mb": rss_kb / 1024.0, "disk_mb": disk / 1048576.0,
               "rss_gb_per_1m": rss_kb / 1048576.0 * 1e6 / rows as f64,
               "disk_gb_per_1m": disk / 1073741824.0 * 1e6 / rows as f64}),
    );
    ix.stop()?;
    let t = Instant::now();
    let mut ix = Indexer::start_on(&cfg, &data, &listen).await?;
    let probe = json!({"vector": {"values": embedding(&vectors[0]), "k": 10}});
    e2e::eventually(
        "answers after the restart",
        Duration::from_secs(600),
        || async {
            let resp = http.post(&search_url).json(&probe).send().await?;
            Ok((resp.status().is_success() && !keys(&resp.json().await?).is_empty()).then_some(()))
        },
    )
    .await?;
    r.put("restart_to_serving_s", json!(t.elapsed().as_secs_f64()));
    ix.stop()?;

    // 6. The same logical queries on Postgres itself, on a copy of the table.
    let t = Instant::now();
    client
        .batch_execute(
            "CREATE TABLE pg_places AS SELECT id, region, name, body, population, country_code, lat, lon FROM places; \
             ALTER TABLE pg_places ADD PRIMARY KEY (id); \
             ALTER TABLE pg_places ADD COLUMN tsv tsvector GENERATED ALWAYS AS \
                 (to_tsvector('simple', coalesce(name, '') || ' ' || coalesce(body, ''))) STORED; \
             CREATE INDEX pg_places_tsv ON pg_places USING gin (tsv);",
        )
        .await?;
    r.put(
        "postgres.tsvector_gin_build_rows_per_sec",
        json!(rows as f64 / t.elapsed().as_secs_f64()),
    );
    let mut pg_sets: Vec<(&str, &str, Vec<PgQ>)> = vec![
        ("text rare", "SELECT id FROM pg_places WHERE tsv @@ plainto_tsquery('simple', $1) ORDER BY ts_rank_cd(tsv, plainto_tsquery('simple', $1)) DESC LIMIT 10",
         rare.iter().cloned().map(PgQ::Text).collect()),
        ("text common", "SELECT id FROM pg_places WHERE tsv @@ plainto_tsquery('simple', $1) ORDER BY ts_rank_cd(tsv, plainto_tsquery('simple', $1)) DESC LIMIT 10",
         common.iter().cloned().map(PgQ::Text).collect()),
        ("text phrase", "SELECT id FROM pg_places WHERE tsv @@ phraseto_tsquery('simple', $1) ORDER BY ts_rank_cd(tsv, phraseto_tsquery('simple', $1)) DESC LIMIT 10",
         phrase.iter().cloned().map(PgQ::Text).collect()),
    ];
    if postgis.is_some() {
        let t = Instant::now();
        client
            .batch_execute(
                "CREATE EXTENSION IF NOT EXISTS postgis; \
                 ALTER TABLE pg_places ADD COLUMN geog geography(Point, 4326); \
                 UPDATE pg_places SET geog = ST_SetSRID(ST_MakePoint(lon, lat), 4326)::geography; \
                 CREATE INDEX pg_places_geog ON pg_places USING gist (geog);",
            )
            .await?;
        r.put(
            "postgres.postgis_gist_build_rows_per_sec",
            json!(rows as f64 / t.elapsed().as_secs_f64()),
        );
        let within = "SELECT id FROM pg_places WHERE ST_DWithin(geog, ST_SetSRID(ST_MakePoint($2, $1), 4326)::geography, $3) \
                      ORDER BY geog <-> ST_SetSRID(ST_MakePoint($2, $1), 4326)::geography LIMIT 10";
        pg_sets.push((
            "geo radius 10 km",
            within,
            points
                .iter()
                .map(|&(a, o)| PgQ::Radius(a, o, 10_000.0))
                .collect(),
        ));
        pg_sets.push((
            "geo radius 200 km",
            within,
            points
                .iter()
                .map(|&(a, o)| PgQ::Radius(a, o, 200_000.0))
                .collect(),
        ));
        pg_sets.push(("geo nearest k=10", "SELECT id FROM pg_places ORDER BY geog <-> ST_SetSRID(ST_MakePoint($2, $1), 4326)::geography LIMIT 10",
                      points.iter().map(|&(a, o)| PgQ::Point(a, o)).collect()));
    }
    client.batch_execute("ANALYZE pg_places").await?;
    let mut pg_lat: BTreeMap<&str, (Lat, Lat)> = BTreeMap::new();
    for (name, sql, qs) in pg_sets {
        let qs = Arc::new(qs);
        pg_load(&pg, &db, sql, &qs, 1, Duration::from_millis(300)).await?;
        let one = pg_load(&pg, &db, sql, &qs, 1, budget).await?;
        let many = pg_load(&pg, &db, sql, &qs, 32, budget).await?;
        r.put(
            &format!("postgres.query.{name}"),
            json!({"sql": sql, "c1": one.json(), "c32": many.json()}),
        );
        pg_lat.insert(name, (one, many));
    }
    r.put("run_seconds", json!(run_started.elapsed().as_secs_f64()));
    drop(api);

    write_report(&mut r, &out_md, rows, seconds, &fresh, &our_lat, &pg_lat)?;
    std::fs::write(&out_json, serde_json::to_string_pretty(&r.json)?)?;
    eprintln!(
        "bench: wrote {} and {}",
        out_md.display(),
        out_json.display()
    );
    Ok(())
}

fn yes(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "**missed**"
    }
}

fn write_report(
    r: &mut Report,
    out: &Path,
    rows: usize,
    seconds: f64,
    fresh: &[(f64, usize, f64, Lat)],
    ours: &BTreeMap<&str, (Lat, Lat)>,
    pg: &BTreeMap<&str, (Lat, Lat)>,
) -> Result<()> {
    let j = r.json.clone();
    let m = &j["machine"];
    let f = |k: &str| j.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN);
    r.line("# Benchmarks");
    r.line("");
    r.line(format!(
        "One run of `scripts/bench --rows {rows} --seconds {seconds}` on {} ({} cores, {} RAM, Linux {}), {}, commit {}. \
         Postgres {}; PostGIS {}; pgvector {}. Every figure below comes from that run (raw: `BENCHMARKS.json`). \
         The client, Postgres, the indexer and query-api share the machine; Postgres runs with the test harness's settings (`fsync = off`, `shared_buffers = 128MB`).",
        m["cpu"].as_str().unwrap_or("?"), m["cores"], m["memory"].as_str().unwrap_or("?"), m["kernel"].as_str().unwrap_or("?"),
        m["date"].as_str().unwrap_or("?"), m["git"].as_str().unwrap_or("?"), m["postgres"].as_str().unwrap_or("?"),
        m["postgis"].as_str().unwrap_or("not installed"),
        m["pgvector"].as_str().map_or("not installed (Debian 12 does not package it): no vector comparison".to_owned(), str::to_owned),
    ));
    r.line("");
    r.line(format!(
        "Data: {rows} rows — the dev set (30k real GeoNames cities, 384-d MiniLM embeddings){}.",
        if rows > 30_000 { ", scaled by seeded copies as `e2e::dev_data::Scaled` documents (jittered coordinates, embeddings mixed from two real rows plus noise, renormalised)" } else { "" }
    ));
    r.line("");
    r.line("## Ingest");
    r.line("");
    r.line("| what | figure |");
    r.line("|---|---|");
    r.line(format!(
        "| Postgres COPY of the rows (reference) | {:.0} rows/s |",
        f("load.copy_rows_per_sec")
    ));
    r.line(format!(
        "| snapshot, text only, searchable | {:.0} rows/s |",
        f("snapshot.text.rows_per_sec")
    ));
    r.line(format!(
        "| snapshot, text + geo | {:.0} rows/s |",
        f("snapshot.text_geo.rows_per_sec")
    ));
    r.line(format!(
        "| snapshot, text + geo + vector (vectors searchable at once, exactly) | {:.0} rows/s |",
        f("snapshot.full.rows_per_sec")
    ));
    r.line(format!(
        "| HNSW graph complete (384-d), from indexer start | {:.0} vectors/s ({:.1} s) |",
        f("graph.vectors_per_sec"),
        f("graph.seconds_from_start")
    ));
    r.line(format!(
        "| streaming apply, one {rows}-row update transaction, commit to applied | {:.0} rows/s |",
        j["stream.one_txn.rows_per_sec"]["rows_per_sec"]
            .as_f64()
            .unwrap_or(f64::NAN)
    ));
    r.line(format!(
        "| streaming apply, 1,000-row transactions back to back | {:.0} rows/s |",
        f("stream.txn_1000.rows_per_sec")
    ));
    r.line(format!(
        "| bulk writes above durable (fresh layer empty) after they were applied | {:.1} s |",
        f("stream.durable_after_s")
    ));
    r.line(format!(
        "| Postgres: tsvector column + GIN build (reference) | {:.0} rows/s |",
        f("postgres.tsvector_gin_build_rows_per_sec")
    ));
    if j.contains_key("postgres.postgis_gist_build_rows_per_sec") {
        r.line(format!(
            "| Postgres: geography column + GiST build (reference) | {:.0} rows/s |",
            f("postgres.postgis_gist_build_rows_per_sec")
        ));
    }
    r.line("");
    r.line("## Freshness: commit to searchable through the public API");
    r.line("");
    r.line("The clock starts when the client's commit returns and stops when a search for the new row's unique word, waiting on the commit's LSN (`consistency.min_lsn`), returns it.");
    r.line("");
    r.line("| target rows/s | rows per transaction | achieved rows/s | p50 ms | p99 ms | max ms | samples |");
    r.line("|---|---|---|---|---|---|---|");
    for (rate, txn, achieved, l) in fresh {
        r.line(format!(
            "| {rate:.0} | {txn} | {achieved:.0} | {:.2} | {:.2} | {:.2} | {} |",
            l.p50, l.p99, l.max, l.n
        ));
    }
    r.line("");
    r.line(format!(
        "## Queries over HTTP ({seconds} s per cell; concurrency 1 and 32)"
    ));
    r.line("");
    r.line("Ours: client → query-api → indexer, JSON over HTTP/1.1, all regions, top 10 with stored fields (text without snippets, like the Postgres queries). Postgres: prepared statements over its wire protocol, on a copy of the table with its own indexes. Ratios: ours ÷ Postgres for throughput at c=32, Postgres ÷ ours for p50 at c=1 (above 1: we are faster).");
    r.line("");
    r.line("| query | ours c=1 p50 / p99 ms | ours c=32 p50 / p99 ms | ours QPS c=1 / c=32 | Postgres c=1 p50 ms | Postgres QPS c=32 | p50 ratio | QPS ratio |");
    r.line("|---|---|---|---|---|---|---|---|");
    for (name, (one, many)) in ours {
        let (pg50, pgq, r50, rq) = match pg.get(name) {
            Some((p1, p32)) => (
                format!("{:.3}", p1.p50),
                format!("{:.0}", p32.qps),
                format!("{:.1}×", p1.p50 / one.p50),
                format!("{:.1}×", many.qps / p32.qps),
            ),
            None => ("—".into(), "—".into(), "—".into(), "—".into()),
        };
        r.line(format!(
            "| {name} | {:.3} / {:.3} | {:.2} / {:.2} | {:.0} / {:.0} | {pg50} | {pgq} | {r50} | {rq} |",
            one.p50, one.p99, many.p50, many.p99, one.qps, many.qps
        ));
    }
    r.line("");
    let profiled: Vec<(String, Vec<Value>)> = std::iter::once(&"snapshot")
        .chain(ours.keys())
        .filter_map(|name| {
            let hot = j.get(&format!("profile.{name}"))?.as_array()?.clone();
            (!hot.is_empty()).then(|| (name.to_string(), hot))
        })
        .collect();
    if !profiled.is_empty() {
        r.line("");
        r.line("Where the CPU goes (a flat `perf` profile of the indexer and query-api during each c=32 load, and of the indexer during the first seconds of the text + geo + vector snapshot; symbols over 2% of their samples; the load generator runs beside them):");
        r.line("");
        for (name, hot) in profiled {
            let items: Vec<String> = hot
                .iter()
                .map(|h| {
                    let mut sym = h[1].as_str().unwrap_or_default().to_owned();
                    if sym.len() > 90 {
                        sym.truncate(
                            sym.char_indices()
                                .take_while(|(i, _)| *i < 90)
                                .last()
                                .map_or(0, |(i, c)| i + c.len_utf8()),
                        );
                        sym.push('…');
                    }
                    format!("{:.1}% `{sym}`", h[0].as_f64().unwrap_or(0.0))
                })
                .collect();
            r.line(format!("- **{name}**: {}", items.join("; ")));
        }
    }
    r.line("");
    r.line(format!(
        "Vector recall@10 of the default (graph) mode against exact answers: **{:.4}**.",
        f("vector.recall_at_10")
    ));
    r.line("");
    let fp = &j["footprint"];
    r.line("## Footprint");
    r.line("");
    r.line(format!(
        "Indexer with text, geo, vector (graph built): RSS {:.0} MB, on disk {:.0} MB for {rows} rows — {:.2} GB RSS and {:.2} GB disk per 1M documents by linear extrapolation, which also scales fixed costs (a tantivy writer arena per partition, allocator caches); `--rows 1000000` measures it directly. Restart to serving (graph reloaded from its dump): {:.1} s.",
        fp["rss_mb"].as_f64().unwrap_or(f64::NAN), fp["disk_mb"].as_f64().unwrap_or(f64::NAN),
        fp["rss_gb_per_1m"].as_f64().unwrap_or(f64::NAN), fp["disk_gb_per_1m"].as_f64().unwrap_or(f64::NAN), f("restart_to_serving_s")
    ));
    r.line(format!(
        "Resident set as the run went: {:.0} MB after ingest (snapshot, graph, streaming), {:.0} MB after the freshness runs, {:.0} MB after the query runs.",
        f("rss_mb.after_ingest"), f("rss_mb.after_freshness"), fp["rss_mb"].as_f64().unwrap_or(f64::NAN)
    ));
    r.line("");
    r.line("## Targets (reported, not asserted)");
    r.line("");
    r.line("| target | figure | |");
    r.line("|---|---|---|");
    let mut target = |what: String, figure: String, met: bool| {
        r.line(format!("| {what} | {figure} | {} |", yes(met)));
    };
    if let Some((_, _, _, l)) = fresh
        .iter()
        .find(|(rate, txn, _, _)| *rate == 1000.0 && *txn == 1)
    {
        target(
            "commit-to-searchable p50 ≤ 10 ms at 1k rows/s".into(),
            format!("{:.2} ms", l.p50),
            l.p50 <= 10.0,
        );
        target(
            "commit-to-searchable p99 ≤ 50 ms at 1k rows/s".into(),
            format!("{:.2} ms", l.p99),
            l.p99 <= 50.0,
        );
    }
    let snap = f("snapshot.full.rows_per_sec");
    target(
        "snapshot ≥ 50k rows/s searchable (with vectors)".into(),
        format!("{snap:.0} rows/s"),
        snap >= 50_000.0,
    );
    let g = f("graph.vectors_per_sec");
    target(
        "HNSW build ≥ 2k vectors/s at 384-d".into(),
        format!("{g:.0} vectors/s"),
        g >= 2_000.0,
    );
    for name in ["text rare", "geo radius 10 km"] {
        if let Some((one, _)) = ours.get(name) {
            target(
                format!("query p50 ≤ 2 ms over HTTP ({name})"),
                format!("{:.3} ms", one.p50),
                one.p50 <= 2.0,
            );
        }
    }
    let rec = f("vector.recall_at_10");
    target(
        "vector recall@10 ≥ 0.95".into(),
        format!("{rec:.4}"),
        rec >= 0.95,
    );
    for (name, want) in [
        ("text rare", 10.0),
        ("text common", 10.0),
        ("text phrase", 10.0),
        ("geo radius 10 km", 2.0),
        ("geo radius 200 km", 2.0),
        ("geo nearest k=10", 2.0),
    ] {
        if let (Some((_, o)), Some((_, p))) = (ours.get(name), pg.get(name)) {
            let x = o.qps / p.qps;
            target(
                format!("≥ {want}× Postgres throughput at c=32 ({name})"),
                format!("{x:.1}×"),
                x >= want,
            );
        }
    }
    let mem = fp["rss_gb_per_1m"].as_f64().unwrap_or(f64::NAN);
    target(
        "memory ≤ 2.5 GB per 1M docs with vectors".into(),
        format!("{mem:.2} GB"),
        mem <= 2.5,
    );
    if pg.is_empty() {
        bail!("no Postgres comparison ran");
    }
    std::fs::write(out, r.md.join("\n") + "\n")?;
    Ok(())
}
