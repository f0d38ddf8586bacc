//! Serving an axum router over HTTP/1.1 on a TCP listener with the connection hygiene an
//! endpoint others can reach needs, for both processes (query-api's public port and the
//! indexer's shard endpoint). `axum::serve` has none of it: no header timeout, no cap.
//!
//! - A client has [`Limits::header_timeout`] to send a request's head, counted from when the
//!   server starts waiting for it: on a new connection, or on a kept-alive one after the
//!   previous answer. A half-open connection (slowloris) and an idle one are closed then.
//! - At most [`Limits::max_connections`] at once, kept under half the process's file limit
//!   (whose soft value is raised to the hard one first); over the cap, accepting waits.
//! - At most [`Limits::max_per_address`] from one client address: a connection over it is
//!   closed at once, so one client cannot take the others' share of the cap.
//! - With TLS ([`serve`]'s `tls`), the handshake must also finish within the header timeout;
//!   a client that fails it is closed and logged at debug level.
//! - On shutdown accepting stops; open connections finish the request in hand (graceful) for at
//!   most [`DRAIN`], then the rest are dropped.
//!
//! Request bodies and handlers are bounded by the router's own layers (body limit, timeout);
//! a connection upgraded to another protocol (the shard link) leaves HTTP and these limits.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tower::Service;

pub use tokio_rustls::rustls::ServerConfig as TlsServerConfig;

/// How long open connections may take to finish after shutdown is asked.
pub const DRAIN: Duration = Duration::from_secs(10);

/// Gauge: connections open now.
pub const CONNECTIONS_OPEN: &str = "http_connections_open";
/// Counter: connections closed at accept because their address was at its cap.
pub const CONNECTIONS_REFUSED: &str = "http_connections_refused_total";

/// The connection limits (see the module's documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub header_timeout: Duration,
    pub max_connections: usize,
    pub max_per_address: usize,
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains (see [`DRAIN`]). Handlers
/// see the client's address as `ConnectInfo<SocketAddr>`; sockets are set `TCP_NODELAY`
/// (answers are written whole). With `tls`, every connection speaks HTTPS.
pub async fn serve<F>(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    tls: Option<Arc<TlsServerConfig>>,
    shutdown: F,
) where
    F: Future<Output = ()> + Send,
{
    let cap = limits.max_connections.min(fd_budget()).max(1);
    if cap < limits.max_connections {
        tracing::warn!(
            configured = limits.max_connections,
            cap,
            "connection cap lowered to half the open-file limit"
        );
    }
    let open = Arc::new(Semaphore::new(cap));
    let addresses = Arc::new(Mutex::new(HashMap::new()));
    let (stop, stopping) = watch::channel(false);
    let tls = tls.map(TlsAcceptor::from);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = open.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors (or a connection reset before accept): the
                    // connections already open go on; try again shortly.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(share) = AddressShare::take(&addresses, peer.ip(), limits.max_per_address) else {
            metrics::counter!(CONNECTIONS_REFUSED).increment(1);
            tracing::debug!(%peer, "connection refused: its address is at its cap");
            continue;
        };
        let conn = Connection {
            peer,
            app: app.clone(),
            header_timeout: limits.header_timeout,
            stopping: stopping.clone(),
            held: (permit, share),
        };
        tokio::spawn(conn.run(tcp, tls.clone()));
    }
    drop(listener);
    let _ = stop.send(true);
    let all = u32::try_from(cap).unwrap_or(u32::MAX);
    if tokio::time::timeout(DRAIN, open.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            open = cap - open.available_permits(),
            "connections still open after the drain; dropping them"
        );
    }
}

/// One connection, until it ends or the drain after shutdown does. `held` is released with it.
struct Connection {
    peer: SocketAddr,
    app: Router,
    header_timeout: Duration,
    stopping: watch::Receiver<bool>,
    held: (OwnedSemaphorePermit, AddressShare),
}

impl Connection {
    async fn run(self, tcp: TcpStream, tls: Option<TlsAcceptor>) {
        let _ = tcp.set_nodelay(true);
        match tls {
            None => self.http(tcp).await,
            Some(acceptor) => {
                match tokio::time::timeout(self.header_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => self.http(stream).await,
                    Ok(Err(e)) => {
                        tracing::debug!(peer = %self.peer, error = %e, "TLS handshake failed");
                    }
                    Err(_) => {
                        tracing::debug!(peer = %self.peer, "TLS handshake timed out");
                    }
                }
            }
        }
    }

    async fn http<I>(self, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Connection {
            peer,
            app,
            header_timeout,
            mut stopping,
            held: _held,
        } = self;
        metrics::gauge!(CONNECTIONS_OPEN).increment(1.0);
        let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            let mut app = app.clone();
            async move { app.call(req.map(axum::body::Body::new)).await }
        });
        let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout);
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
        let mut conn = std::pin::pin!(conn);
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            }
            _ = async { let _ = stopping.wait_for(|s| *s).await; } => {
                conn.as_mut().graceful_shutdown();
                let _ = conn.as_mut().await;
            }
        }
        metrics::gauge!(CONNECTIONS_OPEN).decrement(1.0);
    }
}

/// One connection's share of its address's cap, returned when dropped.
struct AddressShare {
    addresses: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl AddressShare {
    fn take(
        addresses: &Arc<Mutex<HashMap<IpAddr, usize>>>,
        ip: IpAddr,
        max: usize,
    ) -> Option<AddressShare> {
        let mut map = addresses.lock().unwrap();
        let n = map.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(AddressShare {
            addresses: addresses.clone(),
            ip,
        })
    }
}

impl Drop for AddressShare {
    fn drop(&mut self) {
        let mut map = self.addresses.lock().unwrap();
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Connections the process can afford: half its open-file limit, after raising the soft
/// limit to the hard one (index files, Postgres and the rest keep the other half).
fn fd_budget() -> usize {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => usize::try_from(n / 2).unwrap_or(usize::MAX),
        Err(e) => {
            tracing::warn!(error = %e, "could not read the open-file limit");
            usize::MAX
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    const LIMITS: Limits = Limits {
        header_timeout: Duration::from_millis(300),
        max_connections: 64,
        max_per_address: 4,
    };

    async fn start(limits: Limits) -> (SocketAddr, watch::Sender<bool>) {
        start_tls(limits, None).await
    }

    async fn start_tls(
        limits: Limits,
        tls: Option<Arc<TlsServerConfig>>,
    ) -> (SocketAddr, watch::Sender<bool>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route(
            "/",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.ip().to_string() }),
        );
        let (tx, mut rx) = watch::channel(false);
        tokio::spawn(serve(listener, app, limits, tls, async move {
            let _ = rx.wait_for(|s| *s).await;
        }));
        (addr, tx)
    }

    /// Sends `GET /` on `s` and reads the answer's body (the client's address).
    async fn get_root(s: &mut TcpStream) -> String {
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0; 4096];
        let n = s.read(&mut buf).await.unwrap();
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        text.rsplit("\r\n").next().unwrap().to_owned()
    }

    /// Reads until the server closes `s`; how long that took.
    async fn closed_after(s: &mut TcpStream) -> Duration {
        let t = Instant::now();
        let mut buf = vec![0; 4096];
        loop {
            match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return t.elapsed(),
                Ok(Ok(_)) => {}
                Err(_) => panic!("the connection stayed open 5 s"),
            }
        }
    }

    #[tokio::test]
    async fn a_half_open_or_idle_connection_is_closed_after_the_header_timeout() {
        let (addr, _stop) = start(LIMITS).await;
        // Half a request head, then nothing (slowloris).
        let mut half = TcpStream::connect(addr).await.unwrap();
        half.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        // A whole request, then the connection kept alive and idle.
        let mut idle = TcpStream::connect(addr).await.unwrap();
        assert_eq!(get_root(&mut idle).await, "127.0.0.1");
        let (h, i) = tokio::join!(closed_after(&mut half), closed_after(&mut idle));
        for d in [h, i] {
            assert!(d < Duration::from_secs(2), "{d:?}");
        }
        // Trickling the head a byte at a time does not extend it.
        let mut slow = TcpStream::connect(addr).await.unwrap();
        let t = Instant::now();
        for b in b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaa" {
            if slow.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        let rest = closed_after(&mut slow).await;
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        assert!(rest < Duration::from_secs(1), "{rest:?}");
    }

    #[tokio::test]
    async fn one_address_gets_at_most_its_share_and_others_are_served() {
        let (addr, _stop) = start(LIMITS).await;
        let mut held = Vec::new();
        for _ in 0..LIMITS.max_per_address {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
            held.push(s);
        }
        // The next one from the same address is closed at once, without an answer.
        let mut over = TcpStream::connect(addr).await.unwrap();
        let _ = over.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(closed_after(&mut over).await < Duration::from_millis(250));
        // Another address (any 127/8 address is this machine's) is served meanwhile.
        let other = tokio::net::TcpSocket::new_v4().unwrap();
        other.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let mut other = other.connect(addr).await.unwrap();
        assert_eq!(get_root(&mut other).await, "127.0.0.2");
        // Once the held ones time out, the first address is served again.
        drop(held);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut again = TcpStream::connect(addr).await.unwrap();
        assert_eq!(get_root(&mut again).await, "127.0.0.1");
    }

    #[tokio::test]
    async fn over_tls_a_handshake_is_served_and_a_silent_client_is_closed_in_time() {
        let ca = tls::test_certs::TestCa::new("test CA");
        let issued = ca.issue(&["localhost"]);
        let dir = std::env::temp_dir().join(format!("serve-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let (cert, key, root) = (
            file("cert.pem", &issued.cert_pem),
            file("key.pem", &issued.key_pem),
            file("ca.pem", &ca.pem()),
        );
        let server = Arc::new(tls::server_config(&cert, &key).unwrap());
        let client = tls::client_config(tls::Verify::Full, Some(&root)).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let (addr, _stop) = start_tls(LIMITS, Some(server)).await;

        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut s = connector.connect(name, tcp).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0; 4096];
        let n = s.read(&mut buf).await.unwrap();
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(
            text.starts_with("HTTP/1.1 200") && text.ends_with("127.0.0.1"),
            "{text}"
        );

        // A client that opens TCP and never starts the handshake is closed after the timeout.
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let d = closed_after(&mut silent).await;
        assert!(
            d >= Duration::from_millis(250) && d < Duration::from_secs(2),
            "{d:?}"
        );
        // Plain HTTP on the TLS port gets no HTTP answer.
        let mut plain = TcpStream::connect(addr).await.unwrap();
        plain
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0; 4096];
        let n = plain.read(&mut buf).await.unwrap_or(0);
        assert!(!String::from_utf8_lossy(&buf[..n]).contains("200"));
    }

    #[tokio::test]
    async fn shutdown_stops_accepting_and_ends_idle_connections() {
        let limits = Limits {
            header_timeout: Duration::from_secs(30),
            ..LIMITS
        };
        let (addr, stop) = start(limits).await;
        let mut idle = TcpStream::connect(addr).await.unwrap();
        assert_eq!(get_root(&mut idle).await, "127.0.0.1");
        stop.send(true).unwrap();
        assert!(closed_after(&mut idle).await < Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(TcpStream::connect(addr).await.is_err());
    }
}
