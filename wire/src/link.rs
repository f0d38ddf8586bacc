//! The shard link: query-api's searches and document reads on one long-lived connection per
//! shard, many calls in flight at once, instead of an HTTP exchange each.
//!
//! The connection starts as HTTP/1.1 (`GET` [`PATH`] with `Upgrade:` [`UPGRADE`], answered
//! `101 Switching Protocols`), so a shard needs no second port and its URL stays its only
//! address. After the switch each direction carries frames: a 4-byte big-endian length, then
//! the frame itself, at most [`MAX_CALL`] bytes for a call and [`MAX_FRAME`] for an answer:
//!
//! | bytes | call (query-api → shard) | answer (shard → query-api) |
//! |---|---|---|
//! | 8 | call id, big-endian | the id of the call it answers |
//! | 2 | [`Call`] code, big-endian | HTTP status, big-endian |
//! | rest | the call's JSON body | the answer's JSON body |
//!
//! Bodies are the shard protocol's JSON (`shard::ShardSearchRequest` and
//! `shard::DocumentRequest` in, `shard::ShardSearchResponse`, `shard::DocumentResponse` or
//! `shard::ShardError` out), so both transports share one parser and one answer builder.
//! Answers come back in any order: the id matches them to their calls. A `Cancel` call (code
//! 3, empty body, never answered) names by its id a call whose answer is no longer wanted.

/// The path the upgrade is asked on.
pub const PATH: &str = "/internal/link";
/// The protocol named in the `Upgrade` headers.
pub const UPGRADE: &str = "shard-link/1";
/// Largest answer frame (an answer of 10,000 hits with large fields stays well under it).
pub const MAX_FRAME: usize = 64 << 20;
/// Largest call frame a shard reads, as for its HTTP routes' bodies: with at most 1,024
/// calls in flight per connection, what one peer can make a shard hold stays bounded.
pub const MAX_CALL: usize = 2 << 20;
/// Bytes before a frame's body.
pub const HEADER: usize = 10;

/// What a call asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// A search page (`shard::ShardSearchRequest`).
    Search,
    /// One document by key (`shard::DocumentRequest`).
    Document,
    /// Stop the call whose id this frame carries (empty body, no answer): its caller gave up.
    Cancel,
}

impl Call {
    pub fn code(self) -> u16 {
        match self {
            Call::Search => 1,
            Call::Document => 2,
            Call::Cancel => 3,
        }
    }

    pub fn from_code(code: u16) -> Option<Call> {
        match code {
            1 => Some(Call::Search),
            2 => Some(Call::Document),
            3 => Some(Call::Cancel),
            _ => None,
        }
    }
}

/// A frame's id, code (call or status) and body; `None` when shorter than its header.
pub fn parse(frame: &[u8]) -> Option<(u64, u16, &[u8])> {
    let (id, rest) = frame.split_first_chunk::<8>()?;
    let (code, body) = rest.split_first_chunk::<2>()?;
    Some((u64::from_be_bytes(*id), u16::from_be_bytes(*code), body))
}

/// A frame's header: id and code, to be followed by its body.
pub fn header(id: u64, code: u16) -> [u8; HEADER] {
    let mut h = [0; HEADER];
    h[..8].copy_from_slice(&id.to_be_bytes());
    h[8..].copy_from_slice(&code.to_be_bytes());
    h
}

/// A whole frame (without its length prefix).
pub fn frame(id: u64, code: u16, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(HEADER + body.len());
    f.extend_from_slice(&header(id, code));
    f.extend_from_slice(body);
    f
}

#[cfg(feature = "link")]
pub use io::{codec, send_queued};

/// The link's framing and writer, shared by both ends (feature `link`: the engine, which
/// uses this crate too, stays free of an I/O runtime).
#[cfg(feature = "link")]
mod io {
    use bytes::Bytes;
    use futures_util::SinkExt;
    use tokio::io::AsyncWrite;
    use tokio::sync::mpsc;
    use tokio_util::codec::{FramedWrite, LengthDelimitedCodec};

    use super::MAX_FRAME;

    /// The length-prefixed framing, reading frames of at most `max` bytes.
    pub fn codec(max: usize) -> LengthDelimitedCodec {
        LengthDelimitedCodec::builder()
            .max_frame_length(max)
            .new_codec()
    }

    /// Writes queued frames (already whole, see [`frame`]) until the queue closes: whatever is
    /// queued when the writer wakes leaves in one write.
    pub async fn send_queued<W: AsyncWrite + Unpin>(
        write: W,
        queued: &mut mpsc::UnboundedReceiver<Bytes>,
    ) -> std::io::Result<()> {
        let mut out = FramedWrite::new(write, codec(MAX_FRAME));
        while let Some(frame) = queued.recv().await {
            out.feed(frame).await?;
            while let Ok(frame) = queued.try_recv() {
                out.feed(frame).await?;
            }
            SinkExt::<Bytes>::flush(&mut out).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_read_back() {
        let f = frame(u64::MAX - 1, 422, b"{\"x\":1}");
        assert_eq!(parse(&f), Some((u64::MAX - 1, 422, &b"{\"x\":1}"[..])));
        assert_eq!(parse(&frame(7, 1, b"")), Some((7, 1, &b""[..])));
        assert_eq!(parse(&f[..9]), None);
        for c in [Call::Search, Call::Document, Call::Cancel] {
            assert_eq!(Call::from_code(c.code()), Some(c));
        }
        assert_eq!(Call::from_code(0), None);
    }
}
