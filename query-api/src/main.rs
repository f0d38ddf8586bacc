//! `query-api --config query-api.toml`: the public REST tier in front of the indexer shards.

use std::path::PathBuf;

use clap::Parser;
use query_api::config::Config;

/// Every request allocates and frees its JSON, headers and shard answers: glibc's malloc and
/// free were 2–3% of query-api's samples under load (perf), mimalloc is the indexer's too.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(version, about = "Public REST API over the indexer shards")]
struct Cli {
    /// TOML config: shards and their regions, API keys, limits, CORS.
    #[arg(long, env = "QUERY_API_CONFIG")]
    config: PathBuf,
    /// Listen address (overrides the file and QUERY_API_LISTEN).
    #[arg(long)]
    listen: Option<String>,
    /// Write the bound address here once listening (useful with port 0).
    #[arg(long)]
    addr_file: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    if let Err(e) = logs::init("info", std::io::stderr) {
        eprintln!("error: {e}");
        return std::process::ExitCode::from(2);
    }
    let cli = Cli::parse();
    let config = std::fs::read_to_string(&cli.config)
        .map_err(|e| format!("{}: {e}", cli.config.display()))
        .and_then(|text| Config::parse(&text).map_err(|e| format!("{}: {e}", cli.config.display())))
        .and_then(|mut c| {
            c.apply_env()?;
            if let Some(l) = cli.listen {
                c.listen = l;
            }
            Ok(c)
        });
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("query-api: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    // Threads named after the process, so profiles and `top -H` tell the two apart.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name("query-api")
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(serve(config, cli.addr_file)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("query-api: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn serve(config: Config, addr_file: Option<PathBuf>) -> Result<(), String> {
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .ok();
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
                "; another process listens there (a query-api already running?): stop it, or choose another address"
            } else {
                ""
            };
            format!(
                "cannot listen on {} (set by listen in the config, QUERY_API_LISTEN or --listen): {e}{hint}",
                config.listen
            )
        })?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(
        %addr,
        shards = config.shards.len(),
        tls = config.tls.cert.is_some(),
        "query-api listening"
    );
    if let Some(f) = addr_file {
        let tmp = f.with_extension("tmp");
        std::fs::write(&tmp, addr.to_string())
            .and_then(|()| std::fs::rename(&tmp, &f))
            .map_err(|e| format!("{}: {e}", f.display()))?;
    }
    let limits = config.connection_limits();
    let tls = config.server_tls()?;
    let app = query_api::router(query_api::AppState::new(config, prometheus)?);
    serve::serve(listener, app, limits, tls, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await;
    Ok(())
}
