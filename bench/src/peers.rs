//! The peers: the same logical queries on Postgres itself, on `pg_places`, a copy of the
//! table with Postgres's own indexes — tsvector + GIN, PostGIS geography + GiST and pgvector
//! HNSW when those extensions are available — each build timed and sized, and a check that
//! the planner uses the HNSW index.

use std::time::Instant;

use anyhow::{ensure, Result};
use e2e::PgServer;
use serde_json::json;
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::report::Report;

// Every peer query returns what our hits carry: the key, the region and the stored fields.
pub const TEXT_SQL: &str = "SELECT id, region, name, population, country_code FROM pg_places WHERE tsv @@ plainto_tsquery('simple', $1) \
    ORDER BY ts_rank_cd(tsv, plainto_tsquery('simple', $1)) DESC LIMIT 10";
pub const PHRASE_SQL: &str =
    "SELECT id, region, name, population, country_code FROM pg_places WHERE tsv @@ phraseto_tsquery('simple', $1) \
    ORDER BY ts_rank_cd(tsv, phraseto_tsquery('simple', $1)) DESC LIMIT 10";
pub const WITHIN_SQL: &str = "SELECT id, region, name, population, country_code FROM pg_places \
    WHERE ST_DWithin(geog, ST_SetSRID(ST_MakePoint($2, $1), 4326)::geography, $3) \
    ORDER BY geog <-> ST_SetSRID(ST_MakePoint($2, $1), 4326)::geography LIMIT 10";
pub const NEAREST_SQL: &str = "SELECT id, region, name, population, country_code FROM pg_places \
    ORDER BY geog <-> ST_SetSRID(ST_MakePoint($2, $1), 4326)::geography LIMIT 10";
pub const VECTOR_SQL: &str =
    "SELECT id, region, name, population, country_code FROM pg_places ORDER BY embedding <=> $1::text::vector LIMIT 10";
pub const VECTOR_REGION_SQL: &str =
    "SELECT id, region, name, population, country_code FROM pg_places WHERE region = $2 ORDER BY embedding <=> $1::text::vector LIMIT 10";

/// pgvector's ceiling for `hnsw.ef_search`.
pub const EF_SEARCH_MAX: usize = 1000;
/// The HNSW build parameters, ours and pgvector's alike.
pub const HNSW_M: usize = 16;
pub const HNSW_EF_CONSTRUCTION: usize = 100;

/// The peers' extensions available on this server, by version.
pub struct Extensions {
    pub postgis: Option<String>,
    pub pgvector: Option<String>,
}

impl Extensions {
    /// No peer at all (the scale runs).
    pub fn none() -> Extensions {
        Extensions {
            postgis: None,
            pgvector: None,
        }
    }

    pub async fn probe(client: &Client) -> Result<Extensions> {
        let version = |name: &'static str| async move {
            let row = client
                .query_opt(
                    "SELECT default_version FROM pg_available_extensions WHERE name = $1",
                    &[&name],
                )
                .await?;
            anyhow::Ok(row.map(|r| r.get::<_, String>(0)))
        };
        Ok(Extensions {
            postgis: version("postgis").await?,
            pgvector: version("vector").await?,
        })
    }
}

/// The settings of a pgvector connection searching with breadth `ef` (clamped to pgvector's
/// range); within a region, the iterative scan keeps going until `k` rows pass the filter.
/// pgvector prices a wide `ef_search` above a sequential scan and sort (within a region from
/// about 512 on the dev set): without sequential scans and sorts, the HNSW index's order is
/// the only plan left.
pub fn vector_setup(ef: usize, in_region: bool) -> String {
    let ef = ef.clamp(1, EF_SEARCH_MAX);
    let mut sql =
        format!("SET enable_seqscan = off; SET enable_sort = off; SET hnsw.ef_search = {ef}");
    if in_region {
        sql.push_str("; SET hnsw.iterative_scan = strict_order");
    }
    sql
}

/// A vector in pgvector's text form, `[0.1,0.2,…]`.
pub fn vector_text(v: &[f32]) -> String {
    let items: Vec<String> = v.iter().map(f32::to_string).collect();
    format!("[{}]", items.join(","))
}

async fn timed(client: &Client, sql: &str) -> Result<f64> {
    let t = Instant::now();
    client.batch_execute(sql).await?;
    Ok(t.elapsed().as_secs_f64())
}

async fn relation_bytes(client: &Client, name: &str) -> Result<i64> {
    Ok(client
        .query_one("SELECT pg_relation_size($1::text::regclass)", &[&name])
        .await?
        .get(0))
}

/// Copies `places` to `pg_places` with the peers' columns, then builds each index, timed.
pub async fn build(client: &Client, ext: &Extensions, rows: usize, r: &mut Report) -> Result<()> {
    let mut columns = vec![
        "id, region, name, body, population, country_code, lat, lon",
        "to_tsvector('simple', coalesce(name, '') || ' ' || coalesce(body, '')) AS tsv",
    ];
    if ext.postgis.is_some() {
        client
            .batch_execute("CREATE EXTENSION IF NOT EXISTS postgis")
            .await?;
        columns.push("ST_SetSRID(ST_MakePoint(lon, lat), 4326)::geography AS geog");
    }
    if ext.pgvector.is_some() {
        client
            .batch_execute("CREATE EXTENSION IF NOT EXISTS vector")
            .await?;
        columns.push("embedding::vector(384) AS embedding");
    }
    let copy_s = timed(
        client,
        &format!(
            "CREATE TABLE pg_places AS SELECT {} FROM places; ALTER TABLE pg_places ADD PRIMARY KEY (id)",
            columns.join(", ")
        ),
    )
    .await?;
    r.put(
        "peers.table",
        json!({"columns": columns, "seconds": copy_s}),
    );
    let index = |name: &str, seconds: f64, bytes: i64, sql: &str| {
        json!({"name": name, "seconds": seconds, "rows_per_sec": rows as f64 / seconds,
               "bytes": bytes, "sql": sql})
    };
    let gin = "CREATE INDEX pg_places_tsv ON pg_places USING gin (tsv)";
    let s = timed(client, gin).await?;
    let bytes = relation_bytes(client, "pg_places_tsv").await?;
    r.put("peers.gin", index("pg_places_tsv", s, bytes, gin));
    if ext.postgis.is_some() {
        let gist = "CREATE INDEX pg_places_geog ON pg_places USING gist (geog)";
        let s = timed(client, gist).await?;
        let bytes = relation_bytes(client, "pg_places_geog").await?;
        r.put("peers.gist", index("pg_places_geog", s, bytes, gist));
    }
    if ext.pgvector.is_some() {
        // Enough for an in-memory build (about 2 kB a vector at 384-d with m = 16).
        let mem_mb = (rows * 3 / 1024).max(1024);
        client
            .batch_execute(&format!("SET maintenance_work_mem = '{mem_mb}MB'"))
            .await?;
        let hnsw = format!(
            "CREATE INDEX pg_places_embedding ON pg_places USING hnsw (embedding vector_cosine_ops) \
             WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION})"
        );
        let s = timed(client, &hnsw).await?;
        client.batch_execute("RESET maintenance_work_mem").await?;
        let bytes = relation_bytes(client, "pg_places_embedding").await?;
        let workers: String = client
            .query_one("SHOW max_parallel_maintenance_workers", &[])
            .await?
            .get(0);
        let mut v = index("pg_places_embedding", s, bytes, &hnsw);
        v["maintenance_work_mem_mb"] = json!(mem_mb);
        v["max_parallel_maintenance_workers"] = json!(workers);
        r.put("peers.hnsw", v);
    }
    client.batch_execute("VACUUM ANALYZE pg_places").await?;
    let total: i64 = client
        .query_one("SELECT pg_total_relation_size('pg_places')", &[])
        .await?
        .get(0);
    r.put("peers.total_bytes", json!(total));
    Ok(())
}

/// Fails unless the planner answers both vector statements from the HNSW index at every
/// breadth in `efs` under the settings the loads use, with a custom plan and with a generic
/// one (a prepared statement switches to it after five runs). Keeps the plans at the widest
/// breadth.
pub async fn check_vector_plans(
    pg: &PgServer,
    db: &str,
    probe: &[f32],
    region: &str,
    efs: &[usize],
    r: &mut Report,
) -> Result<()> {
    let c = pg.connect(db).await?;
    c.batch_execute(&format!(
        "PREPARE knn(text) AS {VECTOR_SQL}; PREPARE knn_in(text, text) AS {VECTOR_REGION_SQL}"
    ))
    .await?;
    let v = vector_text(probe);
    let mut plans = serde_json::Map::new();
    for &ef in efs {
        c.batch_execute(&vector_setup(ef, true)).await?;
        for mode in ["force_custom_plan", "force_generic_plan"] {
            c.batch_execute(&format!("SET plan_cache_mode = {mode}"))
                .await?;
            for (what, sql) in [
                ("k nearest", format!("EXPLAIN EXECUTE knn('{v}')")),
                (
                    "k nearest in a region",
                    format!("EXPLAIN EXECUTE knn_in('{v}', '{region}')"),
                ),
            ] {
                let plan: Vec<String> = c
                    .simple_query(&sql)
                    .await?
                    .iter()
                    .filter_map(|m| match m {
                        SimpleQueryMessage::Row(row) => row.get(0).map(elide_vector),
                        _ => None,
                    })
                    .collect();
                ensure!(
                    plan.iter().any(|l| l.contains("pg_places_embedding")),
                    "pgvector: the planner does not use the HNSW index for {what} at ef_search {ef} ({mode}):\n{}",
                    plan.join("\n")
                );
                plans.insert(format!("{what} ({mode})"), json!(plan));
            }
        }
    }
    r.put(
        "peers.hnsw_plans",
        json!({"ef_search_checked": efs, "at_widest": plans}),
    );
    Ok(())
}

/// A plan line with its vector literal shortened to `'[…]'`.
fn elide_vector(line: &str) -> String {
    match (line.find("'["), line.find("]'")) {
        (Some(a), Some(b)) if a < b => format!("{}'[…]'{}", &line[..a], &line[b + 2..]),
        _ => line.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_as_pgvector_text() {
        assert_eq!(vector_text(&[0.5, -1.0, 0.1]), "[0.5,-1,0.1]");
    }

    #[test]
    fn plan_lines_without_the_vector() {
        assert_eq!(
            elide_vector("Order By: (embedding <=> '[0.1,2e-05]'::vector)"),
            "Order By: (embedding <=> '[…]'::vector)"
        );
    }

    #[test]
    fn ef_search_within_pgvector_range() {
        assert!(vector_setup(5000, false).ends_with("SET hnsw.ef_search = 1000"));
        assert!(vector_setup(40, true).ends_with("iterative_scan = strict_order"));
    }
}
