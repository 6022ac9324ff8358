//! The simulated device: its objects, attributes and observations, and its answer to each
//! request of the server (TS Transport §6.3–6.4). No I/O: a [`Received`] in, a [`Reply`] out;
//! notifications due are collected with [`Device::due`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::SystemTime;

use tokio::time::Instant;
use wardgate_coap::codec::{BlockOpt, Code, Token};

use super::observe::{Attrs, Observation, effective, numeric};
use super::tree::{Miss, Tree};
use super::{Executed, Received, SimConfig};
use crate::format::{self, Format};
use crate::link::{Link, to_link_format};
use crate::node::{Entry, Path, Value};

/// iPATCH (RFC 8132).
const IPATCH: Code = Code::new(0, 7);

/// What the client does once its answer is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum After {
    Nothing,
    /// Reboot: forget observations and attributes, Register again.
    Reboot,
    /// Registration Update Trigger (`/1/x/8`): send an Update.
    Update,
}

/// The answer to one request.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub(crate) code: Code,
    pub(crate) content_format: Option<u16>,
    pub(crate) observe: Option<u32>,
    pub(crate) location: Vec<String>,
    pub(crate) block2: Option<BlockOpt>,
    pub(crate) size2: Option<u32>,
    pub(crate) payload: Vec<u8>,
    pub(crate) after: After,
}

impl Reply {
    fn code(code: Code) -> Reply {
        Reply {
            code,
            content_format: None,
            observe: None,
            location: Vec::new(),
            block2: None,
            size2: None,
            payload: Vec::new(),
            after: After::Nothing,
        }
    }

    fn diagnostic(code: Code, text: impl Into<String>) -> Reply {
        Reply {
            payload: text.into().into_bytes(),
            ..Reply::code(code)
        }
    }

    fn content(f: Format, payload: Vec<u8>) -> Reply {
        Reply {
            content_format: Some(f.coap_number()),
            payload,
            ..Reply::code(Code::CONTENT)
        }
    }
}

fn miss(m: Miss) -> Reply {
    match m {
        Miss::NotFound => {
            Reply::diagnostic(Code::NOT_FOUND, "no such object, instance or resource")
        }
        Miss::NotAllowed => Reply::code(Code::METHOD_NOT_ALLOWED),
    }
}

/// A notification to send.
#[derive(Debug, Clone)]
pub(crate) struct Note {
    pub(crate) token: Token,
    pub(crate) peer: SocketAddr,
    pub(crate) seq: u32,
    pub(crate) content_format: u16,
    pub(crate) payload: Vec<u8>,
}

/// The LwM2M side of a simulated client.
#[derive(Debug)]
pub(crate) struct Device {
    pub(crate) tree: Tree,
    pub(crate) attrs: BTreeMap<Path, Attrs>,
    pub(crate) observations: Vec<Observation>,
    pub(crate) executed: Vec<Executed>,
    /// The Observe sequence number of the last notification (24 bits, increasing).
    seq: u32,
}

/// The LwM2M path of a request's Uri-Path below the alternate root path (`None`: not below
/// it, or not a path).
pub(crate) fn lwm2m_path(root: &[String], uri_path: &[String]) -> Option<Path> {
    let rest = uri_path.strip_prefix(root)?;
    Path::from_segments(rest).ok()
}

impl Device {
    pub(crate) fn new(tree: Tree) -> Device {
        Device {
            tree,
            attrs: BTreeMap::new(),
            observations: Vec::new(),
            executed: Vec::new(),
            seq: 1,
        }
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = (self.seq + 1) & 0xff_ffff;
        self.seq
    }

    /// A reboot: observations and attributes are gone.
    pub(crate) fn forget(&mut self) {
        self.observations.clear();
        self.attrs.clear();
    }

    /// Answers `req` (duplicates are the message layer's business).
    pub(crate) fn handle(&mut self, cfg: &SimConfig, req: &Received, now: Instant) -> Reply {
        if req.block1.is_some() {
            // Large writes are out of scope for this peer: say so rather than take one block
            // for the whole body.
            return Reply::diagnostic(
                Code::REQUEST_ENTITY_TOO_LARGE,
                "the simulator does not reassemble Block1 bodies",
            );
        }
        let Some(path) = req.path else {
            return Reply::diagnostic(Code::NOT_FOUND, "not an LwM2M path of this client");
        };
        let reply = match req.method {
            Code::GET if req.accept == Some(Format::LinkFormat.coap_number()) => {
                self.discover(&path)
            }
            Code::GET => self.read(cfg, req, &path, now),
            Code::FETCH if path.is_empty() => self.read_composite(cfg, req, now),
            Code::PUT if req.content_format.is_none() => self.write_attributes(req, &path),
            Code::PUT => self.write(cfg, req, &path, true),
            Code::POST if path.len() == 1 => self.create(cfg, req, &path),
            Code::POST if path.len() == 3 && matches!(req.content_format, None | Some(0)) => {
                self.execute(req, &path)
            }
            Code::POST if matches!(path.len(), 2..=3) => self.write(cfg, req, &path, false),
            Code::DELETE if path.len() == 2 => self.delete(&path),
            IPATCH if path.is_empty() => self.write_composite(cfg, req),
            _ => Reply::code(Code::METHOD_NOT_ALLOWED),
        };
        block2(reply, req, cfg.block_size)
    }

    fn format_for(cfg: &SimConfig, accept: Option<u16>) -> Result<Format, Reply> {
        let Some(n) = accept else {
            return Ok(cfg.default_format());
        };
        match Format::from_coap(n) {
            Some(f) if cfg.formats.contains(&f) => Ok(f),
            _ => Err(Reply::code(Code::NOT_ACCEPTABLE)),
        }
    }

    fn encode(&self, f: Format, base: &Path, entries: &[Entry]) -> Result<Vec<u8>, Reply> {
        // A format that cannot carry the values (text for an instance, opaque for a float).
        format::encode(f, base, entries, &self.tree)
            .map_err(|e| Reply::diagnostic(Code::NOT_ACCEPTABLE, e.to_string()))
    }

    fn read(&mut self, cfg: &SimConfig, req: &Received, path: &Path, now: Instant) -> Reply {
        if path.is_empty() {
            return Reply::code(Code::METHOD_NOT_ALLOWED);
        }
        let f = match Self::format_for(cfg, req.accept) {
            Ok(f) => f,
            Err(r) => return r,
        };
        let entries = match self.tree.entries(path) {
            Ok(e) => e,
            Err(m) => return miss(m),
        };
        let body = match self.encode(f, path, &entries) {
            Ok(b) => b,
            Err(r) => return r,
        };
        let mut reply = Reply::content(f, body);
        reply.observe = self.observe_request(req, vec![*path], false, f, &entries, now);
        reply
    }

    /// Registers or cancels the observation `req` asks for; the Observe value to answer with.
    fn observe_request(
        &mut self,
        req: &Received,
        paths: Vec<Path>,
        composite: bool,
        format: Format,
        entries: &[Entry],
        now: Instant,
    ) -> Option<u32> {
        self.observations.retain(|o| o.token != req.token);
        if req.observe != Some(0) {
            return None;
        }
        let last_value = match entries {
            [e] if !composite => numeric(&e.value),
            _ => None,
        };
        self.observations.push(Observation {
            token: req.token,
            peer: req.from,
            paths,
            composite,
            format,
            last_sent: now,
            last_value,
            pending: false,
        });
        Some(self.next_seq())
    }

    fn read_composite(&mut self, cfg: &SimConfig, req: &Received, now: Instant) -> Reply {
        let paths = match req.content_format.and_then(Format::from_coap) {
            Some(f @ (Format::SenmlJson | Format::SenmlCbor)) if cfg.formats.contains(&f) => {
                match format::decode_paths(f, &req.payload) {
                    Ok(p) => p,
                    Err(e) => return Reply::diagnostic(Code::BAD_REQUEST, e.to_string()),
                }
            }
            _ => return Reply::code(Code::UNSUPPORTED_CONTENT_FORMAT),
        };
        let f = match Self::format_for(cfg, req.accept.or(req.content_format)) {
            Ok(f @ (Format::SenmlJson | Format::SenmlCbor | Format::Lwm2mCbor)) => f,
            Ok(_) => return Reply::code(Code::NOT_ACCEPTABLE),
            Err(r) => return r,
        };
        let entries = self.composite_entries(&paths);
        if entries.is_empty() {
            return Reply::diagnostic(Code::NOT_FOUND, "none of the paths exists");
        }
        let body = match self.encode(f, &Path::ROOT, &entries) {
            Ok(b) => b,
            Err(r) => return r,
        };
        let mut reply = Reply::content(f, body);
        reply.observe = self.observe_request(req, paths, true, f, &entries, now);
        reply
    }

    /// The values of every path that exists (Read-Composite skips the others).
    fn composite_entries(&self, paths: &[Path]) -> Vec<Entry> {
        let mut out: Vec<Entry> = Vec::new();
        for p in paths {
            for e in self.tree.entries(p).unwrap_or_default() {
                if !out.iter().any(|x| x.path == e.path) {
                    out.push(e);
                }
            }
        }
        out
    }

    fn discover(&self, path: &Path) -> Reply {
        if !self.tree.exists(path) || path.len() > 3 {
            return miss(Miss::NotFound);
        }
        let links: Vec<Link> = self
            .tree
            .discover(path)
            .into_iter()
            .map(|(p, dim)| {
                let mut attrs = Vec::new();
                if let Some(d) = dim {
                    attrs.push(crate::link::Attr {
                        name: "dim".into(),
                        value: Some(d.to_string()),
                    });
                }
                if let Some(a) = self.attrs.get(&p) {
                    attrs.extend(a.links());
                }
                Link {
                    target: p.to_string(),
                    attrs,
                }
            })
            .collect();
        Reply::content(Format::LinkFormat, to_link_format(&links).into_bytes())
    }

    fn write_attributes(&mut self, req: &Received, path: &Path) -> Reply {
        if path.is_empty() || !self.tree.exists(path) {
            return miss(Miss::NotFound);
        }
        let mut a = self.attrs.get(path).cloned().unwrap_or_default();
        if let Err(e) = a.apply(&req.query) {
            return Reply::diagnostic(Code::BAD_REQUEST, e);
        }
        self.attrs.insert(*path, a);
        Reply::code(Code::CHANGED)
    }

    /// Decodes a request body in a format the client takes.
    fn decode(&self, cfg: &SimConfig, req: &Received, base: &Path) -> Result<Vec<Entry>, Reply> {
        let f = match req.content_format.and_then(Format::from_coap) {
            Some(f) if cfg.formats.contains(&f) => f,
            _ => return Err(Reply::code(Code::UNSUPPORTED_CONTENT_FORMAT)),
        };
        format::decode(f, base, &req.payload, &self.tree, SystemTime::now())
            .map_err(|e| Reply::diagnostic(Code::BAD_REQUEST, e.to_string()))
    }

    fn write(&mut self, cfg: &SimConfig, req: &Received, path: &Path, replace: bool) -> Reply {
        if path.len() < 2
            || !self
                .tree
                .exists(&Path::new(&path.ids()[..2]).unwrap_or_default())
        {
            return miss(Miss::NotFound);
        }
        if self.tree.is_exec(path) {
            return miss(Miss::NotAllowed);
        }
        let entries = match self.decode(cfg, req, path) {
            Ok(e) => e,
            Err(r) => return r,
        };
        if replace {
            if path.len() == 2 {
                let keep: Vec<u16> = entries
                    .iter()
                    .filter_map(|e| e.path.resource_id())
                    .collect();
                self.tree.retain_resources(path, &keep);
            }
            for e in entries.iter().filter(|e| e.path.len() == 4) {
                let ids = e.path.ids();
                self.tree
                    .clear_resource(&Path::resource(ids[0], ids[1], ids[2]));
            }
        }
        for e in entries {
            if let Err(m) = self.set(&e.path, e.value) {
                return miss(m);
            }
        }
        Reply::code(Code::CHANGED)
    }

    fn write_composite(&mut self, cfg: &SimConfig, req: &Received) -> Reply {
        let entries = match self.decode(cfg, req, &Path::ROOT) {
            Ok(e) => e,
            Err(r) => return r,
        };
        if let Some(e) = entries.iter().find(|e| !self.tree.exists(&e.path)) {
            return Reply::diagnostic(Code::NOT_FOUND, format!("{} does not exist", e.path));
        }
        for e in entries {
            if let Err(m) = self.set(&e.path, e.value) {
                return miss(m);
            }
        }
        Reply::code(Code::CHANGED)
    }

    fn execute(&mut self, req: &Received, path: &Path) -> Reply {
        if !self.tree.exists(path) {
            return miss(Miss::NotFound);
        }
        if !self.tree.is_exec(path) {
            return miss(Miss::NotAllowed);
        }
        let arguments =
            (!req.payload.is_empty()).then(|| String::from_utf8_lossy(&req.payload).into_owned());
        self.executed.push(Executed {
            path: *path,
            arguments,
        });
        let after = match path.ids() {
            [3, 0, 4] => After::Reboot,
            [1, _, 8] => After::Update,
            _ => After::Nothing,
        };
        Reply {
            after,
            ..Reply::code(Code::CHANGED)
        }
    }

    fn create(&mut self, cfg: &SimConfig, req: &Received, path: &Path) -> Reply {
        let entries = match self.decode(cfg, req, path) {
            Ok(e) => e,
            Err(r) => return r,
        };
        let mut iids: Vec<u16> = entries
            .iter()
            .filter_map(|e| e.path.instance_id())
            .collect();
        iids.dedup();
        let oid = path.ids()[0];
        let iid = match iids.as_slice() {
            [i] => *i,
            [] => (0..u16::MAX)
                .find(|i| !self.tree.exists(&Path::instance(oid, *i)))
                .unwrap_or(0),
            _ => return Reply::diagnostic(Code::BAD_REQUEST, "Create takes one instance"),
        };
        if !self.tree.create(oid, iid) {
            return Reply::diagnostic(
                Code::BAD_REQUEST,
                "unknown object or the instance exists already",
            );
        }
        for e in entries {
            if let Err(m) = self.tree.set(&e.path, e.value) {
                return miss(m);
            }
        }
        Reply {
            location: vec![oid.to_string(), iid.to_string()],
            ..Reply::code(Code::CREATED)
        }
    }

    fn delete(&mut self, path: &Path) -> Reply {
        let ids = path.ids();
        if !self.tree.delete(ids[0], ids[1]) {
            return miss(Miss::NotFound);
        }
        self.observations
            .retain(|o| !o.paths.iter().all(|p| p.starts_with(path)));
        Reply::code(Code::DELETED)
    }

    /// Sets a value and marks the observations the change is worth a notification to.
    pub(crate) fn set(&mut self, path: &Path, value: Value) -> Result<(), Miss> {
        let new = numeric(&value);
        let changed = self.tree.get(path).as_ref() != Some(&value);
        self.tree.set(path, value)?;
        if !changed {
            return Ok(());
        }
        for o in self.observations.iter_mut().filter(|o| o.covers(path)) {
            let a = effective(&self.attrs, o.paths.first().unwrap_or(path));
            let single = !o.composite && o.paths.first() == Some(path);
            if !single || a.worth(o.last_value, new) {
                o.pending = true;
            }
        }
        Ok(())
    }

    /// The notifications due at `now` (each observation's value rendered again). An observed
    /// path that disappeared ends its observation.
    pub(crate) fn due(&mut self, now: Instant) -> Vec<Note> {
        let mut notes = Vec::new();
        let mut gone = Vec::new();
        for i in 0..self.observations.len() {
            let o = &self.observations[i];
            let a = effective(&self.attrs, o.paths.first().unwrap_or(&Path::ROOT));
            if !o.due(&a, now) {
                continue;
            }
            let (base, entries) = if o.composite {
                (Path::ROOT, self.composite_entries(&o.paths))
            } else {
                let p = o.paths.first().copied().unwrap_or_default();
                (p, self.tree.entries(&p).unwrap_or_default())
            };
            let Ok(payload) = format::encode(o.format, &base, &entries, &self.tree) else {
                gone.push(o.token);
                continue;
            };
            if entries.is_empty() {
                gone.push(o.token);
                continue;
            }
            let (token, peer, cf) = (o.token, o.peer, o.format.coap_number());
            let last_value = match entries.as_slice() {
                [e] if !o.composite => numeric(&e.value),
                _ => None,
            };
            let seq = self.next_seq();
            let o = &mut self.observations[i];
            o.last_sent = now;
            o.pending = false;
            o.last_value = last_value;
            notes.push(Note {
                token,
                peer,
                seq,
                content_format: cf,
                payload,
            });
        }
        self.observations.retain(|o| !gone.contains(&o.token));
        notes
    }
}

/// Slices an answer longer than the block size (or than the block the request asked for)
/// into the block the request names (RFC 7959 §2.4). Observe answers are never sliced.
fn block2(mut reply: Reply, req: &Received, block_size: usize) -> Reply {
    let asked = req.block2.map(|b| b.size()).unwrap_or(usize::MAX);
    let size = 1usize << (BlockOpt::szx_for(block_size.min(asked)) + 4);
    if reply.observe.is_some() || !reply.code.is_success() {
        return reply;
    }
    if reply.payload.len() <= size && req.block2.is_none_or(|b| b.num == 0) {
        return reply;
    }
    let num = req.block2.map_or(0, |b| b.num);
    let start = usize::try_from(num)
        .unwrap_or(usize::MAX)
        .saturating_mul(size);
    if start >= reply.payload.len() && start > 0 {
        return Reply::diagnostic(Code::BAD_OPTION, "no such block");
    }
    let end = (start + size).min(reply.payload.len());
    let total = reply.payload.len();
    reply.payload = reply.payload[start..end].to_vec();
    reply.block2 = Some(BlockOpt {
        num,
        more: end < total,
        szx: BlockOpt::szx_for(size),
    });
    reply.size2 = (num == 0).then(|| u32::try_from(total).unwrap_or(u32::MAX));
    reply
}
