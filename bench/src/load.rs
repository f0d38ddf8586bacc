//! Load generation and its summaries: a load of our public search over HTTP or of a Postgres
//! statement from `c` clients for a fixed time; one query type's interleaved rounds (ours
//! c=1, peer c=1, ours c=32, peer c=32, repeated); medians with their spread (min–max) and
//! the ratios ours ÷ peer, from the medians and round by round.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use e2e::PgServer;
use serde_json::{json, Value};
use tokio_postgres::{Client, Row, Statement};

use crate::profile::Profiler;

/// Latency (ms) and throughput of one load.
#[derive(Clone, Copy, Debug, Default)]
pub struct Lat {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
    pub qps: f64,
    pub n: usize,
}

impl Lat {
    pub fn of(mut ms: Vec<f64>, seconds: f64) -> Lat {
        if ms.is_empty() {
            return Lat::default();
        }
        ms.sort_by(f64::total_cmp);
        let p = |q: f64| ms[((ms.len() as f64 - 1.0) * q).round() as usize];
        Lat {
            p50: p(0.5),
            p99: p(0.99),
            max: ms[ms.len() - 1],
            mean: ms.iter().sum::<f64>() / ms.len() as f64,
            qps: ms.len() as f64 / seconds,
            n: ms.len(),
        }
    }

    pub fn json(&self) -> Value {
        json!({"p50_ms": self.p50, "p99_ms": self.p99, "max_ms": self.max, "mean_ms": self.mean,
               "qps": self.qps, "n": self.n})
    }
}

/// One search through the public API; a failure status is an error.
pub async fn search(http: &reqwest::Client, url: &str, body: &Value) -> Result<Value> {
    let resp = http.post(url).json(body).send().await?;
    let status = resp.status();
    let bytes = resp.bytes().await?;
    ensure!(
        status.is_success(),
        "{status}: {}",
        String::from_utf8_lossy(&bytes)
    );
    Ok(serde_json::from_slice(&bytes)?)
}

/// Runs `bodies` round-robin against the public search from `c` clients for `budget`.
///
/// Each client is one HTTP/1.1 connection (hyper's, no pool), as each peer client is one
/// Postgres connection: the load generator shares the two cores with what it measures, and
/// reqwest's pool, URL parsing and header maps cost about as much CPU per request as
/// query-api itself. Connections are open before the clock starts, like the peers'.
pub async fn http_load(
    url: &str,
    bodies: &Arc<Vec<Value>>,
    c: usize,
    budget: Duration,
    clock: Option<Clock>,
) -> Result<Lat> {
    // Bodies are encoded once, as the peers' parameters are formatted once.
    let bodies: Arc<Vec<bytes::Bytes>> = Arc::new(
        bodies
            .iter()
            .map(|b| serde_json::to_vec(b).map(bytes::Bytes::from))
            .collect::<Result<_, _>>()?,
    );
    let uri: hyper::Uri = url.parse()?;
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .context("the search URL has no host")?;
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    let senders = futures_util::future::try_join_all((0..c).map(|_| {
        let authority = authority.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(&authority).await?;
            tcp.set_nodelay(true)?;
            let (sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
            tokio::spawn(conn);
            anyhow::Ok(sender)
        }
    }))
    .await?;
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    if let Some(clock) = clock {
        let _ = clock.send(());
    }
    let mut tasks = Vec::new();
    for mut sender in senders {
        let (bodies, next, authority, path) = (
            bodies.clone(),
            next.clone(),
            authority.clone(),
            path.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while started.elapsed() < budget {
                let i = next.fetch_add(1, Ordering::Relaxed) % bodies.len();
                let req = hyper::Request::post(path.as_str())
                    .header(hyper::header::HOST, authority.as_str())
                    .header(hyper::header::CONTENT_TYPE, "application/json")
                    .body(http_body_util::Full::new(bodies[i].clone()))?;
                let t = Instant::now();
                sender.ready().await?;
                let resp = sender.send_request(req).await?;
                let status = resp.status();
                let body = http_body_util::BodyExt::collect(resp.into_body())
                    .await?
                    .to_bytes();
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

/// Told when a load's clock starts (its connections are open): a profile of the load
/// starts then, not during the set-up.
pub type Clock = tokio::sync::oneshot::Sender<()>;

/// Runs `load`, profiling it from the moment its clock starts.
async fn profiled<F>(
    load: impl FnOnce(Clock) -> F,
    profiler: &Profiler,
    seconds: f64,
    name: &str,
) -> (Result<Lat>, Value)
where
    F: std::future::Future<Output = Result<Lat>>,
{
    let (clock, started) = tokio::sync::oneshot::channel();
    tokio::join!(load(clock), async {
        match started.await {
            Ok(()) => profiler.record(seconds, name).await,
            Err(_) => json!({}),
        }
    })
}

/// The parameters of one Postgres-side query.
#[derive(Clone)]
pub enum PgQ {
    Text(String),
    Point(f64, f64),
    Radius(f64, f64, f64),
    /// A query vector as pgvector's text form, `[0.1,0.2,…]`.
    Vector(String),
    /// A query vector and a region.
    VectorIn(String, String),
}

impl PgQ {
    pub async fn run(&self, client: &Client, stmt: &Statement) -> Result<Vec<Row>> {
        Ok(match self {
            PgQ::Text(q) | PgQ::Vector(q) => client.query(stmt, &[q]).await?,
            PgQ::Point(lat, lon) => client.query(stmt, &[lat, lon]).await?,
            PgQ::Radius(lat, lon, r) => client.query(stmt, &[lat, lon, r]).await?,
            PgQ::VectorIn(v, region) => client.query(stmt, &[v, region]).await?,
        })
    }
}

/// A peer's workload: what it is, the settings of each connection, one statement and the
/// parameters it runs round-robin.
#[derive(Clone)]
pub struct PgWork {
    pub name: String,
    pub setup: String,
    pub sql: String,
    pub queries: Arc<Vec<PgQ>>,
}

/// Runs `work` from `c` connections for `budget`. The connections are set up, prepared and
/// warmed (a backend's first query loads the extension and fills its caches) before the
/// clock starts, as our HTTP client's connections are; `clock` is told when it starts.
pub async fn pg_load(
    pg: &PgServer,
    db: &str,
    work: &PgWork,
    c: usize,
    budget: Duration,
    clock: Option<Clock>,
) -> Result<Lat> {
    let clients = futures_util::future::try_join_all((0..c).map(|i| async move {
        let client = pg.connect(db).await?;
        if !work.setup.is_empty() {
            client.batch_execute(&work.setup).await?;
        }
        let stmt = client.prepare(&work.sql).await?;
        work.queries[i % work.queries.len()]
            .run(&client, &stmt)
            .await?;
        anyhow::Ok((client, stmt))
    }))
    .await?;
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    if let Some(clock) = clock {
        let _ = clock.send(());
    }
    let mut tasks = Vec::new();
    for (client, stmt) in clients {
        let (queries, next) = (work.queries.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while started.elapsed() < budget {
                let i = next.fetch_add(1, Ordering::Relaxed) % queries.len();
                let t = Instant::now();
                std::hint::black_box(queries[i].run(&client, &stmt).await?);
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

/// One query type: our request bodies (and how they are set, e.g. the `ef`) and, when it has
/// one, the peer's workload.
pub struct Cell {
    pub name: String,
    pub note: String,
    pub ours: Arc<Vec<Value>>,
    pub peer: Option<PgWork>,
}

/// A median with the spread around it.
#[derive(Clone, Copy, Debug)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(xs: impl IntoIterator<Item = f64>) -> Spread {
        let mut xs: Vec<f64> = xs.into_iter().collect();
        if xs.is_empty() {
            return Spread {
                median: f64::NAN,
                min: f64::NAN,
                max: f64::NAN,
            };
        }
        xs.sort_by(f64::total_cmp);
        let n = xs.len();
        Spread {
            median: (xs[(n - 1) / 2] + xs[n / 2]) / 2.0,
            min: xs[0],
            max: xs[n - 1],
        }
    }

    pub fn json(&self) -> Value {
        json!({"median": self.median, "min": self.min, "max": self.max})
    }
}

/// One side's loads over the rounds: (c=1, c=32) per round.
#[derive(Default)]
pub struct Rounds(pub Vec<(Lat, Lat)>);

impl Rounds {
    fn each(&self, f: impl Fn(&(Lat, Lat)) -> f64) -> Vec<f64> {
        self.0.iter().map(f).collect()
    }

    /// Every round, and the median and spread of p50, p99 and QPS at each concurrency.
    pub fn json(&self) -> Value {
        let s = |f: fn(&(Lat, Lat)) -> f64| Spread::of(self.each(f)).json();
        json!({
            "rounds": self.0.iter().map(|(one, many)| json!({"c1": one.json(), "c32": many.json()})).collect::<Vec<_>>(),
            "c1": {"p50_ms": s(|r| r.0.p50), "p99_ms": s(|r| r.0.p99), "qps": s(|r| r.0.qps)},
            "c32": {"p50_ms": s(|r| r.1.p50), "p99_ms": s(|r| r.1.p99), "qps": s(|r| r.1.qps)},
        })
    }
}

/// Ours against the peer (above 1: ours is better): QPS ours ÷ peer at c=32 and c=1, p50
/// peer ÷ ours at c=1; each from the medians, and round by round with its range.
pub fn ratios(ours: &Rounds, peer: &Rounds) -> Value {
    let ratio = |num: Vec<f64>, den: Vec<f64>| {
        let per_round: Vec<f64> = num.iter().zip(&den).map(|(a, b)| a / b).collect();
        let range = Spread::of(per_round.iter().copied());
        json!({"of_medians": Spread::of(num).median / Spread::of(den).median,
               "per_round": per_round, "min": range.min, "max": range.max})
    };
    json!({
        "qps_c32": ratio(ours.each(|r| r.1.qps), peer.each(|r| r.1.qps)),
        "qps_c1": ratio(ours.each(|r| r.0.qps), peer.each(|r| r.0.qps)),
        "p50_c1": ratio(peer.each(|r| r.0.p50), ours.each(|r| r.0.p50)),
    })
}

/// One query type measured: each side's rounds and the profile of our first c=32 load.
pub struct Measured {
    pub ours: Rounds,
    pub peer: Option<Rounds>,
    /// `Profiler::record` of our first c=32 load, and of the peer's.
    pub profile: Value,
    pub peer_profile: Value,
}

/// What the loads run against: our public search and the peer's database, `budget` each.
pub struct Loads<'a> {
    pub url: &'a str,
    pub pg: &'a PgServer,
    pub db: &'a str,
    pub budget: Duration,
}

impl Loads<'_> {
    /// After a short warm-up of each side: `rounds` times ours c=1, peer c=1, ours c=32,
    /// peer c=32, profiling the first c=32 load of each side.
    pub async fn run(&self, cell: &Cell, rounds: usize, profiler: &Profiler) -> Result<Measured> {
        const WARM_UP: Duration = Duration::from_millis(300);
        let ours = |c, clock| http_load(self.url, &cell.ours, c, self.budget, clock);
        http_load(self.url, &cell.ours, 1, WARM_UP, None).await?;
        if let Some(work) = &cell.peer {
            pg_load(self.pg, self.db, work, 1, WARM_UP, None).await?;
        }
        let mut m = Measured {
            ours: Rounds::default(),
            peer: cell.peer.as_ref().map(|_| Rounds::default()),
            profile: json!({}),
            peer_profile: json!({}),
        };
        for round in 0..rounds {
            let our_one = ours(1, None).await?;
            let peer_one = match &cell.peer {
                Some(work) => Some(self.peer(work, 1, None).await?),
                None => None,
            };
            let our_many = if round == 0 {
                let seconds = (self.budget.as_secs_f64() - 0.5).max(0.5);
                let load = |clock| ours(32, Some(clock));
                let (many, hot) = profiled(load, profiler, seconds, &cell.name).await;
                m.profile = hot;
                many?
            } else {
                ours(32, None).await?
            };
            m.ours.0.push((our_one, our_many));
            if let (Some(work), Some(one), Some(rounds)) = (&cell.peer, peer_one, &mut m.peer) {
                let peer_many = if round == 0 {
                    let seconds = (self.budget.as_secs_f64() - 0.5).max(0.5);
                    let name = format!("{} (peer)", cell.name);
                    let load = |clock| self.peer(work, 32, Some(clock));
                    let (many, hot) = profiled(load, profiler, seconds, &name).await;
                    m.peer_profile = hot;
                    many?
                } else {
                    self.peer(work, 32, None).await?
                };
                rounds.0.push((one, peer_many));
            }
            eprintln!(
                "bench: {} round {}/{rounds}: ours c=1 p50 {:.3} ms, c=32 {:.0} QPS",
                cell.name,
                round + 1,
                our_one.p50,
                our_many.qps
            );
        }
        Ok(m)
    }

    async fn peer(&self, work: &PgWork, c: usize, clock: Option<Clock>) -> Result<Lat> {
        pg_load(self.pg, self.db, work, c, self.budget, clock).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        let s = Spread::of([3.0, 1.0, 2.0]);
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(Spread::of([4.0, 1.0, 2.0, 3.0]).median, 2.5);
        assert!(Spread::of([]).median.is_nan());
    }

    #[test]
    fn ratios_from_medians_and_per_round() {
        let lat = |p50, qps| Lat {
            p50,
            qps,
            ..Lat::default()
        };
        let ours = Rounds(vec![(lat(1.0, 100.0), lat(2.0, 1000.0)); 3]);
        let peer = Rounds(vec![
            (lat(2.0, 50.0), lat(4.0, 500.0)),
            (lat(3.0, 50.0), lat(4.0, 250.0)),
            (lat(2.0, 50.0), lat(4.0, 500.0)),
        ]);
        let r = ratios(&ours, &peer);
        assert_eq!(r["qps_c32"]["of_medians"], 2.0);
        assert_eq!(r["qps_c32"]["max"], 4.0);
        assert_eq!(r["p50_c1"]["of_medians"], 2.0);
        assert_eq!(r["p50_c1"]["max"], 3.0);
    }
}
