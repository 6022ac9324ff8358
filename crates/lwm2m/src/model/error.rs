//! Why an object definition file was refused.

use std::fmt;
use std::path::PathBuf;

/// Why a DDF document (one file's text) was refused. Messages name the object and the field so an
/// operator can fix the file; [`LoadError`] adds the file name.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DdfError {
    /// The document is larger than [`MAX_DDF_BYTES`](super::MAX_DDF_BYTES).
    #[error("file is {size} bytes, above the limit of {limit} bytes")]
    TooLarge {
        /// Size of the document (or a lower bound when reading stopped at the limit).
        size: u64,
        /// The limit.
        limit: usize,
    },
    /// The bytes are not UTF-8 (the only encoding accepted).
    #[error("not UTF-8 (invalid byte sequence at byte {at})")]
    NotUtf8 {
        /// Offset of the first invalid byte.
        at: usize,
    },
    /// The document has a document type declaration or an entity declaration. DDF files need
    /// neither, and refusing them rules out entity expansion and external references.
    #[error("{0} is not accepted: object definition files must not declare a DTD or entities")]
    Dtd(&'static str),
    /// Not well-formed XML.
    #[error("malformed XML: {0}")]
    Xml(String),
    /// More XML nodes than [`MAX_XML_NODES`](super::MAX_XML_NODES).
    #[error("too many XML nodes (limit {0})")]
    TooManyNodes(u32),
    /// The root element is not `<LWM2M>`.
    #[error("root element is <{0}>, expected <LWM2M>")]
    WrongRoot(String),
    /// No `<Object>` under `<LWM2M>`.
    #[error("no <Object> element under <LWM2M>")]
    NoObjects,
    /// More objects in one file than [`MAX_OBJECTS_PER_FILE`](super::MAX_OBJECTS_PER_FILE).
    #[error("more than {0} objects in one file")]
    TooManyObjects(usize),
    /// More resources in one object than [`MAX_RESOURCES_PER_OBJECT`](super::MAX_RESOURCES_PER_OBJECT).
    #[error("{object}: more than {limit} resources")]
    TooManyResources {
        /// The object, e.g. `object 3303 (Temperature)`.
        object: String,
        /// The limit.
        limit: usize,
    },
    /// A field is missing or has a value that is not allowed.
    #[error("{object}{}: <{field}> {problem}", resource_ctx(*.resource))]
    Field {
        /// The object, e.g. `object 3303 (Temperature)` or `object #2` before its id is known.
        object: String,
        /// The resource (`Item ID`), when the field belongs to one.
        resource: Option<u16>,
        /// The element or attribute name, e.g. `ObjectID`, `Type`, `Item ID`.
        field: &'static str,
        /// What is wrong, e.g. `is missing`, `is "Double", expected one of ...`.
        problem: String,
    },
    /// Two `<Item>`s of one object have the same ID.
    #[error("{object}: resource id {id} is defined twice")]
    DuplicateResource {
        /// The object.
        object: String,
        /// The repeated resource id.
        id: u16,
    },
    /// One file defines the same object id and version twice.
    #[error("object {id} version {version} is defined twice in this file")]
    DuplicateObject {
        /// Object id.
        id: u16,
        /// Object version.
        version: String,
    },
    /// Another file of the same directory already defines this object id and version.
    #[error("object {id} version {version} is also defined in {}", other.display())]
    DefinedInOtherFile {
        /// Object id.
        id: u16,
        /// Object version.
        version: String,
        /// The file that defined it first.
        other: PathBuf,
    },
    /// The file could not be read.
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
}

fn resource_ctx(resource: Option<u16>) -> String {
    resource
        .map(|r| format!(", resource {r}"))
        .unwrap_or_default()
}

/// A file of a definitions directory that was refused.
#[derive(Debug)]
pub struct FileError {
    /// The file (or the directory itself when it cannot be listed).
    pub path: PathBuf,
    /// Why.
    pub error: DdfError,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.error)
    }
}

/// Every file of a definitions directory that was refused, so an operator sees all problems at
/// once. Loading is all or nothing: one bad file fails the whole load.
#[derive(Debug)]
pub struct LoadError {
    /// The refused files, in file-name order.
    pub errors: Vec<FileError>,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LwM2M object definitions refused: ")?;
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadError {}
