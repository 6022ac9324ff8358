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
//! # How the gateway uses it
//! [`SharedSelector`] (`live.rs`) is one `Selector` behind a mutex, built from `[selector]` and
//! the uplink names, with an injected clock and its [`SelectorMetrics`]. It is:
//! - the ingest pipeline's `Classify` hook: `[[selector.rules]]` set a reading's class before
//!   it is normalized ([`Selector::classify`]);
//! - the outbox's `Router`: a new reading is owed to [`Decision::targets`] of
//!   [`Selector::choose`] (a probe to a half-open uplink also goes to the best closed one); a
//!   reading an uplink releases goes to [`Selector::next_after_failure`];
//! - fed by the gateway's steering task (`crates/wardgate/src/steer.rs`): every delivery
//!   outcome ([`SharedSelector::record`], latency from the outbox's `DeliveryOutcome`) and each
//!   uplink's link state ([`SharedSelector::link`]); these are queued and applied only in
//!   `Router::take_cutovers`, which the store's writer calls before routing each batch, so a
//!   breaker opening and the move of that uplink's backlog commit with the first reading routed
//!   elsewhere (per-device order across failover);
//! - the budget keeper: [`DeliveryBudget`] measures each acknowledged delivery's age against
//!   its class's `[selector.budgets]` (alarm 1 s by default), with or without a `[selector]`;
//! - shown by the admin API ([`SharedSelector::status`]) and in metrics
//!   ([`SharedSelector::tick`] drains [`Selector::take_transitions`]).

#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod budget;
mod classify;
mod config;
mod error;
mod health;
mod live;
mod metrics;
mod policy;
mod selector;

pub use budget::{BREACH_LOG_EVERY, Budgets, DEFAULT_ALARM_BUDGET, DeliveryBudget, MAX_BUDGET};
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
