//! The status subresource of a `CNFConfiguration`, computed from what the
//! reconciler reports.
//!
//! Computing it is a pure function of the generation seen, the outcome of
//! applying it and the item statuses, so it is tested without an API server,
//! and the agent can compare the status it wants with the one on the
//! resource and write only when they differ (its own writes come back as
//! watch events and must not cause more writes).

use std::fmt::Write as _;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::reconcile::{ItemState, ItemStatus};

/// Condition types.
pub const READY: &str = "Ready";
pub const DEGRADED: &str = "Degraded";

/// At most this many items are listed; every item is counted in `itemCount`
/// and in the conditions. Items that are not configured are listed first, so
/// the ones that need attention are never the ones left out.
pub const MAX_LISTED_ITEMS: usize = 200;
/// Condition messages name at most this many items.
const MAX_MESSAGE_ITEMS: usize = 10;
/// Kubernetes caps a condition message at 32768 bytes; validation errors
/// beyond this are cut (the agent's log has them all).
const MAX_MESSAGE: usize = 4096;

/// What the agent reports on its `CNFConfiguration`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CnfConfigurationStatus {
    /// The `metadata.generation` the agent last processed, applied or
    /// rejected: when it equals the resource's generation, the conditions
    /// describe the current spec.
    #[serde(default)]
    pub observed_generation: Option<i64>,
    /// `Ready` is True when the spec is applied and every item configured;
    /// `Degraded` is True when something accepted is not working (an item
    /// failed, or a transaction was refused by the kernel).
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The reconciler's items (interfaces, addresses, routes, neighbours,
    /// NAT44 tables, datapath attachments) and where each stands.
    #[serde(default)]
    pub items: Vec<ItemSummary>,
    /// How many items the config in force has (`items` lists at most 200).
    #[serde(default)]
    pub item_count: u32,
}

/// A status condition, in the shape of the standard `metav1.Condition`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    #[schemars(extend("enum" = ["True", "False", "Unknown"]))]
    pub status: String,
    /// A CamelCase reason, for machines.
    pub reason: String,
    /// For people: what is wrong, with field paths and item keys.
    pub message: String,
    /// When `status` last changed.
    #[schemars(with = "String", extend("format" = "date-time"))]
    pub last_transition_time: Time,
    #[serde(default)]
    pub observed_generation: Option<i64>,
}

/// One reconciler item.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ItemSummary {
    /// The item's key, as `xcnfctl status` shows it (`route/0.0.0.0/0/metric/0`).
    pub key: String,
    #[schemars(extend("enum" = ["configured", "pending", "failed", "retrying"]))]
    pub state: String,
    /// Why the item is not configured; empty when it is.
    #[serde(default)]
    pub reason: String,
}

/// Why the spec of the processed generation is not in force.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// The resource does not parse or validate: the field-path errors.
    Invalid(String),
    /// The transaction failed and was rolled back (or the system could not
    /// be read); the agent retries it.
    Failed(String),
}

/// What the agent knows when it computes the status.
#[derive(Clone, Copy, Debug)]
pub struct Observed<'a> {
    /// The generation processed.
    pub generation: Option<i64>,
    /// Set when that generation is not in force.
    pub rejection: Option<&'a Rejection>,
    /// The generation whose spec is in force, if it came from the resource
    /// in this run (after a restart it may be the stored one).
    pub in_force: Option<i64>,
    /// The reconciler's item statuses.
    pub items: &'a [ItemStatus],
}

/// The status the resource should have. `previous` (the status on the
/// resource) keeps a condition's `lastTransitionTime` while its `status`
/// stays; `now` must have whole seconds, as the API server stores them.
pub fn compute(
    o: &Observed<'_>,
    previous: Option<&CnfConfigurationStatus>,
    now: &Time,
) -> CnfConfigurationStatus {
    let items: Vec<&ItemStatus> = o
        .items
        .iter()
        .filter(|s| s.state != ItemState::Configured && s.state != ItemState::Removed)
        .collect();
    let failing: Vec<&ItemStatus> = items
        .iter()
        .copied()
        .filter(|s| matches!(s.state, ItemState::Failed(_) | ItemState::Retrying { .. }))
        .collect();
    let pending: Vec<&ItemStatus> = items
        .iter()
        .copied()
        .filter(|s| matches!(s.state, ItemState::Pending(_)))
        .collect();
    let in_force = match o.in_force {
        Some(g) => format!("generation {g} stays in force"),
        None => "the running config stays in force".to_string(),
    };
    let total = o
        .items
        .iter()
        .filter(|s| s.state != ItemState::Removed)
        .count();

    let (ready, ready_reason, ready_message) = match (o.rejection, failing.is_empty()) {
        (Some(Rejection::Invalid(errors)), _) => (
            false,
            "Invalid",
            format!("the spec is invalid and was not applied ({in_force}): {errors}"),
        ),
        (Some(Rejection::Failed(error)), _) => (
            false,
            "Failed",
            format!("applying the spec failed and was rolled back ({in_force}); retrying: {error}"),
        ),
        (None, false) => (false, "Failed", list("failing", &failing)),
        (None, true) if !pending.is_empty() => (false, "Pending", list("pending", &pending)),
        (None, true) => (
            true,
            "Configured",
            format!("all {total} item(s) configured"),
        ),
    };
    let (degraded, degraded_reason, degraded_message) = match (o.rejection, failing.is_empty()) {
        (Some(Rejection::Failed(error)), _) => (
            true,
            "ApplyFailed",
            format!("the kernel or datapath refused the spec ({in_force}): {error}"),
        ),
        (_, false) => (true, "ItemsFailing", list("failing", &failing)),
        _ => (
            false,
            "AsExpected",
            "no accepted item is failing".to_string(),
        ),
    };

    let conditions = vec![
        condition(
            previous,
            READY,
            ready,
            ready_reason,
            ready_message,
            o.generation,
            now,
        ),
        condition(
            previous,
            DEGRADED,
            degraded,
            degraded_reason,
            degraded_message,
            o.generation,
            now,
        ),
    ];
    CnfConfigurationStatus {
        observed_generation: o.generation,
        conditions,
        items: listed(o.items),
        item_count: u32::try_from(total).unwrap_or(u32::MAX),
    }
}

/// The current time in the API server's precision (whole seconds).
pub fn now() -> Time {
    let now = Timestamp::now();
    Time(Timestamp::from_second(now.as_second()).unwrap_or(now))
}

fn condition(
    previous: Option<&CnfConfigurationStatus>,
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    let status = if status { "True" } else { "False" };
    let since = previous
        .and_then(|p| p.conditions.iter().find(|c| c.type_ == type_))
        .filter(|c| c.status == status)
        .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
    Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message: cut(message),
        last_transition_time: since,
        observed_generation: generation,
    }
}

/// `2 item(s) pending: a (why); b (why)`, naming the first few.
fn list(what: &str, items: &[&ItemStatus]) -> String {
    let mut m = format!("{} item(s) {what}: ", items.len());
    for (i, s) in items.iter().take(MAX_MESSAGE_ITEMS).enumerate() {
        if i > 0 {
            m.push_str("; ");
        }
        let _ = write!(m, "{} ({})", s.key, s.state.reason());
    }
    if items.len() > MAX_MESSAGE_ITEMS {
        let _ = write!(m, "; and {} more", items.len() - MAX_MESSAGE_ITEMS);
    }
    m
}

fn cut(mut m: String) -> String {
    if m.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !m.is_char_boundary(end) {
            end -= 1;
        }
        m.truncate(end);
        m.push_str(" …");
    }
    m
}

/// The listed items in the reconciler's order (interfaces, addresses, routes
/// and neighbours, NAT, datapath): all of them, or (past the cap) the ones
/// not configured and as many configured ones as fit.
fn listed(items: &[ItemStatus]) -> Vec<ItemSummary> {
    let mut chosen: Vec<&ItemStatus> = items
        .iter()
        .filter(|s| s.state != ItemState::Configured && s.state != ItemState::Removed)
        .take(MAX_LISTED_ITEMS)
        .collect();
    let room = MAX_LISTED_ITEMS - chosen.len();
    chosen.extend(
        items
            .iter()
            .filter(|s| s.state == ItemState::Configured)
            .take(room),
    );
    chosen.sort_by(|a, b| a.key.cmp(&b.key));
    chosen
        .into_iter()
        .map(|s| ItemSummary {
            key: s.key.to_string(),
            state: s.state.name().to_string(),
            reason: s.state.reason(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::{config::Ipv4Prefix, reconcile::ItemKey};

    fn item(key: ItemKey, state: ItemState) -> ItemStatus {
        ItemStatus {
            key,
            state,
            detail: String::new(),
            since: SystemTime::UNIX_EPOCH,
        }
    }

    fn prefix(s: &str) -> Ipv4Prefix {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    fn at(second: i64) -> Time {
        Time(Timestamp::from_second(second).unwrap_or_else(|e| panic!("{e}")))
    }

    fn cond<'a>(s: &'a CnfConfigurationStatus, t: &str) -> &'a Condition {
        s.conditions
            .iter()
            .find(|c| c.type_ == t)
            .unwrap_or_else(|| panic!("no {t} condition in {s:?}"))
    }

    fn all_configured() -> Vec<ItemStatus> {
        vec![
            item(ItemKey::Link("outside".into()), ItemState::Configured),
            item(ItemKey::Link("inside".into()), ItemState::Configured),
            item(ItemKey::Nat, ItemState::Configured),
        ]
    }

    fn observe(items: &[ItemStatus], rejection: Option<&Rejection>) -> CnfConfigurationStatus {
        compute(
            &Observed {
                generation: Some(3),
                rejection,
                in_force: Some(2),
                items,
            },
            None,
            &at(100),
        )
    }

    #[test]
    fn every_item_configured_is_ready_and_not_degraded() {
        let s = observe(&all_configured(), None);
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(s.item_count, 3);
        let r = cond(&s, READY);
        assert_eq!(
            (r.status.as_str(), r.reason.as_str()),
            ("True", "Configured")
        );
        assert_eq!(r.message, "all 3 item(s) configured");
        assert_eq!(r.observed_generation, Some(3));
        assert_eq!(r.last_transition_time, at(100));
        let d = cond(&s, DEGRADED);
        assert_eq!(
            (d.status.as_str(), d.reason.as_str()),
            ("False", "AsExpected")
        );
        // In the reconciler's order; the state names are its own.
        let keys: Vec<_> = s.items.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(keys, ["interface/inside", "interface/outside", "nat44"]);
        assert!(
            s.items
                .iter()
                .all(|i| i.state == "configured" && i.reason.is_empty())
        );
    }

    #[test]
    fn a_pending_item_is_not_ready_with_its_reason() {
        let mut items = all_configured();
        items.push(item(
            ItemKey::Address("outside".into(), prefix("80.80.80.100/24")),
            ItemState::Pending("interface c1 does not exist".into()),
        ));
        let s = observe(&items, None);
        let r = cond(&s, READY);
        assert_eq!((r.status.as_str(), r.reason.as_str()), ("False", "Pending"));
        assert_eq!(
            r.message,
            "1 item(s) pending: address/outside/80.80.80.100/24 (interface c1 does not exist)"
        );
        // Waiting for a dependency is not a degradation.
        assert_eq!(cond(&s, DEGRADED).status, "False");
        let pending = s
            .items
            .iter()
            .find(|i| i.key == "address/outside/80.80.80.100/24")
            .unwrap_or_else(|| panic!("{:?}", s.items));
        assert_eq!(
            (pending.state.as_str(), pending.reason.as_str()),
            ("pending", "interface c1 does not exist")
        );
    }

    #[test]
    fn failing_items_win_over_pending_and_degrade() {
        let mut items = all_configured();
        items.push(item(
            ItemKey::Link("dmz".into()),
            ItemState::Pending("no c2".into()),
        ));
        items.push(item(
            ItemKey::Attach("inside".into()),
            ItemState::Retrying {
                error: "EBUSY".into(),
                attempt: 2,
            },
        ));
        let s = observe(&items, None);
        let r = cond(&s, READY);
        assert_eq!((r.status.as_str(), r.reason.as_str()), ("False", "Failed"));
        assert_eq!(
            r.message,
            "1 item(s) failing: datapath/inside (attempt 2: EBUSY)"
        );
        let d = cond(&s, DEGRADED);
        assert_eq!(
            (d.status.as_str(), d.reason.as_str()),
            ("True", "ItemsFailing")
        );
        assert_eq!(s.item_count, 5);
    }

    #[test]
    fn an_invalid_spec_is_not_ready_with_its_field_errors_and_names_what_stays() {
        let errors = "spec.interfaces[0].mtu: 70000 is out of range 68-65535".to_string();
        let s = observe(&all_configured(), Some(&Rejection::Invalid(errors)));
        let r = cond(&s, READY);
        assert_eq!((r.status.as_str(), r.reason.as_str()), ("False", "Invalid"));
        assert_eq!(
            r.message,
            "the spec is invalid and was not applied (generation 2 stays in force): \
             spec.interfaces[0].mtu: 70000 is out of range 68-65535"
        );
        // The running config is fine: a user error is not a degradation.
        assert_eq!(cond(&s, DEGRADED).status, "False");
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(s.items.len(), 3, "the items in force are still listed");
    }

    #[test]
    fn a_refused_transaction_is_failed_and_degraded() {
        let s = observe(
            &all_configured(),
            Some(&Rejection::Failed("address/inside: EEXIST".into())),
        );
        let r = cond(&s, READY);
        assert_eq!((r.status.as_str(), r.reason.as_str()), ("False", "Failed"));
        assert!(
            r.message.contains("address/inside: EEXIST"),
            "{}",
            r.message
        );
        let d = cond(&s, DEGRADED);
        assert_eq!(
            (d.status.as_str(), d.reason.as_str()),
            ("True", "ApplyFailed")
        );
    }

    #[test]
    fn transition_time_moves_only_when_the_status_flips() {
        let first = observe(&all_configured(), None);
        fn o(items: &[ItemStatus]) -> Observed<'_> {
            Observed {
                generation: Some(4),
                rejection: None,
                in_force: Some(4),
                items,
            }
        }
        let same = compute(&o(&all_configured()), Some(&first), &at(200));
        assert_eq!(cond(&same, READY).last_transition_time, at(100));
        assert_eq!(cond(&same, READY).observed_generation, Some(4));
        let pending = [item(ItemKey::Nat, ItemState::Pending("x".into()))];
        let flipped = compute(&o(&pending), Some(&same), &at(300));
        assert_eq!(cond(&flipped, READY).last_transition_time, at(300));
        // Degraded stayed False: its time is kept.
        assert_eq!(cond(&flipped, DEGRADED).last_transition_time, at(100));
    }

    #[test]
    fn long_lists_keep_every_item_that_needs_attention() {
        let mut items: Vec<ItemStatus> = (0..300)
            .map(|i| item(ItemKey::Link(format!("a{i:03}")), ItemState::Configured))
            .collect();
        items.push(item(
            ItemKey::Link("zzz".into()),
            ItemState::Failed("refused".into()),
        ));
        items.push(item(ItemKey::Link("gone".into()), ItemState::Removed));
        let s = observe(&items, None);
        assert_eq!(s.item_count, 301, "removed items are not counted");
        assert_eq!(s.items.len(), MAX_LISTED_ITEMS);
        assert!(
            s.items
                .iter()
                .any(|i| i.key == "interface/zzz" && i.state == "failed")
        );
        assert!(s.items.iter().all(|i| i.key != "interface/gone"));
        assert!(s.items.windows(2).all(|w| w[0].key < w[1].key));
        let many: Vec<ItemStatus> = (0..30)
            .map(|i| {
                item(
                    ItemKey::Link(format!("p{i:02}")),
                    ItemState::Pending("w".into()),
                )
            })
            .collect();
        let m = cond(&observe(&many, None), READY).message.clone();
        assert!(
            m.starts_with("30 item(s) pending: interface/p00 (w);"),
            "{m}"
        );
        assert!(m.ends_with("; and 20 more"), "{m}");
    }

    #[test]
    fn huge_messages_are_cut_on_a_char_boundary() {
        let errors = "é".repeat(MAX_MESSAGE);
        let s = observe(&[], Some(&Rejection::Invalid(errors)));
        let m = &cond(&s, READY).message;
        assert!(
            m.len() <= MAX_MESSAGE + " …".len() && m.ends_with(" …"),
            "{}",
            m.len()
        );
    }

    #[test]
    fn status_serializes_in_the_api_shape() {
        let s = observe(&all_configured(), None);
        let v = serde_json::to_value(&s).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v["observedGeneration"], 3);
        assert_eq!(v["itemCount"], 3);
        assert_eq!(v["conditions"][0]["type"], "Ready");
        assert_eq!(
            v["conditions"][0]["lastTransitionTime"],
            "1970-01-01T00:01:40Z"
        );
        assert_eq!(v["conditions"][0]["observedGeneration"], 3);
        assert_eq!(v["items"][2]["key"], "nat44");
        let back: CnfConfigurationStatus =
            serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, s);
    }
}
