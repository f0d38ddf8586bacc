//! The recall curve: recall@10 and latency against the search breadth (`ef` for ours,
//! `hnsw.ef_search` for pgvector), over every region and within one, one query at a time;
//! and for each side and case, the smallest breadth reaching each recall target, at which
//! the query phase then compares the two.

use std::time::Instant;

use anyhow::{Context, Result};
use e2e::{hit_keys, PgServer};
use serde_json::{json, Value};

use crate::load::{search, Lat};
use crate::peers::{vector_setup, vector_text, EF_SEARCH_MAX, VECTOR_REGION_SQL, VECTOR_SQL};
use crate::report::Report;

/// The breadths swept, both sides alike, up to pgvector's ceiling.
pub const EFS: [usize; 14] = [
    10,
    16,
    24,
    32,
    48,
    64,
    96,
    128,
    192,
    256,
    384,
    512,
    768,
    EF_SEARCH_MAX,
];
/// The recall@10 targets the query phase compares at.
pub const TARGETS: [f64; 2] = [0.95, 0.99];
/// The region of the filtered case (6,879 of the dev set's 30k rows).
pub const REGION: &str = "europe";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Case {
    Global,
    Region,
}

impl Case {
    pub fn key(self) -> &'static str {
        match self {
            Case::Global => "global",
            Case::Region => "region",
        }
    }

    /// The region filter of this case, if any.
    pub fn region(self) -> Option<&'static str> {
        (self == Case::Region).then_some(REGION)
    }
}

/// One point of a curve: a breadth, the mean recall@10 and the latency at it.
pub struct Point {
    pub ef: usize,
    pub recall: f64,
    pub lat: Lat,
}

impl Point {
    fn json(&self) -> Value {
        json!({"ef": self.ef, "recall": self.recall, "mean_ms": self.lat.mean, "p50_ms": self.lat.p50})
    }
}

/// The breadth a side uses for a recall target: the smallest reaching it, else the largest.
#[derive(Clone, Copy, Debug)]
pub struct Pick {
    pub ef: usize,
    pub recall: f64,
    pub reached: bool,
}

pub fn pick(points: &[Point], target: f64) -> Pick {
    let at = |p: &Point, reached| Pick {
        ef: p.ef,
        recall: p.recall,
        reached,
    };
    match points.iter().find(|p| p.recall >= target) {
        Some(p) => at(p, true),
        None => points.last().map_or(
            Pick {
                ef: 0,
                recall: f64::NAN,
                reached: false,
            },
            |p| at(p, false),
        ),
    }
}

/// Both sides' curves for one case.
pub struct Curve {
    pub case: Case,
    pub ours: Vec<Point>,
    pub pgvector: Option<Vec<Point>>,
}

impl Curve {
    fn json(&self) -> Value {
        let points = |ps: &[Point]| ps.iter().map(Point::json).collect::<Vec<_>>();
        let picks = |ps: &[Point]| {
            TARGETS
                .iter()
                .map(|&t| {
                    let p = pick(ps, t);
                    (
                        t.to_string(),
                        json!({"ef": p.ef, "recall": p.recall, "reached": p.reached}),
                    )
                })
                .collect::<serde_json::Map<_, _>>()
        };
        json!({
            "region": self.case.region(),
            "ours": points(&self.ours),
            "pgvector": self.pgvector.as_deref().map(points),
            "picks": {"ours": picks(&self.ours), "pgvector": self.pgvector.as_deref().map(picks)},
        })
    }
}

pub fn embedding(q: &Value) -> Vec<f32> {
    q["embedding"]
        .as_array()
        .map(|a| a.iter().map(|x| x.as_f64().unwrap_or(0.0) as f32).collect())
        .unwrap_or_default()
}

fn recall(got: &[String], want: &[String]) -> f64 {
    let hit = got.iter().take(10).filter(|k| want.contains(k)).count();
    hit as f64 / want.len().max(1) as f64
}

fn body(v: &[f32], ef: Option<usize>, exact: bool, case: Case) -> Value {
    let mut vector = json!({"values": v, "k": 10});
    if let Some(ef) = ef {
        vector["ef"] = json!(ef);
    }
    if exact {
        vector["exact"] = json!(true);
    }
    let mut body = json!({"vector": vector});
    if let Some(region) = case.region() {
        body["regions"] = json!([region]);
    }
    body
}

/// Our recall and latency over `vs` at breadth `ef` (the index's default when `None`).
async fn ours_at(
    http: &reqwest::Client,
    url: &str,
    vs: &[Vec<f32>],
    exact: &[Vec<String>],
    ef: Option<usize>,
    case: Case,
) -> Result<Point> {
    let (mut ms, mut sum) = (Vec::new(), 0.0);
    let started = Instant::now();
    for (v, want) in vs.iter().zip(exact) {
        let t = Instant::now();
        let answer = search(http, url, &body(v, ef, false, case)).await?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        sum += recall(&hit_keys(&answer), want);
    }
    Ok(Point {
        ef: ef.unwrap_or(0),
        recall: sum / vs.len().max(1) as f64,
        lat: Lat::of(ms, started.elapsed().as_secs_f64()),
    })
}

/// pgvector's curve for one case, on one connection.
async fn pgvector_curve(
    pg: &PgServer,
    db: &str,
    vs: &[Vec<f32>],
    exact: &[Vec<String>],
    case: Case,
) -> Result<Vec<Point>> {
    let client = pg.connect(db).await?;
    let sql = if case.region().is_some() {
        VECTOR_REGION_SQL
    } else {
        VECTOR_SQL
    };
    let texts: Vec<String> = vs.iter().map(|v| vector_text(v)).collect();
    let region = case.region().unwrap_or_default().to_owned();
    let mut points = Vec::new();
    // The first pass warms the caches; it is not kept.
    for ef in std::iter::once(EFS[EFS.len() - 1]).chain(EFS) {
        let ef = ef.min(EF_SEARCH_MAX);
        client
            .batch_execute(&vector_setup(ef, case.region().is_some()))
            .await?;
        // A statement per breadth: a cached generic plan is not planned again when
        // `hnsw.ef_search` changes, and pgvector's costs depend on it.
        let stmt = client.prepare(sql).await?;
        let (mut ms, mut sum) = (Vec::new(), 0.0);
        let started = Instant::now();
        for (text, want) in texts.iter().zip(exact) {
            let t = Instant::now();
            let rows = match case.region() {
                Some(_) => client.query(&stmt, &[text, &region]).await?,
                None => client.query(&stmt, &[text]).await?,
            };
            ms.push(t.elapsed().as_secs_f64() * 1e3);
            let got: Vec<String> = rows
                .iter()
                .map(|r| r.get::<_, i64>(0).to_string())
                .collect();
            sum += recall(&got, want);
        }
        points.push(Point {
            ef,
            recall: sum / vs.len().max(1) as f64,
            lat: Lat::of(ms, started.elapsed().as_secs_f64()),
        });
    }
    points.remove(0);
    Ok(points)
}

/// The exact top 10 of each query: the dev set's own for all regions at its size, else our
/// exact mode's.
async fn exact_answers(
    http: &reqwest::Client,
    url: &str,
    queries: &[Value],
    rows: usize,
    case: Case,
) -> Result<Vec<Vec<String>>> {
    let mut exact = Vec::new();
    for q in queries {
        exact.push(if case == Case::Global && rows == 30_000 {
            let ids = q["top10_ids"].as_array().context("top10_ids")?;
            ids.iter().map(Value::to_string).collect()
        } else {
            hit_keys(&search(http, url, &body(&embedding(q), None, true, case)).await?)
        });
    }
    Ok(exact)
}

/// Our recall@10 and latency at the index's default breadth, over every region and within
/// one, one query at a time (no warm-up: right after a restart this is what callers get).
/// `exact` is what `exact_answers` gave for each case, computed once and passed again.
pub async fn at_default(
    http: &reqwest::Client,
    url: &str,
    queries: &[Value],
    rows: usize,
    exact: &mut Vec<Vec<Vec<String>>>,
) -> Result<Value> {
    let vs: Vec<Vec<f32>> = queries.iter().map(embedding).collect();
    let mut out = json!({});
    for (i, case) in [Case::Global, Case::Region].into_iter().enumerate() {
        if exact.len() <= i {
            exact.push(exact_answers(http, url, queries, rows, case).await?);
        }
        let p = ours_at(http, url, &vs, &exact[i], None, case).await?;
        out[case.key()] = json!({"recall": p.recall, "latency": p.lat.json()});
    }
    Ok(out)
}

/// The breadths the scale benchmark measures recall at (our side only, both cases).
pub const SCALE_EFS: [usize; 6] = [128, 256, 384, 512, 768, 1024];

/// Our recall@10 and latency at each of `efs`, over every region and within one, with the
/// exact answers `at_default` computed (`exact[0]` global, `exact[1]` in the region).
pub async fn ours_curve(
    http: &reqwest::Client,
    url: &str,
    queries: &[Value],
    efs: &[usize],
    exact: &[Vec<Vec<String>>],
) -> Result<Value> {
    let vs: Vec<Vec<f32>> = queries.iter().map(embedding).collect();
    let mut out = json!({});
    for (i, case) in [Case::Global, Case::Region].into_iter().enumerate() {
        let want = exact.get(i).context("exact answers computed first")?;
        let mut points = Vec::new();
        for &ef in efs {
            points.push(ours_at(http, url, &vs, want, Some(ef), case).await?.json());
        }
        out[case.key()] = Value::Array(points);
    }
    Ok(out)
}

/// Sweeps both sides (pgvector when `pg` is given) over `EFS` for both cases, after the
/// exact answers: the dev set's own for all regions at its size, else our exact mode.
pub async fn sweep(
    http: &reqwest::Client,
    url: &str,
    pg: Option<(&PgServer, &str)>,
    queries: &[Value],
    rows: usize,
    r: &mut Report,
) -> Result<Vec<Curve>> {
    let vs: Vec<Vec<f32>> = queries.iter().map(embedding).collect();
    let mut curves = Vec::new();
    for case in [Case::Global, Case::Region] {
        let exact = exact_answers(http, url, queries, rows, case).await?;
        // Warm-up at the widest breadth, not kept.
        ours_at(http, url, &vs, &exact, Some(EFS[EFS.len() - 1]), case).await?;
        if case == Case::Global {
            let default = ours_at(http, url, &vs, &exact, None, case).await?;
            r.put(
                "vector.default_ef",
                json!({"recall": default.recall, "latency": default.lat.json()}),
            );
        }
        let mut ours = Vec::new();
        for ef in EFS {
            ours.push(ours_at(http, url, &vs, &exact, Some(ef), case).await?);
        }
        let pgvector = match pg {
            Some((pg, db)) => Some(pgvector_curve(pg, db, &vs, &exact, case).await?),
            None => None,
        };
        let curve = Curve {
            case,
            ours,
            pgvector,
        };
        r.put(&format!("vector.curve.{}", case.key()), curve.json());
        curves.push(curve);
    }
    Ok(curves)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_smallest_breadth_reaching_the_target() {
        let p = |ef, recall| Point {
            ef,
            recall,
            lat: Lat::default(),
        };
        let curve = [p(10, 0.8), p(16, 0.96), p(24, 0.99)];
        let at = pick(&curve, 0.95);
        assert_eq!((at.ef, at.reached), (16, true));
        let never = pick(&curve, 0.995);
        assert_eq!((never.ef, never.reached), (24, false));
    }
}
