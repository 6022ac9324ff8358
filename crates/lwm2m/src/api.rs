//! Operations on clients as JSON, for the admin API: one [`Operation`] in, the decoded result
//! out. Values are typed explicitly (`{"path": "/3/0/14", "type": "string", "value": "+02:00"}`)
//! so a write is never guessed: opaque values are base64 (standard alphabet), object links
//! `"3:0"`, times seconds since the Unix epoch.

use serde::{Deserialize, Serialize};
use wardgate_core::MessageClass;

use crate::format::Format;
use crate::node::{Entry, Path, ResourceType, Value};
use crate::ops::{Attributes, WriteMode};
use crate::server::{OpError, Server};

/// A typed value at a path, as JSON.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JsonValue {
    /// `/oid/iid/rid` or `/oid/iid/rid/riid`.
    pub path: Path,
    /// Its type.
    #[serde(rename = "type")]
    pub kind: ResourceType,
    /// The value: a string, number or boolean as the type says.
    pub value: serde_json::Value,
    /// Time (seconds since the Unix epoch), when the client sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<f64>,
}

/// Why a JSON value is not a value of its type.
fn bad(path: &Path, what: &str) -> OpError {
    OpError::Invalid(format!("{path}: {what}"))
}

impl JsonValue {
    /// The JSON form of an entry.
    pub fn from_entry(e: &Entry) -> JsonValue {
        use serde_json::json;
        let value = match &e.value {
            Value::String(s) | Value::Corelnk(s) => json!(s),
            Value::Integer(i) | Value::Time(i) => json!(i),
            Value::Unsigned(u) => json!(u),
            Value::Float(f) => json!(f),
            Value::Boolean(b) => json!(b),
            Value::Opaque(b) => json!(crate::format::base64::encode_standard(b)),
            Value::Objlnk(o, i) => json!(format!("{o}:{i}")),
        };
        JsonValue {
            path: e.path,
            kind: e.value.resource_type(),
            value,
            time: e.time,
        }
    }

    /// The entry it describes.
    pub fn to_entry(&self) -> Result<Entry, OpError> {
        let p = &self.path;
        if p.len() < 3 {
            return Err(bad(p, "a value needs a resource or resource instance path"));
        }
        let v = &self.value;
        let value = match self.kind {
            ResourceType::String => Value::String(
                v.as_str()
                    .ok_or_else(|| bad(p, "expected a string"))?
                    .to_owned(),
            ),
            ResourceType::Corelnk => Value::Corelnk(
                v.as_str()
                    .ok_or_else(|| bad(p, "expected a string"))?
                    .to_owned(),
            ),
            ResourceType::Integer => {
                Value::Integer(v.as_i64().ok_or_else(|| bad(p, "expected an integer"))?)
            }
            ResourceType::Time => Value::Time(
                v.as_i64()
                    .ok_or_else(|| bad(p, "expected seconds since the epoch"))?,
            ),
            ResourceType::Unsigned => Value::Unsigned(
                v.as_u64()
                    .ok_or_else(|| bad(p, "expected an unsigned integer"))?,
            ),
            ResourceType::Float => {
                let f = v.as_f64().ok_or_else(|| bad(p, "expected a number"))?;
                Value::Float(f)
            }
            ResourceType::Boolean => Value::Boolean(
                v.as_bool()
                    .ok_or_else(|| bad(p, "expected true or false"))?,
            ),
            ResourceType::Opaque => {
                let s = v.as_str().ok_or_else(|| bad(p, "expected base64 text"))?;
                Value::Opaque(
                    crate::format::base64::decode(s).ok_or_else(|| bad(p, "not valid base64"))?,
                )
            }
            ResourceType::Objlnk => {
                let s = v.as_str().ok_or_else(|| bad(p, "expected \"oid:iid\""))?;
                let (o, i) = s
                    .split_once(':')
                    .ok_or_else(|| bad(p, "expected \"oid:iid\""))?;
                let o = o.parse().map_err(|_| bad(p, "expected \"oid:iid\""))?;
                let i = i.parse().map_err(|_| bad(p, "expected \"oid:iid\""))?;
                Value::Objlnk(o, i)
            }
            ResourceType::None => return Err(bad(p, "an executable resource has no value")),
        };
        Ok(Entry {
            path: self.path,
            value,
            time: self.time,
        })
    }
}

/// One operation on a client.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Operation {
    /// Read a path.
    Read {
        /// Object, instance, resource or resource instance.
        path: Path,
        /// Force a format (else negotiated).
        #[serde(default)]
        format: Option<Format>,
    },
    /// Discover a path's link-format description.
    Discover {
        /// Object, instance or resource.
        path: Path,
    },
    /// Write values.
    Write {
        /// The written path (instance or resource).
        path: Path,
        /// Replace (PUT) or update (POST).
        #[serde(default = "replace")]
        mode: WriteMode,
        /// The values, at or below `path`.
        values: Vec<JsonValue>,
        /// Force a format.
        #[serde(default)]
        format: Option<Format>,
    },
    /// Write notification attributes.
    WriteAttributes {
        /// The path.
        path: Path,
        /// The attributes.
        attributes: Attributes,
    },
    /// Execute a resource.
    Execute {
        /// `/oid/iid/rid`.
        path: Path,
        /// Arguments (`0='x',1`).
        #[serde(default)]
        arguments: Option<String>,
    },
    /// Create an object instance.
    Create {
        /// The object id.
        object: u16,
        /// Its resources (paths name the new instance id, or leave it to the client).
        values: Vec<JsonValue>,
        /// Force a format.
        #[serde(default)]
        format: Option<Format>,
    },
    /// Delete an object instance.
    Delete {
        /// `/oid/iid`.
        path: Path,
    },
    /// Observe paths (composite when several); notifications become readings.
    Observe {
        /// The paths.
        paths: Vec<Path>,
        /// Attributes written first.
        #[serde(default)]
        attributes: Option<Attributes>,
        /// Class of the readings.
        #[serde(default = "vital")]
        class: MessageClass,
    },
    /// Stop an observation.
    CancelObserve {
        /// The paths it observes.
        paths: Vec<Path>,
    },
    /// Read several paths at once (1.1+).
    ReadComposite {
        /// The paths.
        paths: Vec<Path>,
        /// Force a format (SenML JSON/CBOR, LwM2M CBOR).
        #[serde(default)]
        format: Option<Format>,
    },
    /// Write several paths at once (1.1+).
    WriteComposite {
        /// The values.
        values: Vec<JsonValue>,
        /// Force a format.
        #[serde(default)]
        format: Option<Format>,
    },
}

fn replace() -> WriteMode {
    WriteMode::Replace
}

fn vital() -> MessageClass {
    MessageClass::Vital
}

impl Operation {
    /// Fixed label (metrics, audit).
    pub fn label(&self) -> &'static str {
        match self {
            Operation::Read { .. } => "read",
            Operation::Discover { .. } => "discover",
            Operation::Write { .. } => "write",
            Operation::WriteAttributes { .. } => "write_attributes",
            Operation::Execute { .. } => "execute",
            Operation::Create { .. } => "create",
            Operation::Delete { .. } => "delete",
            Operation::Observe { .. } => "observe",
            Operation::CancelObserve { .. } => "cancel_observe",
            Operation::ReadComposite { .. } => "read_composite",
            Operation::WriteComposite { .. } => "write_composite",
        }
    }

    /// Whether it changes the client (audited as an admin action).
    pub fn changes_the_client(&self) -> bool {
        !matches!(
            self,
            Operation::Read { .. } | Operation::Discover { .. } | Operation::ReadComposite { .. }
        )
    }
}

fn entries(values: &[JsonValue]) -> Result<Vec<Entry>, OpError> {
    values.iter().map(JsonValue::to_entry).collect()
}

fn values(entries: &[Entry]) -> serde_json::Value {
    serde_json::json!({ "values": entries.iter().map(JsonValue::from_entry).collect::<Vec<_>>() })
}

impl Server {
    /// Runs one operation on `endpoint` and answers with its JSON result.
    pub async fn run_operation(
        &self,
        endpoint: &str,
        op: Operation,
    ) -> Result<serde_json::Value, OpError> {
        use serde_json::json;
        Ok(match op {
            Operation::Read { path, format } => values(&self.read(endpoint, path, format).await?),
            Operation::Discover { path } => {
                json!({ "links": self.discover(endpoint, path).await? })
            }
            Operation::Write {
                path,
                mode,
                values,
                format,
            } => {
                self.write(endpoint, path, mode, &entries(&values)?, format)
                    .await?;
                json!({})
            }
            Operation::WriteAttributes { path, attributes } => {
                self.write_attributes(endpoint, path, &attributes).await?;
                json!({})
            }
            Operation::Execute { path, arguments } => {
                self.execute(endpoint, path, arguments.as_deref()).await?;
                json!({})
            }
            Operation::Create {
                object,
                values,
                format,
            } => {
                let created = self
                    .create(endpoint, object, &entries(&values)?, format)
                    .await?;
                json!({ "created": created.map(|p| p.to_string()) })
            }
            Operation::Delete { path } => {
                self.delete(endpoint, path).await?;
                json!({})
            }
            Operation::Observe {
                paths,
                attributes,
                class,
            } => {
                self.observe(endpoint, paths, attributes, class)?;
                json!({ "observing": true })
            }
            Operation::CancelObserve { paths } => {
                json!({ "cancelled": self.cancel_observation(endpoint, &paths).await? })
            }
            Operation::ReadComposite { paths, format } => {
                values(&self.read_composite(endpoint, &paths, format).await?)
            }
            Operation::WriteComposite { values, format } => {
                self.write_composite(endpoint, &entries(&values)?, format)
                    .await?;
                json!({})
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_json_values_convert_both_ways_and_mismatches_are_refused() {
        let v: JsonValue =
            serde_json::from_str(r#"{"path":"/3/0/14","type":"string","value":"+02:00"}"#).unwrap();
        let e = v.to_entry().unwrap();
        assert_eq!(e.value, Value::String("+02:00".into()));
        assert_eq!(JsonValue::from_entry(&e), v);
        let o: JsonValue =
            serde_json::from_str(r#"{"path":"/3/0/17","type":"objlnk","value":"3:0"}"#).unwrap();
        assert_eq!(o.to_entry().unwrap().value, Value::Objlnk(3, 0));
        for bad in [
            r#"{"path":"/3/0/14","type":"integer","value":"x"}"#,
            r#"{"path":"/3/0","type":"string","value":"x"}"#,
            r#"{"path":"/3/0/1","type":"opaque","value":"!!"}"#,
            r#"{"path":"/3/0/1","type":"objlnk","value":"3"}"#,
            r#"{"path":"/3/0/4","type":"none","value":null}"#,
        ] {
            let v: JsonValue = serde_json::from_str(bad).unwrap();
            assert!(v.to_entry().is_err(), "{bad}");
        }
        let op: Operation =
            serde_json::from_str(r#"{"op":"read","path":"/3303/0","format":"senml-json"}"#)
                .unwrap();
        assert_eq!(op.label(), "read");
        assert!(serde_json::from_str::<Operation>(r#"{"op":"reboot"}"#).is_err());
    }
}
