//! NAT44 in the agent: compiling the config into the datapath's maps,
//! sweeping expired sessions, and reading sessions back for `xcnfctl`.

pub mod plan;

pub use plan::{NatPlan, StaticEntry, split_pools, static_entries};
