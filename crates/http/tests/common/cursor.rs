//! A fake outbox cursor that records every ack and nack: fault-injection scaffolding. It keeps
//! the store's contract where the uplink relies on it: deliveries in order, `next` cancel-safe,
//! a nack moving the cursor back to the lowest nacked delivery with `attempts` one higher.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use tokio::sync::Notify;
use ulid::Ulid;
use wardgate_core::{Delivery, MessageClass, NackReason, OutboxCursor, OutboxError};

#[derive(Debug, Default)]
struct State {
    readings: Vec<Delivery>,
    /// Index of the next delivery to hand out.
    pos: usize,
    acked: BTreeSet<u64>,
    attempts: HashMap<u64, u32>,
    acks: Vec<Vec<u64>>,
    nacks: Vec<(Vec<u64>, NackReason)>,
    closed: bool,
}

/// The test's side: add readings, read what the uplink did.
#[derive(Debug, Clone, Default)]
pub struct FakeOutbox {
    state: Arc<Mutex<State>>,
    wake: Arc<Notify>,
}

/// The uplink's side.
#[derive(Debug)]
pub struct FakeCursor(FakeOutbox);

/// A reading's JSON as the store would hold it.
pub fn reading_json(id: Ulid, device: &str, n: u64) -> String {
    format!(
        r#"{{"schema":"wardgate.reading/1","id":"{id}","gateway":"ward-t","device":"{device}","protocol":"coap","class":"vital","received_at":"2026-11-21T21:04:05.123Z","records":[{{"n":"spo2","u":"%","v":{n},"t":1763759045.1}}]}}"#
    )
}

impl FakeOutbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn cursor(&self) -> FakeCursor {
        FakeCursor(self.clone())
    }

    /// Appends `n` readings of `device`; returns their ids in order.
    pub fn push(&self, device: &str, n: usize) -> Vec<Ulid> {
        let mut s = self.lock();
        let mut ids = Vec::new();
        for _ in 0..n {
            let seq = s.readings.len() as u64 + 1;
            let id = Ulid::new();
            s.readings.push(Delivery {
                seq,
                id,
                device: device.to_owned(),
                class: MessageClass::Vital,
                json: Bytes::from(reading_json(id, device, seq)),
                attempts: 0,
            });
            ids.push(id);
        }
        drop(s);
        self.wake.notify_one();
        ids
    }

    /// Makes `next` fail with `Closed` once everything was handed out.
    pub fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_one();
    }

    /// Every acknowledged seq, in ack order.
    pub fn acked(&self) -> Vec<u64> {
        self.lock().acks.concat()
    }

    pub fn acks(&self) -> Vec<Vec<u64>> {
        self.lock().acks.clone()
    }

    pub fn nacks(&self) -> Vec<(Vec<u64>, NackReason)> {
        self.lock().nacks.clone()
    }

    /// How many readings were pushed.
    pub fn len(&self) -> usize {
        self.lock().readings.len()
    }
}

impl OutboxCursor for FakeCursor {
    async fn next(&mut self, max: usize) -> Result<Vec<Delivery>, OutboxError> {
        loop {
            {
                let mut s = self.0.lock();
                let mut out = Vec::new();
                while out.len() < max && s.pos < s.readings.len() {
                    let mut d = s.readings[s.pos].clone();
                    s.pos += 1;
                    if s.acked.contains(&d.seq) {
                        continue;
                    }
                    d.attempts = s.attempts.get(&d.seq).copied().unwrap_or(0);
                    out.push(d);
                }
                if !out.is_empty() || max == 0 {
                    return Ok(out);
                }
                if s.closed {
                    return Err(OutboxError::Closed);
                }
            }
            self.0.wake.notified().await;
        }
    }

    fn ack(&mut self, seqs: &[u64]) {
        let mut s = self.0.lock();
        s.acked.extend(seqs.iter().copied());
        s.acks.push(seqs.to_vec());
    }

    fn rewind(&mut self) {
        let mut s = self.0.lock();
        let first = (0..s.pos).find(|i| !s.acked.contains(&s.readings[*i].seq));
        if let Some(i) = first {
            s.pos = i;
        }
    }

    fn nack(&mut self, seqs: &[u64], why: NackReason) {
        let mut s = self.0.lock();
        s.nacks.push((seqs.to_vec(), why));
        for seq in seqs {
            *s.attempts.entry(*seq).or_insert(0) += 1;
        }
        if let Some(lowest) = seqs.iter().min() {
            // Seqs are 1-based positions.
            let i = (*lowest as usize).saturating_sub(1);
            if i < s.pos {
                s.pos = i;
            }
        }
        drop(s);
        self.0.wake.notify_one();
    }

    fn release(&mut self, seqs: &[u64]) {
        self.nack(seqs, NackReason::Failed);
    }
}
