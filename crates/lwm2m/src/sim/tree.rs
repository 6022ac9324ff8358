//! The simulated client's objects: instances of resources with values. It is also the type
//! lookup the client decodes the server's writes with (a resource's type is the type of the
//! value it holds).

use std::collections::BTreeMap;
use std::time::SystemTime;

use crate::link::ObjectLink;
use crate::node::{Entry, Path, ResourceType, TypeLookup, Value};

/// One resource of an instance.
#[derive(Debug, Clone, PartialEq)]
pub enum Res {
    /// A single-instance resource.
    Single(Value),
    /// A multiple-instance resource (instance id → value).
    Multi(BTreeMap<u16, Value>),
    /// An executable resource.
    Exec,
}

type Instance = BTreeMap<u16, Res>;

/// Objects → instances → resources. An object may have no instance (Create can add one).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tree {
    objects: BTreeMap<u16, BTreeMap<u16, Instance>>,
}

/// What an operation on the tree found wrong, as the CoAP code the client answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Miss {
    /// 4.04.
    NotFound,
    /// 4.05 (executable resource read or written, value resource executed).
    NotAllowed,
}

impl Tree {
    /// The objects every test needs: Server `/1/0`, Device `/3/0` (reboot `/3/0/4` executable,
    /// battery level `/3/0/9`, error codes `/3/0/11` with instances, current time `/3/0/13`),
    /// Temperature `/3303/0` (21.5 Cel, min/max measured, reset `5605`).
    pub fn device(endpoint: &str, lifetime: u32) -> Tree {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let s = |v: &str| Res::Single(Value::String(v.into()));
        let i = |v: i64| Res::Single(Value::Integer(v));
        let f = |v: f64| Res::Single(Value::Float(v));
        Tree::default()
            .instance(
                1,
                0,
                vec![
                    (0, i(1)),
                    (1, i(i64::from(lifetime))),
                    (6, Res::Single(Value::Boolean(false))),
                    (7, s("U")),
                    (8, Res::Exec),
                ],
            )
            .instance(
                3,
                0,
                vec![
                    (0, s("wardgate")),
                    (1, s("ward-sim")),
                    (2, s(&format!("SIM-{endpoint}"))),
                    (3, s("1.0.0")),
                    (4, Res::Exec),
                    (5, Res::Exec),
                    (9, i(87)),
                    (11, Res::Multi(BTreeMap::from([(0, Value::Integer(0))]))),
                    (13, Res::Single(Value::Time(now))),
                    (16, s("U")),
                ],
            )
            .instance(
                3303,
                0,
                vec![
                    (5700, f(21.5)),
                    (5701, s("Cel")),
                    (5601, f(20.0)),
                    (5602, f(23.0)),
                    (5605, Res::Exec),
                ],
            )
    }

    /// Adds Humidity `/3304/0` (45 %RH).
    pub fn with_humidity(self) -> Tree {
        self.instance(
            3304,
            0,
            vec![
                (5700, Res::Single(Value::Float(45.0))),
                (5701, Res::Single(Value::String("%RH".into()))),
            ],
        )
    }

    /// Adds Voltage `/3316/0` (3.3 V).
    pub fn with_voltage(self) -> Tree {
        self.instance(
            3316,
            0,
            vec![
                (5700, Res::Single(Value::Float(3.3))),
                (5701, Res::Single(Value::String("V".into()))),
            ],
        )
    }

    /// Adds a Binary App Data Container `/19/0` whose data `/19/0/0/0` is `len` opaque bytes
    /// (a large answer for Block2).
    pub fn with_large_opaque(self, len: usize) -> Tree {
        #[allow(clippy::cast_possible_truncation)]
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        self.instance(
            19,
            0,
            vec![(0, Res::Multi(BTreeMap::from([(0, Value::Opaque(data))])))],
        )
    }

    /// Adds (or replaces) instance `/oid/iid` with `resources`.
    pub fn instance(mut self, oid: u16, iid: u16, resources: Vec<(u16, Res)>) -> Tree {
        self.objects
            .entry(oid)
            .or_default()
            .insert(iid, resources.into_iter().collect());
        self
    }

    /// Declares object `oid` without instances (a Create target).
    pub fn object(mut self, oid: u16) -> Tree {
        self.objects.entry(oid).or_default();
        self
    }

    /// The value at a resource or resource-instance path.
    pub fn get(&self, path: &Path) -> Option<Value> {
        let ids = path.ids();
        let res = self.resource(path)?;
        match (res, ids.get(3)) {
            (Res::Single(v), None) => Some(v.clone()),
            (Res::Multi(m), Some(riid)) => m.get(riid).cloned(),
            _ => None,
        }
    }

    fn resource(&self, path: &Path) -> Option<&Res> {
        let ids = path.ids();
        self.objects
            .get(ids.first()?)?
            .get(ids.get(1)?)?
            .get(ids.get(2)?)
    }

    /// Whether `path` names something in the tree.
    pub fn exists(&self, path: &Path) -> bool {
        let ids = path.ids();
        let Some(obj) = ids.first().and_then(|o| self.objects.get(o)) else {
            return path.is_empty();
        };
        let Some(inst) = ids.get(1).map(|i| obj.get(i)) else {
            return true;
        };
        let Some(inst) = inst else { return false };
        match (ids.get(2).and_then(|r| inst.get(r)), ids.get(3)) {
            (None, _) => ids.len() == 2,
            (Some(_), None) => true,
            (Some(Res::Multi(m)), Some(ri)) => m.contains_key(ri),
            (Some(_), Some(_)) => false,
        }
    }

    /// The values at or below `path` (executable resources skipped; 4.05 when `path` is one).
    pub(crate) fn entries(&self, path: &Path) -> Result<Vec<Entry>, Miss> {
        if !self.exists(path) {
            return Err(Miss::NotFound);
        }
        if matches!(self.resource(path), Some(Res::Exec)) {
            return Err(Miss::NotAllowed);
        }
        let mut out = Vec::new();
        for (oid, obj) in &self.objects {
            for (iid, inst) in obj {
                for (rid, res) in inst {
                    let rpath = Path::resource(*oid, *iid, *rid);
                    match res {
                        Res::Single(v) if rpath.starts_with(path) => out.push(entry(rpath, v)),
                        Res::Multi(m) => {
                            for (riid, v) in m {
                                let p = Path::resource_instance(*oid, *iid, *rid, *riid);
                                if p.starts_with(path) {
                                    out.push(entry(p, v));
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        Ok(out)
    }

    /// Sets one value (a resource or resource instance; the instance must exist, the resource
    /// is created if missing).
    pub(crate) fn set(&mut self, path: &Path, value: Value) -> Result<(), Miss> {
        let ids = path.ids();
        if ids.len() < 3 {
            return Err(Miss::NotAllowed);
        }
        let inst = self
            .objects
            .get_mut(&ids[0])
            .and_then(|o| o.get_mut(&ids[1]))
            .ok_or(Miss::NotFound)?;
        match (inst.get_mut(&ids[2]), ids.get(3)) {
            (Some(Res::Exec), _) => Err(Miss::NotAllowed),
            (Some(Res::Multi(m)), Some(riid)) => {
                m.insert(*riid, value);
                Ok(())
            }
            (None, Some(riid)) => {
                inst.insert(ids[2], Res::Multi(BTreeMap::from([(*riid, value)])));
                Ok(())
            }
            (_, None) => {
                inst.insert(ids[2], Res::Single(value));
                Ok(())
            }
            (Some(Res::Single(_)), Some(_)) => Err(Miss::NotAllowed),
        }
    }

    /// The resource of `path` (a resource path) loses its values (a multiple resource's
    /// instances before a replace).
    pub(crate) fn clear_resource(&mut self, path: &Path) {
        let ids = path.ids();
        if let (Some(inst), Some(rid)) = (
            self.objects
                .get_mut(&ids[0])
                .and_then(|o| ids.get(1).and_then(|i| o.get_mut(i))),
            ids.get(2),
        ) {
            if let Some(Res::Multi(m)) = inst.get_mut(rid) {
                m.clear();
            }
        }
    }

    /// Removes the value resources of instance `path` not in `keep` (Write replace).
    pub(crate) fn retain_resources(&mut self, path: &Path, keep: &[u16]) {
        let ids = path.ids();
        if let Some(inst) = self
            .objects
            .get_mut(&ids[0])
            .and_then(|o| ids.get(1).and_then(|i| o.get_mut(i)))
        {
            inst.retain(|rid, r| matches!(r, Res::Exec) || keep.contains(rid));
        }
    }

    /// Adds an empty instance; false if the object is unknown or the instance exists.
    pub(crate) fn create(&mut self, oid: u16, iid: u16) -> bool {
        match self.objects.get_mut(&oid) {
            Some(o) if !o.contains_key(&iid) => {
                o.insert(iid, Instance::new());
                true
            }
            _ => false,
        }
    }

    /// Removes instance `/oid/iid`; false if it did not exist.
    pub(crate) fn delete(&mut self, oid: u16, iid: u16) -> bool {
        self.objects
            .get_mut(&oid)
            .is_some_and(|o| o.remove(&iid).is_some())
    }

    /// Whether `path` is an executable resource.
    pub(crate) fn is_exec(&self, path: &Path) -> bool {
        path.len() == 3 && matches!(self.resource(path), Some(Res::Exec))
    }

    /// The object list of a Register: each instance, and objects without instances.
    pub(crate) fn object_links(&self) -> Vec<ObjectLink> {
        let mut out = Vec::new();
        for (oid, obj) in &self.objects {
            if obj.is_empty() {
                out.push(ObjectLink {
                    oid: *oid,
                    iid: None,
                    version: None,
                });
            }
            for iid in obj.keys() {
                out.push(ObjectLink {
                    oid: *oid,
                    iid: Some(*iid),
                    version: None,
                });
            }
        }
        out
    }

    /// Every path a Discover of `path` lists: the object, instances, resources (with their
    /// number of instances for multiple resources).
    pub(crate) fn discover(&self, path: &Path) -> Vec<(Path, Option<usize>)> {
        let mut out = Vec::new();
        for (oid, obj) in &self.objects {
            let o = Path::object(*oid);
            if o.starts_with(path) {
                out.push((o, None));
            }
            for (iid, inst) in obj {
                let i = Path::instance(*oid, *iid);
                if i.starts_with(path) {
                    out.push((i, None));
                }
                for (rid, res) in inst {
                    let r = Path::resource(*oid, *iid, *rid);
                    if r.starts_with(path) {
                        let dim = match res {
                            Res::Multi(m) => Some(m.len()),
                            _ => None,
                        };
                        out.push((r, dim));
                    }
                }
            }
        }
        out
    }
}

fn entry(path: Path, v: &Value) -> Entry {
    Entry {
        path,
        value: v.clone(),
        time: None,
    }
}

impl TypeLookup for Tree {
    fn resource_type(&self, oid: u16, rid: u16) -> Option<ResourceType> {
        let obj = self.objects.get(&oid)?;
        obj.values().find_map(|inst| match inst.get(&rid)? {
            Res::Single(v) => Some(v.resource_type()),
            Res::Multi(m) => m.values().next().map(Value::resource_type),
            Res::Exec => Some(ResourceType::None),
        })
    }

    fn is_multiple(&self, oid: u16, rid: u16) -> Option<bool> {
        let obj = self.objects.get(&oid)?;
        obj.values()
            .find_map(|inst| inst.get(&rid).map(|r| matches!(r, Res::Multi(_))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_device_tree_answers_paths_at_every_depth() {
        let t = Tree::device("bed-1", 60);
        assert!(t.exists(&Path::ROOT));
        assert!(t.exists(&Path::resource_instance(3, 0, 11, 0)));
        assert!(!t.exists(&Path::instance(3303, 1)));
        assert_eq!(
            t.get(&Path::resource(3303, 0, 5700)),
            Some(Value::Float(21.5))
        );
        let inst = t.entries(&Path::instance(3, 0)).unwrap();
        assert!(
            inst.iter()
                .all(|e| e.path.starts_with(&Path::instance(3, 0)))
        );
        assert!(
            !inst.iter().any(|e| e.path == Path::resource(3, 0, 4)),
            "executables carry no value"
        );
        assert_eq!(t.entries(&Path::resource(3, 0, 4)), Err(Miss::NotAllowed));
        assert_eq!(t.entries(&Path::object(9)), Err(Miss::NotFound));
        assert_eq!(t.resource_type(3303, 5700), Some(ResourceType::Float));
        assert_eq!(t.is_multiple(3, 11), Some(true));
    }

    #[test]
    fn set_create_and_delete_change_the_tree() {
        let mut t = Tree::device("x", 60);
        assert_eq!(
            t.set(&Path::resource(3303, 1, 5700), Value::Float(1.0)),
            Err(Miss::NotFound)
        );
        assert!(t.create(3303, 1));
        assert!(!t.create(3303, 1));
        t.set(&Path::resource(3303, 1, 5700), Value::Float(1.0))
            .unwrap();
        t.set(&Path::resource_instance(3, 0, 11, 3), Value::Integer(5))
            .unwrap();
        assert_eq!(
            t.discover(&Path::resource(3, 0, 11)),
            [(Path::resource(3, 0, 11), Some(2))]
        );
        assert!(t.delete(3303, 1));
        assert!(!t.exists(&Path::instance(3303, 1)));
    }
}
