//! Property test of the lanes and cutovers: random appends of alarms and vitals from a few
//! devices, hand-outs, acknowledgements, rewinds and cutovers that switch every reading from
//! one uplink to the other (moving the backlog, as the selector does when a breaker opens).
//!
//! Properties:
//! - on each uplink, per device and class, readings are handed out for the first time in
//!   append order, across any number of cutovers (the promise that makes failover keep
//!   per-device order);
//! - an uplink never hands out a vital while an alarm it is owed and has not handed out yet
//!   was committed before that call (alarms first);
//! - after a final drain every appended reading was acknowledged by some uplink, and none is
//!   left owed to nobody.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::{Running, cfg, names, owed_to_nobody, reading};
use proptest::prelude::*;
use ulid::Ulid;
use wardgate_core::{Cutover, Delivery, MessageClass, OutboxCursor, RouteInput, Router, UplinkSet};
use wardgate_store::{Cursor, OpenOptions};

/// Routes everything to the active uplink; a switch hands the store one cutover of the old one.
#[derive(Debug, Default)]
struct Switch {
    active: AtomicUsize,
    pending: Mutex<Vec<Cutover>>,
}

impl Switch {
    fn switch(&self) {
        let from = self.active.fetch_xor(1, Ordering::SeqCst);
        let to = UplinkSet::single(from ^ 1);
        self.pending.lock().unwrap().push(Cutover {
            from,
            moves: MessageClass::ALL.iter().map(|c| (*c, to)).collect(),
            keep: Vec::new(),
        });
    }
}

impl Router for Switch {
    fn route(&self, _: &RouteInput<'_>) -> UplinkSet {
        UplinkSet::single(self.active.load(Ordering::SeqCst))
    }

    fn take_cutovers(&self) -> Vec<Cutover> {
        std::mem::take(&mut *self.pending.lock().unwrap())
    }
}

#[derive(Debug, Clone)]
enum Op {
    Append { device: u8, alarm: bool, n: usize },
    Next { up: usize, max: usize },
    Ack { up: usize },
    Rewind { up: usize },
    Switch,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..3, proptest::bool::weighted(0.25), 1usize..4)
            .prop_map(|(device, alarm, n)| Op::Append { device, alarm, n }),
        6 => (0usize..2, 1usize..8).prop_map(|(up, max)| Op::Next { up, max }),
        3 => (0usize..2).prop_map(|up| Op::Ack { up }),
        1 => (0usize..2).prop_map(|up| Op::Rewind { up }),
        1 => Just(Op::Switch),
    ]
}

/// What the test knows about one appended reading.
#[derive(Debug, Clone)]
struct Appended {
    order: usize,
    device: String,
    class: MessageClass,
}

#[derive(Default)]
struct Seen {
    /// Per uplink: ids handed out at least once.
    first: [HashSet<Ulid>; 2],
    /// Per uplink, device and class: the append order of the last first hand-out.
    last: [HashMap<(String, MessageClass), usize>; 2],
    /// Per uplink: handed out and not yet acknowledged.
    in_flight: [Vec<(u64, Ulid)>; 2],
    /// Per uplink: acknowledged by it.
    acked: [HashSet<Ulid>; 2],
    /// The uplink each reading is owed to (routing, then cutovers of what was not acked).
    owner: HashMap<Ulid, usize>,
}

fn check_handout(
    up: usize,
    got: &[Delivery],
    appended: &HashMap<Ulid, Appended>,
    seen: &mut Seen,
) -> Result<(), TestCaseError> {
    for d in got {
        let a = &appended[&d.id];
        seen.in_flight[up].push((d.seq, d.id));
        if !seen.first[up].insert(d.id) {
            continue;
        }
        let key = (a.device.clone(), a.class);
        if let Some(prev) = seen.last[up].insert(key, a.order) {
            prop_assert!(
                a.order > prev,
                "uplink {}: {} {:?} reading {} handed out after {}",
                up,
                a.device,
                a.class,
                a.order,
                prev
            );
        }
    }
    Ok(())
}

async fn run_ops(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let cfg = cfg(dir.path());
    let router = Arc::new(Switch::default());
    let opts = OpenOptions {
        router: router.clone(),
        ..OpenOptions::default()
    };
    let run = Running::start_opts(&cfg, &names(&["cloud", "backup"]), opts).unwrap();
    let mut cursors: Vec<Cursor> = vec![
        run.outbox.cursor("cloud").unwrap(),
        run.outbox.cursor("backup").unwrap(),
    ];
    let mut appended: HashMap<Ulid, Appended> = HashMap::new();
    let mut seen = Seen::default();
    for op in ops {
        match op {
            Op::Append { device, alarm, n } => {
                let class = if alarm {
                    MessageClass::Alarm
                } else {
                    MessageClass::Vital
                };
                let batch: Vec<_> = (0..n)
                    .map(|_| {
                        let mut r = reading(&format!("bed-{device}"), 40);
                        r.class = class;
                        seen.owner
                            .insert(r.id, router.active.load(Ordering::SeqCst));
                        appended.insert(
                            r.id,
                            Appended {
                                order: appended.len(),
                                device: format!("bed-{device}"),
                                class,
                            },
                        );
                        r
                    })
                    .collect();
                run.bus.submit(batch).await.unwrap();
            }
            Op::Next { up, max } => {
                let got = cursors[up].try_next(max).await.unwrap();
                if got.iter().any(|d| d.class != MessageClass::Alarm) {
                    // Alarms first: no alarm owed here may still wait for its first hand-out.
                    let waiting = seen
                        .owner
                        .iter()
                        .filter(|(id, owner)| {
                            **owner == up
                                && appended[*id].class == MessageClass::Alarm
                                && !seen.first[up].contains(*id)
                        })
                        .count();
                    prop_assert_eq!(waiting, 0, "uplink {} handed out vitals before alarms", up);
                }
                check_handout(up, &got, &appended, &mut seen)?;
            }
            Op::Ack { up } => {
                let done = std::mem::take(&mut seen.in_flight[up]);
                seen.acked[up].extend(done.iter().map(|(_, id)| *id));
                let seqs: Vec<u64> = done.iter().map(|(s, _)| *s).collect();
                cursors[up].ack(&seqs);
            }
            Op::Rewind { up } => {
                seen.in_flight[up].clear();
                cursors[up].rewind();
            }
            Op::Switch => {
                let from = router.active.load(Ordering::SeqCst);
                for (id, owner) in seen.owner.iter_mut() {
                    if *owner == from && !seen.acked[from].contains(id) {
                        *owner = from ^ 1;
                    }
                }
                router.switch();
                // The cutover commits with the writer's next commit.
                run.outbox.flush().await.unwrap();
            }
        }
    }
    // Final drain (after a rewind, so what is in flight comes again): every reading reaches
    // some uplink, and order still holds.
    for c in &mut cursors {
        c.rewind();
    }
    for _ in 0..1000 {
        let mut any = false;
        for (up, cursor) in cursors.iter_mut().enumerate() {
            let got = cursor.try_next(64).await.unwrap();
            any |= !got.is_empty();
            check_handout(up, &got, &appended, &mut seen)?;
            let seqs: Vec<u64> = got.iter().map(|d| d.seq).collect();
            cursor.ack(&seqs);
        }
        run.outbox.flush().await.unwrap();
        if !any && run.outbox.stats().unwrap().readings == 0 {
            break;
        }
    }
    let stats = run.outbox.stats().unwrap();
    prop_assert_eq!(stats.readings, 0, "everything delivered and acknowledged");
    let delivered: HashSet<&Ulid> = seen.first[0].union(&seen.first[1]).collect();
    prop_assert!(appended.keys().all(|id| delivered.contains(id)));
    prop_assert_eq!(owed_to_nobody(&cfg.path), 0);
    drop(cursors);
    run.stop().await;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn lanes_and_cutovers_keep_device_order_and_alarms_first(
        ops in proptest::collection::vec(op(), 1..60),
    ) {
        common::block_on(run_ops(ops))?;
    }
}
