//! query-api's side of the shard link (`wire::link`): one long-lived connection per shard
//! carries every search and document call, many in flight at once, each answer matched to its
//! call by id. Calls queued together leave in one write. A connection that fails fails the
//! calls waiting on it; the next call opens a new one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{header, HeaderValue, Request, StatusCode};
use bytes::Bytes;
use futures_util::StreamExt;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;
use tokio_util::codec::FramedRead;
use wire::link::Call;

/// A connection's byte stream: plain TCP or TLS over it.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// How long opening a connection (TCP and the upgrade) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The link to one shard.
pub(crate) struct Link {
    /// `host:port`, as connected to and named in the upgrade's `Host`.
    authority: String,
    /// The shard secret's `Authorization` value, sent with the upgrade.
    authorization: Option<HeaderValue>,
    /// For an `https` shard: the TLS client and the name its certificate must carry.
    tls: Option<(TlsConnector, ServerName<'static>)>,
    current: Mutex<Option<Arc<Conn>>>,
    /// Held while connecting, so concurrent calls open one connection, not one each.
    connecting: tokio::sync::Mutex<()>,
}

/// The calls awaiting answers on a connection, by id.
type Waiting = HashMap<u64, oneshot::Sender<(StatusCode, Bytes)>>;

/// One open connection: the queue of frames to send and the calls awaiting answers (None
/// once the connection has ended).
struct Conn {
    frames: mpsc::UnboundedSender<Bytes>,
    waiting: Mutex<Option<Waiting>>,
    next_id: AtomicU64,
}

impl Conn {
    fn open(&self) -> bool {
        self.waiting.lock().unwrap().is_some()
    }

    /// Ends the connection for its callers: every waiting call fails, later ones reconnect.
    fn close(&self) {
        self.waiting.lock().unwrap().take();
    }
}

/// Forgets a call that ends without its answer (timed out or abandoned), and cancels it.
struct Pending<'a> {
    conn: &'a Conn,
    id: u64,
}

impl Drop for Pending<'_> {
    /// A call still waiting is abandoned: the shard is told to stop it.
    fn drop(&mut self) {
        let abandoned = self
            .conn
            .waiting
            .lock()
            .unwrap()
            .as_mut()
            .and_then(|w| w.remove(&self.id))
            .is_some();
        if abandoned {
            let cancel = wire::link::frame(self.id, Call::Cancel.code(), b"");
            let _ = self.conn.frames.send(Bytes::from(cancel));
        }
    }
}

impl Link {
    /// The link to a shard at `url` (`http`, or `https` through `tls`), if it has a host.
    pub(crate) fn new(
        url: &reqwest::Url,
        authorization: Option<HeaderValue>,
        tls: Option<TlsConnector>,
    ) -> Option<Link> {
        let host = url.host_str()?;
        let tls = match (url.scheme(), tls) {
            ("http", _) => None,
            ("https", Some(connector)) => {
                let name = ServerName::try_from(host.trim_matches(['[', ']']).to_owned()).ok()?;
                Some((connector, name))
            }
            _ => return None,
        };
        let authority = format!("{host}:{}", url.port_or_known_default()?);
        Some(Link {
            authority,
            authorization,
            tls,
            current: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
        })
    }

    /// Sends a call and waits for its answer: the status and the JSON body.
    pub(crate) async fn call(
        &self,
        call: Call,
        body: &[u8],
    ) -> Result<(StatusCode, Bytes), String> {
        // The shard would close the connection on a larger one, failing every call on it.
        if wire::link::HEADER + body.len() > wire::link::MAX_CALL {
            return Err(format!("a call of {} bytes is too large", body.len()));
        }
        let conn = self.conn().await?;
        let id = conn.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        match conn.waiting.lock().unwrap().as_mut() {
            Some(w) => w.insert(id, tx),
            None => return Err("shard link closed".into()),
        };
        let _pending = Pending { conn: &conn, id };
        let frame = Bytes::from(wire::link::frame(id, call.code(), body));
        conn.frames
            .send(frame)
            .map_err(|_| "shard link closed".to_owned())?;
        rx.await
            .map_err(|_| "shard link closed before the answer".to_owned())
    }

    /// The open connection, or a new one.
    async fn conn(&self) -> Result<Arc<Conn>, String> {
        let open = |c: &Option<Arc<Conn>>| c.as_ref().filter(|c| c.open()).cloned();
        if let Some(c) = open(&self.current.lock().unwrap()) {
            return Ok(c);
        }
        let _connecting = self.connecting.lock().await;
        if let Some(c) = open(&self.current.lock().unwrap()) {
            return Ok(c);
        }
        let c = tokio::time::timeout(
            CONNECT_TIMEOUT,
            connect(
                &self.authority,
                self.authorization.as_ref(),
                self.tls.as_ref(),
            ),
        )
        .await
        .unwrap_or_else(|_| Err("connecting timed out".into()))
        .map_err(|e| format!("shard link to {}: {e}", self.authority))?;
        *self.current.lock().unwrap() = Some(c.clone());
        Ok(c)
    }
}

/// Opens a connection, asks for the upgrade, and starts its writer and reader.
async fn connect(
    authority: &str,
    authorization: Option<&HeaderValue>,
    tls: Option<&(TlsConnector, ServerName<'static>)>,
) -> Result<Arc<Conn>, String> {
    let tcp = TcpStream::connect(authority)
        .await
        .map_err(|e| e.to_string())?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let io: Box<dyn Io> = match tls {
        None => Box::new(tcp),
        Some((connector, name)) => Box::new(
            connector
                .connect(name.clone(), tcp)
                .await
                .map_err(|e| format!("TLS: {e}"))?,
        ),
    };
    let (mut sender, handshake) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = handshake.with_upgrades().await;
    });
    let mut req = Request::get(wire::link::PATH).header(header::HOST, authority);
    if let Some(a) = authorization {
        req = req.header(header::AUTHORIZATION, a);
    }
    let req = req
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, wire::link::UPGRADE)
        .body(axum::body::Body::empty())
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Err(format!("upgrade refused: {}", resp.status()));
    }
    let io = hyper::upgrade::on(resp).await.map_err(|e| e.to_string())?;
    let (read, write) = tokio::io::split(TokioIo::new(io));

    let (frames, mut queued) = mpsc::unbounded_channel::<Bytes>();
    let conn = Arc::new(Conn {
        frames,
        waiting: Mutex::new(Some(HashMap::new())),
        next_id: AtomicU64::new(0),
    });
    // The writer holds the connection weakly: it ends when the connection is dropped.
    let writing = Arc::downgrade(&conn);
    tokio::spawn(async move {
        if let Err(e) = wire::link::send_queued(write, &mut queued).await {
            tracing::warn!(error = %e, "shard link: sending failed");
        }
        if let Some(c) = writing.upgrade() {
            c.close();
        }
    });
    let reading = conn.clone();
    tokio::spawn(async move {
        let mut answers = FramedRead::new(read, wire::link::codec(wire::link::MAX_FRAME));
        while let Some(frame) = answers.next().await {
            let frame = match frame {
                Ok(f) => f.freeze(),
                Err(e) => {
                    tracing::warn!(error = %e, "shard link: reading failed");
                    break;
                }
            };
            let Some((id, status, _)) = wire::link::parse(&frame) else {
                tracing::warn!("shard link: an answer shorter than its header");
                break;
            };
            let Ok(status) = StatusCode::from_u16(status) else {
                tracing::warn!(status, "shard link: an answer with no valid status");
                break;
            };
            let waiter = reading
                .waiting
                .lock()
                .unwrap()
                .as_mut()
                .and_then(|w| w.remove(&id));
            if let Some(waiter) = waiter {
                let _ = waiter.send((status, frame.slice(wire::link::HEADER..)));
            }
        }
        reading.close();
    });
    Ok(conn)
}
