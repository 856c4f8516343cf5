//! The API-server double against the real `kube` client: if kube's watcher
//! and its typed calls work against it, the double speaks the protocol the
//! agent's Kubernetes config source will meet. No root needed.

use std::{collections::BTreeMap, path::Path, time::Duration};

use futures::{Stream, StreamExt};
use kube::{
    Api, Client,
    api::{
        ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
        VersionMatch, WatchEvent, WatchParams,
    },
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{
        WatchStreamExt,
        watcher::{self, Event},
    },
};
use serde_json::{Value, json};
use xcnf_tests::kube_double::{KubeDouble, NAMESPACE};

/// Guards against a hang, not a timing assertion: nothing here should take
/// more than a fraction of this.
const PATIENCE: Duration = Duration::from_secs(30);

fn resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("xcnf.io", "v1alpha1", "CNFConfiguration"),
        "cnfconfigurations",
    )
}

/// A client built the way the agent builds one: from a kubeconfig file.
async fn client(double: &KubeDouble, dir: &Path) -> Client {
    let path = dir.join("kubeconfig");
    double.kubeconfig(&path);
    let kc = Kubeconfig::read_from(&path).unwrap_or_else(|e| panic!("read kubeconfig: {e}"));
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("kubeconfig: {e}"));
    assert_eq!(config.default_namespace, NAMESPACE);
    Client::try_from(config).unwrap_or_else(|e| panic!("client: {e}"))
}

struct Fixture {
    double: KubeDouble,
    api: Api<DynamicObject>,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn fixture(tag: &str) -> Fixture {
    let dir = std::env::temp_dir().join(format!("xcnf-kube-double-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    let double = KubeDouble::start();
    let client = client(&double, &dir).await;
    let api = Api::namespaced_with(client, NAMESPACE, &resource());
    Fixture {
        double,
        api,
        _dir: TempDir(dir),
    }
}

fn cnf(name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "xcnf.io/v1alpha1",
        "kind": "CNFConfiguration",
        "metadata": {"name": name, "labels": {"app": "nat44"}},
        "spec": spec,
    })
}

fn spec(n: u32) -> Value {
    json!({"interfaces": [{"name": format!("if{n}"), "kernel": {"hostIfName": format!("c{n}")}}]})
}

fn generation(o: &Value) -> i64 {
    o["metadata"]["generation"]
        .as_i64()
        .unwrap_or_else(|| panic!("no generation in {o}"))
}

fn rv(o: &Value) -> u64 {
    o["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no string resourceVersion in {o}"))
}

fn as_value(o: &DynamicObject) -> Value {
    serde_json::to_value(o).unwrap_or_else(|e| panic!("serialize: {e}"))
}

async fn next<S: Stream + Unpin>(s: &mut S, what: &str) -> S::Item {
    tokio::time::timeout(PATIENCE, s.next())
        .await
        .unwrap_or_else(|_| panic!("no {what} within {PATIENCE:?}"))
        .unwrap_or_else(|| panic!("stream ended before {what}"))
}

/// The code and reason of a call that must have failed with an API error.
fn api_error(r: Result<(), kube::Error>) -> (u16, String) {
    match r {
        Err(kube::Error::Api(s)) => (s.code, s.reason.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn discovery_finds_the_resource_and_its_status_subresource() {
    let f = fixture("discovery").await;
    let client = f.api.clone().into_client();
    let gvk = GroupVersionKind::gvk("xcnf.io", "v1alpha1", "CNFConfiguration");
    let (ar, caps) = kube::discovery::pinned_kind(&client, &gvk)
        .await
        .unwrap_or_else(|e| panic!("discovery: {e}"));
    assert_eq!(ar.plural, "cnfconfigurations");
    assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
    assert!(
        caps.subresources.iter().any(|(r, _)| r.plural == "status"),
        "no status subresource in {:?}",
        caps.subresources
    );
    assert!(caps.supports_operation("watch") && caps.supports_operation("patch"));
    let info = client
        .apiserver_version()
        .await
        .unwrap_or_else(|e| panic!("/version: {e}"));
    assert_eq!(info.major, "1");
}

#[tokio::test]
async fn list_get_and_selectors() {
    let f = fixture("list").await;
    let a = f.double.create(cnf("a", spec(0)));
    f.double.create(cnf("b", spec(1)));
    let mut other = cnf("c", spec(2));
    other["metadata"]["labels"] = json!({"app": "other"});
    f.double.create(other);

    let list = f
        .api
        .list(&ListParams::default())
        .await
        .unwrap_or_else(|e| panic!("list: {e}"));
    let names: Vec<_> = list
        .items
        .iter()
        .filter_map(|o| o.metadata.name.clone())
        .collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert_eq!(
        list.metadata.resource_version,
        Some(f.double.resource_version().to_string())
    );

    let by_name = f
        .api
        .list(&ListParams::default().fields("metadata.name=b"))
        .await
        .unwrap_or_else(|e| panic!("list by name: {e}"));
    assert_eq!(by_name.items.len(), 1);
    assert_eq!(by_name.items[0].metadata.name.as_deref(), Some("b"));
    let by_label = f
        .api
        .list(&ListParams::default().labels("app=nat44"))
        .await
        .unwrap_or_else(|e| panic!("list by label: {e}"));
    assert_eq!(by_label.items.len(), 2);
    let err = f
        .api
        .list(&ListParams::default().fields("spec.interfaces=x"))
        .await
        .map(|_| ());
    assert_eq!(api_error(err), (400, "BadRequest".into()));

    let got = f.api.get("a").await.unwrap_or_else(|e| panic!("get: {e}"));
    let got = as_value(&got);
    assert_eq!(got["spec"], a["spec"]);
    assert_eq!(got["metadata"]["uid"], a["metadata"]["uid"]);
    assert!(got["metadata"]["creationTimestamp"].is_string());
    assert_eq!(generation(&got), 1);
    let err = f.api.get("missing").await.map(|_| ());
    assert_eq!(api_error(err), (404, "NotFound".into()));
}

#[tokio::test]
async fn paged_and_exact_lists() {
    let f = fixture("paging").await;
    for n in 0..3 {
        f.double.create(cnf(&format!("p{n}"), spec(n)));
    }
    let first = f
        .api
        .list(&ListParams::default().limit(2))
        .await
        .unwrap_or_else(|e| panic!("page 1: {e}"));
    assert_eq!(first.items.len(), 2);
    let token = first
        .metadata
        .continue_
        .clone()
        .unwrap_or_else(|| panic!("no continue token"));
    // A write between pages is not seen: the list is consistent.
    f.double.create(cnf("p3", spec(3)));
    let second = f
        .api
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap_or_else(|e| panic!("page 2: {e}"));
    let names: Vec<_> = second
        .items
        .iter()
        .filter_map(|o| o.metadata.name.clone())
        .collect();
    assert_eq!(names, ["p2"]);
    assert!(second.metadata.continue_.is_none());

    // An exact older revision shows the state then.
    let at = first.metadata.resource_version.clone().unwrap_or_default();
    let old = f
        .api
        .list(&ListParams::default().at(&at).matching(VersionMatch::Exact))
        .await
        .unwrap_or_else(|e| panic!("exact list: {e}"));
    assert_eq!(old.items.len(), 3);

    // After compaction both the token and the old revision are gone.
    f.double.compact();
    let err = f
        .api
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .map(|_| ());
    assert_eq!(api_error(err), (410, "Expired".into()));
    let err = f
        .api
        .list(&ListParams::default().at(&at).matching(VersionMatch::Exact))
        .await
        .map(|_| ());
    assert_eq!(api_error(err), (410, "Expired".into()));
}

#[tokio::test]
async fn raw_watch_delivers_added_modified_deleted_in_order() {
    let f = fixture("events").await;
    let start = f.double.resource_version().to_string();
    let mut events = f
        .api
        .watch(
            &WatchParams::default().timeout(60).disable_bookmarks(),
            &start,
        )
        .await
        .unwrap_or_else(|e| panic!("watch: {e}"))
        .boxed();
    f.double.create(cnf("w", spec(0)));
    f.double.update_spec("w", spec(1));
    f.double.delete("w");
    let mut seen = Vec::new();
    for what in ["ADDED", "MODIFIED", "DELETED"] {
        match next(&mut events, what)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"))
        {
            WatchEvent::Added(o) => seen.push(("ADDED", as_value(&o))),
            WatchEvent::Modified(o) => seen.push(("MODIFIED", as_value(&o))),
            WatchEvent::Deleted(o) => seen.push(("DELETED", as_value(&o))),
            other => panic!("unexpected {other:?} waiting for {what}"),
        }
    }
    let kinds: Vec<_> = seen.iter().map(|(k, _)| *k).collect();
    assert_eq!(kinds, ["ADDED", "MODIFIED", "DELETED"]);
    assert_eq!(seen[1].1["spec"], spec(1));
    assert!(rv(&seen[0].1) < rv(&seen[1].1) && rv(&seen[1].1) < rv(&seen[2].1));
    assert_eq!(rv(&seen[2].1), f.double.resource_version());
}

#[tokio::test]
async fn watch_with_a_label_selector_sees_objects_enter_and_leave_it() {
    let f = fixture("labels").await;
    f.double.create(cnf("l", spec(0)));
    let mut events = f
        .api
        .watch(
            &WatchParams::default()
                .labels("app=nat44")
                .disable_bookmarks(),
            "0",
        )
        .await
        .unwrap_or_else(|e| panic!("watch: {e}"))
        .boxed();
    // RV 0: the current state first, as synthetic ADDED.
    assert!(matches!(
        next(&mut events, "initial").await,
        Ok(WatchEvent::Added(_))
    ));
    f.api
        .patch(
            "l",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"app": "other"}}})),
        )
        .await
        .unwrap_or_else(|e| panic!("relabel: {e}"));
    assert!(matches!(
        next(&mut events, "left").await,
        Ok(WatchEvent::Deleted(_))
    ));
    f.api
        .patch(
            "l",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"app": "nat44"}}})),
        )
        .await
        .unwrap_or_else(|e| panic!("relabel back: {e}"));
    assert!(matches!(
        next(&mut events, "entered").await,
        Ok(WatchEvent::Added(_))
    ));
}

#[tokio::test]
async fn bookmarks_arrive_only_when_requested() {
    let f = fixture("bookmarks").await;
    f.double.set_bookmark_interval(Duration::from_millis(50));
    f.double.create(cnf("b", spec(0)));
    let now = f.double.resource_version().to_string();
    let mut with = f
        .api
        .watch(&WatchParams::default(), &now)
        .await
        .unwrap_or_else(|e| panic!("watch: {e}"))
        .boxed();
    match next(&mut with, "a bookmark").await {
        Ok(WatchEvent::Bookmark(b)) => {
            assert_eq!(b.metadata.resource_version, now);
            assert_eq!(b.types.kind, "CNFConfiguration");
            assert_eq!(b.types.api_version, "xcnf.io/v1alpha1");
        }
        other => panic!("expected a bookmark, got {other:?}"),
    }
    // A bookmark after a change carries the change's revision.
    let changed = f.double.update_spec("b", spec(1));
    let mut bookmark_rv = None;
    while bookmark_rv.is_none() {
        match next(&mut with, "the change, then a bookmark").await {
            Ok(WatchEvent::Modified(_)) => {}
            Ok(WatchEvent::Bookmark(b)) if b.metadata.resource_version == now => {}
            Ok(WatchEvent::Bookmark(b)) => bookmark_rv = Some(b.metadata.resource_version),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(bookmark_rv, Some(rv(&changed).to_string()));

    // Without bookmarks, the first event is the next change however long
    // the watch has been idle.
    let now = f.double.resource_version().to_string();
    let mut without = f
        .api
        .watch(&WatchParams::default().disable_bookmarks(), &now)
        .await
        .unwrap_or_else(|e| panic!("watch: {e}"))
        .boxed();
    // Two bookmark intervals pass: bookmarks, had they been sent on the
    // second watch, would be waiting there now.
    for _ in 0..3 {
        match next(&mut with, "more bookmarks").await {
            Ok(WatchEvent::Bookmark(_)) => {}
            other => panic!("expected a bookmark, got {other:?}"),
        }
    }
    f.double.update_spec("b", spec(2));
    assert!(matches!(
        next(&mut without, "the change").await,
        Ok(WatchEvent::Modified(_))
    ));
}

/// Folds watcher events into the state a reflector would hold, recording
/// what it took to get there.
#[derive(Default)]
struct Mirror {
    state: BTreeMap<String, Value>,
    buffer: BTreeMap<String, Value>,
    inits: usize,
    expired: usize,
    errors: Vec<String>,
}

impl Mirror {
    fn fold(&mut self, ev: Result<Event<DynamicObject>, watcher::Error>) {
        let name = |o: &DynamicObject| o.metadata.name.clone().unwrap_or_default();
        match ev {
            Ok(Event::Init) => {
                self.inits += 1;
                self.buffer.clear();
            }
            Ok(Event::InitApply(o)) => {
                self.buffer.insert(name(&o), as_value(&o));
            }
            Ok(Event::InitDone) => self.state = std::mem::take(&mut self.buffer),
            Ok(Event::Apply(o)) => {
                self.state.insert(name(&o), as_value(&o));
            }
            Ok(Event::Delete(o)) => {
                self.state.remove(&name(&o));
            }
            Err(watcher::Error::WatchError(s)) if s.code == 410 => self.expired += 1,
            Err(e) => self.errors.push(e.to_string()),
        }
    }

    /// Folds events until `done` holds for the state.
    async fn until<S>(
        &mut self,
        s: &mut S,
        what: &str,
        done: impl Fn(&BTreeMap<String, Value>) -> bool,
    ) where
        S: Stream<Item = Result<Event<DynamicObject>, watcher::Error>> + Unpin,
    {
        while !done(&self.state) {
            let ev = next(s, what).await;
            self.fold(ev);
        }
    }
}

fn specs(state: &BTreeMap<String, Value>) -> BTreeMap<String, Value> {
    state
        .iter()
        .map(|(k, v)| (k.clone(), v["spec"].clone()))
        .collect()
}

#[tokio::test]
async fn watcher_relists_after_compaction_and_converges() {
    let f = fixture("compact").await;
    f.double.create(cnf("keep", spec(0)));
    f.double.create(cnf("gone", spec(1)));
    let mut w = watcher::watcher(f.api.clone(), watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut m = Mirror::default();
    m.until(&mut w, "the initial list", |s| s.len() == 2).await;
    assert_eq!(m.inits, 1);
    let lists_before = f.double.requests().iter().filter(|r| is_list(r)).count();

    f.double.compact();
    f.double.update_spec("keep", spec(5));
    f.double.delete("gone");
    let want = BTreeMap::from([("keep".to_owned(), spec(5))]);
    m.until(&mut w, "convergence after compaction", |s| specs(s) == want)
        .await;
    assert_eq!(
        m.expired, 1,
        "the resumed watch should get 410 once: {:?}",
        m.errors
    );
    assert_eq!(m.inits, 2, "the watcher should re-list once");
    let requests = f.double.requests();
    assert!(
        requests.iter().filter(|r| is_list(r)).count() > lists_before,
        "no re-list in {requests:#?}"
    );
    assert!(
        requests
            .iter()
            .any(|r| r.contains("watch=true") && r.contains("allowWatchBookmarks=true")),
        "the watcher asks for bookmarks: {requests:#?}"
    );
}

#[tokio::test]
async fn a_watch_from_a_compacted_revision_gets_410_expired() {
    let f = fixture("gone").await;
    let old = rv(&f.double.create(cnf("x", spec(0)))).to_string();
    f.double.compact();
    let mut events = f
        .api
        .watch(&WatchParams::default(), &old)
        .await
        .unwrap_or_else(|e| panic!("watch: {e}"))
        .boxed();
    match next(&mut events, "the error").await {
        Ok(WatchEvent::Error(s)) => {
            assert_eq!((s.code, s.reason.as_str()), (410, "Expired"), "{s:?}");
        }
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
    assert!(
        tokio::time::timeout(PATIENCE, events.next())
            .await
            .is_ok_and(|e| e.is_none()),
        "the watch goes on after its error"
    );
    // From the current revision it works.
    let now = f.double.resource_version().to_string();
    let mut events = f
        .api
        .watch(&WatchParams::default().disable_bookmarks(), &now)
        .await
        .unwrap_or_else(|e| panic!("watch: {e}"))
        .boxed();
    f.double.update_spec("x", spec(1));
    assert!(matches!(
        next(&mut events, "the change").await,
        Ok(WatchEvent::Modified(_))
    ));
}

#[tokio::test]
async fn a_watch_ends_at_its_timeout() {
    let f = fixture("timeout").await;
    let now = f.double.resource_version().to_string();
    let mut events = f
        .api
        .watch(&WatchParams::default().timeout(1).disable_bookmarks(), &now)
        .await
        .unwrap_or_else(|e| panic!("watch: {e}"))
        .boxed();
    let end = tokio::time::timeout(PATIENCE, events.next())
        .await
        .unwrap_or_else(|_| panic!("the watch outlived its timeoutSeconds=1 by {PATIENCE:?}"));
    assert!(end.is_none(), "expected the end of the watch, got {end:?}");
}

fn is_list(request: &str) -> bool {
    request.starts_with("GET /apis/xcnf.io/v1alpha1/namespaces/default/cnfconfigurations")
        && !request.contains("watch=")
}

#[tokio::test]
async fn watcher_resumes_after_an_api_server_restart() {
    let f = fixture("restart").await;
    f.double.create(cnf("r", spec(0)));
    let mut w = watcher::watcher(f.api.clone(), watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut m = Mirror::default();
    m.until(&mut w, "the initial list", |s| s.len() == 1).await;
    let seen_rv = f.double.resource_version();

    f.double.restart_for(Duration::from_secs(1));
    let refused = std::net::TcpStream::connect(f.double.addr());
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused),
        "the restarting double accepted a connection: {refused:?}"
    );
    f.double.update_spec("r", spec(7));
    let want = BTreeMap::from([("r".to_owned(), spec(7))]);
    m.until(&mut w, "the change made while the server was down", |s| {
        specs(s) == want
    })
    .await;
    assert_eq!(m.expired, 0);
    // Resumed from where it was, not re-listed.
    assert_eq!(m.inits, 1, "errors on the way: {:?}", m.errors);
    let resumed = format!("resourceVersion={seen_rv}");
    assert!(
        f.double
            .requests()
            .iter()
            .any(|r| r.contains("watch=true") && r.contains(&resumed)),
        "no watch resumed at {seen_rv}: {:#?}",
        f.double.requests()
    );
}

#[tokio::test]
async fn streaming_list_ends_with_the_initial_events_bookmark() {
    let f = fixture("stream").await;
    f.double.create(cnf("s1", spec(1)));
    f.double.create(cnf("s2", spec(2)));
    let mut w = watcher::watcher(f.api.clone(), watcher::Config::default().streaming_lists())
        .default_backoff()
        .boxed();
    let mut m = Mirror::default();
    m.until(&mut w, "the streamed list", |s| s.len() == 2).await;
    f.double.update_spec("s1", spec(9));
    m.until(&mut w, "the change", |s| {
        s.get("s1").is_some_and(|o| o["spec"] == spec(9))
    })
    .await;
    assert!(
        f.double
            .requests()
            .iter()
            .any(|r| r.contains("sendInitialEvents=true")),
        "{:#?}",
        f.double.requests()
    );
    assert!(
        !f.double.requests().iter().any(|r| is_list(r)),
        "a streaming list does not list"
    );
}

#[tokio::test]
async fn status_writes_change_status_and_not_generation() {
    let f = fixture("status").await;
    let created = f.double.create(cnf("st", spec(0)));
    let start = rv(&created).to_string();
    let mut events = f
        .api
        .watch(&WatchParams::default().disable_bookmarks(), &start)
        .await
        .unwrap_or_else(|e| panic!("watch: {e}"))
        .boxed();

    // Merge patch, as a controller reports.
    let ready =
        json!({"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "True"}]});
    let patched = f
        .api
        .patch_status(
            "st",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": ready})),
        )
        .await
        .unwrap_or_else(|e| panic!("merge patch status: {e}"));
    let patched = as_value(&patched);
    assert_eq!(patched["status"], ready);
    assert_eq!(generation(&patched), 1);
    assert!(rv(&patched) > rv(&created));
    assert_eq!(f.double.status("st"), ready);
    match next(&mut events, "MODIFIED").await {
        Ok(WatchEvent::Modified(o)) => assert_eq!(as_value(&o)["status"], ready),
        other => panic!("expected MODIFIED, got {other:?}"),
    }

    // The same status again writes nothing: the revision stays.
    let again = f
        .api
        .patch_status(
            "st",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": ready})),
        )
        .await
        .unwrap_or_else(|e| panic!("repeat: {e}"));
    assert_eq!(rv(&as_value(&again)), rv(&patched));

    // Server-side apply: the manager's fields; what it stops applying goes.
    let pp = PatchParams::apply("xcnf-agent");
    let apply = |status: Value| {
        Patch::Apply(
            json!({"apiVersion": "xcnf.io/v1alpha1", "kind": "CNFConfiguration",
            "metadata": {"name": "st"}, "status": status}),
        )
    };
    let degraded =
        json!({"observedGeneration": 1, "items": [{"name": "nat44", "state": "Failed"}]});
    f.api
        .patch_status("st", &pp, &apply(degraded.clone()))
        .await
        .unwrap_or_else(|e| panic!("apply status: {e}"));
    assert_eq!(f.double.status("st")["items"], degraded["items"]);
    f.api
        .patch_status("st", &pp, &apply(json!({"observedGeneration": 1})))
        .await
        .unwrap_or_else(|e| panic!("apply status again: {e}"));
    let st = f.double.status("st");
    assert!(st.get("items").is_none(), "applied-away field kept: {st}");
    assert_eq!(
        st["conditions"], ready["conditions"],
        "another writer's field went: {st}"
    );
    let err = f
        .api
        .patch_status("st", &PatchParams::default(), &apply(json!({})))
        .await
        .map(|_| ());
    assert_eq!(api_error(err).0, 422, "apply needs a field manager");

    // JSON patch, and PUT of the status.
    f.api
        .patch_status(
            "st",
            &PatchParams::default(),
            &Patch::<()>::Json(
                serde_json::from_value(
                    json!([{"op": "replace", "path": "/status/observedGeneration", "value": 2}]),
                )
                .unwrap_or_else(|e| panic!("json patch: {e}")),
            ),
        )
        .await
        .unwrap_or_else(|e| panic!("json patch status: {e}"));
    assert_eq!(f.double.status("st")["observedGeneration"], 2);
    let mut current = f
        .api
        .get_status("st")
        .await
        .unwrap_or_else(|e| panic!("get status: {e}"));
    current.data["status"] = json!({"observedGeneration": 3});
    current.data["spec"] = spec(9);
    let put = f
        .api
        .replace_status("st", &PostParams::default(), &current)
        .await
        .unwrap_or_else(|e| panic!("put status: {e}"));
    let put = as_value(&put);
    assert_eq!(put["status"], json!({"observedGeneration": 3}));
    assert_eq!(
        put["spec"],
        spec(0),
        "a status write must not change the spec"
    );
    assert_eq!(generation(&put), 1);

    // The stale copy now conflicts.
    let err = f
        .api
        .replace_status("st", &PostParams::default(), &current)
        .await
        .map(|_| ());
    assert_eq!(api_error(err), (409, "Conflict".into()));
    // A status in a write to the object itself is ignored.
    f.api
        .patch(
            "st",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"observedGeneration": 99}})),
        )
        .await
        .unwrap_or_else(|e| panic!("patch object: {e}"));
    assert_eq!(f.double.status("st")["observedGeneration"], 3);
    // Strategic merge patch does not exist for custom resources.
    let err = f
        .api
        .patch_status(
            "st",
            &PatchParams::default(),
            &Patch::Strategic(json!({"status": {}})),
        )
        .await
        .map(|_| ());
    assert_eq!(api_error(err), (415, "UnsupportedMediaType".into()));
}

#[tokio::test]
async fn spec_changes_and_only_they_bump_generation() {
    let f = fixture("generation").await;
    let created = f.double.create(cnf("g", spec(0)));
    assert_eq!(generation(&created), 1);
    let updated = f.double.update_spec("g", spec(1));
    assert_eq!(generation(&updated), 2);
    let same = f.double.update_spec("g", spec(1));
    assert_eq!(generation(&same), 2);
    assert_eq!(rv(&same), rv(&updated), "a no-op write keeps the revision");

    let relabeled = f
        .api
        .patch(
            "g",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"tier": "edge"}}})),
        )
        .await
        .unwrap_or_else(|e| panic!("label patch: {e}"));
    let relabeled = as_value(&relabeled);
    assert_eq!(
        generation(&relabeled),
        2,
        "metadata changes keep the generation"
    );
    assert!(rv(&relabeled) > rv(&updated));

    let applied = f
        .api
        .patch(
            "g",
            &PatchParams::apply("kubectl"),
            &Patch::Apply(
                json!({"apiVersion": "xcnf.io/v1alpha1", "kind": "CNFConfiguration",
                "metadata": {"name": "g"}, "spec": spec(2)}),
            ),
        )
        .await
        .unwrap_or_else(|e| panic!("apply spec: {e}"));
    let applied = as_value(&applied);
    assert_eq!(generation(&applied), 3);
    assert_eq!(applied["spec"], spec(2));
    assert_eq!(applied["metadata"]["uid"], created["metadata"]["uid"]);

    // Creating through the API drops the status and sets the metadata.
    let mut obj = cnf("fresh", spec(0));
    obj["status"] = json!({"observedGeneration": 7});
    let posted = f
        .api
        .create(
            &PostParams::default(),
            &serde_json::from_value(obj).unwrap_or_else(|e| panic!("object: {e}")),
        )
        .await
        .unwrap_or_else(|e| panic!("create: {e}"));
    let posted = as_value(&posted);
    assert!(posted.get("status").is_none_or(Value::is_null), "{posted}");
    assert_eq!(generation(&posted), 1);
    let dup = f
        .api
        .create(
            &PostParams::default(),
            &serde_json::from_value(cnf("fresh", spec(0)))
                .unwrap_or_else(|e| panic!("object: {e}")),
        )
        .await
        .map(|_| ());
    assert_eq!(api_error(dup), (409, "AlreadyExists".into()));
    f.api
        .delete("fresh", &Default::default())
        .await
        .unwrap_or_else(|e| panic!("delete: {e}"));
    assert!(f.double.get("fresh").is_none());
}
