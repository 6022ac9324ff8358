//! The uplink selector: measured health per uplink and the choice of uplinks per message class.
//!
//! Pure logic. Outcomes, latencies and `now: Instant` go in; decisions and breaker transitions
//! come out. Nothing here reads a clock, sleeps, spawns or does I/O, so tests drive it with
//! exact instants and property tests compare it with a reference model. The only dependencies
//! are `wardgate-core` (for [`MessageClass`] and the config `Problems` collector), `serde` /
//! `humantime-serde` for the `[selector]` section and `thiserror`.
//!
//! # The model
//! Each uplink has an [`UplinkHealth`]:
//! - **Latency EWMA** of send → acknowledgement (MQTT PUBACK, HTTP 2xx):
//!   `ewma = α·sample + (1−α)·ewma`, the first sample seeds it. Timeouts carry no sample.
//! - **Success ratio** over the last `window` outcomes; a failure and a timeout both count as
//!   failures.
//! - **Circuit breaker**:
//!
//! ```text
//!            N failures in a row, or ratio < min
//!            (with ≥ min_samples in the window)
//!   ┌────────┐ ───────────────────────────▶ ┌──────┐
//!   │ Closed │                              │ Open │ ◀─────────────┐
//!   └────────┘ ◀──────┐                     └──────┘               │ a probe fails:
//!                     │ a probe succeeds:       │ cool_down        │ cool_down ×= multiplier
//!                     │ window reset            ▼ elapsed          │ (capped at max_cool_down)
//!                     │                  ┌──────────┐              │
//!                     └───────────────── │ HalfOpen │ ─────────────┘
//!                                        └──────────┘
//!                                 at most half_open_probes deliveries
//! ```
//!
//! An uplink is **healthy** when Closed, or HalfOpen with a probe slot free. Every transition
//! is a [`Transition`] with a [`TransitionReason`], returned by [`Selector::record`] and logged
//! for [`Selector::take_transitions`] (metrics, log lines).
//!
//! Each message class has a [`Policy`] (`redundant`, `lowest-latency`, `most-reliable`,
//! `failover = [..]`, `pinned = ".."`; see the variants for tie-breaks and what happens when
//! nothing is healthy) and `[[selector.rules]]` can remap a reading's class by device / resource
//! pattern ([`ClassMap`]).
//!
//! # Invariants (tested, `tests/model.rs` against a reference model)
//! - A decision never names an Open uplink first while an eligible uplink is Closed (every
//!   policy but `pinned`, which ignores health on purpose).
//! - EWMA and window ratio equal the textbook formulas over the recorded outcomes.
//! - [`Selector::next_after_failure`] never returns an uplink already tried, and returns `None`
//!   only when every eligible uplink was tried.
//! - Memory is bounded by configuration: the window by `window`, the decision ring and the
//!   transition log by `decision_log`.
//! - The breaker is HalfOpen exactly from `opened + cool_down` on (the boundary included).
//!
//! # How the outbox and the uplinks use it (wiring is not done yet)
//! One `Selector` behind a mutex, built from `[selector]` and the uplink names with
//! [`Selector::new`]. When a reading is appended, its class comes from
//! [`Selector::classify`]; the outbox's router asks [`Selector::choose`] and owes the reading to
//! [`Decision::targets`]. When a delivery fails and the uplink releases the reading, the router
//! asks [`Selector::next_after_failure`] with the uplinks already tried; the reading keeps its
//! outbox sequence, so its place and per-device order are kept. Every uplink reports each
//! delivery's end with [`Selector::record`] (latency from the outbox's `DeliveryOutcome`). A
//! timer calls [`Selector::tick`] and drains [`Selector::take_transitions`] into metrics; the
//! admin API shows [`Selector::snapshot`] and [`Selector::recent_decisions`].

#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod classify;
mod config;
mod error;
mod health;
mod live;
mod metrics;
mod policy;
mod selector;

pub use classify::{ClassMap, glob};
pub use config::{
    ClassPolicyConfig, ClassRuleConfig, DEFAULT_CONSECUTIVE_FAILURES, DEFAULT_COOL_DOWN,
    DEFAULT_COOL_DOWN_MULTIPLIER, DEFAULT_DECISION_LOG, DEFAULT_EWMA_ALPHA,
    DEFAULT_HALF_OPEN_PROBES, DEFAULT_LINK_DOWN_AFTER, DEFAULT_MAX_COOL_DOWN, DEFAULT_MIN_SAMPLES,
    DEFAULT_MIN_SUCCESS_RATIO, DEFAULT_WINDOW, PolicyName, SelectorConfig,
};
pub use error::SelectorError;
pub use health::{
    Breaker, BreakerKind, HealthParams, Outcome, Transition, TransitionReason, UplinkHealth,
};
pub use live::{ClassStatus, DecisionStatus, Now, SelectorStatus, SharedSelector, UplinkStatus};
pub use metrics::SelectorMetrics;
pub use policy::{Policy, Reason};
pub use selector::{Decision, Selector, UplinkSnapshot};
pub use wardgate_core::MessageClass;
