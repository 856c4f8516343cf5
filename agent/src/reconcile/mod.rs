//! The reconciler: turns a declarative config into kernel and datapath state
//! and keeps it that way.
//!
//! A config is flattened into [`item`]s. An update is planned as the
//! difference between the items in force and the new ones, ordered by
//! dependency (interface → addresses → routes and neighbours → NAT →
//! datapath roles), and executed as one transaction: if a step fails, the
//! steps already done are reverted and the previous config stays in force.
//! Items whose dependency is missing (an interface NSM has not created yet)
//! stay Pending with a reason and are applied when rtnetlink reports the
//! dependency.

pub mod backend;
pub mod bindings;
mod engine;
pub mod handle;
pub mod item;
pub mod plan;
mod record;
pub mod status;
pub mod system;
pub mod vpp;
pub mod vpp_owned;

pub use backend::{Backend, Outcome, StepError};
pub use bindings::{Binding, Bindings, NsmMemif};
pub use engine::{Engine, new};
pub use handle::{ApplyError, ApplyMode, ApplyReport, Handle, OpKind, PlannedOp};
pub use item::{Item, ItemKey, Items};
pub use status::{ItemState, ItemStatus};
