//! Test harness for end-to-end tests: a throwaway Postgres cluster started from the machine's
//! binaries (as the unprivileged `postgres` user when running as root), a fresh database per
//! test, and the real `indexer` binary run as a child process that tests can kill -9.
//! Everything waits on conditions with deadlines; nothing sleeps a fixed time to "let it work".
//!
//! Long (~850 lines): the one harness every test and the demo share (Postgres server, the two
//! services as child processes, waits), kept in one place so no test copies it.

pub mod browser;
pub mod compose;
pub mod dev_data;
pub mod fixture;
pub mod soak;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;
use tokio_postgres::{Client, NoTls};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Where the child processes' logs go when set (the demo's `--log-dir`): `<dir>/<name>.log`.
static LOG_DIR: OnceLock<PathBuf> = OnceLock::new();

/// Sends every later child's log to `dir` as `indexer.log` and `query-api.log`.
pub fn log_to(dir: &Path) {
    let _ = LOG_DIR.set(dir.to_owned());
}

/// `default`, or `<name>.log` in the directory `log_to` set.
fn log_path(default: PathBuf, name: &str) -> PathBuf {
    LOG_DIR
        .get()
        .map_or(default, |d| d.join(format!("{name}.log")))
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// The directory holding `initdb` and `pg_ctl`: `$PG_BIN`, else the newest
/// /usr/lib/postgresql/*/bin, else whatever is on PATH.
pub fn pg_bin_dir() -> Result<PathBuf> {
    if let Ok(dir) = std::env::var("PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_string_lossy().parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("pg_ctl").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    let out = Command::new("sh")
        .args(["-c", "command -v pg_ctl"])
        .output()?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if path.is_empty() {
        bail!("PostgreSQL server binaries not found: install them (Debian: apt-get install postgresql) or set PG_BIN");
    }
    Ok(PathBuf::from(path).parent().unwrap().to_owned())
}

/// A throwaway Postgres cluster with `wal_level=logical`, on a free port of 127.0.0.1.
pub struct PgServer {
    pub dir: PathBuf,
    pub port: u16,
    bin: PathBuf,
    as_postgres: bool,
    owned: bool,
}

impl PgServer {
    /// Starts a cluster that this value owns: stopped and removed on drop.
    pub fn start() -> Result<PgServer> {
        let mut s = Self::start_inner()?;
        s.owned = true;
        Ok(s)
    }

    /// A cluster of its own that a watchdog stops when the test process exits.
    pub fn start_with_watchdog() -> Result<PgServer> {
        let s = Self::start_inner()?;
        s.spawn_watchdog();
        Ok(s)
    }

    /// One cluster shared by the tests of this process (each test takes a fresh database).
    /// A watchdog stops it and removes its files when the test process exits.
    pub fn shared() -> &'static PgServer {
        static SHARED: OnceLock<PgServer> = OnceLock::new();
        SHARED.get_or_init(|| {
            let s = Self::start_inner().expect("start shared postgres");
            s.spawn_watchdog();
            s
        })
    }

    fn start_inner() -> Result<PgServer> {
        let bin = pg_bin_dir()?;
        let as_postgres = running_as_root();
        let dir = std::env::temp_dir().join(unique("e2e-pg"));
        std::fs::create_dir_all(&dir)?;
        if as_postgres {
            run(Command::new("chown").args(["postgres:postgres", dir.to_str().unwrap()])).context(
                "chown the cluster directory to postgres (does the postgres user exist?)",
            )?;
        }
        let data = dir.join("data");
        let server = PgServer {
            dir,
            port: 0,
            bin,
            as_postgres,
            owned: false,
        };
        server.pg_cmd(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        )?;
        let mut last_err = None;
        for _ in 0..5 {
            let port = free_port()?;
            let conf = format!(
                "\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = ''\n\
                 wal_level = logical\nmax_replication_slots = 64\nmax_wal_senders = 64\n\
                 max_connections = 300\nshared_buffers = 128MB\nfsync = off\nsynchronous_commit = on\n\
                 full_page_writes = off\nwal_sender_timeout = 60s\nlog_min_messages = warning\n"
            );
            let conf_path = data.join("postgresql.auto.conf");
            std::fs::write(&conf_path, conf)?;
            if server.as_postgres {
                run(Command::new("chown").args(["postgres:postgres", conf_path.to_str().unwrap()]))?;
            }
            let mut s = server.clone_paths();
            s.port = port;
            match s.pg_ctl_start() {
                Ok(()) => {
                    s.owned = false;
                    return Ok(s);
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap())
    }

    fn clone_paths(&self) -> PgServer {
        PgServer {
            dir: self.dir.clone(),
            port: self.port,
            bin: self.bin.clone(),
            as_postgres: self.as_postgres,
            owned: false,
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn command(&self, tool: &str, args: &[&str]) -> Command {
        let exe = self.bin.join(tool);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe).args(args);
            c
        } else {
            let mut c = Command::new(exe);
            c.args(args);
            c
        }
    }

    fn pg_cmd(&self, tool: &str, args: &[&str]) -> Result<()> {
        run(&mut self.command(tool, args))
    }

    fn pg_ctl_start(&self) -> Result<()> {
        let log = self.dir.join("server.log");
        self.pg_cmd(
            "pg_ctl",
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-t",
                "60",
                "start",
            ],
        )
        .with_context(|| {
            format!(
                "pg_ctl start; server log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        })
    }

    /// Stops the server (fast shutdown) and starts it again on the same port.
    pub fn restart(&self) -> Result<()> {
        self.stop()?;
        self.start_again()
    }

    /// Stops the server (fast shutdown); `start_again` brings it back on the same port.
    pub fn stop(&self) -> Result<()> {
        self.pg_cmd(
            "pg_ctl",
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        )
    }

    /// Starts a server stopped by `stop`.
    pub fn start_again(&self) -> Result<()> {
        self.pg_ctl_start()
    }

    fn spawn_watchdog(&self) {
        let pg_ctl = self.bin.join("pg_ctl");
        let stop = format!(
            "{} -D {} -m immediate stop",
            pg_ctl.display(),
            self.data().display()
        );
        let stop = if self.as_postgres {
            format!("runuser -u postgres -- {stop}")
        } else {
            stop
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {stop} >/dev/null 2>&1; rm -rf {dir}",
            pid = std::process::id(),
            dir = self.dir.display()
        );
        let _ = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    pub async fn connect(&self, db: &str) -> Result<Client> {
        let (client, conn) = tokio_postgres::connect(&self.url(db), NoTls).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    /// Turns TLS on with this certificate and key (PEM), and lets every role but `postgres`
    /// (the harness's own, still plain) connect only over TLS; restarts the server.
    pub fn enable_tls(&self, cert_pem: &str, key_pem: &str) -> Result<()> {
        let data = self.data();
        let write = |name: &str, text: &str, mode: &str| -> Result<()> {
            let path = data.join(name);
            std::fs::write(&path, text)?;
            run(Command::new("chmod").args([mode, path.to_str().unwrap()]))?;
            if self.as_postgres {
                run(Command::new("chown").args(["postgres:postgres", path.to_str().unwrap()]))?;
            }
            Ok(())
        };
        write("server.crt", cert_pem, "644")?;
        write("server.key", key_pem, "600")?;
        let conf = std::fs::read_to_string(data.join("postgresql.auto.conf"))?;
        write(
            "postgresql.auto.conf",
            &format!("{conf}ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n"),
            "600",
        )?;
        write(
            "pg_hba.conf",
            "host    all          postgres  127.0.0.1/32  trust\n\
             host    replication  postgres  127.0.0.1/32  trust\n\
             hostssl all          all       127.0.0.1/32  trust\n\
             hostssl replication  all       127.0.0.1/32  trust\n",
            "600",
        )?;
        self.restart()
    }

    /// A new, empty database; returns its name.
    pub async fn fresh_db(&self) -> Result<String> {
        let name = unique("t");
        let admin = self.connect("postgres").await?;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await?;
        Ok(name)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if self.owned {
            let _ = self.pg_cmd(
                "pg_ctl",
                &[
                    "-D",
                    self.data().to_str().unwrap(),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                ],
            );
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("spawn {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The `key` of each hit of a search answer, in order.
pub fn hit_keys(v: &serde_json::Value) -> Vec<String> {
    v["hits"]
        .as_array()
        .map(|h| {
            h.iter()
                .map(|x| x["key"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A memory field of `/proc/PID/status` (`VmRSS:`, `RssAnon:`, `VmHWM:` ...), in MB.
pub fn status_mb(pid: u32, field: &str) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .with_context(|| format!("no {field}"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kb / 1024.0)
}

/// Forgets a process's peak resident memory (`VmHWM` restarts from its current `VmRSS`).
pub fn reset_peak_rss(pid: u32) -> Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")?;
    Ok(())
}

/// The size of the files under `dir`, in MB.
pub fn dir_mb(dir: &Path) -> f64 {
    fn walk(dir: &Path) -> u64 {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| match e.metadata() {
                Ok(m) if m.is_dir() => walk(&e.path()),
                Ok(m) => m.len(),
                Err(_) => 0,
            })
            .sum()
    }
    walk(dir) as f64 / 1e6
}

pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Polls `check` until it returns `Some`, failing after `timeout` with `what` in the message.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last_err = None;
    loop {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what} (last error: {last_err:?})");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The `indexer` binary built by this workspace (`$INDEXER_BIN` overrides).
pub fn indexer_bin() -> PathBuf {
    workspace_bin("indexer", "INDEXER_BIN")
}

/// The `query-api` binary built by this workspace (`$QUERY_API_BIN` overrides).
pub fn query_api_bin() -> PathBuf {
    workspace_bin("query-api", "QUERY_API_BIN")
}

fn workspace_bin(name: &str, env: &str) -> PathBuf {
    if let Ok(p) = std::env::var(env) {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/e2e-<hash> (tests) or target/<profile>/demo → target/<profile>/<name>
    let exe = std::env::current_exe().expect("current exe");
    let mut profile_dir = exe.parent().expect("exe dir");
    if profile_dir.ends_with("deps") {
        profile_dir = profile_dir.parent().expect("target dir");
    }
    let bin = profile_dir.join(name);
    assert!(
        bin.exists(),
        "{} not found: build it first (cargo build -p indexer -p query-api), or run ./scripts/test",
        bin.display()
    );
    bin
}

/// The real query-api as a child process.
pub struct QueryApi {
    child: Option<Child>,
    pub log: PathBuf,
    pub url: String,
}

impl QueryApi {
    /// Starts `query-api` on a free port and waits until it answers `/healthz`.
    pub async fn start(config: &Path, dir: &Path) -> Result<QueryApi> {
        Self::start_with_env(config, dir, &[]).await
    }

    /// `start` with environment variables (e.g. `QUERY_API_SHARDS`).
    pub async fn start_with_env(
        config: &Path,
        dir: &Path,
        env: &[(&str, String)],
    ) -> Result<QueryApi> {
        let addr_file = dir.join("query-api.addr");
        let _ = std::fs::remove_file(&addr_file);
        let log = log_path(
            dir.join(format!(
                "query-api.log{}",
                COUNTER.fetch_add(1, Ordering::Relaxed)
            )),
            "query-api",
        );
        let args = [
            "--config",
            config.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--addr-file",
            addr_file.to_str().unwrap(),
        ];
        let child = spawn_logged(&query_api_bin(), &args, env, &log)?;
        let mut api = QueryApi {
            child: Some(child),
            log,
            url: String::new(),
        };
        let child = api.child.as_mut().expect("just spawned");
        let addr = wait_addr_file("query-api", child, &api.log, &addr_file, 30).await?;
        api.url = service_url(&addr, env, "QUERY_API_TLS_CERT");
        Ok(api)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for QueryApi {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts `bin` with `args` and `env`, its output in the file `log`; without `RUST_LOG`, so
/// it logs as it does by default.
fn spawn_logged(bin: &Path, args: &[&str], env: &[(&str, String)], log: &Path) -> Result<Child> {
    let log_file = std::fs::File::create(log)?;
    Ok(Command::new(bin)
        .args(args)
        .env_remove("RUST_LOG")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .spawn()?)
}

/// Waits until a service writes its listening address to `addr_file` (up to `seconds`);
/// fails at once with its log if it exits first.
async fn wait_addr_file(
    what: &str,
    child: &mut Child,
    log: &Path,
    addr_file: &Path,
    seconds: u64,
) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        if let Some(status) = child.try_wait()? {
            bail!(
                "{what} exited with {status}: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        if let Ok(addr) = std::fs::read_to_string(addr_file) {
            return Ok(addr);
        }
        if Instant::now() > deadline {
            bail!("{what} wrote no address file within {seconds} s");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The URL of a service listening on `addr`: `https://localhost:<port>` when `env` gives it a
/// certificate in `cert_var` (tests issue it for `localhost`), else `http://<addr>`.
fn service_url(addr: &str, env: &[(&str, String)], cert_var: &str) -> String {
    match env.iter().any(|(k, _)| *k == cert_var) {
        true => format!(
            "https://localhost:{}",
            addr.rsplit(':').next().unwrap_or("")
        ),
        false => format!("http://{addr}"),
    }
}

/// The real indexer as a child process.
pub struct Indexer {
    child: Option<Child>,
    pub config: PathBuf,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    pub url: String,
    http: reqwest::Client,
}

impl Indexer {
    /// Starts `indexer run` and waits until its endpoint answers.
    pub async fn start(config: &Path, data_dir: &Path) -> Result<Indexer> {
        Self::start_on(config, data_dir, "127.0.0.1:0").await
    }

    /// `start`, listening on a given address (to restart on the same port).
    pub async fn start_on(config: &Path, data_dir: &Path, listen: &str) -> Result<Indexer> {
        Self::start_with_env(config, data_dir, listen, &[]).await
    }

    /// `start_on` with environment variables (e.g. `INDEXER_DATABASE_URL`, `INDEXER_DATA_DIR`
    /// overriding the config file, as the demo and docker-compose run it).
    pub async fn start_with_env(
        config: &Path,
        data_dir: &Path,
        listen: &str,
        env: &[(&str, String)],
    ) -> Result<Indexer> {
        let mut ix = Self::spawn_with_env(config, data_dir, listen, env)?;
        let addr_file = data_dir.join(indexer::ADDR_FILE);
        let child = ix.child.as_mut().expect("just spawned");
        let addr = wait_addr_file("indexer", child, &ix.log, &addr_file, 60).await?;
        ix.url = service_url(&addr, env, "INDEXER_TLS_CERT");
        Ok(ix)
    }

    /// Starts `indexer run` without waiting for anything.
    pub fn spawn(config: &Path, data_dir: &Path) -> Result<Indexer> {
        Self::spawn_on(config, data_dir, "127.0.0.1:0")
    }

    /// `spawn`, listening on a given address.
    pub fn spawn_on(config: &Path, data_dir: &Path, listen: &str) -> Result<Indexer> {
        Self::spawn_with_env(config, data_dir, listen, &[])
    }

    fn spawn_with_env(
        config: &Path,
        data_dir: &Path,
        listen: &str,
        env: &[(&str, String)],
    ) -> Result<Indexer> {
        let addr_file = data_dir.join(indexer::ADDR_FILE);
        let _ = std::fs::remove_file(&addr_file);
        std::fs::create_dir_all(data_dir)?;
        let log = log_path(
            data_dir.with_extension(format!("log{}", COUNTER.fetch_add(1, Ordering::Relaxed))),
            "indexer",
        );
        let args = [
            "run",
            "--config",
            config.to_str().unwrap(),
            "--listen",
            listen,
        ];
        let child = spawn_logged(&indexer_bin(), &args, env, &log)?;
        // With a shard secret, the harness's own calls present it too.
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some((_, secret)) = env.iter().find(|(k, _)| *k == "INDEXER_SHARD_SECRET") {
            headers.insert(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {secret}").try_into()?,
            );
        }
        let mut http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .default_headers(headers);
        // Over TLS, the harness trusts the root that `verify` would (INDEXER_SHARD_CA).
        if let Some((_, ca)) = env.iter().find(|(k, _)| *k == "INDEXER_SHARD_CA") {
            http = http.tls_backend_preconfigured(tls::client_config(
                tls::Verify::Full,
                Some(Path::new(ca)),
            )?);
        }
        Ok(Indexer {
            child: Some(child),
            config: config.to_owned(),
            data_dir: data_dir.to_owned(),
            log,
            url: String::new(),
            http: http.build()?,
        })
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn status(&self) -> Result<Value> {
        Ok(self
            .http
            .get(format!("{}/status", self.url))
            .send()
            .await?
            .json()
            .await?)
    }

    /// `POST /internal/search` on the shard endpoint: the status and the JSON answer.
    pub async fn search(&self, body: &Value) -> Result<(reqwest::StatusCode, Value)> {
        let resp = self
            .http
            .post(format!("{}/internal/search", self.url))
            .json(body)
            .send()
            .await?;
        let status = resp.status();
        Ok((status, resp.json().await?))
    }

    /// `search`, which must succeed.
    pub async fn search_ok(&self, body: &Value) -> Result<Value> {
        let (status, v) = self.search(body).await?;
        ensure!(status.is_success(), "{status}: {v}");
        Ok(v)
    }

    /// Waits until the snapshot is done (or resumed) and the stream is live.
    pub async fn wait_ready(&mut self) -> Result<Value> {
        let timeout = Duration::from_secs(120);
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                bail!("indexer exited with {status}: {}", self.log_text());
            }
            if let Ok(s) = self.status().await {
                let snap = s["snapshot"]["state"].as_str().unwrap_or("");
                if (snap == "done" || snap == "resumed") && s["stream"] == "streaming" {
                    return Ok(s);
                }
            }
            if Instant::now() > deadline {
                bail!("indexer not ready after {timeout:?}: {}", self.log_text());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until the indexer has applied `lsn` (long-polls its wait endpoint).
    pub async fn wait_applied(&self, lsn: &str) -> Result<()> {
        let resp = self
            .http
            .get(format!(
                "{}/internal/wait?lsn={lsn}&timeout_ms=30000",
                self.url
            ))
            .send()
            .await?;
        let ok = resp.status().is_success();
        let body: Value = resp.json().await?;
        if !ok {
            bail!("indexer did not apply {lsn}: {body}");
        }
        Ok(())
    }

    /// Waits until the indexer has applied `lsn`, for as long as `timeout` (one long-poll
    /// lasts 30 s; a transaction of millions of rows takes longer to arrive and apply).
    pub async fn wait_applied_within(&self, lsn: &str, timeout: Duration) -> Result<()> {
        let started = Instant::now();
        loop {
            match self.wait_applied(lsn).await {
                Ok(()) => return Ok(()),
                Err(e) if started.elapsed() >= timeout => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // SIGKILL
            let _ = c.wait();
        }
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGSTOP: the process stays, its connections open, and does nothing until `resume`.
    pub fn pause(&self) -> Result<()> {
        let pid = self.pid().context("not running")?;
        run(Command::new("kill").args(["-STOP", &pid.to_string()]))
    }

    /// SIGCONT after `pause`.
    pub fn resume(&self) -> Result<()> {
        let pid = self.pid().context("not running")?;
        run(Command::new("kill").args(["-CONT", &pid.to_string()]))
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn stop(&mut self) -> Result<std::process::ExitStatus> {
        let mut c = self.child.take().context("not running")?;
        run(Command::new("kill").args(["-TERM", &c.id().to_string()]))?;
        Ok(c.wait()?)
    }

    /// Waits for the process to exit by itself (e.g. after a fatal error).
    pub async fn wait_exit(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.exited() {
                self.child = None;
                return Ok(s);
            }
            if Instant::now() > deadline {
                bail!("indexer still running after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for Indexer {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Current WAL position of the server, as text.
pub async fn current_lsn(client: &Client) -> Result<String> {
    Ok(client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await?
        .get(0))
}
