//! The authorize matrix: each denial reason with its answer, audit event and metric;
//! speaks_for globs; protocols per transport; certificates, tokens, quarantine.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use wardgate_core::{
    Action, AuditKind, AuthRequest, Authorizer, Clock, CredentialStore, Denied, Grant, Identity,
    IdentityKind, MessageClass, PeerContext, Protocol, TransportKind,
};
use wardgate_registry::{DenyReason, HeldReading, HeldVerdict};

#[test]
fn a_device_proven_by_its_psk_writes_its_own_readings_and_its_sensors() {
    let f = Fixture::new(&standard_toml("reject"));
    let peer = psk_peer("psk-bed-12");
    for device in ["bed-12", "bed-12-spo2", "bed-12-"] {
        let r = f.reg.authorize(&write(&peer, device, MessageClass::Vital));
        assert_eq!(r.as_deref(), Ok(device));
    }
    // An empty claim means the device itself.
    let r = f.reg.authorize(&write(&peer, "", MessageClass::Alarm));
    assert_eq!(r.as_deref(), Ok("bed-12"));
    assert!(f.audit.events().is_empty());
    assert!(f.reg.authenticates());
}

#[test]
fn a_peer_without_identity_is_unauthenticated() {
    let f = Fixture::new(&standard_toml("reject"));
    let peer = PeerContext::udp(addr());
    let r = f
        .reg
        .authorize(&write(&peer, "bed-12", MessageClass::Vital));
    assert_eq!(r, Err(Denied::Unauthenticated("no_identity")));
    let ev = f.audit.events();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].kind, AuditKind::AuthFailure);
    assert_eq!(ev[0].reason, "no_identity");
    assert_eq!(ev[0].actor.as_deref(), Some("claimed-device:bed-12"));
    assert_eq!(ev[0].peer, Some(addr()));
    assert_eq!(f.denials("no_identity"), 1);
}

#[test]
fn an_unknown_identity_is_rejected_by_default() {
    let f = Fixture::new(&standard_toml("reject"));
    let peer = psk_peer("psk-bed-99");
    let r = f
        .reg
        .authorize(&write(&peer, "bed-99", MessageClass::Vital));
    assert_eq!(r, Err(Denied::Unauthenticated("unknown_identity")));
    assert_eq!(f.reg.psk("psk-bed-99"), None);
    assert_eq!(f.denials("unknown_identity"), 2);
    let ev = f.audit.events();
    assert_eq!(ev[0].kind, AuditKind::AuthFailure);
    assert_eq!(ev[0].actor.as_deref(), Some("psk:psk-bed-99"));
    assert_eq!(ev[1].actor.as_deref(), Some("claimed-psk:psk-bed-99"));
    assert!(f.reg.pending().is_empty(), "reject keeps no pending list");
}

#[test]
fn an_unknown_identity_is_quarantined_and_listed_until_a_device_holds_it() {
    let f = Fixture::new(&standard_toml("quarantine"));
    let fp = "ab".repeat(32);
    let peer = cert_peer(&fp.to_uppercase(), TransportKind::Tls);
    let mut req = write(&peer, "pump-3", MessageClass::Telemetry);
    req.protocol = Protocol::Mqtt;
    for _ in 0..3 {
        assert_eq!(f.reg.authorize(&req), Err(Denied::Forbidden("quarantined")));
    }
    // A certificate proves its key: the handshake completes (its writes can be held); an
    // unknown PSK identity has no key to finish one with.
    assert!(f.reg.knows_certificate(&fp));
    assert_eq!(f.reg.psk("psk-new"), None);
    let pending = f.reg.pending();
    assert_eq!(pending.len(), 2);
    assert_eq!(pending[0].identity, "psk:psk-new");
    assert_eq!(pending[1].identity, format!("x509-sha256:{fp}"));
    assert_eq!(pending[1].count, 4);
    assert_eq!(pending[1].last_peer, Some(addr()));
    assert_eq!(f.denials("quarantined"), 4);

    // Approving = adding a device that holds the identity.
    let mut spec = wardgate_registry::DeviceSpec::new("pump-3");
    spec.protocols = Some(vec!["mqtts".into()]);
    spec.certificates = vec![wardgate_registry::CertificateSpec { sha256: fp.clone() }];
    f.reg.upsert(spec, "admin:ops-1").unwrap();
    assert_eq!(f.reg.authorize(&req).as_deref(), Ok("pump-3"));
    let pending: Vec<_> = f.reg.pending().into_iter().map(|p| p.identity).collect();
    assert_eq!(pending, ["psk:psk-new"]);
    assert!(f.reg.dismiss_pending("psk:psk-new", "admin:ops-1"));
    assert!(f.reg.pending().is_empty());
}

/// A held reading as the quarantine lane reads it back.
fn held<'a>(
    identity: &'a Identity,
    device: &'a str,
    class: MessageClass,
    received: SystemTime,
) -> HeldReading<'a> {
    HeldReading {
        identity,
        transport: TransportKind::Tls,
        protocol: Protocol::Mqtt,
        class,
        device,
        received,
    }
}

#[test]
fn a_proven_unknown_identity_has_its_writes_held_until_approved_or_dismissed() {
    let f = Fixture::new(&standard_toml("quarantine"));
    let fp = "cd".repeat(32);
    let id = Identity::new(IdentityKind::CertificateSha256, fp.as_str());
    let peer = cert_peer(&fp, TransportKind::Tls);
    let mut req = write(&peer, "pump-4", MessageClass::Telemetry);
    req.protocol = Protocol::Mqtt;

    // A write is held under the device it names (a check before the body says so, noting
    // nothing); the other questions are still refused.
    assert_eq!(f.reg.precheck_write(&req), Ok(Grant::Hold("pump-4".into())));
    assert!(f.reg.pending().is_empty(), "a precheck notes nothing");
    assert_eq!(
        f.reg.authorize_write(&req),
        Ok(Grant::Hold("pump-4".into()))
    );
    assert_eq!(f.reg.pending()[0].count, 1);
    assert_eq!(f.reg.authorize(&req), Err(Denied::Forbidden("quarantined")));
    let mut register = req;
    register.action = Action::Register;
    assert_eq!(
        f.reg.authorize_write(&register),
        Err(Denied::Forbidden("quarantined"))
    );
    let no_device = write(&peer, "", MessageClass::Telemetry);
    assert_eq!(
        f.reg.authorize_write(&no_device),
        Err(Denied::Forbidden("quarantined"))
    );
    // A known device is never held.
    let bed = psk_peer("psk-bed-12");
    assert_eq!(
        f.reg
            .authorize_write(&write(&bed, "bed-12", MessageClass::Vital)),
        Ok(Grant::Allow("bed-12".into()))
    );

    // The lane counts what it holds; the per-identity share (3 in these tests) then refuses.
    let t0 = f.clock.now();
    let r = held(&id, "pump-4", MessageClass::Telemetry, t0);
    assert_eq!(f.reg.judge_held(&r), HeldVerdict::Hold);
    f.reg.count_held(&id, Some(addr()), 3);
    assert_eq!(f.reg.pending()[0].held, 3);
    assert_eq!(
        f.reg.authorize_write(&req),
        Err(Denied::Forbidden("quarantine_full"))
    );
    assert_eq!(f.denials("quarantine_full"), 1);
    // ... and the total (5): another identity gets 2 more, then none.
    let other = "ef".repeat(32);
    let other_peer = cert_peer(&other, TransportKind::Tls);
    let mut other_req = write(&other_peer, "pump-5", MessageClass::Telemetry);
    other_req.protocol = Protocol::Mqtt;
    let other_id = Identity::new(IdentityKind::CertificateSha256, other.as_str());
    assert!(matches!(
        f.reg.authorize_write(&other_req),
        Ok(Grant::Hold(_))
    ));
    f.reg.count_held(&other_id, Some(addr()), 2);
    assert_eq!(f.reg.held_readings(), 5);
    assert_eq!(
        f.reg.authorize_write(&other_req),
        Err(Denied::Forbidden("quarantine_full"))
    );

    // Approval: a device holding the certificate. What its ACL allows is released, the rest
    // discarded with the reason.
    let epoch = f.reg.quarantine_epoch();
    let mut spec = wardgate_registry::DeviceSpec::new("pump-4");
    spec.protocols = Some(vec!["mqtts".into()]);
    spec.classes = Some(vec!["telemetry".into()]);
    spec.certificates = vec![wardgate_registry::CertificateSpec {
        sha256: fp.to_uppercase(),
    }];
    f.reg.upsert(spec, "admin:ops-1").unwrap();
    assert_ne!(f.reg.quarantine_epoch(), epoch, "the lane must look again");
    assert_eq!(f.reg.judge_held(&r), HeldVerdict::Release);
    let alarm = held(&id, "pump-4", MessageClass::Alarm, t0);
    assert_eq!(
        f.reg.judge_held(&alarm),
        HeldVerdict::Discard("class_not_allowed")
    );
    let not_its_own = held(&id, "bed-12", MessageClass::Telemetry, t0);
    assert_eq!(
        f.reg.judge_held(&not_its_own),
        HeldVerdict::Discard("not_speaking_for")
    );
    f.reg.count_held(&id, None, -3);
    f.reg.quarantine_decided(&id, HeldVerdict::Release, 3);
    assert_eq!(f.reg.held_readings(), 2);

    // Dismissal: what arrived before it is discarded; what arrives after is held again.
    f.clock.advance(Duration::from_secs(5));
    let epoch = f.reg.quarantine_epoch();
    assert!(
        f.reg
            .dismiss_pending(&format!("x509-sha256:{other}"), "admin:ops-1")
    );
    assert_ne!(f.reg.quarantine_epoch(), epoch);
    let before = held(&other_id, "pump-5", MessageClass::Telemetry, t0);
    assert_eq!(f.reg.judge_held(&before), HeldVerdict::Discard("dismissed"));
    f.clock.advance(Duration::from_secs(1));
    let after = held(&other_id, "pump-5", MessageClass::Telemetry, f.clock.now());
    assert_eq!(f.reg.judge_held(&after), HeldVerdict::Hold);
    f.reg
        .quarantine_decided(&other_id, HeldVerdict::Discard("dismissed"), 2);
    let text = f.metrics_text();
    for line in [
        "wardgate_registry_quarantine_readings_total{outcome=\"held\"} 5",
        "wardgate_registry_quarantine_readings_total{outcome=\"released\"} 3",
        "wardgate_registry_quarantine_readings_total{outcome=\"discarded\"} 2",
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
    let reasons: Vec<_> = f.audit.events().into_iter().map(|e| e.reason).collect();
    assert!(reasons.contains(&"quarantine_released"), "{reasons:?}");
    assert!(reasons.contains(&"quarantine_discarded"), "{reasons:?}");
}

#[test]
fn a_held_identity_missing_from_the_pending_list_is_listed_again() {
    // After a restart the list is empty, but the outbox still holds the readings: the lane's
    // count lists the identity again, so an administrator can decide.
    let f = Fixture::new(&standard_toml("quarantine"));
    let id = Identity::new(IdentityKind::CertificateSha256, "01".repeat(32));
    assert!(f.reg.pending().is_empty());
    f.reg.count_held(&id, Some(addr()), 2);
    let p = f.reg.pending();
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].identity, id.to_string());
    assert_eq!(p[0].held, 2);
    assert_eq!(p[0].last_peer, Some(addr()));
}

#[test]
fn a_revoked_device_is_unauthenticated_everywhere() {
    let f = Fixture::new(&standard_toml("reject"));
    let peer = psk_peer("psk-old-7");
    let r = f.reg.authorize(&write(&peer, "old-7", MessageClass::Vital));
    assert_eq!(r, Err(Denied::Unauthenticated("revoked")));
    assert_eq!(f.reg.psk("psk-old-7"), None);
    let ev = f.audit.events();
    assert!(
        ev.iter()
            .all(|e| e.reason == "revoked" && e.kind == AuditKind::AuthFailure)
    );
    assert_eq!(f.denials("revoked"), 2);
}

#[test]
fn each_acl_denial_is_forbidden_with_its_reason_audited_and_counted() {
    let f = Fixture::new(&standard_toml("reject"));
    let bed = psk_peer("psk-bed-12");
    let plain_http = PeerContext::new(addr(), TransportKind::Http).with_identity(
        wardgate_core::Identity::new(wardgate_core::IdentityKind::TokenSubject, "bed-12/t1"),
    );
    let cases: Vec<(AuthRequest<'_>, DenyReason)> = vec![
        // bed-12 may not use plain HTTP (only https is listed).
        (
            AuthRequest {
                protocol: Protocol::Http,
                ..write(&plain_http, "bed-12", MessageClass::Vital)
            },
            DenyReason::ProtocolNotAllowed,
        ),
        (
            write(&bed, "bed-12", MessageClass::Bulk),
            DenyReason::ClassNotAllowed,
        ),
        (
            AuthRequest {
                resource: "/v1/config",
                ..write(&bed, "bed-12", MessageClass::Vital)
            },
            DenyReason::ResourceNotAllowed,
        ),
        (
            write(&bed, "bed-13", MessageClass::Vital),
            DenyReason::NotSpeakingFor,
        ),
        (
            write(&bed, "bed-1", MessageClass::Vital),
            DenyReason::NotSpeakingFor,
        ),
        (
            write(&bed, "bed-12-../x", MessageClass::Vital),
            DenyReason::NotSpeakingFor,
        ),
    ];
    for (req, reason) in &cases {
        let r = f.reg.authorize(req);
        assert_eq!(r, Err(Denied::Forbidden(reason.as_str())), "{reason:?}");
    }
    let ev = f.audit.events();
    let reasons: Vec<_> = ev.iter().map(|e| e.reason).collect();
    assert_eq!(
        reasons,
        [
            "protocol_not_allowed",
            "class_not_allowed",
            "resource_not_allowed",
            "not_speaking_for",
            // The two later not_speaking_for denials of the same identity fall in the same
            // minute: counted, not audited again (see the rate-limit test).
        ]
    );
    assert!(ev.iter().all(|e| e.kind == AuditKind::AclDenied));
    assert_eq!(ev[0].actor.as_deref(), Some("token:bed-12/t1"));
    assert_eq!(ev[2].subject.as_deref(), Some("/v1/config"));
    assert_eq!(ev[3].subject.as_deref(), Some("bed-13"));
    assert_eq!(f.denials("not_speaking_for"), 3);
    assert_eq!(f.denials("class_not_allowed"), 1);
}

#[test]
fn the_protocol_name_follows_the_transport_plain_or_secure() {
    let f = Fixture::new(&standard_toml("reject"));
    let fp = CERT_FP;
    // room-21 lists mqtts and mqtt: both transports work; HTTPS does not.
    for (transport, protocol, ok) in [
        (TransportKind::Tls, Protocol::Mqtt, true),
        (TransportKind::Tcp, Protocol::Mqtt, true),
        (TransportKind::Https, Protocol::Http, false),
        (TransportKind::Dtls, Protocol::Coap, false),
        (TransportKind::Dtls, Protocol::Lwm2m, false),
    ] {
        let peer = cert_peer(fp, transport);
        let req = AuthRequest {
            peer: &peer,
            protocol,
            claimed_device: "room-21",
            class: MessageClass::Telemetry,
            resource: "wards/+/room-21/temp",
            action: Action::Write,
        };
        let r = f.reg.authorize(&req);
        if ok {
            assert_eq!(r.as_deref(), Ok("room-21"), "{transport:?} {protocol:?}");
        } else {
            assert_eq!(
                r,
                Err(Denied::Forbidden("protocol_not_allowed")),
                "{transport:?}"
            );
        }
    }
}

#[test]
fn registration_is_not_checked_against_message_classes() {
    let f = Fixture::new(&standard_toml("reject"));
    let bed = psk_peer("psk-bed-12");
    let req = AuthRequest {
        protocol: Protocol::Lwm2m,
        action: Action::Register,
        resource: "/v1/readings/bed-12",
        ..write(&bed, "bed-12", MessageClass::Bulk)
    };
    assert_eq!(f.reg.authorize(&req).as_deref(), Ok("bed-12"));
}

#[test]
fn a_bearer_token_proves_its_device_and_nothing_else_does() {
    let f = Fixture::new(&standard_toml("reject"));
    let peer = PeerContext::new(addr(), TransportKind::Https);
    let id = f.reg.verify_bearer(&peer, TOKEN.as_bytes()).unwrap();
    assert_eq!(id.to_string(), "token:bed-12/t1");
    let peer = peer.with_identity(id);
    let req = AuthRequest {
        protocol: Protocol::Http,
        ..write(&peer, "bed-12-ecg", MessageClass::Alarm)
    };
    assert_eq!(f.reg.authorize(&req).as_deref(), Ok("bed-12-ecg"));

    // A near miss, an empty token, and a forged subject are all refused.
    let bare = PeerContext::new(addr(), TransportKind::Https);
    let near = format!("{}x", &TOKEN[..TOKEN.len() - 1]);
    assert_eq!(
        f.reg.verify_bearer(&bare, near.as_bytes()),
        Err(Denied::Unauthenticated("unknown_identity"))
    );
    assert!(f.reg.verify_bearer(&bare, b"").is_err());
    let forged = bare.clone().with_identity(wardgate_core::Identity::new(
        wardgate_core::IdentityKind::TokenSubject,
        "bed-12/t9",
    ));
    let req = AuthRequest {
        protocol: Protocol::Http,
        ..write(&forged, "bed-12", MessageClass::Alarm)
    };
    assert_eq!(
        f.reg.authorize(&req),
        Err(Denied::Unauthenticated("unknown_identity"))
    );
    let ev = f.audit.events();
    assert_eq!(ev[0].actor.as_deref(), Some("claimed-token"));
    assert_no_secret("the audit", &format!("{ev:?}"));
}

#[test]
fn token_hashes_are_compared_in_constant_time() {
    // A tripwire on the source: the token lookup must go through `subtle`'s ct_eq over every
    // stored hash, never `==` (which stops at the first differing byte).
    let src = include_str!("../src/table.rs");
    let start = src.find("fn by_token_hash").expect("lookup exists");
    let body = &src[start..start + src[start..].find("\n    }\n").expect("end")];
    assert!(body.contains(".ct_eq("), "{body}");
    assert!(!body.contains("=="), "{body}");
    assert!(
        !body.contains("break") && !body.contains("return"),
        "no early exit: {body}"
    );
}

#[test]
fn repeated_denials_are_counted_every_time_but_audited_once_a_minute_with_the_repeats() {
    // The coalescing is proven by the audit events and the metrics, not by captured log lines:
    // tracing caches each callsite's interest process-wide, so a thread-scoped subscriber can
    // miss a callsite that a parallel test in this binary hit first (seen once in CI).
    let f = Fixture::new(&standard_toml("reject"));
    let peer = psk_peer("psk-bed-12");
    for _ in 0..50 {
        let _ = f
            .reg
            .authorize(&write(&peer, "bed-13", MessageClass::Vital));
    }
    assert_eq!(f.denials("not_speaking_for"), 50);
    assert_eq!(f.audit.events().len(), 1);
    f.clock.advance(Duration::from_secs(61));
    let _ = f
        .reg
        .authorize(&write(&peer, "bed-13", MessageClass::Vital));
    assert_eq!(f.audit.events().len(), 2);
    assert!(
        f.metrics_text()
            .contains("wardgate_registry_denials_coalesced_total 49")
    );
}

#[test]
fn the_credential_store_seam_verifies_bearer_tokens_like_the_registry() {
    let f = Fixture::new(&standard_toml("reject"));
    let store: &dyn CredentialStore = &*f.reg;
    let peer = PeerContext::new(addr(), TransportKind::Https);
    let id = store.verify_bearer(&peer, TOKEN.as_bytes()).unwrap();
    assert_eq!(id.to_string(), "token:bed-12/t1");
    assert_eq!(
        store.verify_bearer(&peer, b"not-a-token"),
        Err(Denied::Unauthenticated("unknown_identity"))
    );
}
