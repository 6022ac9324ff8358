//! [`SimClient`]: the socket, the message layer (retransmission, piggybacked answers, the
//! duplicate cache, RST for strangers) and the client-initiated operations.
//!
//! Tasks: a receive loop per socket, a notification ticker while observations exist, an
//! auto-Update loop when configured. They hold a weak reference: dropping the last
//! `SimClient` clone stops them.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use wardgate_coap::codec::{Code, Message, MsgType, Token, opt};

use super::handle::{After, Device, Note, Reply, lwm2m_path};
use super::wire::{AnswerCache, Msg, SimResponse, empty, random_token};
use super::{Executed, POLL, Received, SimConfig, SimError};
use crate::format::{self, Format};
use crate::link::ObjectList;
use crate::node::{Entry, Path, Value};
use crate::registration::Version;

/// Requests kept for [`SimClient::received`] (the oldest dropped first).
const RECEIVED_KEPT: usize = 4096;
/// How often due notifications (`pmin` ends, `pmax`) are looked for.
const TICK: Duration = Duration::from_millis(100);

/// A datagram being received: its length and sender.
pub type Recv<'a> = Pin<Box<dyn Future<Output = io::Result<(usize, SocketAddr)>> + Send + 'a>>;

/// What a simulated client sends and receives its datagrams through: a UDP socket (what
/// [`SimClient::start`] binds), or a CoAP transport wrapped in [`OverTransport`] (CoAP over DTLS
/// with `wardgate_dtls::DtlsTransport` as a client holding the device's PSK).
pub trait SimSocket: Send + Sync + fmt::Debug + 'static {
    /// Sends without waiting (a full buffer is a lost datagram: the message layer retransmits).
    fn try_send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize>;
    /// Receives one datagram.
    fn recv_from<'a>(&'a self, buf: &'a mut [u8]) -> Recv<'a>;
    /// The bound address.
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

impl SimSocket for UdpSocket {
    fn try_send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        UdpSocket::try_send_to(self, buf, to)
    }

    fn recv_from<'a>(&'a self, buf: &'a mut [u8]) -> Recv<'a> {
        Box::pin(UdpSocket::recv_from(self, buf))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        UdpSocket::local_addr(self)
    }
}

/// A CoAP transport (`wardgate_coap::transport::Transport`) as a [`SimSocket`].
#[derive(Debug)]
pub struct OverTransport<T>(pub T);

impl<T: wardgate_coap::transport::Transport + fmt::Debug> SimSocket for OverTransport<T> {
    fn try_send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.0.try_send_to(buf, to)
    }

    fn recv_from<'a>(&'a self, buf: &'a mut [u8]) -> Recv<'a> {
        Box::pin(self.0.recv_from(buf))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// What an ACK/RST told a waiting Confirmable sender.
#[derive(Debug)]
enum Answer {
    Ack(Option<SimResponse>),
    Reset,
}

#[derive(Debug)]
struct State {
    device: Device,
    asleep: bool,
    /// `rd/{id}` once registered.
    location: Option<Vec<String>>,
    registrations: u32,
    received: Vec<Received>,
    mid: u16,
    answers: AnswerCache,
    /// Confirmable messages waiting for their ACK, by Message ID.
    acks: HashMap<u16, oneshot::Sender<Answer>>,
    /// Requests waiting for a separate response, by token.
    responses: HashMap<Token, oneshot::Sender<SimResponse>>,
    ticking: bool,
}

#[derive(Debug)]
struct Inner {
    cfg: SimConfig,
    server: SocketAddr,
    socket: Mutex<Arc<dyn SimSocket>>,
    /// Started on its own UDP socket (so it may [`SimClient::rebind`]).
    udp: bool,
    state: Mutex<State>,
    tasks: Mutex<Tasks>,
}

#[derive(Debug, Default)]
struct Tasks {
    recv: Option<JoinHandle<()>>,
    updater: Option<JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let t = self
            .tasks
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for h in [t.recv.take(), t.updater.take()].into_iter().flatten() {
            h.abort();
        }
    }
}

fn guard<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What an Update carries besides the registration id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpdateOpts {
    /// A new lifetime (`lt`).
    pub lifetime: Option<u32>,
    /// Send the current object list.
    pub objects: bool,
}

/// One simulated LwM2M client. Cheap to clone (shared state).
#[derive(Debug, Clone)]
pub struct SimClient {
    inner: Arc<Inner>,
}

impl SimClient {
    /// Binds its socket and starts answering; does not register.
    pub async fn start(cfg: SimConfig, server: SocketAddr) -> Result<SimClient, SimError> {
        let socket = Arc::new(UdpSocket::bind(cfg.bind).await?);
        Ok(SimClient::begin(cfg, server, socket, true))
    }

    /// Starts answering on `socket` (`cfg.bind` is not used); does not register. Must be
    /// called inside a tokio runtime.
    pub fn start_on(cfg: SimConfig, server: SocketAddr, socket: Arc<dyn SimSocket>) -> SimClient {
        SimClient::begin(cfg, server, socket, false)
    }

    fn begin(
        cfg: SimConfig,
        server: SocketAddr,
        socket: Arc<dyn SimSocket>,
        udp: bool,
    ) -> SimClient {
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                device: Device::new(cfg.tree.clone()),
                asleep: false,
                location: None,
                registrations: 0,
                received: Vec::new(),
                mid: rand::random(),
                answers: AnswerCache::default(),
                acks: HashMap::new(),
                responses: HashMap::new(),
                ticking: false,
            }),
            cfg,
            server,
            socket: Mutex::new(socket.clone()),
            udp,
            tasks: Mutex::new(Tasks::default()),
        });
        let recv = tokio::spawn(recv_loop(Arc::downgrade(&inner), socket));
        guard(&inner.tasks).recv = Some(recv);
        SimClient { inner }
    }

    /// Its endpoint name.
    pub fn endpoint(&self) -> &str {
        &self.inner.cfg.endpoint
    }

    /// The address it talks from.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner
            .socket()
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// `rd/{id}` of its registration, once registered.
    pub fn location(&self) -> Option<String> {
        guard(&self.inner.state)
            .location
            .as_ref()
            .map(|l| l.join("/"))
    }

    /// How many Registers succeeded (a reboot adds one).
    pub fn registrations(&self) -> u32 {
        guard(&self.inner.state).registrations
    }

    /// Every request received from the server so far (the last few thousand).
    pub fn received(&self) -> Vec<Received> {
        guard(&self.inner.state).received.clone()
    }

    /// Every Execute received so far.
    pub fn executed(&self) -> Vec<Executed> {
        guard(&self.inner.state).device.executed.clone()
    }

    /// The paths of each observation the server holds on it now.
    pub fn observations(&self) -> Vec<Vec<Path>> {
        guard(&self.inner.state)
            .device
            .observations
            .iter()
            .map(|o| o.paths.clone())
            .collect()
    }

    /// The attributes written on `path` (not inherited ones).
    pub fn attributes(&self, path: &Path) -> Option<super::Attrs> {
        guard(&self.inner.state).device.attrs.get(path).cloned()
    }

    /// A value of its tree.
    pub fn get(&self, path: &Path) -> Option<Value> {
        guard(&self.inner.state).device.tree.get(path)
    }

    /// Whether its tree has `path`.
    pub fn exists(&self, path: &Path) -> bool {
        guard(&self.inner.state).device.tree.exists(path)
    }

    /// Changes a value (the instance must exist); observations the change is worth notifying
    /// get a notification now or when their `pmin` allows.
    pub fn set(&self, path: Path, value: Value) -> Result<(), SimError> {
        let r = guard(&self.inner.state).device.set(&path, value);
        if r.is_err() {
            return Err(SimError::Refused(Code::NOT_FOUND));
        }
        self.inner.flush_notifications();
        Ok(())
    }

    /// Forgets its observations without telling the server (a client that lost its state).
    pub fn forget_observations(&self) {
        guard(&self.inner.state).device.observations.clear();
    }

    /// Queue mode: stops answering (every datagram is dropped) until [`SimClient::wake`].
    pub fn sleep(&self) {
        guard(&self.inner.state).asleep = true;
    }

    /// Wakes up and tells the server with an Update.
    pub async fn wake(&self) -> Result<(), SimError> {
        guard(&self.inner.state).asleep = false;
        self.update(UpdateOpts::default()).await
    }

    /// Moves to a new socket on a new port (a NAT rebinding); the server learns the address
    /// from the next message. Returns the new address. Only for a client [`SimClient::start`]
    /// bound (a UDP socket).
    pub async fn rebind(&self) -> Result<SocketAddr, SimError> {
        if !self.inner.udp {
            return Err(SimError::Io(io::Error::new(
                io::ErrorKind::Unsupported,
                "rebind needs a client on its own UDP socket",
            )));
        }
        let mut bind = self.inner.cfg.bind;
        bind.set_port(0);
        let socket = Arc::new(UdpSocket::bind(bind).await?);
        let addr = socket.local_addr()?;
        *guard(&self.inner.socket) = socket.clone() as Arc<dyn SimSocket>;
        let recv = tokio::spawn(recv_loop(Arc::downgrade(&self.inner), socket));
        if let Some(old) = guard(&self.inner.tasks).recv.replace(recv) {
            old.abort();
        }
        Ok(addr)
    }

    /// Register (`POST /rd`). Starts the auto-Update loop when configured.
    pub async fn register(&self) -> Result<(), SimError> {
        self.inner.register().await?;
        if self.inner.cfg.auto_update {
            let mut t = guard(&self.inner.tasks);
            if t.updater.is_none() {
                t.updater = Some(tokio::spawn(update_loop(Arc::downgrade(&self.inner))));
            }
        }
        Ok(())
    }

    /// Update (`POST /rd/{id}`).
    pub async fn update(&self, opts: UpdateOpts) -> Result<(), SimError> {
        self.inner.update(&opts).await
    }

    /// De-register (`DELETE /rd/{id}`).
    pub async fn deregister(&self) -> Result<(), SimError> {
        let loc = guard(&self.inner.state)
            .location
            .clone()
            .ok_or(SimError::NotRegistered)?;
        let r = self
            .inner
            .request(Code::DELETE, &loc, &[], None, Vec::new())
            .await?;
        if r.code != Code::DELETED {
            return Err(SimError::Refused(r.code));
        }
        guard(&self.inner.state).location = None;
        Ok(())
    }

    /// Send (`POST /dp`, LwM2M 1.1+) of `entries` in `format` (SenML JSON/CBOR, or LwM2M
    /// CBOR). Returns the server's answer whatever its code (2.04 once durable, 5.03 when the
    /// store is full).
    pub async fn send(&self, entries: &[Entry], format: Format) -> Result<SimResponse, SimError> {
        let body = {
            let st = guard(&self.inner.state);
            format::encode(format, &Path::ROOT, entries, &st.device.tree)?
        };
        self.inner
            .request(
                Code::POST,
                &["dp".into()],
                &[],
                Some(format.coap_number()),
                body,
            )
            .await
    }

    /// Waits (bounded) for a received request matching `pred`; the first one, even if it
    /// arrived before the call.
    pub async fn wait_request(
        &self,
        timeout: Duration,
        pred: impl Fn(&Received) -> bool,
    ) -> Option<Received> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(r) = guard(&self.inner.state).received.iter().find(|r| pred(r)) {
                return Some(r.clone());
            }
            if Instant::now() >= end {
                return None;
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Inner {
    fn socket(&self) -> Arc<dyn SimSocket> {
        guard(&self.socket).clone()
    }

    fn send_to(&self, bytes: &[u8], to: SocketAddr) {
        // Loopback UDP: a full send buffer is as good as a lost datagram (retransmission).
        if let Err(e) = self.socket().try_send_to(bytes, to) {
            tracing::debug!(error = %e, "simulator send failed");
        }
    }

    fn next_mid(&self) -> u16 {
        let mut st = guard(&self.state);
        st.mid = st.mid.wrapping_add(1);
        st.mid
    }

    /// Sends a Confirmable request to the server and waits for its response (piggybacked or
    /// separate), retransmitting with the RFC 7252 timers.
    async fn request(
        &self,
        method: Code,
        path: &[String],
        query: &[String],
        content_format: Option<u16>,
        payload: Vec<u8>,
    ) -> Result<SimResponse, SimError> {
        let token = random_token();
        let mid = self.next_mid();
        let mut msg = Msg::new(MsgType::Con, method, mid, token).path(path);
        for q in query {
            msg = msg.opt(opt::URI_QUERY, q.as_bytes().to_vec());
        }
        if let Some(cf) = content_format {
            msg = msg.uint(opt::CONTENT_FORMAT, u32::from(cf));
        }
        let bytes = msg.payload(payload).encode();
        let (ack_tx, mut ack_rx) = oneshot::channel();
        let (resp_tx, mut resp_rx) = oneshot::channel();
        {
            let mut st = guard(&self.state);
            st.acks.insert(mid, ack_tx);
            st.responses.insert(token, resp_tx);
        }
        let result = self.exchange(&bytes, &mut ack_rx, &mut resp_rx).await;
        let mut st = guard(&self.state);
        st.acks.remove(&mid);
        st.responses.remove(&token);
        result
    }

    async fn exchange(
        &self,
        bytes: &[u8],
        ack_rx: &mut oneshot::Receiver<Answer>,
        resp_rx: &mut oneshot::Receiver<SimResponse>,
    ) -> Result<SimResponse, SimError> {
        let timing = self.cfg.timing;
        let mut wait = timing.initial();
        let mut acked = false;
        for _ in 0..=timing.max_retransmit {
            self.send_to(bytes, self.server);
            tokio::select! {
                a = &mut *ack_rx => match a {
                    Ok(Answer::Ack(Some(r))) => return Ok(r),
                    Ok(Answer::Ack(None)) => { acked = true; break; }
                    Ok(Answer::Reset) => return Err(SimError::Reset),
                    Err(_) => return Err(SimError::Timeout),
                },
                r = &mut *resp_rx => return r.map_err(|_| SimError::Timeout),
                () = tokio::time::sleep(wait) => wait *= 2,
            }
        }
        if !acked {
            return Err(SimError::Timeout);
        }
        match tokio::time::timeout(timing.response_timeout, resp_rx).await {
            Ok(Ok(r)) => Ok(r),
            _ => Err(SimError::Timeout),
        }
    }

    fn object_list(&self) -> String {
        let st = guard(&self.state);
        ObjectList {
            root: self.cfg.root.clone().unwrap_or_else(|| "/".into()),
            content_formats: if self.cfg.advertise_formats {
                self.cfg.formats.iter().map(|f| f.coap_number()).collect()
            } else {
                Vec::new()
            },
            objects: st.device.tree.object_links(),
        }
        .to_link_format()
    }

    async fn register(&self) -> Result<(), SimError> {
        let c = &self.cfg;
        let mut query = vec![
            format!("ep={}", c.endpoint),
            format!("lt={}", c.lifetime),
            format!("lwm2m={}", c.version.as_str()),
        ];
        match (c.queue_mode, c.version) {
            (true, Version::V1_0) => query.push(format!("b={}Q", c.binding)),
            (true, _) => {
                query.push(format!("b={}", c.binding));
                query.push("Q".into());
            }
            (false, _) => query.push(format!("b={}", c.binding)),
        }
        let body = self.object_list().into_bytes();
        let r = self
            .request(Code::POST, &["rd".into()], &query, Some(40), body)
            .await?;
        if r.code != Code::CREATED || r.location.is_empty() {
            return Err(SimError::Refused(r.code));
        }
        let mut st = guard(&self.state);
        st.location = Some(r.location);
        st.registrations += 1;
        Ok(())
    }

    async fn update(&self, opts: &UpdateOpts) -> Result<(), SimError> {
        let loc = guard(&self.state)
            .location
            .clone()
            .ok_or(SimError::NotRegistered)?;
        let query: Vec<String> = opts
            .lifetime
            .map(|l| format!("lt={l}"))
            .into_iter()
            .collect();
        let (cf, body) = if opts.objects {
            (Some(40), self.object_list().into_bytes())
        } else {
            (None, Vec::new())
        };
        let r = self.request(Code::POST, &loc, &query, cf, body).await?;
        if r.code != Code::CHANGED {
            return Err(SimError::Refused(r.code));
        }
        Ok(())
    }

    /// One datagram from the socket.
    fn on_datagram(self: &Arc<Self>, buf: &[u8], from: SocketAddr) {
        let msg = match Message::parse(buf) {
            Ok(m) => m,
            Err(e) => {
                if let Some(h) = e.header.filter(|h| h.mtype == MsgType::Con) {
                    self.send_to(&empty(MsgType::Rst, h.mid), from);
                }
                return;
            }
        };
        if guard(&self.state).asleep {
            return;
        }
        match msg.mtype {
            MsgType::Con | MsgType::Non if msg.code.is_request() => self.on_request(&msg, from),
            MsgType::Con if msg.code.is_empty() => {
                // CoAP ping.
                self.send_to(&empty(MsgType::Rst, msg.mid), from);
            }
            MsgType::Ack | MsgType::Rst => {
                let answer = if msg.mtype == MsgType::Rst {
                    Answer::Reset
                } else if msg.code.is_empty() {
                    Answer::Ack(None)
                } else {
                    Answer::Ack(Some(SimResponse::from_message(&msg)))
                };
                let waiter = guard(&self.state).acks.remove(&msg.mid);
                if let Some(w) = waiter {
                    let _ = w.send(answer);
                }
            }
            MsgType::Con | MsgType::Non if msg.code.is_response() => {
                let waiter = guard(&self.state).responses.remove(&msg.token);
                match waiter {
                    Some(w) => {
                        if msg.mtype == MsgType::Con {
                            self.send_to(&empty(MsgType::Ack, msg.mid), from);
                        }
                        let _ = w.send(SimResponse::from_message(&msg));
                    }
                    None => self.send_to(&empty(MsgType::Rst, msg.mid), from),
                }
            }
            _ => {}
        }
    }

    fn on_request(self: &Arc<Self>, msg: &Message<'_>, from: SocketAddr) {
        let con = msg.mtype == MsgType::Con;
        let mut st = guard(&self.state);
        if let Some(answer) = st.answers.get(from, msg.mid) {
            // A duplicate: the same answer again (a NON duplicate is just dropped).
            if con {
                self.send_to(answer, from);
            }
            return;
        }
        let uri_path: Vec<String> = msg
            .values(opt::URI_PATH)
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        let req = Received {
            from,
            confirmable: con,
            method: msg.code,
            token: msg.token,
            path: lwm2m_path(&self.cfg.root_segments(), &uri_path),
            uri_path,
            query: msg
                .values(opt::URI_QUERY)
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect(),
            accept: msg
                .uint_option(opt::ACCEPT, 2)
                .and_then(Result::ok)
                .and_then(|v| u16::try_from(v).ok()),
            content_format: msg.content_format(),
            observe: msg.observe(),
            block2: msg.block2().and_then(Result::ok),
            block1: msg.block1().and_then(Result::ok),
            payload: msg.payload.to_vec(),
        };
        let reply = st.device.handle(&self.cfg, &req, Instant::now());
        if st.received.len() >= RECEIVED_KEPT {
            st.received.remove(0);
        }
        st.received.push(req);
        let (mtype, mid) = if con {
            (MsgType::Ack, msg.mid)
        } else {
            st.mid = st.mid.wrapping_add(1);
            (MsgType::Non, st.mid)
        };
        let bytes = encode_reply(&reply, mtype, mid, msg.token);
        st.answers.put(from, msg.mid, bytes.clone());
        let observing = !st.device.observations.is_empty() && !st.ticking;
        if observing {
            st.ticking = true;
        }
        drop(st);
        self.send_to(&bytes, from);
        if observing {
            tokio::spawn(tick_loop(Arc::downgrade(self)));
        }
        match reply.after {
            After::Nothing => {}
            After::Reboot => {
                let me = self.clone();
                tokio::spawn(async move {
                    guard(&me.state).device.forget();
                    if let Err(e) = me.register().await {
                        tracing::warn!(error = %e, "simulated client could not register after its reboot");
                    }
                });
            }
            After::Update => {
                let me = self.clone();
                tokio::spawn(async move {
                    let _ = me.update(&UpdateOpts::default()).await;
                });
            }
        }
    }

    /// Sends the notifications due now; false once no observation is left.
    fn flush_notifications(self: &Arc<Self>) -> bool {
        let notes = {
            let mut st = guard(&self.state);
            if st.device.observations.is_empty() {
                st.ticking = false;
                return false;
            }
            if st.asleep {
                return true;
            }
            st.device.due(Instant::now())
        };
        for n in notes {
            self.notify(n);
        }
        true
    }

    fn notify(self: &Arc<Self>, n: Note) {
        let con = self.cfg.confirmable_notifications;
        let mid = self.next_mid();
        let bytes = Msg::new(
            if con { MsgType::Con } else { MsgType::Non },
            Code::CONTENT,
            mid,
            n.token,
        )
        .uint(opt::OBSERVE, n.seq)
        .uint(opt::CONTENT_FORMAT, u32::from(n.content_format))
        .payload(n.payload)
        .encode();
        let (tx, rx) = oneshot::channel();
        guard(&self.state).acks.insert(mid, tx);
        tokio::spawn(deliver_notification(
            Arc::downgrade(self),
            bytes,
            n.peer,
            mid,
            n.token,
            con,
            rx,
        ));
    }
}

fn encode_reply(r: &Reply, mtype: MsgType, mid: u16, token: Token) -> Vec<u8> {
    let mut m = Msg::new(mtype, r.code, mid, token);
    if let Some(o) = r.observe {
        m = m.uint(opt::OBSERVE, o);
    }
    for l in &r.location {
        m = m.opt(opt::LOCATION_PATH, l.as_bytes().to_vec());
    }
    if let Some(cf) = r.content_format {
        m = m.uint(opt::CONTENT_FORMAT, u32::from(cf));
    }
    if let Some(b) = r.block2 {
        m = m.uint(opt::BLOCK2, b.value());
    }
    if let Some(s) = r.size2 {
        m = m.uint(opt::SIZE2, s);
    }
    m.payload(r.payload.clone()).encode()
}

/// Retransmits a Confirmable notification until ACKed; a RST or no ACK at all ends the
/// observation (RFC 7641 §3.6, §4.5). A Non-confirmable one is sent once; a RST within the
/// first timeout ends the observation too.
async fn deliver_notification(
    weak: Weak<Inner>,
    bytes: Vec<u8>,
    peer: SocketAddr,
    mid: u16,
    token: Token,
    confirmable: bool,
    mut rx: oneshot::Receiver<Answer>,
) {
    let Some(timing) = weak.upgrade().map(|i| i.cfg.timing) else {
        return;
    };
    let mut wait = timing.initial();
    let sends = if confirmable {
        timing.max_retransmit + 1
    } else {
        1
    };
    // Unanswered: a CON notification is lost for good, a NON one just was not reset.
    let mut ended = confirmable;
    for _ in 0..sends {
        let Some(inner) = weak.upgrade() else { return };
        if !guard(&inner.state).asleep {
            inner.send_to(&bytes, peer);
        }
        drop(inner);
        tokio::select! {
            a = &mut rx => {
                ended = !matches!(a, Ok(Answer::Ack(_)));
                break;
            }
            () = tokio::time::sleep(wait) => wait *= 2,
        }
    }
    if let Some(inner) = weak.upgrade() {
        let mut st = guard(&inner.state);
        st.acks.remove(&mid);
        if ended {
            st.device.observations.retain(|o| o.token != token);
        }
    }
}

async fn recv_loop(weak: Weak<Inner>, socket: Arc<dyn SimSocket>) {
    let mut buf = vec![0u8; 2048];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf).await else {
            return;
        };
        let Some(inner) = weak.upgrade() else { return };
        inner.on_datagram(&buf[..n], from);
    }
}

async fn tick_loop(weak: Weak<Inner>) {
    loop {
        tokio::time::sleep(TICK).await;
        let Some(inner) = weak.upgrade() else { return };
        if !inner.flush_notifications() {
            return;
        }
    }
}

async fn update_loop(weak: Weak<Inner>) {
    loop {
        let Some(every) = weak
            .upgrade()
            .map(|i| Duration::from_secs(u64::from(i.cfg.lifetime)).mul_f64(0.75))
        else {
            return;
        };
        tokio::time::sleep(every.max(Duration::from_secs(1))).await;
        let Some(inner) = weak.upgrade() else { return };
        if guard(&inner.state).asleep {
            continue;
        }
        if let Err(e) = inner.update(&UpdateOpts::default()).await {
            tracing::debug!(endpoint = %inner.cfg.endpoint, error = %e, "simulated auto-Update failed");
        }
    }
}
