//! BENCHMARKS-SCALE.md: one column per size measured by `scripts/bench --scale --rows N`
//! (each run's figures kept by N in BENCHMARKS-SCALE.json, a later run of a size replacing
//! the earlier), each figure's growth fitted over the sizes, and issue 13's targets read
//! from the largest size.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value;

use super::{Figures, Report};

type Runs = BTreeMap<usize, BTreeMap<String, Value>>;

fn read(out_json: &Path) -> Result<Runs> {
    match std::fs::read(out_json) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not a scale report", out_json.display())),
        Err(_) => Ok(BTreeMap::new()),
    }
}

/// Keeps this run's figures under its size beside the other sizes' and writes the report.
pub fn write(r: Report, rows: usize, out: &Path) -> Result<()> {
    let out_json = out.with_extension("json");
    let mut runs = read(&out_json)?;
    runs.insert(rows, r.json);
    std::fs::write(&out_json, serde_json::to_string_pretty(&runs)?)?;
    rewrite(out)
}

/// Writes the report again from the figures kept (`scripts/bench --scale --render`).
pub fn rewrite(out: &Path) -> Result<()> {
    let out_json = out.with_extension("json");
    std::fs::write(out, render(&read(&out_json)?).join("\n") + "\n")?;
    eprintln!("bench: wrote {} from {}", out.display(), out_json.display());
    Ok(())
}

/// A figure of every run: its name, how to read it from a run, digits shown.
struct Row {
    name: String,
    get: Box<dyn Fn(&Figures) -> f64>,
    digits: usize,
}

fn row(name: impl Into<String>, digits: usize, get: impl Fn(&Figures) -> f64 + 'static) -> Row {
    Row {
        name: name.into(),
        get: Box::new(get),
        digits,
    }
}

/// `y ≈ c · N^k` by least squares over the runs' logarithms: (k, the value at 10M rows).
fn fit(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    let pts: Vec<(f64, f64)> = points
        .iter()
        .filter(|(n, y)| *n > 0.0 && y.is_finite() && *y > 0.0)
        .map(|(n, y)| (n.ln(), y.ln()))
        .collect();
    if pts.len() < 2 {
        return None;
    }
    let len = pts.len() as f64;
    let (mx, my) = (
        pts.iter().map(|p| p.0).sum::<f64>() / len,
        pts.iter().map(|p| p.1).sum::<f64>() / len,
    );
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx == 0.0 {
        return None;
    }
    let k = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum::<f64>() / sxx;
    let at_10m = (my + k * (1e7f64.ln() - mx)).exp();
    Some((k, at_10m))
}

fn size(n: usize) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1_000 && n % 1_000 == 0 => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}

fn rows() -> Vec<Row> {
    // (name, digits, figure, pointer inside it)
    #[rustfmt::skip]
    const PLAIN: [(&str, usize, &str, &str); 24] = [
        ("snapshot, text only (rows/s)", 0, "snapshot.text.rows_per_sec", ""),
        ("snapshot, text + geo (rows/s)", 0, "snapshot.text_geo.rows_per_sec", ""),
        ("snapshot, text + geo + 384-d vectors (rows/s)", 0, "snapshot.full.rows_per_sec", ""),
        ("HNSW graph complete, from the start (vectors/s)", 0, "graph.vectors_per_sec", ""),
        ("anonymous memory after the text + geo snapshot (MB)", 0, "memory.text_geo", "/anon_mb"),
        ("anonymous memory after the vector snapshot (MB)", 0, "memory.after_snapshot", "/anon_mb"),
        ("anonymous memory, graph complete (MB)", 0, "memory.graph_complete", "/anon_mb"),
        ("graph idle after the bulk writes: insert structures dropped after (s)", 0, "graph.idle_after_s", ""),
        ("anonymous memory then (MB)", 0, "memory.graph_idle", "/anon_mb"),
        ("anonymous memory after bulk writes and queries (MB)", 0, "memory.final", "/anon_mb"),
        ("file-backed resident memory then (MB)", 0, "memory.final", "/file_mb"),
        ("peak resident memory, VmHWM (MB)", 0, "memory.final", "/peak_mb"),
        ("resident memory per 1M rows (GB)", 2, "footprint", "/rss_gb_per_1m"),
        ("disk, text + geo (MB)", 0, "disk_mb.text_geo", ""),
        ("disk with vectors (MB)", 0, "footprint", "/disk_mb"),
        ("disk per 1M rows, with vectors (GB)", 2, "footprint", "/disk_gb_per_1m"),
        ("restart to serving (s)", 2, "restart_to_serving_s", ""),
        ("whole-table UPDATE, no embedding changed: applied (rows/s)", 0, "bulk.same_embeddings", "/rows_per_sec"),
        ("  vector p50 quiet (ms)", 2, "bulk.same_embeddings", "/vector_quiet/p50_ms"),
        ("  vector p50 right after (ms)", 2, "bulk.same_embeddings", "/vector_after/p50_ms"),
        ("  text p50 quiet (ms)", 2, "bulk.same_embeddings", "/text_quiet/p50_ms"),
        ("  text p50 right after (ms)", 2, "bulk.same_embeddings", "/text_after/p50_ms"),
        ("whole-table UPDATE of every embedding: applied (rows/s)", 0, "bulk.new_embeddings", "/rows_per_sec"),
        ("  vector p50 within 2× quiet after (s)", 1, "bulk.new_embeddings", "/vector_within_2x_quiet_after_s"),
    ];
    let mut v: Vec<Row> = PLAIN
        .into_iter()
        .map(|(name, digits, key, at)| row(name, digits, move |j| j.num(key, at)))
        .collect();
    v.push(row("  graph holds every new version after (s)", 1, |j| {
        j.num("bulk.new_embeddings", "/graph_complete_after_s")
    }));
    v.push(row("graph dumps (MB)", 0, |j| {
        j.num("footprint.stopped", "/graph_dump_bytes") / 1048576.0
    }));
    for (case, name) in [("global", "all regions"), ("region", "in europe")] {
        v.push(row(
            format!("recall@10 at the default ef, {name}, graph complete"),
            3,
            move |j| j.num("recall.before_bulk", &format!("/{case}/recall")),
        ));
        v.push(row(
            "  the same after the bulk writes (old versions in the graph)",
            3,
            move |j| j.num("recall.default_ef", &format!("/{case}/recall")),
        ));
        v.push(row("  the same right after the restart", 3, move |j| {
            j.num("recall.after_restart", &format!("/{case}/recall"))
        }));
        for (i, ef) in crate::vector::SCALE_EFS.into_iter().enumerate() {
            v.push(row(
                format!("  recall@10 at ef {ef}, {name}"),
                3,
                move |j| j.num("recall.curve", &format!("/{case}/{i}/recall")),
            ));
            v.push(row(format!("    p50 at ef {ef} (ms)"), 2, move |j| {
                j.num("recall.curve", &format!("/{case}/{i}/p50_ms"))
            }));
        }
    }
    v
}

/// The query types in the order measured (the largest run's order).
fn query_rows(order: &[String]) -> Vec<Row> {
    let mut v = Vec::new();
    for name in order {
        for (what, at, digits) in [
            ("p50 c=1 (ms)", "/ours/c1/p50_ms/median", 2),
            ("p99 c=1 (ms)", "/ours/c1/p99_ms/median", 2),
            ("QPS c=32", "/ours/c32/qps/median", 0),
        ] {
            let key = format!("query.{name}");
            v.push(row(format!("{name}: {what}"), digits, move |j| {
                j.num(&key, at)
            }));
        }
    }
    v
}

fn render(runs: &Runs) -> Vec<String> {
    let figures: Vec<(usize, Figures)> = runs.iter().map(|(n, m)| (*n, Figures(m))).collect();
    let mut md = vec![
        "# Scale benchmarks".to_owned(),
        String::new(),
        "Our side alone at each size, one run per size of `scripts/bench --scale --rows N` \
         (no peers, no freshness run; raw figures by size in `BENCHMARKS-SCALE.json`). \
         Data: the dev set scaled by seeded copies (`e2e::dev_data::Scaled`). The last columns \
         fit each figure as c·N^k over the sizes (k = 1: linear; k = 0: flat) and read it at \
         10M rows: on paper, from these runs only."
            .to_owned(),
        String::new(),
    ];
    for (n, j) in &figures {
        let m = |p: &str| j.text("machine", p);
        md.push(format!(
            "- {}: {}, commit {}, {} cores, {}; {} s per load, {} rounds; run took {:.0} min",
            size(*n),
            m("/date"),
            m("/git"),
            j.num("machine", "/cores"),
            m("/cpu"),
            j.num("machine", "/seconds_per_load"),
            j.num("machine", "/rounds"),
            j.num("run_seconds", "") / 60.0
        ));
    }
    md.push(String::new());
    let order: Vec<String> = figures
        .last()
        .map(|(_, j)| j.get("queries")["order"].clone())
        .and_then(|o| serde_json::from_value(o).ok())
        .unwrap_or_default();
    let mut head = "| figure |".to_owned();
    let mut rule = "|---|".to_owned();
    for (n, _) in &figures {
        head += &format!(" {} |", size(*n));
        rule += "---|";
    }
    md.push(head + " k | at 10M |");
    md.push(rule + "---|---|");
    for r in rows().into_iter().chain(query_rows(&order)) {
        let values: Vec<(f64, f64)> = figures
            .iter()
            .map(|(n, j)| (*n as f64, (r.get)(j)))
            .collect();
        let mut line = format!("| {} |", r.name);
        for (_, y) in &values {
            let d = r.digits;
            line += &if y.is_finite() {
                format!(" {y:.d$} |")
            } else {
                " – |".to_owned()
            };
        }
        line += &match fit(&values) {
            Some((k, at)) => format!(" {k:.2} | {at:.prec$} |", prec = r.digits),
            None => " | |".to_owned(),
        };
        md.push(line);
    }
    md.push(String::new());
    if let Some((n, j)) = figures.last() {
        components(&mut md, *n, j);
        targets(&mut md, *n, j);
    }
    md
}

/// Issue 13's acceptance figures, read from the largest size (they are set for 1M rows).
fn targets(md: &mut Vec<String>, n: usize, j: &Figures) {
    md.push(format!(
        "## Issue 13's targets at {} rows{}",
        size(n),
        if n == 1_000_000 {
            ""
        } else {
            " (they are set for 1M)"
        }
    ));
    md.push(String::new());
    md.push("| target | figure | |".into());
    md.push("|---|---|---|".into());
    let p50 = |name: &str| j.num(&format!("query.{name}"), "/ours/c1/p50_ms/median");
    let recall = j.num("recall.before_bulk", "/global/recall");
    let quiet = j.num("bulk.same_embeddings", "/vector_quiet/p50_ms");
    let after = j.num("bulk.same_embeddings", "/vector_after/p50_ms");
    let restart = j.num("restart_to_serving_s", "") * 1e6 / n as f64;
    let vector = if recall >= 0.95 {
        p50("vector k=10")
    } else {
        f64::NAN
    };
    // (target, figure, unit, the figure's bound, whether it is a ceiling)
    #[rustfmt::skip]
    let lines = [
        ("resident memory per 1M rows with vectors", j.num("footprint", "/rss_gb_per_1m"), "GB", 2.5, true),
        ("disk per 1M rows", j.num("footprint", "/disk_gb_per_1m"), "GB", 3.0, true),
        ("snapshot with vectors", j.num("snapshot.full.rows_per_sec", ""), "rows/s", 30_000.0, false),
        ("snapshot without vectors (text + geo)", j.num("snapshot.text_geo.rows_per_sec", ""), "rows/s", 60_000.0, false),
        ("HNSW completion", j.num("graph.vectors_per_sec", ""), "vectors/s", 2_000.0, false),
        ("restart to serving, per 1M rows", restart, "s", 2.0, true),
        ("recall@10 right after the restart", j.num("recall.after_restart", "/global/recall"), "", 0.95, false),
        ("text rare p50 at c=1", p50("text rare"), "ms", 2.0, true),
        ("text common p50", p50("text common"), "ms", 2.0, true),
        ("text phrase p50", p50("text phrase"), "ms", 2.0, true),
        ("geo nearest p50", p50("geo nearest k=10"), "ms", 1.0, true),
        ("geo radius 10 km p50", p50("geo radius 10 km"), "ms", 1.0, true),
        ("geo radius 200 km p50", p50("geo radius 200 km"), "ms", 1.0, true),
        ("vector p50 at the default ef, if its recall is ≥ 0.95", vector, "ms", 3.0, true),
        ("vector p50 right after an UPDATE of every row (no new embedding), × quiet", after / quiet, "×", 2.0, true),
    ];
    for (what, figure, unit, bound, ceiling) in lines {
        let (sign, met) = if ceiling {
            ("≤", figure <= bound)
        } else {
            ("≥", figure >= bound)
        };
        let verdict = if met { "met" } else { "**missed**" };
        md.push(format!(
            "| {what} {sign} {bound} {unit} | {figure:.2} {unit} | {verdict} |"
        ));
    }
    md.push(String::new());
}

/// What each step added to the anonymous memory, per row: the part the vectors cost.
fn components(md: &mut Vec<String>, n: usize, j: &Figures) {
    let anon = |k: &str| j.num(k, "/anon_mb");
    let per_row = |mb: f64| mb * 1048576.0 / n as f64;
    md.push(format!("## Memory by step at {} rows", size(n)));
    md.push(String::new());
    md.push(
        "Anonymous memory (the heap) of the indexer after each step, and what the step added per \
         row. The vector snapshot fills the vector store (f32, 1.5 KB a 384-d vector, in a \
         mapped file: not anonymous) and starts the graph builder; completing the graph adds \
         hnsw_rs's structure and the searchable copy (`frozen_graph.rs`); an idle graph drops \
         hnsw_rs's structure (`apply.graph_idle_unload_secs`) and keeps the copy."
            .into(),
    );
    md.push(String::new());
    md.push("| step | anonymous MB | added per row |".into());
    md.push("|---|---|---|".into());
    let mut before = f64::NAN;
    for (step, key) in [
        ("text + geo snapshot (no vectors)", "memory.text_geo"),
        ("text + geo + vector snapshot", "memory.after_snapshot"),
        ("graph complete", "memory.graph_complete"),
        ("after bulk writes", "memory.after_bulk"),
        (
            "graph idle: hnsw_rs's structures dropped",
            "memory.graph_idle",
        ),
        ("after the query phase", "memory.final"),
        ("after a restart", "memory.after_restart"),
    ] {
        let mb = anon(key);
        let added = if before.is_finite() {
            format!("{:+.0} B", per_row(mb - before))
        } else {
            format!("{:.0} B", per_row(mb))
        };
        md.push(format!("| {step} | {mb:.0} | {added} |"));
        before = mb;
    }
    md.push(String::new());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_a_power_law_through_its_points() {
        let (k, at) = fit(&[(1e5, 2.0), (1e6, 20.0)]).unwrap();
        assert!((k - 1.0).abs() < 1e-9 && (at - 200.0).abs() < 1e-6);
        let (k, at) = fit(&[(1e5, 5.0), (3e5, 5.0), (1e6, 5.0)]).unwrap();
        assert!(k.abs() < 1e-9 && (at - 5.0).abs() < 1e-9);
        assert!(fit(&[(1e5, 2.0)]).is_none());
        assert!(fit(&[(1e5, 2.0), (1e6, f64::NAN)]).is_none());
    }

    #[test]
    fn sizes_are_short() {
        assert_eq!(size(100_000), "100k");
        assert_eq!(size(1_000_000), "1M");
        assert_eq!(size(30_001), "30001");
    }
}
