//! wardgate-lwm2m: the LwM2M server and bootstrap server, on wardgate's own CoAP stack.
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod format;
pub mod link;
pub mod model;
pub mod node;

pub use format::{Format, FormatError};
pub use model::{
    DdfError, LoadError, ObjectDef, ObjectModel, Operations, ReadingName, ResourceDef, parse_ddf,
};
pub use node::{Entry, Path, PathError, ResourceType, TypeLookup, Value};
