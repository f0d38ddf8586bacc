//! `indexer`: run the CDC indexer, verify a running index against its tables, or check a
//! config against the catalog.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// glibc malloc spent ~9% of the applier's time faulting in fresh pages under the snapshot
/// workload (perf); mimalloc reuses them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use indexer::config::{Config, Overrides};

#[derive(Parser)]
#[command(
    name = "indexer",
    version,
    about = "Postgres CDC into full-text, geo and vector partitions"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct Common {
    /// Index configuration (TOML).
    #[arg(long, env = "INDEXER_CONFIG")]
    config: PathBuf,
    /// Overrides source.database_url (else INDEXER_DATABASE_URL, else DATABASE_URL).
    #[arg(long, env = "INDEXER_DATABASE_URL")]
    database_url: Option<String>,
}

/// The database URL given on the command line or in `INDEXER_DATABASE_URL`, else in
/// `DATABASE_URL` (what `migrate`, `seed`, the demo and most tools read): every command
/// takes both.
fn database_url(given: Option<String>) -> Option<String> {
    given.or_else(|| std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()))
}

/// `database_url`, for the commands without a config file to fall back on.
fn required_url(given: Option<String>) -> Result<String, indexer::error::Error> {
    database_url(given).ok_or_else(|| {
        indexer::error::Error::Config(
            "no database: give --database-url, or set INDEXER_DATABASE_URL or DATABASE_URL".into(),
        )
    })
}

#[derive(Subcommand)]
enum Command {
    /// Snapshot (or resume) and stream changes until SIGINT/SIGTERM.
    Run {
        #[command(flatten)]
        common: Common,
        /// Overrides storage.data_dir.
        #[arg(long, env = "INDEXER_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Overrides http.listen (port 0 picks a free port; see <data_dir>/indexer.addr).
        #[arg(long, env = "INDEXER_LISTEN")]
        listen: Option<SocketAddr>,
    },
    /// Compare a running index with its source tables; exits 1 when they differ.
    Verify {
        #[command(flatten)]
        common: Common,
        /// The indexer's shard endpoint (default: the config's http.listen).
        #[arg(long, env = "INDEXER_URL")]
        indexer_url: Option<String>,
        /// Rounds at most: keys changed while a round read the table are compared in the
        /// next, and a difference is reported when the last round still shows it.
        #[arg(long, default_value_t = 5)]
        attempts: u32,
        /// Root certificate (PEM) an `https` indexer URL's certificate must lead to
        /// (default: the Mozilla roots).
        #[arg(long, env = "INDEXER_SHARD_CA")]
        shard_ca: Option<PathBuf>,
    },
    /// Apply the SQL migrations of a directory, in name order, each once.
    Migrate {
        /// The database (else INDEXER_DATABASE_URL, else DATABASE_URL).
        #[arg(long, env = "INDEXER_DATABASE_URL")]
        database_url: Option<String>,
        #[arg(long, default_value = "migrations")]
        dir: PathBuf,
    },
    /// Load the sample places (data/sample) into an empty table with COPY.
    Seed {
        /// The database (else INDEXER_DATABASE_URL, else DATABASE_URL).
        #[arg(long, env = "INDEXER_DATABASE_URL")]
        database_url: Option<String>,
        #[arg(long, default_value = "data/sample/places.tsv.gz")]
        file: PathBuf,
        #[arg(long, default_value = "places")]
        table: String,
    },
    /// Validate the config file and its match with the database catalog.
    CheckConfig {
        #[command(flatten)]
        common: Common,
    },
}

fn main() -> ExitCode {
    if let Err(e) = logs::init(indexer::LOG_DEFAULT, indexer::progress::LogWriter) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let cli = Cli::parse();
    // Threads named after the process, so profiles and `top -H` tell the two apart.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name("indexer")
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            let e = causes(&e);
            tracing::error!("{e}");
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// The error and its causes in one line, each cause once: our errors print the error they
/// wrap and also name it as their source, which `{:#}` would print again.
fn causes(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let said = cause.to_string();
        if !text.contains(&said) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&said);
        }
    }
    text
}

/// A bind failure that names the address, where it was set, and what to do.
fn bind_error(addr: &str, e: &std::io::Error) -> anyhow::Error {
    let hint = match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            "; another process listens there (an indexer already running?): stop it, or choose another address"
        }
        std::io::ErrorKind::PermissionDenied => "; ports below 1024 need privileges: choose another",
        std::io::ErrorKind::AddrNotAvailable => "; no interface of this machine has that address",
        _ => "",
    };
    anyhow::anyhow!(
        "cannot listen on {addr} (set by http.listen in the config, INDEXER_LISTEN or --listen): {e}{hint}"
    )
}

async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run {
            common,
            data_dir,
            listen,
        } => {
            let overrides = Overrides {
                database_url: database_url(common.database_url),
                data_dir,
                listen,
            };
            let config = Config::load(&common.config, &overrides)?;
            let prometheus =
                metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
            indexer::metrics::describe();
            let listen = config.http.listen;
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .map_err(|e| bind_error(&listen.to_string(), &e))?;
            let (tx, rx) = tokio::sync::watch::channel(false);
            tokio::spawn(async move {
                wait_for_signal().await;
                tracing::info!("shutting down");
                let _ = tx.send(true);
            });
            indexer::run(config, listener, Some(prometheus), rx).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify {
            common,
            indexer_url,
            attempts,
            shard_ca,
        } => {
            let overrides = Overrides {
                database_url: database_url(common.database_url),
                ..Default::default()
            };
            let config = Config::load(&common.config, &overrides)?;
            let indexer_url = indexer_url.unwrap_or_else(|| {
                let scheme = match config.http.tls_cert {
                    Some(_) => "https",
                    None => "http",
                };
                format!("{scheme}://{}", config.http.listen)
            });
            let report =
                indexer::verify::verify(&config, &indexer_url, shard_ca.as_deref(), attempts)
                    .await?;
            println!("verify at {}:", report.lsn);
            for line in &report.lines {
                println!("{line}");
            }
            for d in report.differences.iter().take(50) {
                println!("DIFF {d}");
            }
            if report.unsettled > 0 {
                println!(
                    "{} keys changed in every round and could not be compared (run verify again when writes calm down)",
                    report.unsettled
                );
            }
            if report.equal() {
                println!("equal");
                Ok(ExitCode::SUCCESS)
            } else {
                println!("{} differences", report.differences.len());
                Ok(ExitCode::from(1))
            }
        }
        Command::Migrate { database_url, dir } => {
            let conn = indexer::pg::PgConn::from_url(&required_url(database_url)?)?;
            let mut client = conn.connect().await?;
            let applied = indexer::sample::migrate(&mut client, &dir).await?;
            if applied.is_empty() {
                println!("migrations: up to date");
            }
            for name in applied {
                println!("migrations: applied {name}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Seed {
            database_url,
            file,
            table,
        } => {
            let conn = indexer::pg::PgConn::from_url(&required_url(database_url)?)?;
            let client = conn.connect().await?;
            match indexer::sample::seed(&client, &file, &table).await? {
                0 => println!("seed: {table} already has rows; nothing loaded"),
                n => println!("seed: loaded {n} rows into {table}"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig { common } => {
            let overrides = Overrides {
                database_url: database_url(common.database_url),
                ..Default::default()
            };
            let config = Config::load(&common.config, &overrides)?;
            let conn = indexer::pg::PgConn::from_url(&config.source.database_url)?;
            let client = conn.connect().await?;
            println!(
                "postgres: {} ({})",
                indexer::pg::encryption(&client).await?,
                conn.tls().describe()
            );
            for ix in indexer::catalog::resolve(&client, &config).await? {
                println!(
                    "index {}: {}.{} columns [{}]",
                    ix.name,
                    ix.schema,
                    ix.table,
                    ix.columns.join(", ")
                );
            }
            println!("config ok");
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
