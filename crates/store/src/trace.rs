//! What the outbox knows about one reading: still owed (to which uplinks), and which uplinks
//! acknowledged it and when (the delivery record, `deliveries`, see `db.rs`).
//!
//! Read on a connection of its own, so a lookup never holds the writer's lock: WAL readers see
//! the last committed state while the writer goes on. The pending part scans `readings` (the
//! table has no index on the reading id, and adding one would cost every ingest commit); a
//! lookup costs about 0.1 s per million readings held, fine for an operator's question and
//! not meant for a hot path.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::OptionalExtension;
use serde::Serialize;
use ulid::Ulid;
use wardgate_core::MessageClass;

use crate::db::{class_from_code, connect, to_u64};
use crate::error::StoreError;
use crate::outbox::Slot;

/// One reading as the outbox knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReadingTrace {
    /// The reading id.
    pub id: String,
    /// Present while the reading is in the outbox (owed to at least one uplink).
    pub pending: Option<PendingReading>,
    /// Every recorded acknowledgement, oldest first. Empty when nothing acknowledged it yet,
    /// the record was pruned (`[store] delivery_log`, `delivery_log_rows`) or is turned off.
    pub deliveries: Vec<DeliveryRecord>,
}

impl ReadingTrace {
    /// The outbox knows nothing about this reading: never stored here, or delivered and its
    /// record pruned (or dropped by a quota or `max_age`).
    pub fn is_unknown(&self) -> bool {
        self.pending.is_none() && self.deliveries.is_empty()
    }
}

/// A reading still in the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PendingReading {
    /// Outbox sequence number.
    pub seq: u64,
    /// Device id.
    pub device: String,
    /// Message class (the lane it waits on).
    pub class: MessageClass,
    /// When the outbox stored it (RFC 3339).
    pub stored_at: String,
    /// The configured uplinks it is still owed to.
    pub owed_to: Vec<String>,
}

/// One acknowledgement of a reading by an uplink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeliveryRecord {
    /// The configured uplink that delivered it.
    pub uplink: String,
    /// When its acknowledgement was committed (RFC 3339).
    pub acked_at: String,
}

fn rfc3339(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(t.max(UNIX_EPOCH).min(SystemTime::UNIX_EPOCH + MAX_TIME))
        .to_string()
}

/// Far enough for any stamp; keeps a damaged one from overflowing the formatter.
const MAX_TIME: Duration = Duration::from_secs(253_402_300_799); // 9999-12-31T23:59:59Z

/// Looks `id` up in the store at `path`; `slots` name the bits of `pending`.
pub(crate) fn trace(
    path: &std::path::Path,
    slots: &[Slot],
    id: Ulid,
) -> Result<ReadingTrace, StoreError> {
    let sq = |op: &'static str| move |e: rusqlite::Error| StoreError::sqlite(path, op, e);
    let conn = connect(path).map_err(sq("opening a reader"))?;
    let key = id.to_bytes();
    let pending = conn
        .query_row(
            "SELECT seq, device, class, received_ms, pending FROM readings WHERE id = ?1",
            [&key[..]],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            },
        )
        .optional()
        .map_err(sq("looking a reading up"))?
        .map(|(seq, device, class, ms, mask)| {
            let mut owed_to: Vec<String> = Vec::new();
            for s in slots.iter().filter(|s| mask & s.mask != 0) {
                if !owed_to.iter().any(|u| **u == *s.label) {
                    owed_to.push(s.label.to_string());
                }
            }
            PendingReading {
                seq: to_u64(seq),
                device,
                class: class_from_code(class),
                stored_at: rfc3339(ms),
                owed_to,
            }
        });
    let mut stmt = conn
        .prepare("SELECT uplink, acked_ms FROM deliveries WHERE id = ?1 ORDER BY acked_ms, uplink")
        .map_err(sq("reading the delivery record"))?;
    let deliveries = stmt
        .query_map([&key[..]], |r| {
            Ok(DeliveryRecord {
                uplink: r.get(0)?,
                acked_at: rfc3339(r.get(1)?),
            })
        })
        .and_then(Iterator::collect)
        .map_err(sq("reading the delivery record"))?;
    Ok(ReadingTrace {
        id: id.to_string(),
        pending,
        deliveries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_format_as_rfc3339_and_damaged_ones_do_not_panic() {
        assert_eq!(rfc3339(1_764_000_000_123), "2025-11-24T16:00:00.123Z");
        assert_eq!(rfc3339(-5), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(i64::MAX), "9999-12-31T23:59:59.000Z");
    }
}
