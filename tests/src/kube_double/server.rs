//! The HTTP side: routing, discovery, list, get, watch streams and writes.

use std::{
    collections::HashMap,
    convert::Infallible,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Frame, Incoming},
    header::CONTENT_TYPE,
};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use super::{
    select::Filter,
    store::{
        API_VERSION, ApiError, ChangeType, GROUP, KIND, LIST_KIND, PLURAL, Part, SINGULAR, Store,
        VERSION,
    },
};

pub type Body = BoxBody<Bytes, Infallible>;

/// A watch without `timeoutSeconds` ends after this long (the API server
/// picks a random time around its `--min-request-timeout`, 1800 s).
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

/// State the connections share with the test controls.
#[derive(Debug)]
pub struct Shared {
    pub store: Mutex<Store>,
    /// The current revision, for waking watches after a write.
    pub changed: watch::Sender<u64>,
    /// Wakes the watches after [`Store::end_watches`].
    pub watch_epoch: watch::Sender<u64>,
    pub requests: Mutex<Vec<String>>,
    pub bookmark_interval: Mutex<Duration>,
}

impl Shared {
    pub fn new(bookmark_interval: Duration) -> Self {
        let store = Store::default();
        let rv = store.rv();
        Self {
            store: Mutex::new(store),
            changed: watch::channel(rv).0,
            watch_epoch: watch::channel(0).0,
            requests: Mutex::new(Vec::new()),
            bookmark_interval: Mutex::new(bookmark_interval),
        }
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs a write on the store and wakes the watches if it wrote.
    pub fn write<T>(&self, f: impl FnOnce(&mut Store) -> T) -> T {
        let mut store = self.lock();
        let out = f(&mut store);
        let rv = store.rv();
        drop(store);
        self.changed.send_if_modified(|cur| {
            let moved = *cur != rv;
            *cur = rv;
            moved
        });
        out
    }
}

fn json_response(code: u16, v: &Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())).boxed());
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn error_response(e: &ApiError) -> Response<Body> {
    json_response(e.code, &e.status())
}

fn percent_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b'+', ..) => {
                out.push(b' ');
                i += 1;
            }
            (b, ..) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_query(q: Option<&str>) -> HashMap<String, String> {
    q.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn is_true(v: Option<&String>) -> bool {
    v.is_some_and(|v| v == "true" || v == "1")
}

/// Serves one request.
pub async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let raw_query = req.uri().query().map(str::to_owned);
    shared
        .requests
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(match &raw_query {
            Some(q) => format!("{method} {path}?{q}"),
            None => format!("{method} {path}"),
        });
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return Ok(error_response(&ApiError::bad_request(format!(
                "reading the body: {e}"
            ))));
        }
    };
    let query = parse_query(raw_query.as_deref());
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let resp = route(&shared, &method, &segs, &query, &content_type, &body)
        .unwrap_or_else(|e| error_response(&e));
    Ok(resp)
}

fn route(
    shared: &Arc<Shared>,
    method: &Method,
    segs: &[&str],
    query: &HashMap<String, String>,
    content_type: &str,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let get_only = |v: Value| {
        if method == Method::GET {
            Ok(json_response(200, &v))
        } else {
            Err(ApiError::method_not_allowed(method.as_str()))
        }
    };
    match segs {
        ["version"] => get_only(version()),
        ["api"] => get_only(json!({"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]})),
        ["api", "v1"] => {
            get_only(json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": []}))
        }
        ["apis"] => {
            get_only(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [api_group()]}))
        }
        ["apis", GROUP] => {
            let mut g = api_group();
            g["apiVersion"] = json!("v1");
            get_only(g)
        }
        ["apis", GROUP, VERSION] => get_only(resource_list()),
        ["apis", GROUP, VERSION, PLURAL] => collection(shared, method, None, query, body),
        ["apis", GROUP, VERSION, "namespaces", ns, PLURAL] => {
            collection(shared, method, Some(ns), query, body)
        }
        ["apis", GROUP, VERSION, "namespaces", ns, PLURAL, name] => object(
            shared,
            method,
            ns,
            name,
            Part::Main,
            query,
            content_type,
            body,
        ),
        [
            "apis",
            GROUP,
            VERSION,
            "namespaces",
            ns,
            PLURAL,
            name,
            "status",
        ] => object(
            shared,
            method,
            ns,
            name,
            Part::Status,
            query,
            content_type,
            body,
        ),
        _ => Err(ApiError::no_route()),
    }
}

fn version() -> Value {
    json!({"major": "1", "minor": "35", "gitVersion": "v1.35.0-xcnf-double",
        "gitCommit": "", "gitTreeState": "clean", "buildDate": "", "goVersion": "",
        "compiler": "", "platform": "linux/amd64"})
}

fn api_group() -> Value {
    let gv = json!({"groupVersion": API_VERSION, "version": VERSION});
    json!({"kind": "APIGroup", "name": GROUP, "versions": [gv], "preferredVersion": gv})
}

fn resource_list() -> Value {
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": API_VERSION,
        "resources": [
            {"name": PLURAL, "singularName": SINGULAR, "namespaced": true, "kind": KIND,
             "verbs": ["delete", "deletecollection", "get", "list", "patch", "create", "update", "watch"],
             "storageVersionHash": "xcnfdouble="},
            {"name": format!("{PLURAL}/status"), "singularName": "", "namespaced": true, "kind": KIND,
             "verbs": ["get", "patch", "update"]},
        ],
    })
}

fn parse_rv(s: &str) -> Result<u64, ApiError> {
    s.parse()
        .map_err(|_| ApiError::bad_request(format!("invalid resource version: {s:?}")))
}

fn collection(
    shared: &Arc<Shared>,
    method: &Method,
    ns: Option<&str>,
    query: &HashMap<String, String>,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    match (method, ns) {
        (&Method::GET, _) => {
            let filter = Filter::new(
                ns,
                query.get("fieldSelector").map(String::as_str),
                query.get("labelSelector").map(String::as_str),
            )?;
            if is_true(query.get("watch")) {
                start_watch(shared, filter, query)
            } else {
                list(shared, &filter, query)
            }
        }
        (&Method::POST, Some(ns)) => {
            let obj: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
            let created = shared.write(|s| s.create(ns, obj))?;
            Ok(json_response(201, &created))
        }
        _ => Err(ApiError::method_not_allowed(method.as_str())),
    }
}

/// A list: at the current revision, at an exact older one, or continuing a
/// paged list at the revision of its first page.
fn list(
    shared: &Shared,
    filter: &Filter,
    query: &HashMap<String, String>,
) -> Result<Response<Body>, ApiError> {
    let store = shared.lock();
    let current = store.rv();
    let (at, offset) = if let Some(token) = query.get("continue").filter(|t| !t.is_empty()) {
        let bad = || ApiError::bad_request(format!("invalid continue token {token:?}"));
        let (rv, off) = token.split_once('-').ok_or_else(bad)?;
        let (rv, off): (u64, usize) = (
            rv.parse().map_err(|_| bad())?,
            off.parse().map_err(|_| bad())?,
        );
        if rv < store.horizon() {
            return Err(ApiError::expired(
                "The provided continue parameter is too old to display a consistent list result. \
                 You can start a new list without the continue parameter.",
            ));
        }
        (rv, off)
    } else {
        match query.get("resourceVersion").map(String::as_str) {
            None | Some("" | "0") => (current, 0),
            Some(rv) => {
                let rv = parse_rv(rv)?;
                if rv > current {
                    return Err(ApiError::too_large(rv, current));
                }
                if query.get("resourceVersionMatch").map(String::as_str) == Some("Exact") {
                    if rv < store.horizon() {
                        return Err(ApiError::expired(format!(
                            "too old resource version: {rv} ({})",
                            store.horizon()
                        )));
                    }
                    (rv, 0)
                } else {
                    (current, 0)
                }
            }
        }
    };
    let items: Vec<Value> = store
        .snapshot(filter.namespace.as_deref(), at)
        .into_iter()
        .filter(|o| filter.matches(o))
        .collect();
    drop(store);
    let limit = query
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let end = offset.saturating_add(limit).min(items.len());
    let page: Vec<Value> = items
        .get(offset..end)
        .map(<[Value]>::to_vec)
        .unwrap_or_default();
    let mut meta = json!({"resourceVersion": at.to_string()});
    if end < items.len() {
        meta["continue"] = json!(format!("{at}-{end}"));
        meta["remainingItemCount"] = json!(items.len() - end);
    }
    Ok(json_response(
        200,
        &json!({"apiVersion": API_VERSION, "kind": LIST_KIND, "metadata": meta, "items": page}),
    ))
}

#[allow(
    clippy::too_many_arguments,
    reason = "one request's parts, passed once"
)]
fn object(
    shared: &Arc<Shared>,
    method: &Method,
    ns: &str,
    name: &str,
    part: Part,
    query: &HashMap<String, String>,
    content_type: &str,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let json_body = || -> Result<Value, ApiError> {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
    };
    let obj = match *method {
        Method::GET => shared
            .lock()
            .get(ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(name))?,
        Method::PUT => {
            let b = json_body()?;
            shared.write(|s| s.replace(ns, name, part, b))?
        }
        Method::PATCH => {
            let manager = query.get("fieldManager").map(String::as_str);
            shared.write(|s| s.patch(ns, name, part, content_type, body, manager))?
        }
        Method::DELETE if part == Part::Main => shared.write(|s| s.delete(ns, name))?,
        _ => return Err(ApiError::method_not_allowed(method.as_str())),
    };
    Ok(json_response(200, &obj))
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

fn bookmark(rv: u64, initial_events_end: bool) -> Bytes {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_events_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    event_line(
        "BOOKMARK",
        &json!({"apiVersion": API_VERSION, "kind": KIND, "metadata": meta}),
    )
}

/// The watch event a change makes for a filtered watch, if any: a change
/// that enters the selection is ADDED, one that leaves it DELETED.
fn event_for(filter: &Filter, c: &super::store::Change) -> Option<Bytes> {
    let now = c.kind != ChangeType::Deleted && filter.matches(&c.object);
    let before = c.prev.as_ref().is_some_and(|p| filter.matches(p));
    match (before, now) {
        (false, true) => Some(event_line("ADDED", &c.object)),
        (true, true) => Some(event_line("MODIFIED", &c.object)),
        (true, false) => {
            let mut last = if c.kind == ChangeType::Deleted {
                c.object.clone()
            } else {
                c.prev.clone().unwrap_or(Value::Null)
            };
            last["metadata"]["resourceVersion"] = json!(c.rv.to_string());
            Some(event_line("DELETED", &last))
        }
        (false, false) => None,
    }
}

/// Validates a watch request and starts streaming it: first the initial
/// events it asks for (or the 410 that ends it), then every matching change.
fn start_watch(
    shared: &Arc<Shared>,
    filter: Filter,
    query: &HashMap<String, String>,
) -> Result<Response<Body>, ApiError> {
    let bookmarks = is_true(query.get("allowWatchBookmarks"));
    let send_initial = query.get("sendInitialEvents").map(|v| v == "true");
    if send_initial.is_some()
        && query.get("resourceVersionMatch").map(String::as_str) != Some("NotOlderThan")
    {
        return Err(ApiError::invalid(
            "",
            "resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
        ));
    }
    if send_initial == Some(true) && !bookmarks {
        return Err(ApiError::invalid(
            "",
            "allowWatchBookmarks: Forbidden: sendInitialEvents requires allowWatchBookmarks=true",
        ));
    }
    let timeout = match query.get("timeoutSeconds") {
        Some(t) => Duration::from_secs(
            t.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds {t:?}")))?,
        ),
        None => DEFAULT_WATCH_TIMEOUT,
    };
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let mut initial = Vec::new();
    let store = shared.lock();
    let current = store.rv();
    let rv = query
        .get("resourceVersion")
        .map(String::as_str)
        .filter(|r| !r.is_empty());
    let current_state = || {
        store
            .snapshot(filter.namespace.as_deref(), current)
            .iter()
            .filter(|o| filter.matches(o))
            .map(|o| event_line("ADDED", o))
            .collect::<Vec<_>>()
    };
    let start = match rv {
        // "Start at most recent" (no RV) and "start at any" (RV 0) begin with
        // synthetic ADDED events for what exists, unless told not to.
        None | Some("0") => {
            if send_initial != Some(false) {
                initial = current_state();
            }
            if send_initial == Some(true) {
                initial.push(bookmark(current, true));
            }
            current
        }
        Some(rv) => {
            let rv = parse_rv(rv)?;
            if rv > current {
                return Err(ApiError::too_large(rv, current));
            }
            if send_initial == Some(true) {
                // A streaming list: the state at least as new as `rv`.
                initial = current_state();
                initial.push(bookmark(current, true));
                current
            } else if rv < store.horizon() {
                // The watch cache's answer: a 200 whose only event is the
                // error, so clients see it as the watch's end and re-list.
                let gone = ApiError::expired(format!(
                    "too old resource version: {rv} ({})",
                    store.horizon()
                ));
                drop(tx);
                return Ok(stream_response(
                    vec![event_line("ERROR", &gone.status())],
                    rx,
                ));
            } else {
                rv
            }
        }
    };
    let epoch = store.epoch();
    drop(store);
    let watch = Watch {
        shared: shared.clone(),
        filter,
        epoch,
        start,
        timeout,
        bookmarks,
        tx,
    };
    tokio::spawn(watch.run());
    Ok(stream_response(initial, rx))
}

fn stream_response(initial: Vec<Bytes>, mut rx: mpsc::Receiver<Bytes>) -> Response<Body> {
    let mut initial = initial.into_iter();
    let stream = futures::stream::poll_fn(move |cx| {
        if let Some(line) = initial.next() {
            return std::task::Poll::Ready(Some(Ok::<_, Infallible>(Frame::data(line))));
        }
        rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    });
    let mut r = Response::new(StreamBody::new(stream).boxed());
    r.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

/// One open watch: sends the matching changes after `start`, a bookmark now
/// and then if asked, and ends at its timeout, on compaction, or when the
/// client goes away.
struct Watch {
    shared: Arc<Shared>,
    filter: Filter,
    epoch: u64,
    start: u64,
    timeout: Duration,
    bookmarks: bool,
    tx: mpsc::Sender<Bytes>,
}

impl Watch {
    async fn run(self) {
        let mut changed = self.shared.changed.subscribe();
        let mut epoch = self.shared.watch_epoch.subscribe();
        let deadline = tokio::time::Instant::now() + self.timeout;
        let period = *self
            .shared
            .bookmark_interval
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sent = self.start;
        loop {
            let (lines, upto) = {
                let store = self.shared.lock();
                if store.epoch() != self.epoch {
                    return;
                }
                let lines: Vec<Bytes> = store
                    .changes_after(sent)
                    .iter()
                    .filter_map(|c| event_for(&self.filter, c))
                    .collect();
                (lines, store.rv())
            };
            for line in lines {
                if self.tx.send(line).await.is_err() {
                    return;
                }
            }
            sent = upto;
            tokio::select! {
                r = changed.changed() => if r.is_err() { return },
                _ = epoch.changed() => return,
                () = tokio::time::sleep_until(deadline) => return,
                () = self.tx.closed() => return,
                _ = tick.tick(), if self.bookmarks => {
                    if self.tx.send(bookmark(sent, false)).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}
