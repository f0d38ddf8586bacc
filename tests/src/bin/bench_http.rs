//! HTTP query benchmark through the public API (not a test): client-seen latency p50/p99 and
//! throughput per query type at concurrency 1 and 32, on the real dev rows (30k GeoNames
//! cities with 384-d embeddings) and their query files, against a throwaway Postgres, the
//! release indexer and the release query-api, all on this machine.
//!
//!   cargo build --release -p indexer -p query-api -p e2e --bins && target/release/bench_http
//!
//! `BENCH_SECONDS` (default 4) is the time spent per query type and concurrency;
//! `BENCH_ONLY=text` runs only the query types whose name contains it. Prints one
//! markdown table; figures come from this run only.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use e2e::{Indexer, PgServer, QueryApi};
use serde_json::{json, Value};

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn embedding(q: &Value) -> Vec<f32> {
    q["embedding"]
        .as_array()
        .map(|a| a.iter().map(|x| x.as_f64().unwrap_or(0.0) as f32).collect())
        .unwrap_or_default()
}

/// Runs `bodies` round-robin from `concurrency` clients for `budget`; returns sorted
/// latencies (ms) and requests per second.
async fn load(
    http: &reqwest::Client,
    url: &str,
    bodies: Arc<Vec<Value>>,
    concurrency: usize,
    budget: Duration,
) -> Result<(Vec<f64>, f64)> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
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
    let secs = started.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    let qps = all.len() as f64 / secs;
    Ok((all, qps))
}

#[tokio::main]
async fn main() -> Result<()> {
    let budget = Duration::from_secs_f64(
        std::env::var("BENCH_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(4.0),
    );
    let pg = PgServer::start_with_watchdog()?;
    let db = pg.fresh_db().await?;
    let client = pg.connect(&db).await?;
    let n = e2e::dev_data::load(&client, true).await?;
    eprintln!("bench_http: {n} dev rows loaded");

    let dir = tempfile::tempdir()?;
    let cfg = dir.path().join("indexer.toml");
    std::fs::write(
        &cfg,
        format!(
            "[source]\ndatabase_url = \"{}\"\npublication = \"bench_pub\"\nslot = \"bench_slot\"\n\
             [storage]\ndata_dir = \"{}\"\n\
             [[index]]\nname = \"places\"\ntable = \"places\"\nregion = \"region\"\n\
             text_fields = [{{ column = \"name\", boost = 2.0 }}, \"body\"]\ngeo = {{ lat = \"lat\", lon = \"lon\" }}\n\
             vector = {{ column = \"embedding\", dimension = 384 }}\n\
             filter_fields = [\"population\", \"country_code\"]\n",
            pg.url(&db),
            dir.path().join("data").display(),
        ),
    )?;
    let listen = format!(
        "127.0.0.1:{}",
        std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port()
    );
    let mut ix = Indexer::start_on(&cfg, &dir.path().join("data"), &listen).await?;
    ix.wait_ready().await?;
    e2e::eventually(
        "the graph to hold every vector",
        Duration::from_secs(600),
        || {
            let ix = &ix;
            async move {
                let s = ix.status().await?;
                let pending: u64 = s["partitions"]
                    .as_array()
                    .context("partitions")?
                    .iter()
                    .map(|p| p["vectors_pending_graph"].as_u64().unwrap_or(1))
                    .sum();
                Ok((pending == 0).then_some(()))
            }
        },
    )
    .await?;
    let api_cfg = dir.path().join("query-api.toml");
    std::fs::write(
        &api_cfg,
        format!(
            "[[shard]]\nurl = \"http://{listen}\"\n[auth]\nopen = true\n\
             [limits]\nrate_per_sec = 1000000.0\nburst = 1000000.0\nmax_concurrent_requests = 1024\n"
        ),
    )?;
    let api = QueryApi::start(&api_cfg, dir.path()).await?;
    let url = format!("{}/v1/indexes/places/search", api.url);

    // Query sets from the dev query files.
    let text: Vec<String> = e2e::dev_data::queries("queries_text.jsonl")?
        .iter()
        .filter(|q| q["kind"] != "zero_hit")
        .filter_map(|q| q["query"].as_str().map(str::to_owned))
        .collect();
    let geo = e2e::dev_data::queries("queries_geo.jsonl")?;
    let vectors = e2e::dev_data::queries("queries_vector.jsonl")?;
    let region_of = |q: &Value| -> String {
        q["regions_hit"]
            .as_object()
            .and_then(|m| m.keys().next().cloned())
            .unwrap_or_else(|| "europe".into())
    };
    let sets: Vec<(&str, Vec<Value>)> = vec![
        (
            "text, one region",
            text.iter()
                .map(|q| json!({"q": q, "regions": ["europe"]}))
                .collect(),
        ),
        (
            "text, all regions",
            text.iter().map(|q| json!({"q": q})).collect(),
        ),
        (
            "geo radius 10 km, one region",
            geo.iter()
                .map(|q| json!({"geo": {"within": {"lat": q["lat"], "lon": q["lon"], "radius_m": 10_000.0}},
                                "regions": [region_of(q)]}))
                .collect(),
        ),
        (
            "geo radius (query's, 5-500 km)",
            geo.iter()
                .map(|q| json!({"geo": {"within": {"lat": q["lat"], "lon": q["lon"],
                    "radius_m": q["radius_km"].as_f64().unwrap_or(10.0) * 1000.0}}}))
                .collect(),
        ),
        (
            "geo nearest k=10",
            geo.iter()
                .map(|q| json!({"geo": {"nearest": {"lat": q["lat"], "lon": q["lon"], "k": 10}}}))
                .collect(),
        ),
        (
            "vector k=10 (graph)",
            vectors
                .iter()
                .map(|q| json!({"vector": {"values": embedding(q), "k": 10}}))
                .collect(),
        ),
        (
            "vector k=10, filter population >= 10000",
            vectors
                .iter()
                .map(|q| json!({"vector": {"values": embedding(q), "k": 10},
                                "filter": {"range": {"population": {"gte": 10000}}}}))
                .collect(),
        ),
        (
            "hybrid text + vector (RRF)",
            vectors
                .iter()
                .map(|q| json!({"text": {"q": q["text"].as_str().unwrap_or("city").split_whitespace().take(3).collect::<Vec<_>>().join(" "), "operator": "or"},
                                "vector": {"values": embedding(q), "k": 10}, "hybrid": {}}))
                .collect(),
        ),
    ];

    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .timeout(Duration::from_secs(30))
        .build()?;
    // Warm up every set once.
    for (name, bodies) in &sets {
        eprintln!("warming up: {name}");
        load(
            &http,
            &url,
            Arc::new(bodies.clone()),
            1,
            Duration::from_millis(300),
        )
        .await?;
    }
    println!(
        "\nHTTP through query-api (one shard), dev set {n} rows, {:.0} s per cell, client on the same 2 cores\n",
        budget.as_secs_f64()
    );
    println!(
        "| query | c=1 p50 ms | c=1 p99 ms | c=1 QPS | c=32 p50 ms | c=32 p99 ms | c=32 QPS |"
    );
    println!("|---|---|---|---|---|---|---|");
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    for (name, bodies) in sets {
        if !name.contains(only.as_str()) {
            continue;
        }
        let bodies = Arc::new(bodies);
        let (l1, q1) = load(&http, &url, bodies.clone(), 1, budget).await?;
        eprintln!(
            "{name}: c=1 p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
            pct(&l1, 0.5),
            pct(&l1, 0.99),
            pct(&l1, 1.0)
        );
        let (l32, q32) = load(&http, &url, bodies, 32, budget).await?;
        println!(
            "| {name} | {:.3} | {:.3} | {:.0} | {:.3} | {:.3} | {:.0} |",
            pct(&l1, 0.5),
            pct(&l1, 0.99),
            q1,
            pct(&l32, 0.5),
            pct(&l32, 0.99),
            q32
        );
    }
    ix.stop()?;
    Ok(())
}
