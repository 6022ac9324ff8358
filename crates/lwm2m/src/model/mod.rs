//! The object model: what each LwM2M object and resource is (name, type, multiplicity,
//! operations, units), for the OMA core objects 0–7, the IPSO objects a ward needs, and objects
//! users add as OMA DDF XML files.
//!
//! - Built-in objects are DDF files under `model/objects/`, embedded in the binary and loaded by
//!   the same parser as user files ([`ObjectModel::builtin`]). They were written for wardgate
//!   from the facts of the OMA LwM2M registry (LwM2M 1.1 versions of the core objects).
//! - [`ObjectModel::load_dir`] merges a directory's `*.xml` files over the built-ins; a bad file
//!   fails the load with an error naming the file, object and field. Loading is configuration
//!   time work (synchronous file reads): call it before the runtime serves, or in
//!   `spawn_blocking`.
//! - The model is immutable once built; share it as `Arc<ObjectModel>`. It implements
//!   [`TypeLookup`] for the content-format decoders.
//! - [`ObjectModel::reading_name`] turns a resource path into a normalized reading name and
//!   SenML unit (rules in [`naming`]).
//!
//! **Versions.** An object id may have several versions (3303 1.0 and 1.1). [`ObjectModel::object`]
//! and the [`TypeLookup`] answers use the latest version; a resource the latest version lacks is
//! looked up in the older versions, newest first (registry versions reuse ids with one meaning,
//! so an old device's resources still decode). When a registration names a version
//! (`</3303>;ver=1.0`), [`ObjectModel::object_version`] gives exactly that one (`None` when
//! unknown: fall back to [`ObjectModel::object`]).
//!
//! **XML parser.** `roxmltree`: a small read-only DOM over `&str` that is
//! `#![forbid(unsafe_code)]`, refuses any DTD by default (so no entity expansion, no external
//! references: no XXE, no billion laughs) and has a node limit. DDF files are small (≤ 1 MiB,
//! checked first), so a tree is simpler and clearer than a pull parser. `quick-xml` would need a
//! hand-written state machine over events and its own DOCTYPE rejection; `xml-rs` is slower,
//! less maintained and processes internal entities.

mod builtin;
mod ddf;
mod error;
pub mod naming;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

pub use ddf::{
    MAX_DDF_BYTES, MAX_OBJECTS_PER_FILE, MAX_RESOURCES_PER_OBJECT, MAX_XML_NODES, parse_ddf,
    parse_ddf_bytes,
};
pub use error::{DdfError, FileError, LoadError};
pub use naming::{ReadingName, senml_unit, snake_case};

use crate::node::{ResourceType, TypeLookup};

/// Most `*.xml` files read from one definitions directory.
pub const MAX_DDF_FILES: usize = 4096;

/// The operations a resource allows (the DDF `Operations` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Operations {
    /// None (only the Bootstrap-Server accesses it, as in the Security object).
    None,
    /// Read.
    R,
    /// Write.
    W,
    /// Read and write.
    RW,
    /// Execute.
    E,
}

impl Operations {
    /// From the DDF keyword (`R`, `W`, `RW`, `E`, empty; case-insensitive).
    pub fn from_keyword(s: &str) -> Option<Operations> {
        Some(match s.trim().to_ascii_uppercase().as_str() {
            "" => Operations::None,
            "R" => Operations::R,
            "W" => Operations::W,
            "RW" => Operations::RW,
            "E" => Operations::E,
            _ => return None,
        })
    }

    /// Whether Read (and Observe) is allowed.
    pub fn readable(self) -> bool {
        matches!(self, Operations::R | Operations::RW)
    }

    /// Whether Write is allowed.
    pub fn writable(self) -> bool {
        matches!(self, Operations::W | Operations::RW)
    }

    /// Whether Execute is allowed.
    pub fn executable(self) -> bool {
        self == Operations::E
    }
}

/// One resource of an object definition.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ResourceDef {
    /// Resource id.
    pub id: u16,
    /// Name, e.g. `Sensor Value`.
    pub name: String,
    /// Allowed operations.
    pub operations: Operations,
    /// Whether it is multi-instance.
    pub multiple: bool,
    /// Whether a client must implement it.
    pub mandatory: bool,
    /// Value type ([`ResourceType::None`] for executables and the rare untyped resource).
    pub rtype: ResourceType,
    /// Allowed values as the DDF states them (`0..100`, `16,32,48`), not interpreted.
    pub range_enumeration: Option<String>,
    /// Units as the DDF states them (free text; [`senml_unit`] normalizes).
    pub units: Option<String>,
    /// Description.
    pub description: String,
}

/// One version of one object definition.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ObjectDef {
    /// Object id.
    pub id: u16,
    /// Name, e.g. `Temperature`.
    pub name: String,
    /// Description (`Description1`).
    pub description: String,
    /// `urn:oma:lwm2m:ext:3303:1.1`.
    pub urn: String,
    /// Object version, `MAJOR.MINOR` (`1.0` when the DDF has none).
    pub version: String,
    /// LwM2M version the object was defined for.
    pub lwm2m_version: String,
    /// Whether it may have several instances.
    pub multiple: bool,
    /// Whether a client must implement it.
    pub mandatory: bool,
    /// Resources by id.
    pub resources: BTreeMap<u16, ResourceDef>,
}

impl ObjectDef {
    /// Resource `rid` of this version.
    pub fn resource(&self, rid: u16) -> Option<&ResourceDef> {
        self.resources.get(&rid)
    }
}

/// `MAJOR.MINOR` as numbers for ordering (`1.10` after `1.9`); malformed versions sort first.
fn version_key(v: &str) -> (u16, u16) {
    v.split_once('.')
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        .unwrap_or((0, 0))
}

/// The known objects, every version of each. Immutable once built; cheap to clone (definitions
/// are behind `Arc`s) and meant to be shared as `Arc<ObjectModel>`.
#[derive(Debug, Clone, Default)]
pub struct ObjectModel {
    /// Versions of each object, oldest first.
    objects: BTreeMap<u16, Vec<Arc<ObjectDef>>>,
}

impl ObjectModel {
    /// A model that knows no objects.
    pub fn empty() -> ObjectModel {
        ObjectModel::default()
    }

    /// The built-in objects: OMA 0–7 and the IPSO ward objects (see `model/objects/`).
    pub fn builtin() -> ObjectModel {
        let mut model = ObjectModel::empty();
        for def in builtin::definitions() {
            model.insert(def);
        }
        model
    }

    /// The built-ins with every `*.xml` file of `dir` merged over them (file-name order). A file
    /// may add objects, add versions, or replace a built-in object version (same id and version).
    /// Any refused file, or two files defining the same id and version, fails the whole load;
    /// the error lists every refused file.
    pub fn load_dir(dir: impl AsRef<FsPath>) -> Result<ObjectModel, LoadError> {
        let dir = dir.as_ref();
        let mut model = ObjectModel::builtin();
        let dir_error = |error| LoadError {
            errors: vec![FileError {
                path: dir.to_path_buf(),
                error,
            }],
        };
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| dir_error(e.into()))? {
            let path = entry.map_err(|e| dir_error(e.into()))?.path();
            let is_xml = path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("xml"));
            if is_xml && path.is_file() {
                files.push(path);
            }
            if files.len() > MAX_DDF_FILES {
                return Err(dir_error(DdfError::Io(std::io::Error::other(format!(
                    "more than {MAX_DDF_FILES} .xml files"
                )))));
            }
        }
        files.sort();

        let mut errors = Vec::new();
        let mut origin: BTreeMap<(u16, String), PathBuf> = BTreeMap::new();
        for path in files {
            let defs = match read_bounded(&path).and_then(|b| parse_ddf_bytes(&b)) {
                Ok(defs) => defs,
                Err(error) => {
                    errors.push(FileError { path, error });
                    continue;
                }
            };
            if let Some(def) = defs
                .iter()
                .find(|d| origin.contains_key(&(d.id, d.version.clone())))
            {
                let other = origin[&(def.id, def.version.clone())].clone();
                errors.push(FileError {
                    path,
                    error: DdfError::DefinedInOtherFile {
                        id: def.id,
                        version: def.version.clone(),
                        other,
                    },
                });
                continue;
            }
            for def in defs {
                origin.insert((def.id, def.version.clone()), path.clone());
                model.insert(def);
            }
        }
        if errors.is_empty() {
            Ok(model)
        } else {
            Err(LoadError { errors })
        }
    }

    /// Adds a definition, replacing the one with the same id and version; returns the replaced one.
    pub fn insert(&mut self, def: ObjectDef) -> Option<Arc<ObjectDef>> {
        let versions = self.objects.entry(def.id).or_default();
        let key = version_key(&def.version);
        match versions.binary_search_by(|v| version_key(&v.version).cmp(&key)) {
            Ok(i) => Some(std::mem::replace(&mut versions[i], Arc::new(def))),
            Err(i) => {
                versions.insert(i, Arc::new(def));
                None
            }
        }
    }

    /// The latest version of object `oid`.
    pub fn object(&self, oid: u16) -> Option<&ObjectDef> {
        self.objects.get(&oid)?.last().map(|d| &**d)
    }

    /// Exactly version `version` (`"1.0"`) of object `oid`.
    pub fn object_version(&self, oid: u16, version: &str) -> Option<&ObjectDef> {
        let key = version_key(version);
        self.objects
            .get(&oid)?
            .iter()
            .find(|d| version_key(&d.version) == key)
            .map(|d| &**d)
    }

    /// Every known version of object `oid`, oldest first.
    pub fn versions(&self, oid: u16) -> impl Iterator<Item = &ObjectDef> {
        self.objects.get(&oid).into_iter().flatten().map(|d| &**d)
    }

    /// The latest version of every known object, by id.
    pub fn objects(&self) -> impl Iterator<Item = &ObjectDef> {
        self.objects.values().filter_map(|v| v.last()).map(|d| &**d)
    }

    /// Number of known object ids.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// Whether no object is known.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// Resource `rid` of object `oid`: from the latest version, else from the newest older
    /// version that has it.
    pub fn resource(&self, oid: u16, rid: u16) -> Option<&ResourceDef> {
        self.objects
            .get(&oid)?
            .iter()
            .rev()
            .find_map(|d| d.resource(rid))
    }
}

impl TypeLookup for ObjectModel {
    fn resource_type(&self, oid: u16, rid: u16) -> Option<ResourceType> {
        self.resource(oid, rid).map(|r| r.rtype)
    }

    fn is_multiple(&self, oid: u16, rid: u16) -> Option<bool> {
        self.resource(oid, rid).map(|r| r.multiple)
    }
}

/// Reads at most [`MAX_DDF_BYTES`] + 1 bytes, so an oversized (or endless) file is refused
/// without reading it whole.
fn read_bounded(path: &FsPath) -> Result<Vec<u8>, DdfError> {
    let file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    if len > MAX_DDF_BYTES as u64 {
        return Err(DdfError::TooLarge {
            size: len,
            limit: MAX_DDF_BYTES,
        });
    }
    let mut bytes = Vec::new();
    file.take(MAX_DDF_BYTES as u64 + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() > MAX_DDF_BYTES {
        return Err(DdfError::TooLarge {
            size: bytes.len() as u64,
            limit: MAX_DDF_BYTES,
        });
    }
    Ok(bytes)
}
