//! Choosing the attach hook for an interface.

use std::fmt;

use crate::{
    config::{DatapathSpec, Hook, XdpMode},
    linux::Link,
};

/// The XDP attach mode the agent asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpAttach {
    /// In the driver, falling back to generic where the driver refuses.
    Native,
    /// Generic (skb) XDP only.
    Generic,
}

impl From<XdpAttach> for aya::programs::XdpMode {
    fn from(m: XdpAttach) -> Self {
        match m {
            XdpAttach::Native => Self::Driver,
            XdpAttach::Generic => Self::Skb,
        }
    }
}

/// The hook an interface gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookChoice {
    Tc,
    Xdp(XdpAttach),
}

impl HookChoice {
    /// The pin name's hook part; a hook change finds the old link by it.
    pub fn tag(self) -> &'static str {
        match self {
            Self::Tc => "tc",
            Self::Xdp(_) => "xdp",
        }
    }

    /// The other hook kind, whose stale link a hook change must remove.
    pub fn other(self) -> Self {
        match self {
            Self::Tc => Self::Xdp(XdpAttach::Native),
            Self::Xdp(_) => Self::Tc,
        }
    }
}

impl fmt::Display for HookChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tc => f.write_str("tc"),
            Self::Xdp(XdpAttach::Native) => f.write_str("xdp (native)"),
            Self::Xdp(XdpAttach::Generic) => f.write_str("xdp (generic)"),
        }
    }
}

/// Picks the hook for `link` and says why.
///
/// `auto` picks TC on veth: a socket's packet is an skb, and native XDP on
/// veth must copy it into an XDP buffer, which measured 5-20x slower than the
/// kernel here, while TC forwarding beat the kernel. On other drivers XDP runs
/// before any skb exists, which is where it pays off.
pub fn choose_hook(link: &Link, spec: Option<&DatapathSpec>) -> (HookChoice, &'static str) {
    let spec = spec.copied().unwrap_or_default();
    let xdp = match spec.xdp_mode.unwrap_or_default() {
        XdpMode::Native => XdpAttach::Native,
        XdpMode::Generic => XdpAttach::Generic,
    };
    match spec.hook {
        Hook::Tc => (HookChoice::Tc, "configured"),
        Hook::Xdp => (HookChoice::Xdp(xdp), "configured"),
        Hook::Auto if link.is_veth() => (
            HookChoice::Tc,
            "auto: veth, where native XDP copies every skb and TC is faster",
        ),
        Hook::Auto => (
            HookChoice::Xdp(xdp),
            "auto: non-veth driver, XDP runs before an skb is built",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(kind: Option<&str>) -> Link {
        Link {
            name: "x".into(),
            index: 3,
            kind: kind.map(Into::into),
            mac: [2, 0, 0, 0, 0, 1],
            up: true,
            mtu: 1500,
            peer_elsewhere: true,
        }
    }

    #[test]
    fn peer_redirect_only_to_a_veth_or_netkit_peer_in_another_namespace() {
        assert!(link(Some("veth")).can_redirect_to_peer());
        assert!(link(Some("netkit")).can_redirect_to_peer());
        let same_ns = Link {
            peer_elsewhere: false,
            ..link(Some("veth"))
        };
        assert!(!same_ns.can_redirect_to_peer());
        assert!(!link(Some("dummy")).can_redirect_to_peer());
        assert!(!link(None).can_redirect_to_peer());
    }

    #[test]
    fn auto_picks_tc_on_veth_and_xdp_elsewhere() {
        assert_eq!(choose_hook(&link(Some("veth")), None).0, HookChoice::Tc);
        assert_eq!(
            choose_hook(&link(None), None).0,
            HookChoice::Xdp(XdpAttach::Native)
        );
        let generic = DatapathSpec {
            hook: Hook::Auto,
            xdp_mode: Some(XdpMode::Generic),
            ..DatapathSpec::default()
        };
        assert_eq!(
            choose_hook(&link(Some("dummy")), Some(&generic)).0,
            HookChoice::Xdp(XdpAttach::Generic)
        );
    }

    #[test]
    fn explicit_hook_wins_over_driver() {
        let xdp = DatapathSpec {
            hook: Hook::Xdp,
            ..DatapathSpec::default()
        };
        assert_eq!(
            choose_hook(&link(Some("veth")), Some(&xdp)).0,
            HookChoice::Xdp(XdpAttach::Native)
        );
        let tc = DatapathSpec {
            hook: Hook::Tc,
            ..DatapathSpec::default()
        };
        assert_eq!(choose_hook(&link(None), Some(&tc)).0, HookChoice::Tc);
    }
}
