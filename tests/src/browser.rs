//! Runs a page script of `tests/browser/` in headless Chromium (Playwright driving Debian's
//! chromium, installed by `scripts/ensure-browser`).

use anyhow::{ensure, Result};

/// Runs `tests/browser/<script>` with `args`; its output (stdout then stderr). Fails when it
/// fails, with that output.
pub async fn run(script: &str, args: &[&str]) -> Result<String> {
    let repo = crate::compose::repo();
    let playwright = repo.join("target/tools/browser/node_modules/playwright-core");
    ensure!(
        playwright.exists(),
        "{} is missing: run scripts/ensure-browser (scripts/test does)",
        playwright.display()
    );
    let out = tokio::process::Command::new("node")
        .arg(repo.join("tests/browser").join(script))
        .args(args)
        .env("PLAYWRIGHT_CORE", &playwright)
        .output()
        .await?;
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(out.status.success(), "{script} failed:\n{report}");
    Ok(report)
}
