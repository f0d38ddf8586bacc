//! The targets, reported and not asserted: ingest, freshness and footprint aims, throughput
//! ratios against each peer at c=32, and p50 at c=1.

use super::queries::{order, ratio};
use super::Figures;

fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "**missed**",
        None => "(for reference)",
    }
}

pub(super) fn section(md: &mut Vec<String>, j: &Figures) {
    md.push("## Targets (reported, not asserted)".into());
    md.push(String::new());
    md.push("| target | figure | |".into());
    md.push("|---|---|---|".into());
    let mut target = |what: String, figure: String, met: Option<bool>| {
        md.push(format!("| {what} | {figure} | {} |", verdict(met)));
    };
    let at_1k = j
        .get("freshness")
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| {
            f["target_rows_per_sec"].as_f64() == Some(1000.0) && f["txn_rows"].as_u64() == Some(1)
        });
    if let Some(f) = at_1k {
        for (p, key, aim) in [("p50", "p50_ms", 10.0), ("p99", "p99_ms", 50.0)] {
            let ms = f["latency"][key].as_f64().unwrap_or(f64::NAN);
            target(
                format!("commit-to-searchable {p} ≤ {aim} ms at 1k rows/s"),
                format!("{ms:.2} ms"),
                Some(ms <= aim),
            );
        }
    }
    let snap = j.num("snapshot.full.rows_per_sec", "");
    target(
        "snapshot ≥ 50k rows/s searchable (with vectors)".into(),
        format!("{snap:.0} rows/s"),
        Some(snap >= 50_000.0),
    );
    let g = j.num("graph.vectors_per_sec", "");
    target(
        "HNSW build ≥ 2k vectors/s at 384-d".into(),
        format!("{g:.0} vectors/s"),
        Some(g >= 2_000.0),
    );
    let mem = j.num("footprint", "/rss_gb_per_1m");
    target(
        "memory ≤ 2.5 GB per 1M docs with vectors".into(),
        format!("{mem:.2} GB"),
        Some(mem <= 2.5),
    );
    let rec = j.num("vector.default_ef", "/recall");
    target(
        "vector recall@10 ≥ 0.95 at the default breadth".into(),
        format!("{rec:.4}"),
        Some(rec >= 0.95),
    );
    let names = order(j);
    let query = |name: &str| j.get(&format!("query.{name}")).clone();
    // Throughput at c=32 against the peer: (type, aim, whether it is a target).
    let mut ratios: Vec<(String, f64, bool)> = ["text rare", "text common", "text phrase"]
        .map(|n| (n.to_owned(), 3.0, true))
        .into_iter()
        .chain(
            ["geo nearest k=10", "geo radius 10 km", "geo radius 200 km"]
                .map(|n| (n.to_owned(), 2.0, true)),
        )
        .collect();
    for name in &names {
        if name.starts_with("vector k=10, recall") {
            ratios.push((name.clone(), 1.5, true));
        } else if name.starts_with("vector k=10 in ") {
            ratios.push((name.clone(), 1.5, name.ends_with("recall 0.95")));
        }
    }
    for (name, aim, is_target) in ratios {
        let q = query(&name);
        if q["ratios"].is_null() {
            continue;
        }
        let x = q["ratios"]["qps_c32"]["of_medians"]
            .as_f64()
            .unwrap_or(f64::NAN);
        let peer = q["peer"]["name"].as_str().unwrap_or("peer");
        target(
            format!("throughput at c=32 ≥ {aim}× {peer} ({name})"),
            ratio(&q["ratios"]["qps_c32"]),
            is_target.then_some(x >= aim),
        );
    }
    // p50 at c=1: text and geo, vector at recall ≥ 0.95, hybrid.
    for name in &names {
        let aim = if name.starts_with("text ") || name.starts_with("geo ") {
            0.5
        } else if name.starts_with("vector k=10, recall") || name.starts_with("vector k=10 in ") {
            1.5
        } else if name == "hybrid (RRF)" {
            3.0
        } else {
            continue;
        };
        let p50 = query(name)["ours"]["c1"]["p50_ms"]["median"]
            .as_f64()
            .unwrap_or(f64::NAN);
        target(
            format!("p50 ≤ {aim} ms at c=1 over HTTP ({name})"),
            format!("{p50:.3} ms"),
            Some(p50 <= aim),
        );
    }
    md.push(String::new());
}
