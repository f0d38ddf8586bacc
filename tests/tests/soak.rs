//! A short soak (`scripts/soak` runs the long one): kills at random moments of starts,
//! inside a whole-table UPDATE and after a Postgres restart, a slot invalidated while the
//! indexer is stalled, a full disk (as root), and the index still equals the table.

use anyhow::Result;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_soak_loses_nothing() -> Result<()> {
    let summary = e2e::soak::soak(&e2e::soak::Options {
        rounds: 5,
        rows: 5_000,
        seed: 0x5EED_50AC,
    })
    .await?;
    eprintln!("{summary}");
    assert!(summary.equal(), "{summary}");
    assert_eq!(
        summary.kills_in_snapshot + summary.kills_in_large_transaction + summary.kills_streaming,
        5,
        "{summary}"
    );
    assert!(summary.kills_in_snapshot >= 1, "{summary}");
    assert!(summary.kills_in_large_transaction >= 1, "{summary}");
    assert_eq!(summary.postgres_restarts, 1, "{summary}");
    assert!(summary.slot_invalidated_rebuild_s > 0.0, "{summary}");
    if e2e::running_as_root() {
        assert!(summary.full_disk.is_some(), "{summary}");
    }
    Ok(())
}
