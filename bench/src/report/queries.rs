//! The query phase in the report: each side's medians with their spread, the ratios with their
//! per-round range, how stable the ratios were, and where our CPU went.

use serde_json::Value;

use super::{spread, Figures};

/// The three ratios of a query type: key, and how the tables and sentences name it.
const RATIOS: [(&str, &str); 3] = [
    ("qps_c32", "QPS ratio at c=32"),
    ("qps_c1", "QPS ratio at c=1"),
    ("p50_c1", "p50 ratio at c=1"),
];

/// `of_medians×` with the per-round range in brackets (when there is more than one round).
pub(super) fn ratio(v: &Value) -> String {
    let n = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    if v["per_round"].as_array().is_some_and(|r| r.len() > 1) {
        format!("{:.2}× ({:.2}–{:.2})", n("of_medians"), n("min"), n("max"))
    } else {
        format!("{:.2}×", n("of_medians"))
    }
}

/// The query types in the order measured.
pub(super) fn order(j: &Figures) -> Vec<String> {
    j.get("queries")["order"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n.as_str().map(str::to_owned))
        .collect()
}

fn side_row(md: &mut Vec<String>, query: &str, side: &str, loads: &Value) {
    let s = |p: &str, d| spread(loads.pointer(p).unwrap_or(&Value::Null), d);
    md.push(format!(
        "| {query} | {side} | {} | {} | {} | {} | {} | {} |",
        s("/c1/p50_ms", 3),
        s("/c1/p99_ms", 3),
        s("/c32/p50_ms", 2),
        s("/c32/p99_ms", 2),
        s("/c1/qps", 0),
        s("/c32/qps", 0)
    ));
}

pub(super) fn section(md: &mut Vec<String>, j: &Figures) {
    let rounds = j.num("queries", "/rounds");
    let seconds = j.num("queries", "/seconds_per_load");
    let names = order(j);
    let rounds_text = if rounds == 1.0 {
        "one round".to_owned()
    } else {
        format!("{rounds} rounds")
    };
    md.push(format!(
        "## Queries over HTTP ({seconds} s per load; concurrency 1 and 32; {rounds_text})"
    ));
    md.push(String::new());
    md.push(format!(
        "Ours: client → query-api over HTTP/1.1 and JSON, query-api → indexer on the shard link (one connection, many calls in flight), all regions unless named, top 10 with the key, region and stored fields (text without snippets, like the Postgres queries). \
         Peers: prepared statements over Postgres's wire protocol, on a copy of the table with its own indexes, all built before the first load (our indexer and query-api stay up, idle, while a peer runs), returning the same columns. \
         Each client of either side is one connection opened before the clock starts (hyper's HTTP/1.1 client for ours, tokio-postgres for the peers), in the same load generator process. \
         Each query type runs {rounds_text} of interleaved loads — ours c=1, peer c=1, ours c=32, peer c=32 — after a short warm-up of each side; \
         a figure is the median of the rounds, with their range (min–max) in brackets. Vector types at a recall run each side at its own breadth, the smallest reaching that recall@10 on the recall curve (see Vectors)."
    ));
    let (segments, partitions) = (
        j.num("graph.points", "/segments"),
        j.num("graph.points", "/partitions"),
    );
    if segments.is_finite() {
        md.push(String::new());
        md.push(format!(
            "Before the first load our indexer's {partitions} partitions held {segments} segments (a query pays per segment; the indexer merges them once it has had no write for a few seconds)."
        ));
    }
    md.push(String::new());
    md.push("| query | side | c=1 p50 ms | c=1 p99 ms | c=32 p50 ms | c=32 p99 ms | QPS c=1 | QPS c=32 |".into());
    md.push("|---|---|---|---|---|---|---|---|".into());
    for name in &names {
        let q = j.get(&format!("query.{name}"));
        let note = q["note"].as_str().unwrap_or_default();
        let ours = if note.is_empty() {
            "ours".to_owned()
        } else {
            format!("ours ({note})")
        };
        side_row(md, name, &ours, &q["ours"]);
        if let Some(peer) = q["peer"].as_object() {
            side_row(
                md,
                "",
                peer["name"].as_str().unwrap_or("peer"),
                &peer["loads"],
            );
        }
    }
    md.push(String::new());
    md.push("Ratios, above 1 when ours is better: QPS ours ÷ peer, p50 peer ÷ ours; from the medians, with in brackets the range of the same ratio computed round by round.".into());
    md.push(String::new());
    md.push("| query | peer | QPS ratio c=32 | QPS ratio c=1 | p50 ratio c=1 |".into());
    md.push("|---|---|---|---|---|".into());
    // (max ÷ min of a ratio across rounds, its range, which ratio, which query)
    let mut widths: Vec<(f64, f64, f64, &str, &str)> = Vec::new();
    for name in &names {
        let q = j.get(&format!("query.{name}"));
        if q["ratios"].is_null() {
            continue;
        }
        let cells: Vec<String> = RATIOS.iter().map(|(k, _)| ratio(&q["ratios"][k])).collect();
        md.push(format!(
            "| {name} | {} | {} |",
            q["peer"]["name"].as_str().unwrap_or("peer"),
            cells.join(" | ")
        ));
        for (k, what) in RATIOS {
            let (lo, hi) = (
                q["ratios"][k]["min"].as_f64(),
                q["ratios"][k]["max"].as_f64(),
            );
            if let (Some(lo), Some(hi)) = (lo, hi) {
                widths.push((hi / lo, lo, hi, what, name));
            }
        }
    }
    md.push(String::new());
    md.push(stability(rounds, &mut widths));
    md.push(String::new());
    profiles(md, j, &names);
}

/// One sentence on how much the ratios moved from round to round.
fn stability(rounds: f64, widths: &mut [(f64, f64, f64, &str, &str)]) -> String {
    if rounds < 2.0 || widths.is_empty() {
        return "Stability: one round, so no per-round range (the default is 3 rounds).".into();
    }
    widths.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (w, lo, hi, what, name) = widths[widths.len() - 1];
    let median = widths[(widths.len() - 1) / 2].0;
    let within = widths.iter().filter(|x| x.0 <= 1.1).count();
    format!(
        "Stability: the widest per-round range of a ratio was {lo:.2}–{hi:.2}× ({what}, {name}: the best round {:.0}% above the worst); \
         half of the ratios moved by {:.0}% or less between their best and worst round, and {within} of {} by 10% or less.",
        (w - 1.0) * 100.0,
        (median - 1.0) * 100.0,
        widths.len()
    )
}

fn profiles(md: &mut Vec<String>, j: &Figures, names: &[String]) {
    const PROCESSES: [&str; 6] = [
        "load generator",
        "query-api",
        "indexer",
        "postgres",
        "kernel threads",
        "other",
    ];
    let cores = |key: &str| -> Option<Vec<f64>> {
        let cpu = j.get(key).get("cpu")?.as_object()?;
        Some(
            PROCESSES
                .iter()
                .map(|p| cpu.get(*p).and_then(Value::as_f64).unwrap_or(0.0))
                .collect(),
        )
    };
    let split: Vec<(String, Vec<f64>)> = names
        .iter()
        .flat_map(|n| [(n.clone(), "ours"), (format!("{n} (peer)"), "peer")])
        .filter_map(|(key, side)| {
            let c = cores(&format!("profile.{key}"))?;
            let label = key.trim_end_matches(" (peer)");
            Some((format!("{label} | {side}"), c))
        })
        .collect();
    if !split.is_empty() {
        md.push("Cores used by each process during the first round's c=32 load of each side (a system-wide `perf` recording at 499 Hz; 2.0 is the whole machine; idle excluded). The load generator's share is taken from the servers':".into());
        md.push(String::new());
        md.push(format!(
            "| query | side | {} | total |",
            PROCESSES.join(" | ")
        ));
        md.push(format!("|---|---|{}---|", "---|".repeat(PROCESSES.len())));
        for (label, c) in split {
            let cells: Vec<String> = c.iter().map(|x| format!("{x:.2}")).collect();
            md.push(format!(
                "| {label} | {} | {:.2} |",
                cells.join(" | "),
                c.iter().sum::<f64>()
            ));
        }
        md.push(String::new());
    }
    let profiled: Vec<(&str, &Vec<Value>)> = std::iter::once("snapshot")
        .chain(names.iter().map(String::as_str))
        .filter_map(|name| {
            let hot = j.get(&format!("profile.{name}")).get("hot")?.as_array()?;
            (!hot.is_empty()).then_some((name, hot))
        })
        .collect();
    if profiled.is_empty() {
        return;
    }
    md.push("Where our processes' CPU goes (the same recordings, the indexer's and query-api's threads only, and the indexer's during the first seconds of the text + geo + vector snapshot; symbols over 2% of those samples, by thread name):".into());
    md.push(String::new());
    for (name, hot) in profiled {
        let items: Vec<String> = hot
            .iter()
            .map(|h| {
                let mut sym = h[1].as_str().unwrap_or_default().to_owned();
                if sym.chars().count() > 90 {
                    sym = sym.chars().take(90).collect::<String>() + "…";
                }
                format!("{:.1}% `{sym}`", h[0].as_f64().unwrap_or(0.0))
            })
            .collect();
        md.push(format!("- **{name}**: {}", items.join("; ")));
    }
    md.push(String::new());
}
