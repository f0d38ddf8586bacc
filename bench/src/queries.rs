//! The query types measured over HTTP, each with its peer's equivalent when there is one
//! (Postgres tsvector for text, PostGIS for geo, pgvector for vectors at matched recall), and
//! the query phase: every type in interleaved rounds.

use std::sync::Arc;

use anyhow::Result;
use serde_json::{json, Value};

use crate::load::{ratios, Cell, Loads, PgQ, PgWork};
use crate::peers::{self, Extensions};
use crate::profile::Profiler;
use crate::report::Report;
use crate::vector::{self, embedding, Case, Curve, TARGETS};

/// The dev set's query files.
pub struct Workload {
    pub rare: Vec<String>,
    pub common: Vec<String>,
    pub phrase: Vec<String>,
    pub points: Vec<(f64, f64)>,
    pub vectors: Vec<Value>,
}

impl Workload {
    pub fn load() -> Result<Workload> {
        let text = e2e::dev_data::queries("queries_text.jsonl")?;
        let texts = |kind: &str| -> Vec<String> {
            text.iter()
                .filter(|q| q["kind"] == kind)
                .filter_map(|q| q["query"].as_str().map(str::to_owned))
                .collect()
        };
        let points = e2e::dev_data::queries("queries_geo.jsonl")?
            .iter()
            .filter_map(|q| Some((q["lat"].as_f64()?, q["lon"].as_f64()?)))
            .collect();
        Ok(Workload {
            rare: texts("term_rare"),
            common: texts("term_common"),
            phrase: texts("gloss_phrase"),
            points,
            vectors: e2e::dev_data::queries("queries_vector.jsonl")?,
        })
    }
}

fn cell(name: impl Into<String>, note: String, ours: Vec<Value>, peer: Option<PgWork>) -> Cell {
    Cell {
        name: name.into(),
        note,
        ours: Arc::new(ours),
        peer,
    }
}

fn work(name: &str, setup: String, sql: &str, queries: Vec<PgQ>) -> PgWork {
    PgWork {
        name: name.to_owned(),
        setup,
        sql: sql.to_owned(),
        queries: Arc::new(queries),
    }
}

/// Every query type in the order measured; vector types at each side's breadth for each
/// recall target, as the curves picked.
pub fn cells(w: &Workload, ext: &Extensions, curves: &[Curve]) -> Vec<Cell> {
    let mut out = Vec::new();
    for (name, qs, sql) in [
        ("text rare", &w.rare, peers::TEXT_SQL),
        ("text common", &w.common, peers::TEXT_SQL),
        ("text phrase", &w.phrase, peers::PHRASE_SQL),
    ] {
        let phrase = sql == peers::PHRASE_SQL;
        let bodies = qs
            .iter()
            .map(|q| {
                let q = if phrase {
                    format!("\"{q}\"")
                } else {
                    q.clone()
                };
                json!({"q": q, "highlight": false})
            })
            .collect();
        let peer = qs.iter().cloned().map(PgQ::Text).collect();
        let peer = work("Postgres tsvector + GIN", String::new(), sql, peer);
        out.push(cell(name, String::new(), bodies, Some(peer)));
    }
    let postgis = |sql: &str, qs: Vec<PgQ>| {
        ext.postgis
            .is_some()
            .then(|| work("PostGIS geography + GiST", String::new(), sql, qs))
    };
    let pts = &w.points;
    out.push(cell(
        "geo nearest k=10",
        String::new(),
        pts.iter()
            .map(|(a, o)| json!({"geo": {"nearest": {"lat": a, "lon": o, "k": 10}}}))
            .collect(),
        postgis(
            peers::NEAREST_SQL,
            pts.iter().map(|&(a, o)| PgQ::Point(a, o)).collect(),
        ),
    ));
    for km in [10.0, 200.0] {
        let m = km * 1000.0;
        out.push(cell(
            format!("geo radius {km} km"),
            String::new(),
            pts.iter()
                .map(|(a, o)| json!({"geo": {"within": {"lat": a, "lon": o, "radius_m": m}}}))
                .collect(),
            postgis(
                peers::WITHIN_SQL,
                pts.iter().map(|&(a, o)| PgQ::Radius(a, o, m)).collect(),
            ),
        ));
    }
    let vs: Vec<Vec<f32>> = w.vectors.iter().map(embedding).collect();
    for curve in curves {
        let region = curve.case.region();
        for target in TARGETS {
            let ours = vector::pick(&curve.ours, target);
            let name = match curve.case {
                Case::Global => format!("vector k=10, recall {target}"),
                Case::Region => format!("vector k=10 in {}, recall {target}", vector::REGION),
            };
            let bodies = vs
                .iter()
                .map(|v| {
                    let mut b = json!({"vector": {"values": v, "k": 10, "ef": ours.ef}});
                    if let Some(region) = region {
                        b["regions"] = json!([region]);
                    }
                    b
                })
                .collect();
            let peer = curve.pgvector.as_deref().map(|points| {
                let at = vector::pick(points, target);
                let qs = vs.iter().map(|v| {
                    let text = peers::vector_text(v);
                    match region {
                        Some(region) => PgQ::VectorIn(text, region.to_owned()),
                        None => PgQ::Vector(text),
                    }
                });
                let sql = match region {
                    Some(_) => peers::VECTOR_REGION_SQL,
                    None => peers::VECTOR_SQL,
                };
                work(
                    &format!("pgvector HNSW, ef_search {}", at.ef),
                    peers::vector_setup(at.ef, region.is_some()),
                    sql,
                    qs.collect(),
                )
            });
            let note = format!(
                "ef {}{}",
                ours.ef,
                if ours.reached {
                    ""
                } else {
                    ", target not reached"
                }
            );
            out.push(cell(name, note, bodies, peer));
        }
    }
    let filtered = vs
        .iter()
        .map(|v| {
            json!({"vector": {"values": v, "k": 10},
                   "filter": {"range": {"population": {"gte": 100000}}}})
        })
        .collect();
    out.push(cell(
        "vector k=10 + filter",
        "default ef".into(),
        filtered,
        None,
    ));
    // Hybrid, and each of its branches alone as hybrid reads it (its window of 100, rows for
    // a page of 10: the last ten of the hundred): the answer should cost about the longer
    // branch (they run side by side), not more.
    let hybrid: Vec<(String, &Vec<f32>)> = w
        .vectors
        .iter()
        .zip(&vs)
        .map(|(q, v)| {
            let text = q["text"].as_str().unwrap_or("city");
            let words: Vec<&str> = text.split_whitespace().take(3).collect();
            (words.join(" "), v)
        })
        .collect();
    let bodies =
        |f: &dyn Fn(&str, &Vec<f32>) -> Value| hybrid.iter().map(|(q, v)| f(q, v)).collect();
    out.push(cell(
        "hybrid (RRF)",
        "default ef".into(),
        bodies(&|q, v| {
            json!({"text": {"q": q, "operator": "or"},
                   "vector": {"values": v, "k": 10}, "hybrid": {}})
        }),
        None,
    ));
    out.push(cell(
        "hybrid's text branch alone (top 100)",
        String::new(),
        bodies(&|q, _| json!({"text": {"q": q, "operator": "or"}, "offset": 90, "limit": 10})),
        None,
    ));
    out.push(cell(
        "hybrid's vector branch alone (k=100)",
        "default ef".into(),
        bodies(&|_, v| json!({"vector": {"values": v, "k": 100}, "offset": 90, "limit": 10})),
        None,
    ));
    out
}

/// Vector k=10 at the index's default breadth, over every region and within one (the scale
/// runs, which have no peer to match recall with).
pub fn default_vector_cells(w: &Workload) -> Vec<Cell> {
    [Case::Global, Case::Region]
        .into_iter()
        .map(|case| {
            let bodies = w
                .vectors
                .iter()
                .map(|q| {
                    let mut b = json!({"vector": {"values": embedding(q), "k": 10}});
                    if let Some(region) = case.region() {
                        b["regions"] = json!([region]);
                    }
                    b
                })
                .collect();
            let name = match case.region() {
                None => "vector k=10".to_owned(),
                Some(region) => format!("vector k=10 in {region}"),
            };
            cell(name, "default ef".into(), bodies, None)
        })
        .collect()
}

/// Measures every cell in `rounds` interleaved rounds and records each side's medians and
/// spread, the ratios and the profiles.
pub async fn run(
    loads: &Loads<'_>,
    cells: &[Cell],
    rounds: usize,
    profiler: &Profiler,
    r: &mut Report,
) -> Result<()> {
    let order: Vec<&str> = cells.iter().map(|c| c.name.as_str()).collect();
    r.put(
        "queries",
        json!({"order": order, "rounds": rounds, "seconds_per_load": loads.budget.as_secs_f64()}),
    );
    for cell in cells {
        let m = loads.run(cell, rounds, profiler).await?;
        let peer = match (&cell.peer, &m.peer) {
            (Some(work), Some(loads)) => json!({"name": work.name, "setup": work.setup,
                                                "sql": work.sql, "loads": loads.json()}),
            _ => Value::Null,
        };
        let ratios = m.peer.as_ref().map(|p| ratios(&m.ours, p));
        r.put(&format!("profile.{}", cell.name), m.profile);
        r.put(&format!("profile.{} (peer)", cell.name), m.peer_profile);
        r.put(
            &format!("query.{}", cell.name),
            json!({"note": cell.note, "ours": m.ours.json(), "peer": peer, "ratios": ratios}),
        );
    }
    Ok(())
}
