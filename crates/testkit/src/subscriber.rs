//! An MQTT subscriber for tests: rumqttc on its own thread and runtime.
//!
//! Why not `mosquitto_sub`: it has no "subscribed" signal, so a test had to publish probes
//! until one came back, which timed out on a loaded machine. This subscriber knows: the
//! constructor returns once the broker's SUBACK arrived. Running on its own thread, it keeps
//! draining the broker even while the test's own runtime is busy, so the broker never queues
//! for it more than the test itself sends.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::oneshot;

use crate::PATIENCE;

enum Seen {
    Subscribed,
    Message(String, String),
}

/// A QoS 1 subscriber (MQTT 3.1.1) that reconnects and resubscribes by itself. Messages are
/// `(topic, payload)` with the payload as (lossy) UTF-8.
#[derive(Debug)]
pub struct Subscriber {
    rx: mpsc::Receiver<Seen>,
    early: RefCell<VecDeque<(String, String)>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Seen::Subscribed => f.write_str("Subscribed"),
            Seen::Message(t, _) => write!(f, "Message({t})"),
        }
    }
}

impl Subscriber {
    /// Subscribes to `filter` with a clean session; returns once subscribed.
    pub fn start(port: u16, filter: &str) -> Subscriber {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let id = format!(
            "test-sub-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        Self::start_with(port, filter, &id, true)
    }

    /// A subscriber with a persistent session (clean session off) under `client_id`: the
    /// broker queues QoS 1 messages for it while it is away.
    pub fn start_persistent(port: u16, filter: &str, client_id: &str) -> Subscriber {
        Self::start_with(port, filter, client_id, false)
    }

    fn start_with(port: u16, filter: &str, client_id: &str, clean: bool) -> Subscriber {
        let mut opts = MqttOptions::new(client_id, "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(5));
        opts.set_clean_session(clean);
        opts.set_max_packet_size(1 << 20, 1 << 20);
        let (tx, rx) = mpsc::channel();
        let (stop, mut stopped) = oneshot::channel::<()>();
        let filter = filter.to_owned();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("subscriber runtime");
            rt.block_on(async move {
                let (client, mut eventloop) = AsyncClient::new(opts, 16);
                loop {
                    let event = tokio::select! {
                        _ = &mut stopped => return,
                        e = eventloop.poll() => e,
                    };
                    let seen = match event {
                        Ok(Event::Incoming(Packet::ConnAck(_))) => {
                            let _ = client.try_subscribe(filter.clone(), QoS::AtLeastOnce);
                            None
                        }
                        Ok(Event::Incoming(Packet::SubAck(_))) => Some(Seen::Subscribed),
                        Ok(Event::Incoming(Packet::Publish(p))) => Some(Seen::Message(
                            p.topic,
                            String::from_utf8_lossy(&p.payload).into_owned(),
                        )),
                        Ok(_) => None,
                        Err(_) => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            None
                        }
                    };
                    if let Some(s) = seen {
                        if tx.send(s).is_err() {
                            return;
                        }
                    }
                }
            });
        });
        let s = Subscriber {
            rx,
            early: RefCell::default(),
            stop: Some(stop),
            thread: Some(thread),
        };
        // Messages queued for a persistent session may arrive before the SUBACK: keep them.
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match s.rx.recv_timeout(left) {
                Ok(Seen::Subscribed) => break,
                Ok(Seen::Message(t, p)) => s.early.borrow_mut().push_back((t, p)),
                Err(_) => panic!("subscriber to {port} not subscribed within {PATIENCE:?}"),
            }
        }
        s
    }

    /// The next message within `timeout`, or `None`.
    pub fn next(&self, timeout: Duration) -> Option<(String, String)> {
        if let Some(m) = self.early.borrow_mut().pop_front() {
            return Some(m);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left).ok()? {
                Seen::Message(t, p) => return Some((t, p)),
                Seen::Subscribed => {} // a resubscription after a reconnect
            }
        }
    }

    /// Collects messages whose topic passes `keep` until `n` are collected; panics naming how
    /// many arrived when `timeout` passes first.
    pub fn collect(
        &self,
        n: usize,
        timeout: Duration,
        keep: impl Fn(&str) -> bool,
    ) -> Vec<(String, String)> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        while out.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left) {
                Some((t, p)) if keep(&t) => out.push((t, p)),
                Some(_) => {}
                None => panic!(
                    "got {} of {n} messages before the timeout: {out:?}",
                    out.len()
                ),
            }
        }
        out
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
