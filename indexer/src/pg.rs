//! Postgres connections: parsing the database URL once, ordinary clients (tokio-postgres)
//! for catalog, COPY and admin queries, and replication configs for pgwire-replication. Both
//! kinds speak TLS as the URL's `sslmode` (and `sslrootcert`) say, with the same rustls
//! settings (`tls` crate).

use std::path::PathBuf;
use std::time::Duration;

use pgwire_replication::config::{SslMode as ReplSslMode, TlsConfig};
use tokio_postgres::config::{Host, SslMode as PgSslMode};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::{Error, Result};
use crate::status::SlotStatus;
use wire::Lsn;

/// libpq's `sslmode`. The default, as in libpq, is `prefer`: TLS when the server offers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Result<SslMode> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            // libpq's `allow` tries plain first: it is never safer than `prefer`.
            other => {
                return Err(Error::Config(format!(
                    "source.database_url: sslmode={other:?} is not one of disable, prefer, \
                     require, verify-ca, verify-full"
                )))
            }
        })
    }

    fn name(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// The TLS part of the database URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgTls {
    pub mode: SslMode,
    pub root_cert: Option<PathBuf>,
}

impl PgTls {
    /// Names the settings in an error about them.
    pub fn describe(&self) -> String {
        match &self.root_cert {
            Some(p) => format!("sslmode={}, sslrootcert={}", self.mode.name(), p.display()),
            None => format!("sslmode={}", self.mode.name()),
        }
    }
}

#[derive(Clone)]
pub struct PgConn {
    config: tokio_postgres::Config,
    tls: PgTls,
    /// The rustls connector for `tls` (None with `sslmode=disable`).
    connector: Option<MakeRustlsConnect>,
    host: String,
    port: u16,
    user: String,
    password: String,
    dbname: String,
}

impl std::fmt::Debug for PgConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConn")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("dbname", &self.dbname)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

/// Splits `sslmode` and `sslrootcert` off a `postgres://` URL's query: tokio-postgres knows
/// neither `verify-*` nor `sslrootcert`, so they are handled here, for both kinds of
/// connection. The rest of the URL goes to tokio-postgres unchanged.
fn split_tls(url: &str) -> Result<(String, PgTls)> {
    let mut tls = PgTls {
        mode: SslMode::Prefer,
        root_cert: None,
    };
    let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let Some((base, query)) = url.split_once('?').filter(|_| is_url) else {
        if !is_url && (url.contains("sslrootcert") || url.contains("verify-")) {
            return Err(Error::Config(
                "source.database_url: give sslmode and sslrootcert in the URL form \
                 (postgres://user@host/db?sslmode=verify-full&sslrootcert=/path/ca.pem)"
                    .into(),
            ));
        }
        return Ok((url.to_owned(), tls));
    };
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decoded = || {
            percent_encoding::percent_decode_str(value)
                .decode_utf8()
                .map(|v| v.into_owned())
                .map_err(|_| Error::Config(format!("source.database_url: {key} is not UTF-8")))
        };
        match key {
            "sslmode" => tls.mode = SslMode::parse(&decoded()?)?,
            "sslrootcert" => tls.root_cert = Some(PathBuf::from(decoded()?)),
            "sslcert" | "sslkey" | "sslpassword" | "sslcrl" => {
                return Err(Error::Config(format!(
                    "source.database_url: {key} is not supported (client certificates are not \
                     implemented); supported: sslmode, sslrootcert"
                )))
            }
            _ => rest.push(pair),
        }
    }
    // libpq: with a root certificate given, `require` verifies the chain like `verify-ca`.
    if tls.mode == SslMode::Require && tls.root_cert.is_some() {
        tls.mode = SslMode::VerifyCa;
    }
    let url = if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    Ok((url, tls))
}

impl PgConn {
    pub fn from_url(url: &str) -> Result<PgConn> {
        let (url, tls) = split_tls(url)?;
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| Error::Config(format!("source.database_url: {e}")))?;
        let host = match config.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            #[cfg(unix)]
            Some(Host::Unix(p)) => p.to_string_lossy().into_owned(),
            None => "localhost".to_owned(),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let user = config
            .get_user()
            .map(str::to_owned)
            .ok_or_else(|| Error::Config("source.database_url: no user".into()))?;
        let password = config
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap_or_default();
        let dbname = config
            .get_dbname()
            .map(str::to_owned)
            .unwrap_or_else(|| user.clone());
        config.application_name("indexer");
        config.connect_timeout(Duration::from_secs(10));
        config.ssl_mode(match tls.mode {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => PgSslMode::Require,
        });
        let verify = match tls.mode {
            SslMode::Disable => None,
            SslMode::Prefer | SslMode::Require => Some(tls::Verify::Nothing),
            SslMode::VerifyCa => Some(tls::Verify::Chain),
            SslMode::VerifyFull => Some(tls::Verify::Full),
        };
        let connector = match verify {
            None => None,
            Some(v) => {
                let client = tls::client_config(v, tls.root_cert.as_deref()).map_err(|e| {
                    Error::Config(format!("source.database_url ({}): {e}", tls.describe()))
                })?;
                Some(MakeRustlsConnect::new(client))
            }
        };
        Ok(PgConn {
            config,
            tls,
            connector,
            host,
            port,
            user,
            password,
            dbname,
        })
    }

    pub fn dbname(&self) -> &str {
        &self.dbname
    }

    pub fn tls(&self) -> &PgTls {
        &self.tls
    }

    /// An ordinary connection; its driver task runs on the current runtime.
    pub async fn connect(&self) -> Result<Client> {
        match &self.connector {
            None => {
                let (client, connection) = self.config.connect(NoTls).await?;
                tokio::spawn(drive(connection));
                Ok(client)
            }
            Some(tls) => {
                let (client, connection) = self
                    .config
                    .connect(tls.clone())
                    .await
                    .map_err(|e| self.tls_error(Error::from(e)))?;
                tokio::spawn(drive(connection));
                Ok(client)
            }
        }
    }

    /// A TLS failure named with the settings that caused it; other errors unchanged.
    pub fn tls_error(&self, e: Error) -> Error {
        match e {
            Error::Tls(detail) => Error::Tls(format!(
                "{detail} (connecting to {}:{} with {}; see source.database_url)",
                self.host,
                self.port,
                self.tls.describe()
            )),
            other => other,
        }
    }

    pub fn replication(
        &self,
        slot: &str,
        publication: &str,
    ) -> pgwire_replication::ReplicationConfig {
        let mode = match self.tls.mode {
            SslMode::Disable => ReplSslMode::Disable,
            SslMode::Prefer => ReplSslMode::Prefer,
            SslMode::Require => ReplSslMode::Require,
            SslMode::VerifyCa => ReplSslMode::VerifyCa,
            SslMode::VerifyFull => ReplSslMode::VerifyFull,
        };
        pgwire_replication::ReplicationConfig::new(
            self.host.clone(),
            self.user.clone(),
            self.password.clone(),
            self.dbname.clone(),
            slot,
            publication,
        )
        .with_port(self.port)
        .with_application_name("indexer")
        .with_tls(TlsConfig {
            mode,
            ca_pem_path: self.tls.root_cert.clone(),
            ..TlsConfig::default()
        })
    }
}

async fn drive<S, T>(connection: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if let Err(e) = connection.await {
        tracing::debug!(error = %e, "postgres connection ended");
    }
}

/// The slot's row in `pg_replication_slots`, if it exists.
pub async fn slot_status(client: &Client, slot: &str) -> Result<Option<SlotStatus>> {
    let row = client
        .query_opt(
            "SELECT wal_status, safe_wal_size, confirmed_flush_lsn::text, restart_lsn::text, active \
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await?;
    Ok(row.map(|r| SlotStatus {
        wal_status: r.get(0),
        safe_wal_size: r.get(1),
        confirmed_flush_lsn: r.get(2),
        restart_lsn: r.get(3),
        active: r.get(4),
    }))
}

/// The server's WAL position: what it has written (on a standby, what it has received).
pub async fn wal_end(client: &Client) -> Result<Lsn> {
    let text: Option<String> = client
        .query_one(
            "SELECT (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() \
             ELSE pg_current_wal_lsn() END)::text",
            &[],
        )
        .await?
        .get(0);
    Ok(text.and_then(|t| t.parse().ok()).unwrap_or(Lsn::ZERO))
}

/// Drops the slot, waiting (bounded) for a walsender of a previous process to let go of it.
pub async fn drop_slot(client: &Client, slot: &str) -> Result<()> {
    for attempt in 0..50 {
        match client
            .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
            .await
        {
            Ok(_) => return Ok(()),
            // Gone already: a slot whose creation a killed process left unfinished is
            // ephemeral, and Postgres drops it itself once that walsender exits (seen when a
            // kill -9 lands during CREATE_REPLICATION_SLOT: the wait below outlived it).
            Err(e) if e.code() == Some(&SqlState::UNDEFINED_OBJECT) => return Ok(()),
            // "replication slot … is active for PID …": a previous walsender still holds it.
            Err(e) if attempt < 49 && e.code() == Some(&SqlState::OBJECT_IN_USE) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// How this connection is protected, as the server sees it: "TLSv1.3 (TLS_AES_256_GCM_SHA384)"
/// or "not encrypted".
pub async fn encryption(client: &Client) -> Result<String> {
    let row = client
        .query_one(
            "SELECT ssl, version, cipher FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await?;
    Ok(match row.get::<_, bool>(0) {
        true => format!(
            "{} ({})",
            row.get::<_, Option<String>>(1).unwrap_or_default(),
            row.get::<_, Option<String>>(2).unwrap_or_default()
        ),
        false => "not encrypted".to_owned(),
    })
}

pub async fn current_wal_lsn(client: &Client) -> Result<Lsn> {
    let row = client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await?;
    let text: String = row.get(0);
    text.parse().map_err(|e| Error::Protocol(format!("{e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_settings_are_taken_from_the_url_and_the_rest_is_kept() {
        let (url, tls) = split_tls(
            "postgres://u:p@db.test:6432/app?sslmode=verify-full&application_name=x&sslrootcert=%2Fetc%2Fca.pem",
        )
        .unwrap();
        assert_eq!(url, "postgres://u:p@db.test:6432/app?application_name=x");
        assert_eq!(tls.mode, SslMode::VerifyFull);
        assert_eq!(tls.root_cert, Some(PathBuf::from("/etc/ca.pem")));

        let (url, tls) = split_tls("postgres://u@h/app").unwrap();
        assert_eq!(
            (url.as_str(), tls.mode),
            ("postgres://u@h/app", SslMode::Prefer)
        );
        // libpq: require with a root certificate verifies the chain.
        let (_, tls) = split_tls("postgres://u@h/app?sslmode=require&sslrootcert=/ca.pem").unwrap();
        assert_eq!(tls.mode, SslMode::VerifyCa);

        let e = split_tls("postgres://u@h/app?sslmode=allowed")
            .unwrap_err()
            .to_string();
        assert!(e.contains("sslmode") && e.contains("verify-full"), "{e}");
        let e = split_tls("postgres://u@h/app?sslcert=/c.pem")
            .unwrap_err()
            .to_string();
        assert!(e.contains("sslcert is not supported"), "{e}");
        let e = split_tls("host=h sslmode=verify-full")
            .unwrap_err()
            .to_string();
        assert!(e.contains("URL form"), "{e}");
    }

    #[test]
    fn a_missing_root_certificate_is_a_config_error_naming_it() {
        let e = PgConn::from_url(
            "postgres://u@h/app?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("/nonexistent/ca.pem") && e.contains("sslmode=verify-full"),
            "{e}"
        );
    }
}
