//! The double's etcd: the CNFConfiguration objects, one global revision
//! counter, and the whole history of changes.
//!
//! The history is never thrown away, so a list can be served at any revision
//! since the last compaction (continue tokens, `resourceVersionMatch=Exact`)
//! and a watch can replay from one. "Compaction" only moves the horizon below
//! which the API says 410 Gone, which is what clients can observe of it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{Map, Value, json};

use super::patch::{self, FieldPath};

pub const GROUP: &str = "xcnf.io";
pub const VERSION: &str = "v1alpha1";
pub const API_VERSION: &str = "xcnf.io/v1alpha1";
pub const KIND: &str = "CNFConfiguration";
pub const LIST_KIND: &str = "CNFConfigurationList";
pub const PLURAL: &str = "cnfconfigurations";
pub const SINGULAR: &str = "cnfconfiguration";
/// `<plural>.<group>`, the name errors use for the resource.
const QUALIFIED: &str = "cnfconfigurations.xcnf.io";

/// An API error as the server reports it: a `Status` object and its HTTP code.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub name: Option<String>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: String, name: Option<&str>) -> Self {
        Self {
            code,
            reason,
            message,
            name: name.map(str::to_owned),
        }
    }
    pub fn not_found(name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{QUALIFIED} \"{name}\" not found"),
            Some(name),
        )
    }
    pub fn no_route() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource".into(),
            None,
        )
    }
    pub fn already_exists(name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{QUALIFIED} \"{name}\" already exists"),
            Some(name),
        )
    }
    pub fn conflict(name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {QUALIFIED} \"{name}\": the object has been \
                 modified; please apply your changes to the latest version and try again"
            ),
            Some(name),
        )
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message.into(), None)
    }
    pub fn invalid(name: &str, message: impl std::fmt::Display) -> Self {
        Self::new(
            422,
            "Invalid",
            format!("{KIND}.{GROUP} \"{name}\" is invalid: {message}"),
            Some(name),
        )
    }
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message.into(), None)
    }
    pub fn too_large(requested: u64, current: u64) -> Self {
        Self::new(
            504,
            "Timeout",
            format!("Too large resource version: {requested}, current: {current}"),
            None,
        )
    }
    pub fn unsupported_media(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format ({content_type}) - accepted \
                 media types include: application/json-patch+json, \
                 application/merge-patch+json, application/apply-patch+yaml"
            ),
            None,
        )
    }
    pub fn method_not_allowed(method: &str) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource ({method})"),
            None,
        )
    }

    /// The `Status` object the API server sends for this error.
    pub fn status(&self) -> Value {
        let mut details = Map::new();
        if let Some(name) = &self.name {
            details.insert("name".into(), json!(name));
            details.insert("group".into(), json!(GROUP));
            details.insert("kind".into(), json!(PLURAL));
        }
        if self.code == 504 {
            details.insert(
                "causes".into(),
                json!([{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}]),
            );
            details.insert("retryAfterSeconds".into(), json!(1));
        }
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if !details.is_empty() {
            s["details"] = Value::Object(details);
        }
        s
    }
}

/// What a change did, as a watch reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeType {
    Added,
    Modified,
    Deleted,
}

/// One write: the object after it (before it, for a deletion, with the
/// deletion's revision) and the object before it, so a watch with a selector
/// can turn a change that leaves the selection into a DELETED.
#[derive(Clone, Debug)]
pub struct Change {
    pub rv: u64,
    pub kind: ChangeType,
    pub object: Value,
    pub prev: Option<Value>,
}

/// Which part of an object a write goes through: the main resource ignores
/// `status`, the status subresource ignores everything else (the rules of a
/// CRD with `subresources.status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Part {
    Main,
    Status,
}

/// (namespace, name), in etcd's key order.
pub type Key = (String, String);

/// The fields each server-side-apply manager set last, per object and part.
type Owners = HashMap<String, BTreeSet<FieldPath>>;

#[derive(Debug)]
pub struct Store {
    rv: u64,
    horizon: u64,
    objects: BTreeMap<Key, Value>,
    history: Vec<Change>,
    owners: HashMap<(Key, Part), Owners>,
    uids: u64,
    /// Watches started in an older epoch end at their next step.
    epoch: u64,
}

impl Default for Store {
    fn default() -> Self {
        // Revisions start well above zero, so a test cannot pass by
        // confusing a revision with a count.
        Self {
            rv: 1000,
            horizon: 0,
            objects: BTreeMap::new(),
            history: Vec::new(),
            owners: HashMap::new(),
            uids: 0,
            epoch: 0,
        }
    }
}

fn meta(obj: &Value, field: &str) -> Option<String> {
    obj.get("metadata")?.get(field)?.as_str().map(str::to_owned)
}

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    match obj.get_mut("metadata") {
        Some(Value::Object(m)) => m,
        _ => unreachable!("metadata was just made an object"),
    }
}

/// The object without `metadata` and `status`: what `generation` counts
/// changes of.
fn generation_relevant(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    o
}

impl Store {
    pub fn rv(&self) -> u64 {
        self.rv
    }

    pub fn horizon(&self) -> u64 {
        self.horizon
    }

    pub fn get(&self, ns: &str, name: &str) -> Option<&Value> {
        self.objects.get(&(ns.to_owned(), name.to_owned()))
    }

    /// The objects at revision `at` (in `ns`, or all), in key order.
    pub fn snapshot(&self, ns: Option<&str>, at: u64) -> Vec<Value> {
        let in_ns = |k: &Key| ns.is_none_or(|n| k.0 == n);
        if at >= self.rv {
            return self
                .objects
                .iter()
                .filter(|(k, _)| in_ns(k))
                .map(|(_, v)| v.clone())
                .collect();
        }
        let mut objs: BTreeMap<Key, Value> = BTreeMap::new();
        for c in self.history.iter().take_while(|c| c.rv <= at) {
            let key = (
                meta(&c.object, "namespace").unwrap_or_default(),
                meta(&c.object, "name").unwrap_or_default(),
            );
            match c.kind {
                ChangeType::Deleted => {
                    objs.remove(&key);
                }
                _ => {
                    objs.insert(key, c.object.clone());
                }
            }
        }
        objs.into_iter()
            .filter(|(k, _)| in_ns(k))
            .map(|(_, v)| v)
            .collect()
    }

    /// The changes after revision `after`, oldest first.
    pub fn changes_after(&self, after: u64) -> &[Change] {
        let i = self.history.partition_point(|c| c.rv <= after);
        &self.history[i..]
    }

    /// A write to some other resource of the cluster: the revision moves
    /// on while no CNFConfiguration changes (etcd's revision is global).
    pub fn bump(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Ends every open watch (checked under the same lock as the writes, so
    /// no watch sends anything of a later revision first).
    pub fn end_watches(&mut self) {
        self.epoch += 1;
    }

    /// Forgets history up to now: a watch from an older revision gets 410.
    pub fn compact(&mut self) {
        self.horizon = self.rv;
    }

    fn record(&mut self, kind: ChangeType, key: Key, mut obj: Value, prev: Option<Value>) -> Value {
        self.rv += 1;
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(self.rv.to_string()));
        match kind {
            ChangeType::Deleted => {
                self.objects.remove(&key);
            }
            _ => {
                self.objects.insert(key, obj.clone());
            }
        }
        self.history.push(Change {
            rv: self.rv,
            kind,
            object: obj.clone(),
            prev,
        });
        obj
    }

    fn check_type(obj: &Value) -> Result<(), ApiError> {
        let api_version = obj.get("apiVersion").and_then(Value::as_str);
        let kind = obj.get("kind").and_then(Value::as_str);
        if api_version != Some(API_VERSION) || kind != Some(KIND) {
            return Err(ApiError::bad_request(format!(
                "the object's apiVersion/kind {}/{} is not {API_VERSION}/{KIND}",
                api_version.unwrap_or(""),
                kind.unwrap_or("")
            )));
        }
        Ok(())
    }

    /// POST to the collection (and an apply that finds no object).
    pub fn create(&mut self, ns: &str, mut obj: Value) -> Result<Value, ApiError> {
        if !obj.is_object() {
            return Err(ApiError::bad_request("the body is not a JSON object"));
        }
        Self::check_type(&obj)?;
        let name = meta(&obj, "name").unwrap_or_default();
        if name.is_empty() {
            return Err(ApiError::invalid(
                "",
                "metadata.name: Required value: name is required",
            ));
        }
        if let Some(err) = dns_subdomain_error(&name) {
            return Err(ApiError::invalid(
                &name,
                format!("metadata.name: Invalid value: \"{name}\": {err}"),
            ));
        }
        match meta(&obj, "namespace") {
            Some(n) if !n.is_empty() && n != ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => {}
        }
        if meta(&obj, "resourceVersion").is_some_and(|r| !r.is_empty()) {
            return Err(ApiError::bad_request(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        let key = (ns.to_owned(), name.clone());
        if self.objects.contains_key(&key) {
            return Err(ApiError::already_exists(&name));
        }
        if let Some(m) = obj.as_object_mut() {
            m.remove("status");
        }
        self.uids += 1;
        let uid = format!(
            "{:08x}-4b1d-4c0e-8f00-{:012x}",
            std::process::id(),
            self.uids
        );
        let m = meta_mut(&mut obj);
        m.insert("namespace".into(), json!(ns));
        m.insert("uid".into(), json!(uid));
        m.insert("generation".into(), json!(1));
        m.insert("creationTimestamp".into(), json!(rfc3339_now()));
        m.remove("managedFields");
        m.remove("deletionTimestamp");
        Ok(self.record(ChangeType::Added, key, obj, None))
    }

    /// Stores `candidate` (a new version of the object at `key`) under the
    /// rules of `part`, and records the change unless nothing changed (a
    /// no-op write keeps the revision, as on a real server).
    fn commit(&mut self, key: Key, part: Part, candidate: Value) -> Result<Value, ApiError> {
        let name = key.1.clone();
        let old = self
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&name))?;
        if !candidate.is_object() {
            return Err(ApiError::bad_request("the body is not a JSON object"));
        }
        Self::check_type(&candidate)?;
        if let Some(n) = meta(&candidate, "name")
            && n != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        if let Some(rv) = meta(&candidate, "resourceVersion")
            && !rv.is_empty()
            && Some(&rv) != meta(&old, "resourceVersion").as_ref()
        {
            return Err(ApiError::conflict(&name));
        }
        let new = match part {
            Part::Status => {
                let mut new = old.clone();
                match candidate.get("status") {
                    Some(s) if !s.is_null() => new["status"] = s.clone(),
                    _ => {
                        if let Some(m) = new.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
                new
            }
            Part::Main => {
                let mut new = candidate;
                match old.get("status") {
                    Some(s) => new["status"] = s.clone(),
                    None => {
                        if let Some(m) = new.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
                let old_meta = old.get("metadata").cloned().unwrap_or_else(|| json!({}));
                let m = meta_mut(&mut new);
                for f in [
                    "name",
                    "namespace",
                    "uid",
                    "creationTimestamp",
                    "generation",
                    "resourceVersion",
                ] {
                    match old_meta.get(f) {
                        Some(v) => m.insert(f.into(), v.clone()),
                        None => m.remove(f),
                    };
                }
                m.remove("managedFields");
                if generation_relevant(&new) != generation_relevant(&old) {
                    let g = old_meta
                        .get("generation")
                        .and_then(Value::as_i64)
                        .unwrap_or(0);
                    meta_mut(&mut new).insert("generation".into(), json!(g + 1));
                }
                new
            }
        };
        if new == old {
            return Ok(old);
        }
        Ok(self.record(ChangeType::Modified, key, new, Some(old)))
    }

    /// PUT to the object or its status.
    pub fn replace(
        &mut self,
        ns: &str,
        name: &str,
        part: Part,
        body: Value,
    ) -> Result<Value, ApiError> {
        self.commit((ns.to_owned(), name.to_owned()), part, body)
    }

    /// PATCH of the object or its status, by content type.
    pub fn patch(
        &mut self,
        ns: &str,
        name: &str,
        part: Part,
        content_type: &str,
        body: &[u8],
        field_manager: Option<&str>,
    ) -> Result<Value, ApiError> {
        let key = (ns.to_owned(), name.to_owned());
        let media = content_type.split(';').next().unwrap_or("").trim();
        match media {
            "application/merge-patch+json" => {
                let p: Value = serde_json::from_slice(body)
                    .map_err(|e| ApiError::bad_request(format!("invalid JSON merge patch: {e}")))?;
                let old = self
                    .get(ns, name)
                    .cloned()
                    .ok_or_else(|| ApiError::not_found(name))?;
                let mut new = old;
                patch::merge(&mut new, &p);
                self.commit(key, part, new)
            }
            "application/json-patch+json" => {
                let p: Value = serde_json::from_slice(body)
                    .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
                let old = self
                    .get(ns, name)
                    .cloned()
                    .ok_or_else(|| ApiError::not_found(name))?;
                let new = patch::json_patch(&old, &p).map_err(|e| ApiError::invalid(name, e))?;
                self.commit(key, part, new)
            }
            "application/apply-patch+yaml" => {
                let manager = field_manager.filter(|m| !m.is_empty()).ok_or_else(|| {
                    ApiError::invalid(
                        name,
                        "fieldManager: Required value: is required for apply patch",
                    )
                })?;
                let config: Value = serde_yaml::from_slice(body)
                    .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
                self.apply(key, part, manager, config)
            }
            other => Err(ApiError::unsupported_media(other)),
        }
    }

    /// Server-side apply, reduced to what a single-writer client sees: the
    /// manager's fields are set, and fields it applied last time but no
    /// longer does are removed unless another apply manager still sets
    /// them. Lists are atomic (the CRD default). Conflicts between managers
    /// are not detected.
    fn apply(
        &mut self,
        key: Key,
        part: Part,
        manager: &str,
        config: Value,
    ) -> Result<Value, ApiError> {
        let name = key.1.clone();
        if !config.is_object() {
            return Err(ApiError::bad_request(
                "the apply configuration is not an object",
            ));
        }
        Self::check_type(&config)?;
        if meta(&config, "name").as_deref() != Some(name.as_str()) {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                meta(&config, "name").unwrap_or_default()
            )));
        }
        let fields: BTreeSet<FieldPath> = patch::leaves(&config)
            .into_iter()
            .filter(|p| match part {
                Part::Status => p.first().is_some_and(|f| f == "status"),
                Part::Main => patch::is_owned_field(p),
            })
            .collect();
        let base = match self.objects.get(&key) {
            Some(o) => o.clone(),
            None if part == Part::Main => {
                let mut skeleton =
                    json!({"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": name}});
                for p in &fields {
                    patch::set_path(
                        &mut skeleton,
                        p,
                        patch::get_path(&config, p).cloned().unwrap_or(Value::Null),
                    );
                }
                let created = self.create(&key.0, skeleton)?;
                self.owners
                    .entry((key, part))
                    .or_default()
                    .insert(manager.to_owned(), fields);
                return Ok(created);
            }
            None => return Err(ApiError::not_found(&name)),
        };
        let owners = self.owners.entry((key.clone(), part)).or_default();
        let previous = owners.get(manager).cloned().unwrap_or_default();
        let others: BTreeSet<&FieldPath> = owners
            .iter()
            .filter(|(m, _)| m.as_str() != manager)
            .flat_map(|(_, f)| f.iter())
            .collect();
        let mut new = base;
        for gone in previous.difference(&fields) {
            if !others.contains(gone) {
                patch::remove_path(&mut new, gone);
            }
        }
        for p in &fields {
            patch::set_path(
                &mut new,
                p,
                patch::get_path(&config, p).cloned().unwrap_or(Value::Null),
            );
        }
        if let Some(rv) = meta(&config, "resourceVersion") {
            meta_mut(&mut new).insert("resourceVersion".into(), json!(rv));
        }
        let result = self.commit(key.clone(), part, new)?;
        self.owners
            .entry((key, part))
            .or_default()
            .insert(manager.to_owned(), fields);
        Ok(result)
    }

    /// DELETE: the object goes at once (no finalizers are modelled).
    pub fn delete(&mut self, ns: &str, name: &str) -> Result<Value, ApiError> {
        let key = (ns.to_owned(), name.to_owned());
        let old = self
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(name))?;
        self.owners.retain(|(k, _), _| *k != key);
        Ok(self.record(ChangeType::Deleted, key, old.clone(), Some(old)))
    }
}

/// Why `name` is not a DNS subdomain (RFC 1123), if it is not.
fn dns_subdomain_error(name: &str) -> Option<&'static str> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    let alnum = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if name.len() > 253 || !ok_chars || !alnum(name.bytes().next()) || !alnum(name.bytes().last()) {
        return Some(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, \
             '-' or '.', and must start and end with an alphanumeric character",
        );
    }
    None
}

/// Now as RFC 3339 in UTC with second precision, the form of
/// `creationTimestamp`.
pub fn rfc3339_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
