//! The API end to end over a real unix socket: a tonic client against
//! [`serve`], with the test answering the reconciler's commands itself.

use std::{
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, UNIX_EPOCH},
};

use tokio::{
    sync::{broadcast, mpsc, oneshot},
    task::JoinHandle,
};
use tonic::{Code, transport::Channel};
use xcnf_proto::v1alpha1::{self as pb, agent_service_client::AgentServiceClient};

use super::{ApiError, DatapathReads, client, convert::field_errors, serve, service};
use crate::{
    config::{Config, FieldError, test_doc},
    datapath::Pins,
    reconcile::{
        ApplyError, ApplyMode, ApplyReport, ItemKey, ItemState, ItemStatus, OpKind, PlannedOp,
        handle::{Command, test_pair},
    },
};

struct Running {
    client: AgentServiceClient<Channel>,
    commands: mpsc::Receiver<Command>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Result<(), ApiError>>>,
    dir: PathBuf,
    socket: PathBuf,
}

impl Running {
    async fn start() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "xcnf-api-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let socket = dir.join("run").join("api.sock");
        let (handle, commands) = test_pair();
        // Pins that do not exist: datapath reads must say so.
        let reads = DatapathReads::new(Pins::new(dir.join("bpffs"), "t"));
        let (stop, stopped) = oneshot::channel::<()>();
        let path = socket.clone();
        let server = tokio::spawn(async move {
            serve(handle, reads, &path, async {
                let _ = stopped.await;
            })
            .await
        });
        // The socket exists once serve has bound it.
        let mut tries = 0;
        while !socket.exists() {
            tries += 1;
            assert!(tries < 500, "the server never bound {}", socket.display());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let client = client::connect(&socket)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        Self {
            client,
            commands,
            stop: Some(stop),
            server: Some(server),
            dir,
            socket,
        }
    }

    async fn command(&mut self) -> Command {
        self.commands
            .recv()
            .await
            .unwrap_or_else(|| panic!("no command reached the reconciler"))
    }

    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(server) = self.server.take() {
            let r = server.await.unwrap_or_else(|e| panic!("{e}"));
            r.unwrap_or_else(|e| panic!("{e}"));
        }
        assert!(!self.socket.exists(), "the socket outlived the server");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn yaml(text: String) -> Option<pb::ConfigDocument> {
    Some(pb::ConfigDocument {
        format: Some(pb::config_document::Format::Yaml(text)),
    })
}

fn status(key: ItemKey, state: ItemState) -> ItemStatus {
    ItemStatus {
        key,
        state,
        detail: "host c0, up".into(),
        since: UNIX_EPOCH + Duration::from_secs(1),
    }
}

#[tokio::test]
async fn invalid_apply_returns_every_field_path() {
    let mut api = Running::start().await;
    let mut c = api.client.clone();
    let call = tokio::spawn(async move {
        c.apply(pb::ApplyRequest {
            document: yaml(test_doc("")),
            mode: pb::apply_request::Mode::Replace.into(),
            dry_run: false,
        })
        .await
    });
    let errors = vec![
        FieldError {
            path: "spec.interfaces[0].kernel.hostIfName".into(),
            message: "\"\" must be 1-15 bytes long".into(),
        },
        FieldError {
            path: "spec.nat44.staticMappings[2].external".into(),
            message: "port 70000 is out of range 1-65535".into(),
        },
    ];
    match api.command().await {
        Command::Apply {
            config,
            mode,
            dry_run,
            reply,
        } => {
            assert_eq!(config.metadata.name, "t");
            assert_eq!((mode, dry_run), (ApplyMode::Replace, false));
            let _ = reply.send(Err(ApplyError::Invalid(errors.clone())));
        }
        _ => panic!("expected an apply"),
    }
    let st = call
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .err()
        .unwrap_or_else(|| panic!("an invalid config was accepted"));
    assert_eq!(st.code(), Code::InvalidArgument);
    assert_eq!(field_errors(&st), errors);
    assert!(
        st.message()
            .contains("spec.nat44.staticMappings[2].external: port 70000"),
        "{}",
        st.message()
    );
    api.stop().await;
}

#[tokio::test]
async fn dry_run_merge_returns_the_plan_and_applies_nothing() {
    let mut api = Running::start().await;
    let mut c = api.client.clone();
    let call = tokio::spawn(async move {
        c.apply(pb::ApplyRequest {
            document: yaml(test_doc("")),
            mode: pb::apply_request::Mode::Merge.into(),
            dry_run: true,
        })
        .await
    });
    let plan = vec![
        PlannedOp {
            op: OpKind::Create,
            key: ItemKey::Link("inside".into()),
            detail: "host c0, up".into(),
            pending: None,
        },
        PlannedOp {
            op: OpKind::Create,
            key: ItemKey::Attach("outside".into()),
            detail: "host c1, nat outside".into(),
            pending: Some("interface/outside is pending".into()),
        },
    ];
    match api.command().await {
        Command::Apply {
            mode,
            dry_run,
            reply,
            ..
        } => {
            assert_eq!((mode, dry_run), (ApplyMode::Merge, true));
            let _ = reply.send(Ok(ApplyReport {
                plan,
                applied: false,
                statuses: vec![],
            }));
        }
        _ => panic!("expected an apply"),
    }
    let report = call
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner()
        .report
        .unwrap_or_default();
    assert!(!report.applied);
    let ops: Vec<(pb::planned_op::Op, &str, Option<&str>)> = report
        .plan
        .iter()
        .map(|o| (o.op(), o.key.as_str(), o.pending_reason.as_deref()))
        .collect();
    assert_eq!(
        ops,
        [
            (pb::planned_op::Op::Create, "interface/inside", None),
            (
                pb::planned_op::Op::Create,
                "datapath/outside",
                Some("interface/outside is pending")
            ),
        ]
    );
    api.stop().await;
}

#[tokio::test]
async fn requests_without_mode_or_with_bad_yaml_never_reach_the_reconciler() {
    let mut api = Running::start().await;
    let no_mode = api
        .client
        .apply(pb::ApplyRequest {
            document: yaml(test_doc("")),
            mode: 0,
            dry_run: true,
        })
        .await
        .err()
        .unwrap_or_else(|| panic!("accepted"));
    assert_eq!(no_mode.code(), Code::InvalidArgument);
    assert_eq!(field_errors(&no_mode)[0].path, "mode");
    let bad = api
        .client
        .delete(pb::DeleteRequest {
            patch: yaml("spec: [".into()),
            dry_run: false,
        })
        .await
        .err()
        .unwrap_or_else(|| panic!("accepted"));
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert_eq!(field_errors(&bad)[0].path, "patch.yaml");
    assert!(api.commands.try_recv().is_err());
    api.stop().await;
}

#[tokio::test]
async fn failed_transaction_is_aborted_and_delete_all_sends_no_patch() {
    let mut api = Running::start().await;
    let mut c = api.client.clone();
    let call = tokio::spawn(async move {
        c.delete(pb::DeleteRequest {
            patch: None,
            dry_run: false,
        })
        .await
    });
    match api.command().await {
        Command::Delete {
            patch,
            dry_run,
            reply,
        } => {
            assert!(patch.is_none());
            assert!(!dry_run);
            let _ = reply.send(Err(ApplyError::Failed {
                key: ItemKey::Nat,
                error: "map full".into(),
                reverted: vec![ItemKey::Link("inside".into())],
            }));
        }
        _ => panic!("expected a delete"),
    }
    let st = call
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .err()
        .unwrap_or_else(|| panic!("a failed transaction succeeded"));
    assert_eq!(st.code(), Code::Aborted);
    assert!(st.message().contains("nat44: map full"), "{}", st.message());
    assert!(st.message().contains("rolled back"), "{}", st.message());
    api.stop().await;
}

#[tokio::test]
async fn get_returns_the_document_and_a_stopped_reconciler_is_unavailable() {
    let mut api = Running::start().await;
    let mut c = api.client.clone();
    let call = tokio::spawn(async move { c.get(pb::GetRequest {}).await });
    let cfg = Config::parse(&test_doc("")).unwrap_or_else(|e| panic!("{e}"));
    match api.command().await {
        Command::Get { reply } => {
            let _ = reply.send(Some(cfg.clone()));
        }
        _ => panic!("expected a get"),
    }
    let got = call
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner();
    assert!(got.present);
    assert_eq!(Config::parse(&got.yaml), Ok(cfg));
    // The reconciler goes away: config calls say so, health says NOT_SERVING.
    api.commands.close();
    let st = api
        .client
        .status(pb::StatusRequest {})
        .await
        .err()
        .unwrap_or_else(|| panic!("status without a reconciler"));
    assert_eq!(st.code(), Code::Unavailable);
    let h = api
        .client
        .health(pb::HealthRequest {})
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner();
    assert_eq!(h.status(), pb::health_response::ServingStatus::NotServing);
    assert!(h.reason.contains("stopped"), "{}", h.reason);
    api.stop().await;
}

#[tokio::test]
async fn health_and_watch_start_from_the_statuses() {
    let mut api = Running::start().await;
    let items = vec![
        status(ItemKey::Link("inside".into()), ItemState::Configured),
        status(
            ItemKey::Link("outside".into()),
            ItemState::Pending("host interface nsm1 does not exist".into()),
        ),
    ];
    let mut c = api.client.clone();
    let call = tokio::spawn(async move { c.health(pb::HealthRequest {}).await });
    match api.command().await {
        Command::Status { reply } => {
            let _ = reply.send(items.clone());
        }
        _ => panic!("expected a status"),
    }
    let h = call
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner();
    assert_eq!(h.status(), pb::health_response::ServingStatus::NotServing);
    assert_eq!((h.items, h.configured, h.pending), (2, 1, 1));
    assert_eq!(h.not_configured, ["interface/outside"]);

    let mut c = api.client.clone();
    let call = tokio::spawn(async move { c.watch(pb::WatchRequest {}).await });
    match api.command().await {
        Command::Status { reply } => {
            let _ = reply.send(items.clone());
        }
        _ => panic!("expected a status"),
    }
    let mut stream = call
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner();
    let first = stream
        .message()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .and_then(|e| e.event);
    match first {
        Some(pb::watch_event::Event::Snapshot(s)) => {
            let keys: Vec<&str> = s.items.iter().map(|i| i.key.as_str()).collect();
            assert_eq!(keys, ["interface/inside", "interface/outside"]);
        }
        other => panic!("expected a snapshot first, got {other:?}"),
    }
    drop(stream);
    api.stop().await;
}

#[tokio::test]
async fn watch_sends_changes_and_a_new_snapshot_after_falling_behind() {
    let (events, rx) = broadcast::channel(4);
    let (tx, mut out) = mpsc::channel(64);
    let configured = status(ItemKey::Nat, ItemState::Configured);
    let resync_with = vec![configured.clone()];
    let task = tokio::spawn(service::forward_events(rx, vec![], tx, move || {
        let all = resync_with.clone();
        async move { Ok(all) }
    }));
    let mut next = async || {
        out.recv()
            .await
            .unwrap_or_else(|| panic!("stream ended"))
            .unwrap_or_else(|e| panic!("{e}"))
            .event
    };
    assert!(
        matches!(next().await, Some(pb::watch_event::Event::Snapshot(s)) if s.items.is_empty())
    );
    let _ = events.send(status(ItemKey::Nat, ItemState::Pending("x".into())));
    match next().await {
        Some(pb::watch_event::Event::Change(c)) => assert_eq!(c.key, "nat44"),
        other => panic!("expected a change, got {other:?}"),
    }
    // Ten changes into a buffer of four, before the forwarder runs again
    // (current-thread runtime): it lags, and must resync, not replay.
    for i in 0..10 {
        let _ = events.send(status(
            ItemKey::Link(format!("l{i}")),
            ItemState::Configured,
        ));
    }
    match next().await {
        Some(pb::watch_event::Event::Snapshot(s)) => {
            assert_eq!(s.items.len(), 1);
            assert_eq!(s.items[0].key, "nat44");
        }
        other => panic!("expected a snapshot after the lag, got {other:?}"),
    }
    // The reconciler stops: the stream ends with UNAVAILABLE.
    drop(events);
    let end = out.recv().await.unwrap_or_else(|| panic!("stream ended"));
    assert_eq!(end.err().map(|s| s.code()), Some(Code::Unavailable));
    task.await.unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn datapath_reads_without_pins_are_failed_precondition() {
    let mut api = Running::start().await;
    // Sessions ask the reconciler which backend the NAT44 domain is in.
    let mut c = api.client.clone();
    let call = tokio::spawn(async move { c.nat_sessions(pb::NatSessionsRequest::default()).await });
    match api.command().await {
        Command::Get { reply } => {
            let _ = reply.send(Config::parse(&test_doc("")).ok());
        }
        _ => panic!("expected a get"),
    }
    let st = call
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .err()
        .unwrap_or_else(|| panic!("sessions without a datapath"));
    assert_eq!(st.code(), Code::FailedPrecondition);
    assert!(st.message().contains("bpffs/xcnf/t"), "{}", st.message());
    let st = api
        .client
        .nat_stats(pb::NatStatsRequest {})
        .await
        .err()
        .unwrap_or_else(|| panic!("stats without a datapath"));
    assert_eq!(st.code(), Code::FailedPrecondition);
    // Stats asks the reconciler for names first; an unknown name is refused.
    let mut c = api.client.clone();
    let call = tokio::spawn(async move {
        c.stats(pb::StatsRequest {
            interfaces: vec!["inside".into(), "nope".into()],
        })
        .await
    });
    match api.command().await {
        Command::Get { reply } => {
            let _ = reply.send(Config::parse(&test_doc("")).ok());
        }
        _ => panic!("expected a get"),
    }
    let st = call
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .err()
        .unwrap_or_else(|| panic!("unknown interface accepted"));
    assert_eq!(st.code(), Code::InvalidArgument);
    assert_eq!(
        field_errors(&st),
        [FieldError {
            path: "interfaces[1]".into(),
            message: "no interface named \"nope\" in the config".into()
        }]
    );
    api.stop().await;
}

#[tokio::test]
async fn a_second_server_on_the_same_socket_is_refused() {
    let api = Running::start().await;
    let (handle, _commands) = test_pair();
    let reads = DatapathReads::new(Pins::new(api.dir.join("bpffs"), "t"));
    let r = serve(handle, reads, &api.socket, async {}).await;
    assert!(matches!(r, Err(ApiError::InUse { .. })), "{r:?}");
    // The first server's socket is untouched and still answers.
    assert!(api.socket.exists());
    api.stop().await;
}
