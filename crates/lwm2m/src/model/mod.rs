//! The object model: the OMA core objects (0–7), the IPSO objects a ward needs, and objects
//! users add as OMA DDF XML files.
//!
//! OWNED BY THE MODEL WORK (see the brief).

// PLACEHOLDER until the model branch lands (it replaces this file).
use crate::node::{Path, ResourceType, TypeLookup};

/// Placeholder object model.
#[derive(Debug, Default)]
pub struct ObjectModel;

/// Placeholder reading name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadingName {
    /// Name.
    pub name: String,
    /// Unit.
    pub unit: Option<String>,
}

impl ObjectModel {
    /// Placeholder.
    pub fn builtin() -> ObjectModel {
        ObjectModel
    }
    /// Placeholder.
    pub fn reading_name(&self, _path: &Path) -> Option<ReadingName> {
        None
    }
}

impl TypeLookup for ObjectModel {
    fn resource_type(&self, _: u16, _: u16) -> Option<ResourceType> {
        None
    }
    fn is_multiple(&self, _: u16, _: u16) -> Option<bool> {
        None
    }
}
