//! The one error type of the Linux module, sorted by what a caller does next.

use std::{fmt, io};

use super::Failure;

/// The interface an operation was about, as the caller named it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Iface {
    Name(String),
    Index(u32),
}

impl fmt::Display for Iface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(n) => write!(f, "interface {n:?}"),
            Self::Index(i) => write!(f, "ifindex {i}"),
        }
    }
}

/// Errors from netlink operations.
///
/// The variants a reconciler branches on are separate: an interface that is
/// not there yet or a gateway not on a connected subnet means "pending, retry
/// when the kernel changes", an existing entry means "compare, maybe
/// replace", a missing one on delete means "already done". `op` says what
/// was attempted ("adding address 10.0.0.1/24 to ifindex 7").
#[derive(Debug, thiserror::Error)]
pub enum LinuxError {
    #[error("cannot open a netlink socket: {0}")]
    Socket(#[source] io::Error),
    #[error("{iface} does not exist in the agent's network namespace")]
    NoSuchInterface { iface: Iface },
    #[error("{op}: it already exists")]
    Exists { op: String },
    #[error("{op}: no such entry")]
    NotFound { op: String },
    #[error("{op}: the gateway is not on a connected subnet")]
    Unreachable { op: String },
    #[error("{op}: permission denied (the agent needs CAP_NET_ADMIN): {source}")]
    Permission {
        op: String,
        #[source]
        source: io::Error,
    },
    #[error("{op}: {source}")]
    Kernel {
        op: String,
        #[source]
        source: io::Error,
    },
}

impl LinuxError {
    /// Sorts a failed request by errno. `iface` is the ifindex the request
    /// named, so ENODEV can say which interface is missing.
    pub(super) fn from_failure(failure: Failure, op: String, iface: Option<u32>) -> Self {
        let errno = match failure {
            Failure::Errno(e) => e,
            Failure::Closed => {
                return Self::Kernel {
                    op,
                    source: io::Error::other("the netlink connection is closed"),
                };
            }
        };
        match (errno, iface) {
            (libc::ENODEV, Some(i)) => Self::NoSuchInterface {
                iface: Iface::Index(i),
            },
            (libc::EEXIST, _) => Self::Exists { op },
            // Routes answer ESRCH, neighbours ENOENT and addresses
            // EADDRNOTAVAIL when the entry to delete is not there.
            (libc::ESRCH | libc::ENOENT | libc::EADDRNOTAVAIL, _) => Self::NotFound { op },
            // The gateway lookup fails with ENETUNREACH when no connected
            // route covers it (EHOSTUNREACH on some older paths).
            (libc::ENETUNREACH | libc::EHOSTUNREACH, _) => Self::Unreachable { op },
            (libc::EPERM | libc::EACCES, _) => Self::Permission {
                op,
                source: io::Error::from_raw_os_error(errno),
            },
            _ => Self::Kernel {
                op,
                source: io::Error::from_raw_os_error(errno),
            },
        }
    }
}
