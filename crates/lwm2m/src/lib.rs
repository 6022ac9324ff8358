//! wardgate-lwm2m: the LwM2M server and bootstrap server, on wardgate's own CoAP stack.
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod api;
pub mod bootstrap;
pub mod config;
pub mod format;
pub mod link;
pub mod metrics;
pub mod model;
pub mod node;
mod observe;
mod ops;
pub mod persist;
pub mod registration;
pub mod resource;
mod server;
pub mod sim;

pub use api::{JsonValue, Operation};
pub use bootstrap::{BootstrapConfig, SecurityMode};
pub use config::Lwm2mConfig;
pub use format::{Format, FormatError, Limits, decode_paths, encode_paths};
pub use link::{DiscoverLink, Link, LinkError, ObjectLink, ObjectList};
pub use metrics::Lwm2mMetrics;
pub use model::{
    DdfError, LoadError, ObjectDef, ObjectModel, Operations, ReadingName, ResourceDef, parse_ddf,
};
pub use node::{Entry, Path, PathError, ResourceType, TypeLookup, Value};
pub use observe::{MAX_MANUAL_OBSERVATIONS, ObserveRule};
pub use ops::{Attributes, WriteMode};
pub use server::{
    ClientInfo, MAX_BOOTSTRAP_CONFIGS, OpError, Refusal, Registered, Server, Settings,
};
