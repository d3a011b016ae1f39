//! Network binding: the IP networks a credential may be presented from, or a token used
//! from (Vault's `secret_id_bound_cidrs` / `token_bound_cidrs`). An empty list binds
//! nothing: any address will do, as before binding existed.

use std::{fmt, net::IpAddr, sync::Arc};

use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidCidr {
    #[error("may hold at most {} networks", CidrList::MAX_ENTRIES)]
    TooMany,
    #[error("'{0}' is not an IP address or CIDR block such as 203.0.113.0/24 or 2001:db8::/32")]
    Malformed(String),
}

/// A list of IP networks, each kept in canonical form (host bits cleared; an IPv4-mapped
/// IPv6 network as the IPv4 network it is, since source addresses are made canonical the
/// same way), without duplicates, in the order given. Cheap to clone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct CidrList(Arc<[IpNet]>);

/// A stored or claimed entry is never longer than this; anything longer is not echoed whole.
const ENTRY_MAX_LEN: usize = 64;

impl CidrList {
    /// Enough for any sane allowlist; each is checked on every use of a credential.
    pub const MAX_ENTRIES: usize = 64;

    /// Parses CIDR blocks (`10.0.0.0/8`, `2001:db8::/32`) or bare addresses (a /32 or /128).
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, InvalidCidr> {
        if entries.len() > Self::MAX_ENTRIES {
            return Err(InvalidCidr::TooMany);
        }
        let mut nets: Vec<IpNet> = Vec::with_capacity(entries.len());
        for raw in entries {
            let net = parse_entry(raw.as_ref())?;
            if !nets.contains(&net) {
                nets.push(net);
            }
        }
        Ok(Self(nets.into()))
    }

    /// The stored form: canonical entries separated by spaces ('' for none).
    pub fn parse_stored(raw: &str) -> Result<Self, InvalidCidr> {
        Self::parse(&raw.split_whitespace().collect::<Vec<_>>())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `ip` may use what this list binds: always when the list is empty.
    pub fn admits(&self, ip: IpAddr) -> bool {
        if self.0.is_empty() {
            return true;
        }
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// Each entry in canonical form, e.g. `203.0.113.7/32`.
    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }
}

fn parse_entry(raw: &str) -> Result<IpNet, InvalidCidr> {
    let trimmed = raw.trim();
    let net = trimmed
        .parse::<IpNet>()
        .or_else(|_| trimmed.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| {
            let shown: String = raw.chars().take(ENTRY_MAX_LEN).collect();
            InvalidCidr::Malformed(shown)
        })?;
    Ok(canonical(net).trunc())
}

/// `::ffff:a.b.c.d/n` (n ≥ 96) is `a.b.c.d/(n-96)`: a dual-stack listener's IPv4 clients
/// are matched as IPv4 addresses, so a mapped network would otherwise never match them.
fn canonical(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net
        && v6.prefix_len() >= 96
        && let Some(v4) = v6.addr().to_ipv4_mapped()
    {
        return Ipv4Net::new(v4, v6.prefix_len() - 96)
            .map_or(net, IpNet::V4)
            .trunc();
    }
    net
}

impl fmt::Display for CidrList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, net) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{net}")?;
        }
        Ok(())
    }
}

/// In a token's claims: an array of strings.
impl Serialize for CidrList {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(ToString::to_string))
    }
}

impl<'de> Deserialize<'de> for CidrList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let entries = Vec::<String>::deserialize(deserializer)?;
        Self::parse(&entries).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(raw: &str) -> IpAddr {
        raw.parse().unwrap()
    }

    #[test]
    fn entries_are_made_canonical() {
        let list = CidrList::parse(&[
            "10.1.2.3/8",
            "203.0.113.7",
            "2001:db8::1",
            "::ffff:192.0.2.0/120",
            " 10.0.0.0/8 ",
        ])
        .unwrap();
        assert_eq!(
            list.to_strings(),
            [
                "10.0.0.0/8",
                "203.0.113.7/32",
                "2001:db8::1/128",
                "192.0.2.0/24"
            ],
            "host bits cleared, bare addresses single hosts, mapped networks IPv4, no duplicates"
        );
        assert_eq!(CidrList::parse_stored(&list.to_string()).unwrap(), list);
        assert_eq!(CidrList::parse_stored("").unwrap(), CidrList::default());
    }

    #[test]
    fn bad_entries_and_long_lists_are_refused() {
        for (entry, why) in [
            ("", "empty"),
            ("10.0.0.0/33", "prefix too long"),
            ("10.0.0", "not an address"),
            ("example.com", "a name, not an address"),
            ("10.0.0.0/8/8", "two prefixes"),
            ("fe80::1%eth0", "a scoped address"),
        ] {
            assert!(
                matches!(CidrList::parse(&[entry]), Err(InvalidCidr::Malformed(_))),
                "{why}: {entry:?}"
            );
        }
        let many: Vec<String> = (0..=CidrList::MAX_ENTRIES)
            .map(|i| format!("10.0.{i}.0/24"))
            .collect();
        assert_eq!(CidrList::parse(&many), Err(InvalidCidr::TooMany));
        assert!(CidrList::parse(&many[..CidrList::MAX_ENTRIES]).is_ok());
    }

    #[test]
    fn an_empty_list_admits_anyone_and_a_list_only_its_networks() {
        assert!(CidrList::default().admits(ip("198.51.100.1")));
        let list = CidrList::parse(&["10.0.0.0/8", "2001:db8::/32"]).unwrap();
        assert!(list.admits(ip("10.200.0.1")));
        assert!(list.admits(ip("::ffff:10.0.0.1")), "an IPv4-mapped source");
        assert!(list.admits(ip("2001:db8:1::5")));
        assert!(!list.admits(ip("11.0.0.1")));
        assert!(!list.admits(ip("2001:db9::1")));
    }

    #[test]
    fn a_claim_is_an_array_of_strings() {
        let list = CidrList::parse(&["10.0.0.0/8", "2001:db8::/32"]).unwrap();
        let json = serde_json::to_string(&list).unwrap();
        assert_eq!(json, r#"["10.0.0.0/8","2001:db8::/32"]"#);
        assert_eq!(serde_json::from_str::<CidrList>(&json).unwrap(), list);
        assert!(serde_json::from_str::<CidrList>(r#"["nope"]"#).is_err());
    }
}
