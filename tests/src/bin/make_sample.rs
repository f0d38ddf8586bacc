//! Builds `data/sample/places.tsv.gz`, the sample the demo and `indexer seed` load, from the
//! shared dev set (../shared/data/dev: 30k GeoNames cities, MiniLM embeddings; CC BY 4.0, see
//! data/sample/ATTRIBUTION.md). A maintainer's tool, run once; the product never reads
//! ../shared.
//!
//!   cargo run -p e2e --bin make_sample

use std::io::Write;

use anyhow::{Context, Result};

fn main() -> Result<()> {
    let lines = e2e::dev_data::copy_lines(true)?;
    let out =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/sample/places.tsv.gz");
    let file = std::fs::File::create(&out).with_context(|| out.display().to_string())?;
    let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::best());
    for line in &lines {
        let (row, emb) = line
            .trim_end_matches('\n')
            .rsplit_once('\t')
            .context("columns")?;
        let values: Vec<f32> = emb
            .trim_matches(|c| c == '{' || c == '}')
            .split(',')
            .map(|x| x.parse())
            .collect::<Result<_, _>>()?;
        writeln!(gz, "{row}\t{}", indexer::sample::pack(&values))?;
    }
    gz.finish()?;
    eprintln!(
        "make_sample: {} rows, {} bytes -> {}",
        lines.len(),
        std::fs::metadata(&out)?.len(),
        out.display()
    );
    Ok(())
}
