//! Opaque cursors: `base64url("1.offset.min_lsn.search_hash")`. The hash ties a cursor to
//! its search; the LSN makes the next page wait until it is at least as fresh as the last.

use base64::Engine as _;
use wire::SearchRequest;

/// What a cursor carries: where the next page starts, how fresh the previous one was (the
/// next waits for it: pages never go back in time), and a hash of the search it belongs to.
#[derive(Debug, PartialEq)]
pub(crate) struct Cursor {
    pub offset: u64,
    pub min_lsn: u64,
    pub search: u64,
}

impl Cursor {
    pub(crate) fn encode(&self) -> String {
        let raw = format!("1.{}.{:x}.{:016x}", self.offset, self.min_lsn, self.search);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    }

    pub(crate) fn decode(text: &str) -> Option<Cursor> {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .ok()?;
        let raw = String::from_utf8(raw).ok()?;
        let mut parts = raw.split('.');
        if parts.next()? != "1" {
            return None;
        }
        let c = Cursor {
            offset: parts.next()?.parse().ok()?,
            min_lsn: u64::from_str_radix(parts.next()?, 16).ok()?,
            search: u64::from_str_radix(parts.next()?, 16).ok()?,
        };
        parts.next().is_none().then_some(c)
    }
}

/// Identifies a search apart from its paging and freshness demands.
pub(crate) fn search_hash(req: &SearchRequest) -> u64 {
    let mut r = req.clone();
    r.offset = 0;
    r.limit = 0;
    r.cursor = None;
    r.consistency = None;
    xxhash_rust::xxh3::xxh3_64(serde_json::to_string(&r).unwrap_or_default().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let c = Cursor {
            offset: 20,
            min_lsn: 0x16B3748,
            search: 0xdead_beef,
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        assert_eq!(Cursor::decode("nope"), None);
        assert_eq!(Cursor::decode(""), None);
        let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("2.1.1.1");
        assert_eq!(Cursor::decode(&forged), None);
    }

    #[test]
    fn the_search_hash_ignores_paging_and_freshness() {
        let a: SearchRequest = wire::parse(br#"{"q": "x", "limit": 5}"#).unwrap();
        let b: SearchRequest = wire::parse(
            br#"{"q": "x", "limit": 9, "offset": 3, "consistency": {"min_lsn": "0/1"}}"#,
        )
        .unwrap();
        let c: SearchRequest = wire::parse(br#"{"q": "y"}"#).unwrap();
        assert_eq!(search_hash(&a), search_hash(&b));
        assert_ne!(search_hash(&a), search_hash(&c));
    }
}
