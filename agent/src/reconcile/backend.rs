//! What the reconciler drives: the kernel and the datapath, behind one trait
//! so that planning, ordering and rollback are tested without either.

use std::future::Future;

use super::item::{Item, ItemKey, Items};

/// The result of one step that did not fail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// Cannot be applied yet for a reason outside the agent's control (the
    /// host interface does not exist, the gateway is not on a connected
    /// subnet); retried when the system changes.
    Pending(String),
}

/// A step the kernel or the datapath refused, in one line naming the object.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StepError(pub String);

impl StepError {
    pub fn new(e: impl std::fmt::Display) -> Self {
        Self(e.to_string())
    }
}

pub trait Backend: Send {
    /// Called before a transaction or resync with every item that will be
    /// desired afterwards, so resources sized from the whole config (the
    /// session table from `maxSessions`) are created right the first time.
    fn prepare(&mut self, items: &Items) -> impl Future<Output = Result<(), StepError>> + Send;

    fn create(
        &mut self,
        key: &ItemKey,
        item: &Item,
    ) -> impl Future<Output = Result<Outcome, StepError>> + Send;

    fn update(
        &mut self,
        key: &ItemKey,
        old: &Item,
        new: &Item,
    ) -> impl Future<Output = Result<Outcome, StepError>> + Send;

    /// Removes what `create` made. Something already gone is not an error.
    fn delete(
        &mut self,
        key: &ItemKey,
        old: &Item,
    ) -> impl Future<Output = Result<(), StepError>> + Send;

    /// Whether an applied item is still in place: an interface can vanish
    /// and take its addresses, routes and attachment with it.
    fn in_place(
        &mut self,
        key: &ItemKey,
        item: &Item,
    ) -> impl Future<Output = Result<bool, StepError>> + Send;

    /// After the first transaction of a (re)started agent: removes what an
    /// earlier run created that the config no longer has.
    fn remove_leftovers(
        &mut self,
        items: &Items,
    ) -> impl Future<Output = Result<(), StepError>> + Send;
}
