//! SPIFFE IDs and trust domains, validated as the SPIFFE ID standard says:
//! peers are authorized by these, so anything ambiguous (upper case in the
//! trust domain, `..` segments, a query or port) is refused rather than
//! normalised into a match.

use std::fmt;

/// The scheme every SPIFFE ID starts with.
const SCHEME: &str = "spiffe://";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    #[error("SPIFFE ID {0:?}: must start with \"spiffe://\"")]
    Scheme(String),
    #[error("SPIFFE ID {0:?}: empty trust domain")]
    EmptyTrustDomain(String),
    #[error(
        "SPIFFE ID {0:?}: trust domain may hold only lower-case letters, digits, '.', '-' and '_' (no port, user or upper case)"
    )]
    TrustDomainChars(String),
    #[error(
        "SPIFFE ID {0:?}: path segments must be non-empty, not '.' or '..', and hold only letters, digits, '.', '-' and '_'"
    )]
    Path(String),
}

/// A trust domain name (`example.org`), the unit a CA bundle belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String);

impl TrustDomain {
    /// Accepts the bare name (`example.org`) or its SPIFFE ID form
    /// (`spiffe://example.org`, the key of federated bundles on the wire).
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let name = s.strip_prefix(SCHEME).unwrap_or(s);
        if name.is_empty() {
            return Err(IdError::EmptyTrustDomain(s.to_owned()));
        }
        if !name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        }) {
            return Err(IdError::TrustDomainChars(s.to_owned()));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn name(&self) -> &str {
        &self.0
    }

    /// `spiffe://<name>`, the form bundle maps are keyed by on the wire.
    pub fn id_string(&self) -> String {
        format!("{SCHEME}{}", self.0)
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A SPIFFE ID (`spiffe://<trust domain>[/<path>]`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    id: String,
    /// Byte length of the trust domain name after the scheme.
    td_len: usize,
}

impl SpiffeId {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let rest = s
            .strip_prefix(SCHEME)
            .ok_or_else(|| IdError::Scheme(s.to_owned()))?;
        let (td, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if td.is_empty() {
            return Err(IdError::EmptyTrustDomain(s.to_owned()));
        }
        TrustDomain::parse(td).map_err(|_| IdError::TrustDomainChars(s.to_owned()))?;
        if !path.is_empty() {
            let segments_ok = path[1..].split('/').all(|seg| {
                !seg.is_empty()
                    && seg != "."
                    && seg != ".."
                    && seg
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
            });
            if !segments_ok {
                return Err(IdError::Path(s.to_owned()));
            }
        }
        Ok(Self {
            id: s.to_owned(),
            td_len: td.len(),
        })
    }

    pub fn trust_domain(&self) -> TrustDomain {
        TrustDomain(self.td_str().to_owned())
    }

    fn td_str(&self) -> &str {
        &self.id[SCHEME.len()..SCHEME.len() + self.td_len]
    }

    /// The path (`/ns/default/sa/nsmgr`), empty for a trust domain's own ID.
    pub fn path(&self) -> &str {
        &self.id[SCHEME.len() + self.td_len..]
    }

    pub fn as_str(&self) -> &str {
        &self.id
    }

    pub fn is_member_of(&self, td: &TrustDomain) -> bool {
        self.td_str() == td.name()
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_ids() {
        let id = SpiffeId::parse("spiffe://example.org/ns/default/sa/nsc")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(id.trust_domain().name(), "example.org");
        assert_eq!(id.path(), "/ns/default/sa/nsc");
        let td_only = SpiffeId::parse("spiffe://example.org").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(td_only.path(), "");
        assert!(td_only.is_member_of(
            &TrustDomain::parse("spiffe://example.org").unwrap_or_else(|e| panic!("{e}"))
        ));
    }

    #[test]
    fn refuses_ambiguous_ids() {
        for bad in [
            "http://example.org/x",
            "spiffe://",
            "spiffe:///x",
            "spiffe://Example.org/x",
            "spiffe://example.org:8080/x",
            "spiffe://user@example.org/x",
            "spiffe://example.org/",
            "spiffe://example.org//x",
            "spiffe://example.org/a/../b",
            "spiffe://example.org/a/./b",
            "spiffe://example.org/x?q=1",
            "spiffe://example.org/x#f",
        ] {
            assert!(SpiffeId::parse(bad).is_err(), "{bad} was accepted");
        }
    }
}
