//! Who sent a message: the peer context that travels from the transport that received it,
//! through the protocol adapter, into the ingest pipeline and the stored reading's provenance.
//!
//! It is an address, how the peer reached us, and, when something proved it, an authenticated
//! identity: a DTLS PSK identity, a client certificate's fingerprint, a bearer token's subject.
//! The transport (DTLS, TLS) or the adapter (HTTP bearer token) fills the identity; nothing
//! downstream trusts a device id a peer merely claims without going through the
//! [`crate::Authorizer`]. Model: Californium's `EndpointContext`.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

/// How a peer reached the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    /// Plain UDP (CoAP).
    Udp,
    /// DTLS over UDP (CoAPS).
    Dtls,
    /// Plain TCP (MQTT).
    Tcp,
    /// TLS over TCP (MQTTS).
    Tls,
    /// HTTP over plain TCP.
    Http,
    /// HTTP over TLS.
    Https,
}

impl TransportKind {
    /// The lower-case wire name (JSON `source.transport`, metric label, log field).
    pub fn as_str(self) -> &'static str {
        match self {
            TransportKind::Udp => "udp",
            TransportKind::Dtls => "dtls",
            TransportKind::Tcp => "tcp",
            TransportKind::Tls => "tls",
            TransportKind::Http => "http",
            TransportKind::Https => "https",
        }
    }

    /// Whether the transport itself authenticates and encrypts.
    pub fn is_secure(self) -> bool {
        matches!(
            self,
            TransportKind::Dtls | TransportKind::Tls | TransportKind::Https
        )
    }
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What proved an identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdentityKind {
    /// A DTLS/TLS pre-shared key identity (RFC 4279); the key itself never leaves the registry.
    PskIdentity,
    /// The SHA-256 fingerprint (hex) of a verified client certificate.
    CertificateSha256,
    /// The subject a verified bearer token names.
    TokenSubject,
}

impl IdentityKind {
    /// The prefix of the identity's wire form (`psk:bed-12`).
    pub fn prefix(self) -> &'static str {
        match self {
            IdentityKind::PskIdentity => "psk",
            IdentityKind::CertificateSha256 => "x509-sha256",
            IdentityKind::TokenSubject => "token",
        }
    }
}

/// An authenticated identity. Cheap to clone. Never a secret: only the public name of one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    kind: IdentityKind,
    value: Arc<str>,
}

impl Identity {
    /// An identity of `kind` named `value`.
    pub fn new(kind: IdentityKind, value: impl Into<Arc<str>>) -> Self {
        Identity {
            kind,
            value: value.into(),
        }
    }

    /// What proved it.
    pub fn kind(&self) -> IdentityKind {
        self.kind
    }

    /// The name, without the kind prefix.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// Parses the wire form (`psk:bed-12`, as [`fmt::Display`] writes it and a reading's
    /// `source.identity` carries it); `None` for an unknown prefix or an empty value.
    pub fn parse(s: &str) -> Option<Identity> {
        let (prefix, value) = s.split_once(':')?;
        let kind = [
            IdentityKind::PskIdentity,
            IdentityKind::CertificateSha256,
            IdentityKind::TokenSubject,
        ]
        .into_iter()
        .find(|k| k.prefix() == prefix)?;
        (!value.is_empty()).then(|| Identity::new(kind, value))
    }
}

impl fmt::Display for Identity {
    /// `kind:value`, e.g. `psk:bed-12`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind.prefix(), self.value)
    }
}

/// Sees the raw datagrams a transport receives and sends (the traffic monitor's hook for
/// transports that own their socket, such as DTLS, whose records a wrapper around the
/// transport would only see decrypted). Called on the transport's hot path: it must only
/// copy, count or `try_send`, never block.
pub trait DatagramTap: Send + Sync + fmt::Debug {
    /// One datagram received from (`inbound`) or sent to `peer`, on the local socket `local`.
    fn datagram(&self, inbound: bool, peer: &PeerContext, local: SocketAddr, bytes: &[u8]);

    /// The outcome of a security handshake with `peer`: `"established"`, or the failure
    /// reason the transport counts (e.g. `unknown_identity`, `bad_key`, `timeout`). Default:
    /// ignored.
    fn handshake(&self, peer: &PeerContext, local: SocketAddr, outcome: &'static str) {
        let _ = (peer, local, outcome);
    }

    /// `len` bytes read from (`inbound`) or written to `peer` on a stream session (HTTPS
    /// ingest): only how many, never what (a stream tap sits above TLS, where the bytes are
    /// plaintext patient data). Default: ignored.
    fn stream(&self, inbound: bool, peer: &PeerContext, local: SocketAddr, len: usize) {
        let _ = (inbound, peer, local, len);
    }

    /// A request from `peer` refused for its credentials (HTTP 401 or 403 on a stream
    /// session: what a datagram tap reads from a CoAP 4.01/4.03 on the wire). Default:
    /// ignored.
    fn auth_failure(&self, peer: &PeerContext, local: SocketAddr) {
        let _ = (peer, local);
    }

    /// Whether the tap takes session secrets ([`DatagramTap::session_keys`]); a transport
    /// keeps what it needs to derive them only while this is true. Default: false.
    fn wants_session_keys(&self) -> bool {
        false
    }

    /// The secrets of a security session with `peer`, just established, that decrypt its
    /// captured records: a TLS 1.2 / DTLS 1.2 master secret and the client random that names
    /// the session (the NSS key log format's `CLIENT_RANDOM` line). Only ever written where an
    /// administrator asked for it; never logged. Default: ignored.
    fn session_keys(
        &self,
        peer: &PeerContext,
        local: SocketAddr,
        client_random: &[u8; 32],
        master_secret: &[u8; 48],
    ) {
        let _ = (peer, local, client_random, master_secret);
    }
}

/// The peer a message came from. Cheap to clone (the identity is shared).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerContext {
    /// The peer's transport address.
    pub addr: SocketAddr,
    /// How it reached us.
    pub transport: TransportKind,
    /// What the transport or the adapter proved about it, if anything.
    pub identity: Option<Identity>,
    /// Which security session (a DTLS or TLS session) the message came in, for transports that
    /// have them: a number that changes when the peer handshakes again, so an adapter can tell
    /// a new session from the same one (LwM2M re-observes on a new DTLS session).
    pub session: Option<u64>,
}

impl PeerContext {
    /// An unauthenticated peer.
    pub fn new(addr: SocketAddr, transport: TransportKind) -> Self {
        PeerContext {
            addr,
            transport,
            identity: None,
            session: None,
        }
    }

    /// The same peer in security session `serial`.
    pub fn in_session(mut self, serial: u64) -> Self {
        self.session = Some(serial);
        self
    }

    /// An unauthenticated plain-UDP peer.
    pub fn udp(addr: SocketAddr) -> Self {
        PeerContext::new(addr, TransportKind::Udp)
    }

    /// The same peer with `identity` proven.
    pub fn with_identity(mut self, identity: Identity) -> Self {
        self.identity = Some(identity);
        self
    }
}

impl fmt::Display for PeerContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.transport, self.addr)?;
        if let Some(id) = &self.identity {
            write!(f, " ({id})")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_displays_transport_address_and_identity() {
        let p = PeerContext::udp("127.0.0.1:5683".parse().unwrap());
        assert_eq!(p.to_string(), "udp 127.0.0.1:5683");
        let p = PeerContext::new("[::1]:5684".parse().unwrap(), TransportKind::Dtls)
            .with_identity(Identity::new(IdentityKind::PskIdentity, "bed-12"));
        assert_eq!(p.to_string(), "dtls [::1]:5684 (psk:bed-12)");
        assert!(p.transport.is_secure());
    }

    #[test]
    fn an_identity_parses_back_from_its_wire_form() {
        for id in [
            Identity::new(IdentityKind::PskIdentity, "bed:12"),
            Identity::new(IdentityKind::CertificateSha256, "ab".repeat(32)),
            Identity::new(IdentityKind::TokenSubject, "bed-1/t1"),
        ] {
            assert_eq!(Identity::parse(&id.to_string()), Some(id));
        }
        assert_eq!(Identity::parse("psk:"), None);
        assert_eq!(Identity::parse("ssh:abc"), None);
        assert_eq!(Identity::parse("no-prefix"), None);
    }
}
