//! The source against an in-process API server double (kube's client over a
//! tower service) and a reconciler double answering the handle: what gets
//! applied, what status gets written, and recovery from 410 Gone in both of
//! its shapes. The process-level test with a real HTTP double and the real
//! reconciler is in tests/.

use std::{
    convert::Infallible,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use bytes::Bytes;
use futures::StreamExt as _;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::*;
use crate::reconcile::{
    ApplyReport, ItemKey, ItemState, ItemStatus,
    handle::{Command, test_pair},
};

const BASE: &str = "/apis/xcnf.io/v1alpha1/namespaces/cnf/cnfconfigurations";
const NAME: &str = "cnf-nat44";

/// How the double answers the next watch request.
#[derive(Clone, Copy, PartialEq)]
enum NextWatch {
    Stream,
    /// 200 with a single ERROR event carrying 410, as etcd-backed watches do.
    GoneEvent,
    /// The HTTP answer itself is 410.
    GoneHttp,
}

struct State {
    obj: Option<Value>,
    rv: u64,
    watchers: Vec<mpsc::UnboundedSender<Bytes>>,
    next_watch: NextWatch,
    watch_queries: Vec<String>,
    patch_types: Vec<String>,
}

#[derive(Clone)]
struct Fake(Arc<Mutex<State>>);

fn spec(host: &str, inside: &str) -> Value {
    json!({
        "interfaces": [
            {"name": "inside", "kernel": {"hostIfName": host}, "ipAddresses": ["192.168.100.1/24"]},
            {"name": "outside", "kernel": {"hostIfName": "c1"}, "ipAddresses": ["80.80.80.100/24"]}
        ],
        "nat44": {"inside": [inside], "outside": ["outside"], "pools": [{"first": "80.80.80.100"}]}
    })
}

fn status_body(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": format!("test double: {reason}"), "reason": reason, "code": code})
}

fn respond(code: u16, v: &Value) -> Response<BoxBody<Bytes, Infallible>> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())).boxed());
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r
}

/// RFC 7386, as the API server applies `application/merge-patch+json`.
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

impl Fake {
    fn new(spec: Value) -> Self {
        let obj = json!({
            "apiVersion": "xcnf.io/v1alpha1", "kind": "CNFConfiguration",
            "metadata": {"name": NAME, "namespace": "cnf", "uid": "u-1", "generation": 1, "resourceVersion": "1"},
            "spec": spec
        });
        Self(Arc::new(Mutex::new(State {
            obj: Some(obj),
            rv: 1,
            watchers: Vec::new(),
            next_watch: NextWatch::Stream,
            watch_queries: Vec::new(),
            patch_types: Vec::new(),
        })))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn client(&self) -> Client {
        let fake = self.clone();
        let service = tower::service_fn(move |req: Request<kube::client::Body>| {
            let fake = fake.clone();
            async move { Ok::<_, Infallible>(fake.serve(req).await) }
        });
        Client::new(service, "cnf")
    }

    async fn serve(
        &self,
        req: Request<kube::client::Body>,
    ) -> Response<BoxBody<Bytes, Infallible>> {
        let (parts, body) = req.into_parts();
        let body = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let query = parts.uri.query().unwrap_or_default().to_string();
        let path = parts.uri.path();
        let one = format!("{BASE}/{NAME}");
        let mut st = self.state();
        match (parts.method.as_str(), path) {
            ("GET", BASE) if query.contains("watch=true") => {
                st.watch_queries.push(query);
                let next = std::mem::replace(&mut st.next_watch, NextWatch::Stream);
                match next {
                    NextWatch::GoneHttp => respond(410, &status_body(410, "Expired")),
                    NextWatch::GoneEvent => {
                        let ev = json!({"type": "ERROR", "object": status_body(410, "Expired")});
                        respond(200, &ev)
                    }
                    NextWatch::Stream => {
                        let (tx, rx) = mpsc::unbounded_channel();
                        st.watchers.push(tx);
                        let frames = tokio_stream::wrappers::UnboundedReceiverStream::new(rx)
                            .map(|b| Ok::<_, Infallible>(Frame::data(b)));
                        Response::new(BodyExt::boxed(StreamBody::new(frames)))
                    }
                }
            }
            ("GET", BASE) => {
                let items: Vec<Value> = st.obj.iter().cloned().collect();
                let list = json!({"apiVersion": "xcnf.io/v1alpha1", "kind": "CNFConfigurationList",
                                  "metadata": {"resourceVersion": st.rv.to_string()}, "items": items});
                respond(200, &list)
            }
            ("GET", p) if p == one => match &st.obj {
                Some(o) => respond(200, o),
                None => respond(404, &status_body(404, "NotFound")),
            },
            ("PATCH", p) if p == format!("{one}/status") => {
                let ct = parts
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                st.patch_types.push(ct);
                let patch: Value = serde_json::from_slice(&body).unwrap_or_default();
                let status_only =
                    json!({"status": patch.get("status").cloned().unwrap_or_default()});
                let mut obj = match st.obj.take() {
                    Some(o) => o,
                    None => return respond(404, &status_body(404, "NotFound")),
                };
                merge(&mut obj, &status_only);
                st.obj = Some(obj);
                Self::changed(&mut st, false, true);
                respond(200, st.obj.as_ref().unwrap_or(&Value::Null))
            }
            _ => respond(404, &status_body(404, "NotFound")),
        }
    }

    /// Bumps the resourceVersion (and the generation for spec changes) and
    /// tells the watchers, unless the change happens while nobody watches.
    fn changed(st: &mut State, spec: bool, notify: bool) {
        st.rv += 1;
        let rv = st.rv.to_string();
        let Some(obj) = st.obj.as_mut() else { return };
        obj["metadata"]["resourceVersion"] = rv.into();
        if spec {
            let g = obj["metadata"]["generation"].as_i64().unwrap_or(0);
            obj["metadata"]["generation"] = (g + 1).into();
        }
        if notify {
            let line = format!("{}\n", json!({"type": "MODIFIED", "object": obj}));
            st.watchers
                .retain(|w| w.send(Bytes::from(line.clone())).is_ok());
        }
    }

    fn set_spec(&self, spec: Value) {
        let mut st = self.state();
        if let Some(o) = st.obj.as_mut() {
            o["spec"] = spec;
        }
        Self::changed(&mut st, true, true);
    }

    /// The open watches end, the spec changes meanwhile (no event), and the
    /// next watch request is answered with `next`.
    fn expire(&self, next: NextWatch, spec: Value) {
        let mut st = self.state();
        st.watchers.clear();
        st.next_watch = next;
        if let Some(o) = st.obj.as_mut() {
            o["spec"] = spec;
        }
        Self::changed(&mut st, true, false);
    }

    /// Waits (generously; nothing here is timed) for a status `ok` accepts.
    async fn status_where(&self, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..1500 {
            let s = self
                .state()
                .obj
                .as_ref()
                .map(|o| o["status"].clone())
                .unwrap_or_default();
            if ok(&s) {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "no status with {what}; last: {:#}",
            self.state().obj.as_ref().unwrap_or(&Value::Null)
        );
    }
}

fn ready(s: &Value) -> &Value {
    s["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .unwrap_or(&Value::Null)
}

/// Answers the handle as the reconciler would, validating like it and
/// reporting every item configured.
fn reconciler(mut rx: mpsc::Receiver<Command>) -> Arc<Mutex<Vec<Config>>> {
    let applied = Arc::new(Mutex::new(Vec::<Config>::new()));
    let seen = applied.clone();
    let items = || {
        [ItemKey::Link("inside".into()), ItemKey::Nat]
            .into_iter()
            .map(|key| ItemStatus {
                key,
                state: ItemState::Configured,
                detail: String::new(),
                since: std::time::SystemTime::UNIX_EPOCH,
            })
            .collect::<Vec<_>>()
    };
    tokio::spawn(async move {
        while let Some(c) = rx.recv().await {
            match c {
                Command::Apply { config, reply, .. } => {
                    let r = match config.validate() {
                        Err(e) => Err(ApplyError::Invalid(e)),
                        Ok(()) => {
                            seen.lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .push(*config);
                            Ok(ApplyReport {
                                plan: Vec::new(),
                                applied: true,
                                statuses: items(),
                            })
                        }
                    };
                    let _ = reply.send(r);
                }
                Command::Status { reply } => {
                    let _ = reply.send(items());
                }
                Command::Get { reply } => {
                    let last = seen
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .last()
                        .cloned();
                    let _ = reply.send(last);
                }
                Command::Delete { reply, .. } => {
                    let _ = reply.send(Err(ApplyError::System("not used here".into())));
                }
            }
        }
    });
    applied
}

fn hosts(applied: &Mutex<Vec<Config>>) -> Vec<String> {
    applied
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .map(|c| {
            c.spec.interfaces[0]
                .kernel
                .as_ref()
                .map(|k| k.host_if_name.clone())
                .unwrap_or_default()
        })
        .collect()
}

async fn until_applied(applied: &Mutex<Vec<Config>>, host: &str) {
    for _ in 0..1500 {
        if hosts(applied).last().map(String::as_str) == Some(host) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{host} never applied; applied: {:?}", hosts(applied));
}

#[tokio::test]
async fn applies_each_generation_reports_status_and_relists_after_410() {
    let fake = Fake::new(spec("c0", "inside"));
    let mut source = Source::new(
        fake.client(),
        Binding {
            namespace: "cnf".into(),
            name: NAME.into(),
        },
    );
    let first = source
        .initial()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("the valid resource was not taken at startup"));
    assert_eq!(first.metadata.name, NAME);
    assert_eq!(first.metadata.namespace.as_deref(), Some("cnf"));
    source.started();
    let (handle, rx) = test_pair();
    let applied = reconciler(rx);
    let task = tokio::spawn(source.run(handle));

    // The generation the agent started with is reported, not applied again.
    let s = fake
        .status_where("generation 1 ready", |s| {
            s["observedGeneration"] == 1 && ready(s)["status"] == "True"
        })
        .await;
    assert_eq!(ready(&s)["reason"], "Configured");
    assert_eq!(ready(&s)["observedGeneration"], 1);
    assert_eq!(s["items"][0]["key"], "interface/inside");
    assert_eq!(s["itemCount"], 2);
    assert!(hosts(&applied).is_empty(), "{:?}", hosts(&applied));

    // A new generation is applied through the handle.
    fake.set_spec(spec("c9", "inside"));
    until_applied(&applied, "c9").await;
    fake.status_where("generation 2 ready", |s| {
        s["observedGeneration"] == 2 && ready(s)["status"] == "True"
    })
    .await;

    // Invalid generations change nothing and say why, with field paths:
    // one the reconciler refuses, one that does not even parse.
    fake.set_spec(spec("c3", "nope"));
    let s = fake
        .status_where("generation 3 invalid", |s| s["observedGeneration"] == 3)
        .await;
    assert_eq!(ready(&s)["status"], "False");
    assert_eq!(ready(&s)["reason"], "Invalid");
    let m = ready(&s)["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(m.contains("spec.nat44.inside[0]"), "{m}");
    assert!(m.contains("generation 2 stays in force"), "{m}");
    let mut unknown = spec("c4", "inside");
    unknown["interfaces"][0]["colour"] = "red".into();
    fake.set_spec(unknown);
    let s = fake
        .status_where("generation 4 invalid", |s| s["observedGeneration"] == 4)
        .await;
    let m = ready(&s)["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        m.contains("spec.interfaces[0]: unknown field `colour`"),
        "{m}"
    );
    assert_eq!(hosts(&applied), ["c9"]);

    // The watch expires (410 as a watch event); the change made meanwhile
    // is found by the re-list.
    fake.expire(NextWatch::GoneEvent, spec("c5", "inside"));
    until_applied(&applied, "c5").await;
    fake.status_where("generation 5 ready", |s| {
        s["observedGeneration"] == 5 && ready(s)["status"] == "True"
    })
    .await;

    // 410 as the HTTP answer to the watch request: a fresh list too.
    fake.expire(NextWatch::GoneHttp, spec("c6", "inside"));
    until_applied(&applied, "c6").await;

    task.abort();
    let st = fake.state();
    assert!(st.watch_queries.len() >= 3, "{:?}", st.watch_queries);
    for q in &st.watch_queries {
        assert!(
            q.contains("allowWatchBookmarks=true"),
            "no bookmarks asked in {q}"
        );
        assert!(q.contains("fieldSelector=metadata.name%3Dcnf-nat44"), "{q}");
    }
    assert!(
        st.patch_types
            .iter()
            .all(|t| t == "application/merge-patch+json"),
        "{:?}",
        st.patch_types
    );
}

#[tokio::test]
async fn an_invalid_resource_at_startup_is_reported_and_not_taken() {
    let fake = Fake::new(spec("c0", "nope"));
    let mut source = Source::new(
        fake.client(),
        Binding {
            namespace: "cnf".into(),
            name: NAME.into(),
        },
    );
    let first = source.initial().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(first.is_none(), "an invalid resource was taken: {first:?}");
    let (handle, rx) = test_pair();
    let applied = reconciler(rx);
    let task = tokio::spawn(source.run(handle));
    let s = fake
        .status_where("generation 1 invalid", |s| s["observedGeneration"] == 1)
        .await;
    assert_eq!(ready(&s)["reason"], "Invalid");
    let m = ready(&s)["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(m.contains("the running config stays in force"), "{m}");
    assert!(m.contains("spec.nat44.inside[0]"), "{m}");
    // Fixed: applied.
    fake.set_spec(spec("c0", "inside"));
    until_applied(&applied, "c0").await;
    task.abort();
}

#[tokio::test]
async fn a_missing_resource_is_waited_for() {
    let fake = Fake::new(spec("c0", "inside"));
    fake.state().obj = None;
    let mut source = Source::new(
        fake.client(),
        Binding {
            namespace: "cnf".into(),
            name: NAME.into(),
        },
    );
    assert!(
        source
            .initial()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_none()
    );
}

#[test]
fn every_shape_of_410_is_gone_and_nothing_else() {
    let api = |code| {
        kube::Error::Api(Box::new(
            serde_json::from_value(status_body(code, "x")).unwrap_or_else(|e| panic!("{e}")),
        ))
    };
    assert!(is_gone(&watcher::Error::WatchStartFailed(api(410))));
    assert!(is_gone(&watcher::Error::WatchFailed(api(410))));
    assert!(is_gone(&watcher::Error::InitialListFailed(api(410))));
    assert!(!is_gone(&watcher::Error::WatchStartFailed(api(500))));
    assert!(!is_gone(&watcher::Error::NoResourceVersion));
}
