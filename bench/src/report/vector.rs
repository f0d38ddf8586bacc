//! Vectors in the report: both HNSW indexes side by side (build time, size), the recall curve
//! of each case, and the breadth each side runs at for each recall target.

use serde_json::Value;

use super::{mb, Figures};

pub(super) fn section(md: &mut Vec<String>, j: &Figures) {
    let pgvector = !j.get("peers.hnsw").is_null();
    md.push("## Vectors: ours against pgvector".into());
    md.push(String::new());
    if !pgvector {
        md.push("pgvector is not installed on this machine (`../shared/peers/install-pgvector` installs it, as root): the vector types have no peer.".into());
        md.push(String::new());
    }
    md.push("| | ours | pgvector |".into());
    md.push("|---|---|---|".into());
    let peer = |s: String| if pgvector { s } else { "—".into() };
    md.push(format!(
        "| index | HNSW m = 16, ef_construction = 100, cosine; one graph per region partition, 8-bit components, candidates rescored exactly; at the recall curve {:.0} points for {:.0} documents (an update adds a point and leaves the old one) | {} |",
        j.num("graph.points", "/points"),
        j.num("graph.points", "/documents"),
        peer("HNSW m = 16, ef_construction = 100, `vector_cosine_ops`; one graph over the table, built after the updates; searched with `hnsw.ef_search` (and `hnsw.iterative_scan = strict_order` within a region) and `enable_seqscan`, `enable_sort` off, since from a wide `ef_search` the planner would sort the rows instead of using the index (the plans are checked at every breadth)".into())
    ));
    md.push(format!(
        "| build | {:.1} s ({:.0} vectors/s): from indexer start until the graph holds every vector, the snapshot included | {} |",
        j.num("graph.seconds_from_start", ""),
        j.num("graph.vectors_per_sec", ""),
        peer(format!(
            "{:.1} s ({:.0} vectors/s): `CREATE INDEX`, `maintenance_work_mem` {:.0} MB, up to {} parallel workers",
            j.num("peers.hnsw", "/seconds"),
            j.num("peers.hnsw", "/rows_per_sec"),
            j.num("peers.hnsw", "/maintenance_work_mem_mb"),
            j.text("peers.hnsw", "/max_parallel_maintenance_workers")
        ))
    ));
    md.push(format!(
        "| size | {:.1} MB of graph dumps (the data directory: {:.1} MB in all) | {} |",
        mb(j.num("footprint.stopped", "/graph_dump_bytes")),
        mb(j.num("footprint.stopped", "/data_dir_bytes")),
        peer(format!(
            "{:.1} MB (`pg_relation_size` of the index; the table with every index: {:.1} MB)",
            mb(j.num("peers.hnsw", "/bytes")),
            mb(j.num("peers.total_bytes", ""))
        ))
    ));
    md.push(String::new());
    md.push(format!(
        "Ours at its default breadth (ef 256 for k = 10), all regions: recall@10 **{:.4}**, mean {:.2} ms, p50 {:.2} ms over HTTP.",
        j.num("vector.default_ef", "/recall"),
        j.num("vector.default_ef", "/latency/mean_ms"),
        j.num("vector.default_ef", "/latency/p50_ms")
    ));
    md.push(String::new());
    let rows = j.num("machine", "/rows");
    for (key, title, exact) in [
        (
            "vector.curve.global",
            "all regions".to_owned(),
            if rows == 30_000.0 {
                "the dev set's own exact top 10"
            } else {
                "our exact mode (`\"exact\": true`)"
            },
        ),
        (
            "vector.curve.region",
            format!(
                "within region `{}`",
                j.text("vector.curve.region", "/region")
            ),
            "our exact mode within the region",
        ),
    ] {
        curve(md, j.get(key), &title, exact);
    }
    md.push("The breadth each side runs at in the query phase: the smallest reaching the recall target, else the largest swept.".into());
    md.push(String::new());
    md.push(
        "| case | recall target | ours: ef (recall@10) | pgvector: ef_search (recall@10) |".into(),
    );
    md.push("|---|---|---|---|".into());
    for (key, case) in [
        ("vector.curve.global", "all regions"),
        ("vector.curve.region", "one region"),
    ] {
        let picks = &j.get(key)["picks"];
        for target in ["0.95", "0.99"] {
            md.push(format!(
                "| {case} | {target} | {} | {} |",
                pick(&picks["ours"][target]),
                pick(&picks["pgvector"][target])
            ));
        }
    }
    md.push(String::new());
}

fn pick(p: &Value) -> String {
    if p.is_null() {
        return "—".into();
    }
    format!(
        "{} ({:.4}){}",
        p["ef"],
        p["recall"].as_f64().unwrap_or(f64::NAN),
        if p["reached"].as_bool() == Some(true) {
            ""
        } else {
            ", **not reached**"
        }
    )
}

/// One case's curve: per breadth, each side's recall@10 and its mean and p50 latency (c=1).
fn curve(md: &mut Vec<String>, c: &Value, title: &str, exact: &str) {
    md.push(format!(
        "Recall curve, {title} (200 queries one at a time; exact answers: {exact}; pgvector's latency is over its wire protocol, ours over HTTP):"
    ));
    md.push(String::new());
    md.push("| breadth | ours recall@10 | ours mean / p50 ms | pgvector recall@10 | pgvector mean / p50 ms |".into());
    md.push("|---|---|---|---|---|".into());
    let none = Vec::new();
    let ours = c["ours"].as_array().unwrap_or(&none);
    let peer = c["pgvector"].as_array().unwrap_or(&none);
    for (i, o) in ours.iter().enumerate() {
        let point = |p: Option<&Value>| match p {
            Some(p) => (
                format!("{:.4}", p["recall"].as_f64().unwrap_or(f64::NAN)),
                format!(
                    "{:.3} / {:.3}",
                    p["mean_ms"].as_f64().unwrap_or(f64::NAN),
                    p["p50_ms"].as_f64().unwrap_or(f64::NAN)
                ),
            ),
            None => ("—".into(), "—".into()),
        };
        let ((or, ol), (pr, pl)) = (point(Some(o)), point(peer.get(i)));
        let breadth = match peer.get(i).map(|p| &p["ef"]) {
            Some(pe) if *pe != o["ef"] => format!("{} (pgvector {pe})", o["ef"]),
            _ => o["ef"].to_string(),
        };
        md.push(format!("| {breadth} | {or} | {ol} | {pr} | {pl} |"));
    }
    md.push(String::new());
}
