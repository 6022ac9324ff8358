//! CoRE link format (RFC 6690) as LwM2M uses it: the object list of Register/Update
//! (`</>;rt="oma.lwm2m";ct=11543,</1/0>,</3303>;ver=1.1`) and Discover answers
//! (`</3/0/7>;dim=2,</3303/0/5700>;pmin=10`).
//!
//! OWNED BY THE CODEC WORK (see the brief).

// PLACEHOLDER until the codec branch lands (it replaces this file).
/// Objects a client registered.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ObjectList {
    /// Alternate root path.
    pub root: String,
    /// Content formats from the root link's `ct`.
    pub content_formats: Vec<u16>,
    /// Objects.
    pub objects: Vec<(u16, Option<u16>, Option<String>)>,
}

impl ObjectList {
    /// Placeholder parser.
    pub fn parse(_s: &str) -> Result<ObjectList, String> {
        Ok(ObjectList::default())
    }
}
