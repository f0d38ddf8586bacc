//! Postgres connections: parsing the database URL once, ordinary clients (tokio-postgres)
//! for catalog, COPY and admin queries, and replication configs for pgwire-replication.

use std::time::Duration;

use tokio_postgres::config::Host;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

use crate::error::{Error, Result};
use crate::status::SlotStatus;
use wire::Lsn;

#[derive(Clone, Debug)]
pub struct PgConn {
    config: tokio_postgres::Config,
    host: String,
    port: u16,
    user: String,
    password: String,
    dbname: String,
}

impl PgConn {
    pub fn from_url(url: &str) -> Result<PgConn> {
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
        Ok(PgConn {
            config,
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

    /// An ordinary connection; its driver task runs on the current runtime.
    pub async fn connect(&self) -> Result<Client> {
        let (client, connection) = self.config.connect(NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "postgres connection ended");
            }
        });
        Ok(client)
    }

    pub fn replication(
        &self,
        slot: &str,
        publication: &str,
    ) -> pgwire_replication::ReplicationConfig {
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

pub async fn current_wal_lsn(client: &Client) -> Result<Lsn> {
    let row = client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await?;
    let text: String = row.get(0);
    text.parse().map_err(|e| Error::Protocol(format!("{e}")))
}
