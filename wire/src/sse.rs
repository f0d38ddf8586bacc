//! Server-sent events as the shards' change feeds frame them, read incrementally: bytes in,
//! whole events out (comments and keep-alives skipped). One reader for query-api and tests.

/// One event: `id`, `event` (its type) and `data` lines.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    pub id: String,
    pub event: String,
    pub data: String,
}

/// Buffers a byte stream and yields each complete event (a block ending in a blank line).
#[derive(Debug, Default)]
pub struct SseReader {
    buf: String,
}

impl SseReader {
    /// Adds bytes; returns the events they complete, in order.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        self.buf.push_str(&String::from_utf8_lossy(bytes));
        let mut out = Vec::new();
        while let Some(end) = self.buf.find("\n\n") {
            let block: String = self.buf.drain(..end + 2).collect();
            let mut ev = SseEvent::default();
            let mut data: Vec<&str> = Vec::new();
            for line in block.lines() {
                let (name, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match name {
                    "id" => ev.id = value.to_owned(),
                    "event" => ev.event = value.to_owned(),
                    "data" => data.push(value),
                    _ => {} // a comment (":") or an unknown field
                }
            }
            ev.data = data.join("\n");
            if !(ev.id.is_empty() && ev.event.is_empty() && ev.data.is_empty()) {
                out.push(ev);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_cut_at_blank_lines_whatever_the_chunks() {
        let text = ":keep-alive\n\nid: 0/1:0\nevent: start\ndata: {}\n\nid: 0/2:0\nevent: change\ndata: {\"key\":\"a\"}\n\n";
        for cut in 0..text.len() {
            let mut r = SseReader::default();
            let mut got = r.push(&text.as_bytes()[..cut]);
            got.extend(r.push(&text.as_bytes()[cut..]));
            assert_eq!(got.len(), 2, "cut at {cut}");
            assert_eq!(got[0].event, "start");
            assert_eq!(got[1].id, "0/2:0");
            assert_eq!(got[1].data, "{\"key\":\"a\"}");
        }
    }
}
