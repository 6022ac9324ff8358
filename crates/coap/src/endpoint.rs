//! [`CoapEndpoint`]: binds the `listen` sockets (or takes ready transports), gives each socket
//! a [`Router`] with the readings resource and any resources the caller added, runs one task
//! per socket and one per observe target, and shuts down gracefully.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use wardgate_core::payload::Limits;
use wardgate_core::{HealthReporter, IngestPipeline, Rate, Shutdown};

use crate::block::{BlockLimits, Reassembly};
use crate::client::{COMMAND_QUEUE, Requester};
use crate::codec::BlockOpt;
use crate::config::{CoapConfig, ObserveTarget};
use crate::driver::{self, DriveOptions};
use crate::engine::{Command, Engine};
use crate::error::CoapError;
use crate::ingest::{IngestResource, IngestSettings};
use crate::layer::{LayerConfig, Timing};
use crate::metrics::CoapMetrics;
use crate::observe::{Observer, ObserverDeps};
use crate::resource::{Registration, Resource};
use crate::router::{Router, RouterSettings};
use crate::transport::{SocketOptions, Transport, UdpTransport};
use crate::uri::{self, CoapUri};

/// What the endpoint needs from the rest of the gateway.
#[derive(Debug, Clone)]
pub struct EndpointDeps {
    /// The ingest pipeline readings go through (authorize, decode, enqueue, durable).
    pub pipeline: IngestPipeline,
    /// Metrics (see [`CoapMetrics::register`]).
    pub metrics: CoapMetrics,
    /// Marked ready once every socket is bound.
    pub health: HealthReporter,
}

#[derive(Debug)]
struct Socket<T> {
    transport: Arc<T>,
    local: SocketAddr,
    cmd_tx: mpsc::Sender<Command>,
    cmd_rx: mpsc::Receiver<Command>,
}

/// Makes one socket's instance of an added resource (each socket task owns its own).
type ResourceFactory = Box<dyn Fn() -> Box<dyn Resource> + Send + Sync>;

/// The CoAP endpoint: devices' requests in, the gateway's requests (observe, later LwM2M) out,
/// over the same sockets. Generic over the [`Transport`] (UDP by default; DTLS, or a test
/// transport that tags peers with an identity).
pub struct CoapEndpoint<T: Transport = UdpTransport> {
    cfg: CoapConfig,
    deps: EndpointDeps,
    sockets: Vec<Socket<T>>,
    targets: Vec<(ObserveTarget, CoapUri)>,
    extra: Vec<(Registration, ResourceFactory)>,
}

impl<T: Transport + std::fmt::Debug> std::fmt::Debug for CoapEndpoint<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoapEndpoint")
            .field("sockets", &self.sockets)
            .field("targets", &self.targets.len())
            .field("extra_resources", &self.extra.len())
            .finish_non_exhaustive()
    }
}

fn observe_targets(cfg: &CoapConfig) -> Result<Vec<(ObserveTarget, CoapUri)>, CoapError> {
    cfg.observe
        .iter()
        .map(|t| uri::parse_uri(&t.uri).map(|u| (t.clone(), u)))
        .collect()
}

impl CoapEndpoint<UdpTransport> {
    /// Binds every `listen` socket (SO_RCVBUF/SO_SNDBUF from the config, IPV6_V6ONLY on IPv6,
    /// non-blocking) and reports ready. Fails naming the address that cannot be bound, or the
    /// observe URI that cannot be parsed. The configuration is otherwise assumed validated.
    pub async fn bind(cfg: CoapConfig, deps: EndpointDeps) -> Result<Self, CoapError> {
        Self::bind_wrapped(cfg, deps, Ok).await
    }
}

impl<T: Transport> CoapEndpoint<T> {
    /// Like [`CoapEndpoint::bind`], with each bound UDP socket passed through `wrap` (a
    /// transport around UDP, such as a capture tap) before the endpoint uses it.
    pub async fn bind_wrapped(
        cfg: CoapConfig,
        deps: EndpointDeps,
        mut wrap: impl FnMut(UdpTransport) -> std::io::Result<T>,
    ) -> Result<Self, CoapError> {
        // A bad observe URI fails before anything is bound.
        observe_targets(&cfg)?;
        let opts = SocketOptions {
            recv_buffer_bytes: cfg.recv_buffer_bytes,
            send_buffer_bytes: cfg.send_buffer_bytes,
        };
        let mut sockets = Vec::with_capacity(cfg.listen.len());
        for addr in &cfg.listen {
            let transport = match UdpTransport::bind(*addr, opts) {
                Ok(t) => t,
                // The shipped default listens on 0.0.0.0 and [::]; a host (or container) with
                // IPv6 disabled should still serve IPv4 rather than refuse to start.
                Err(source) if cfg.listen.len() > 1 && ipv6_unavailable(addr, &source) => {
                    tracing::warn!(%addr, error = %source, "IPv6 is not available on this host; serving CoAP on the other listen addresses");
                    continue;
                }
                Err(source) => {
                    return Err(CoapError::Bind {
                        addr: *addr,
                        source,
                    });
                }
            };
            let transport = wrap(transport).map_err(|source| CoapError::Bind {
                addr: *addr,
                source,
            })?;
            sockets.push(transport);
        }
        Self::with_transports(cfg, deps, sockets)
    }
}

impl<T: Transport> CoapEndpoint<T> {
    /// An endpoint over transports the caller bound (DTLS, or a test transport), with the
    /// same resources, limits and observe targets as [`CoapEndpoint::bind`] gives UDP sockets.
    /// Reports ready.
    pub fn with_transports(
        cfg: CoapConfig,
        deps: EndpointDeps,
        transports: Vec<T>,
    ) -> Result<Self, CoapError> {
        let unbound = || {
            cfg.listen
                .first()
                .copied()
                .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)))
        };
        let mut sockets = Vec::with_capacity(transports.len());
        for transport in transports {
            let local = transport.local_addr().map_err(|source| CoapError::Bind {
                addr: unbound(),
                source,
            })?;
            let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
            sockets.push(Socket {
                transport: Arc::new(transport),
                local,
                cmd_tx,
                cmd_rx,
            });
        }
        if sockets.is_empty() {
            return Err(CoapError::Bind {
                addr: unbound(),
                source: std::io::Error::new(
                    std::io::ErrorKind::AddrNotAvailable,
                    "no listen address could be bound",
                ),
            });
        }
        let targets = observe_targets(&cfg)?;
        let detail = sockets
            .iter()
            .map(|s| format!("{} {}", s.transport.kind(), s.local))
            .collect::<Vec<_>>()
            .join(", ");
        deps.health.ready(detail);
        Ok(CoapEndpoint {
            cfg,
            deps,
            sockets,
            targets,
            extra: Vec::new(),
        })
    }

    /// Adds a resource to every socket's router (each socket gets its own instance from
    /// `make`). Block-wise transfer, 4.04/4.05 and `/.well-known/core` come with it.
    pub fn add_resource(
        &mut self,
        reg: Registration,
        make: impl Fn() -> Box<dyn Resource> + Send + Sync + 'static,
    ) {
        self.extra.push((reg, Box::new(make)));
    }

    /// The bound addresses (ephemeral ports resolved), in `listen` order.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.sockets.iter().map(|s| s.local).collect()
    }

    /// A requester sending from the socket whose address family matches `peer` (for the gateway
    /// acting as a client, e.g. LwM2M). Usable once [`CoapEndpoint::run`] runs.
    pub fn requester_for(&self, peer: SocketAddr) -> Option<Requester> {
        self.sockets
            .iter()
            .find(|s| s.local.is_ipv4() == peer.is_ipv4())
            .map(|s| Requester::new(s.cmd_tx.clone()))
    }

    fn ingest_settings(&self) -> IngestSettings {
        let c = &self.cfg;
        IngestSettings {
            ingest_path: c
                .ingest_path
                .split('/')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            default_class: c.default_class,
            busy_max_age: u32::try_from(c.busy_max_age.as_secs()).unwrap_or(u32::MAX),
            per_device: Rate {
                rate: c.rate_limit.per_device_rate,
                burst: c.rate_limit.per_device_burst,
            },
        }
    }

    fn limits(&self) -> Limits {
        Limits {
            max_records: self.cfg.max_records_per_message,
            ..Limits::default()
        }
    }

    /// Serves until `shutdown` is cancelled; then new requests get 5.03 with Max-Age, in-flight
    /// requests are answered (their commits awaited) and observations cancelled, bounded by
    /// `drain_timeout`.
    pub async fn run(self, shutdown: Shutdown) -> Result<(), CoapError> {
        let settings = self.ingest_settings();
        let pipeline = self.deps.pipeline.clone().with_limits(self.limits());
        let CoapEndpoint {
            cfg,
            deps,
            sockets,
            targets,
            extra,
        } = self;
        let observers_done = CancellationToken::new();
        let router_settings = RouterSettings {
            busy_max_age: settings.busy_max_age,
            max_body_bytes: cfg.block.max_body_bytes,
            preferred_szx: BlockOpt::szx_for(usize::from(cfg.block.preferred_block_size)),
            max_responses_per_source: cfg.block.max_transfers_per_source,
            per_source: Rate {
                rate: cfg.rate_limit.per_source_rate,
                burst: cfg.rate_limit.per_source_burst,
            },
        };
        let block_limits = BlockLimits {
            max_body_bytes: cfg.block.max_body_bytes,
            max_open_transfers: cfg.block.max_open_transfers,
            max_transfers_per_source: cfg.block.max_transfers_per_source,
            transfer_timeout: cfg.block.transfer_timeout,
            preferred_szx: router_settings.preferred_szx,
            busy_max_age: settings.busy_max_age,
        };
        let layer = LayerConfig {
            transmission: cfg.transmission,
            piggyback_budget: cfg.piggyback_budget,
            dedup_max_entries: cfg.dedup.max_entries,
            dedup_max_entries_per_source: cfg.dedup.max_entries_per_source,
        };
        let mut drivers = JoinSet::new();
        let mut requesters = Vec::new();
        let transports: Vec<Arc<T>> = sockets.iter().map(|s| s.transport.clone()).collect();
        let peer_of: crate::observe::PeerOf = Arc::new(move |addr| {
            let mut first = None;
            for t in &transports {
                let p = t.peer(addr);
                if p.identity.is_some() {
                    return p;
                }
                first.get_or_insert(p);
            }
            first.unwrap_or_else(|| wardgate_core::PeerContext::udp(addr))
        });
        for s in sockets {
            let mut router = Router::new(
                router_settings,
                Reassembly::new(block_limits, deps.metrics.clone()),
                deps.metrics.clone(),
            );
            let (reg, ingest) =
                IngestResource::new(settings.clone(), pipeline.clone(), deps.metrics.clone());
            router.add(reg, Box::new(ingest));
            for (reg, make) in &extra {
                router.add(reg.clone(), make());
            }
            let engine = Engine::new(
                Instant::now(),
                layer,
                cfg.max_datagram_bytes,
                Some(router),
                deps.metrics.clone(),
            );
            requesters.push((s.local, Requester::new(s.cmd_tx)));
            drivers.spawn(driver::drive(
                s.transport,
                engine,
                s.cmd_rx,
                shutdown.clone(),
                DriveOptions {
                    max_datagram: cfg.max_datagram_bytes,
                    drain_timeout: cfg.drain_timeout,
                    observers_done: observers_done.clone(),
                },
                deps.metrics.clone(),
            ));
        }
        let observer_deps = ObserverDeps {
            pipeline,
            metrics: deps.metrics.clone(),
            sockets: requesters,
            cancel_wait: Timing::new(&cfg.transmission)
                .max_transmit_wait
                .min(cfg.drain_timeout),
            peer_of,
        };
        let mut observers = JoinSet::new();
        for (t, u) in targets {
            observers.spawn(Observer::new(t, u, observer_deps.clone()).run(shutdown.clone()));
        }
        // The requesters must not keep the socket tasks' command queues open after observers end.
        drop(observer_deps);
        shutdown.cancelled().await;
        deps.health.not_ready("shutting down");
        while let Some(r) = observers.join_next().await {
            if let Err(e) = r {
                tracing::error!(error = %e, "CoAP observer task failed");
            }
        }
        observers_done.cancel();
        while let Some(r) = drivers.join_next().await {
            if let Err(e) = r {
                tracing::error!(error = %e, "CoAP socket task failed");
            }
        }
        deps.health.not_ready("stopped");
        Ok(())
    }
}

/// A wildcard IPv6 listener on a host without IPv6 (EAFNOSUPPORT on Linux, or no address).
fn ipv6_unavailable(addr: &SocketAddr, e: &std::io::Error) -> bool {
    const EAFNOSUPPORT: i32 = 97;
    addr.is_ipv6()
        && addr.ip().is_unspecified()
        && (e.raw_os_error() == Some(EAFNOSUPPORT)
            || e.kind() == std::io::ErrorKind::AddrNotAvailable)
}

#[cfg(test)]
mod ipv6_tests {
    use super::*;

    #[test]
    fn only_a_wildcard_ipv6_listener_on_a_host_without_ipv6_is_skippable() {
        let v6: SocketAddr = "[::]:5683".parse().unwrap();
        let v6_lo: SocketAddr = "[::1]:5683".parse().unwrap();
        let v4: SocketAddr = "0.0.0.0:5683".parse().unwrap();
        let no_family = std::io::Error::from_raw_os_error(97);
        let in_use = std::io::Error::from(std::io::ErrorKind::AddrInUse);
        assert!(ipv6_unavailable(&v6, &no_family));
        assert!(!ipv6_unavailable(&v6, &in_use));
        assert!(!ipv6_unavailable(&v6_lo, &no_family));
        assert!(!ipv6_unavailable(&v4, &no_family));
    }
}
