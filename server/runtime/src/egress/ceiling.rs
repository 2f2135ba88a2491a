//! The operator's egress ceiling: what no plugin may reach, whatever its manifest says.
//!
//! A manifest is written by a tenant administrator, who is not trusted with the network
//! the host runs in. The per-plugin policy (`outbound_hosts`) lets a manifest name an
//! address (`http://10.0.0.5:8000`) and so reach it; the ceiling is set by the operator in
//! `[egress]` and is checked twice: when a manifest is installed
//! ([`EgressCeiling::check_manifest`], a 4xx naming the rule) and on every outbound request
//! against the addresses actually connected to ([`EgressCeiling::check_address`]), so a
//! manifest installed before the ceiling changed, or a name that resolves somewhere new,
//! cannot get past it.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use cairn_manifest::{HostMatch, HostPattern, Manifest};

/// An address range in CIDR notation (`10.0.0.0/8`, `2002::/16`), or one address
/// (`169.254.169.254`, a `/32` or `/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    network: IpAddr,
    prefix: u8,
}

/// Why a string is not an [`IpRange`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not an address range: {reason} (write e.g. \"10.0.0.0/8\" or \"fd00::/8\")")]
pub struct IpRangeError {
    input: String,
    reason: &'static str,
}

impl IpRange {
    /// Whether `ip` is inside the range. IPv4-mapped IPv6 addresses are compared as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpRange {
    type Err = IpRangeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let error = |reason| IpRangeError {
            input: s.to_owned(),
            reason,
        };
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let network: IpAddr = addr
            .parse()
            .map_err(|_| error("the address does not parse"))?;
        if network.to_canonical() != network {
            return Err(error("write IPv4-mapped addresses in IPv4 form"));
        }
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| error("the prefix length is out of range"))?,
        };
        let range = IpRange { network, prefix };
        // `10.0.0.1/8` is almost certainly a typo for a host or for `10.0.0.0/8`: refuse it.
        if !range.contains(network) || host_bits_set(network, prefix) {
            return Err(error("bits are set past the prefix length"));
        }
        Ok(range)
    }
}

fn host_bits_set(ip: IpAddr, prefix: u8) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            u32::from(v4) & !u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0) != 0
        }
        IpAddr::V6(v6) => {
            u128::from(v6) & !u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0) != 0
        }
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl<'de> serde::Deserialize<'de> for IpRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for IpRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The ranges denied by default, each with the name a refusal gives. Cloud metadata
/// services live in link-local (`169.254.169.254`), unique-local (`fd00:ec2::254`) and
/// carrier-grade NAT space (`100.100.100.200`), so all three are denied whole.
pub const DEFAULT_DENIED_RANGES: &[(&str, &str)] = &[
    ("0.0.0.0/8", "this network"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "carrier-grade NAT"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local (cloud metadata)"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.0.2.0/24", "documentation"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("64:ff9b:1::/48", "local-use NAT64"),
    ("100::/64", "discard-only"),
    ("2001::/23", "IETF protocol assignments (Teredo)"),
    ("2001:db8::/32", "documentation"),
    ("2002::/16", "6to4"),
    ("fc00::/7", "unique local (private, cloud metadata)"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"),
    ("ff00::/8", "multicast"),
];

/// The default DNS lookup timeout.
pub const DEFAULT_DNS_TIMEOUT: Duration = Duration::from_secs(5);

/// The operator's egress ceiling. Build it with [`EgressCeiling::new`] (the defaults) or
/// [`EgressCeiling::unrestricted`], then narrow or widen it with the builder methods.
#[derive(Debug, Clone)]
pub struct EgressCeiling {
    denied: Vec<(IpRange, String)>,
    permitted: Vec<IpRange>,
    origins: Option<Vec<HostPattern>>,
    own: Vec<SocketAddr>,
    dns_timeout: Duration,
}

impl Default for EgressCeiling {
    fn default() -> Self {
        Self::new()
    }
}

impl EgressCeiling {
    /// The default ceiling: [`DEFAULT_DENIED_RANGES`] denied, no origin allow-list, a
    /// [`DEFAULT_DNS_TIMEOUT`].
    pub fn new() -> Self {
        let denied = DEFAULT_DENIED_RANGES
            .iter()
            .map(|(range, name)| {
                let range = range.parse().expect("the default ranges parse");
                (range, (*name).to_owned())
            })
            .collect();
        Self {
            denied,
            permitted: Vec::new(),
            origins: None,
            own: Vec::new(),
            dns_timeout: DEFAULT_DNS_TIMEOUT,
        }
    }

    /// No ceiling beyond the per-plugin policy: for a plugin author's own machine
    /// (`cairn-plugin test`) and for libraries embedding the runtime that set none.
    pub fn unrestricted() -> Self {
        Self {
            denied: Vec::new(),
            ..Self::new()
        }
    }

    /// Replaces the denied ranges. A range from [`DEFAULT_DENIED_RANGES`] keeps its name
    /// in refusals; others are named `denied by the operator`.
    #[must_use]
    pub fn with_denied(mut self, ranges: impl IntoIterator<Item = IpRange>) -> Self {
        self.denied = ranges
            .into_iter()
            .map(|range| {
                let known = DEFAULT_DENIED_RANGES
                    .iter()
                    .find(|(r, _)| r.parse::<IpRange>().is_ok_and(|r| r == range));
                let name = known.map_or("denied by the operator", |(_, name)| name);
                (range, name.to_owned())
            })
            .collect();
        self
    }

    /// Carves ranges out of the denied ones: the operator's decision that plugins may
    /// reach, say, an internal service at `10.0.0.5/32`.
    #[must_use]
    pub fn with_permitted(mut self, ranges: impl IntoIterator<Item = IpRange>) -> Self {
        self.permitted = ranges.into_iter().collect();
        self
    }

    /// Only origins these patterns cover may appear in manifests or be requested.
    #[must_use]
    pub fn with_allowed_origins(mut self, origins: Option<Vec<HostPattern>>) -> Self {
        self.origins = origins;
        self
    }

    /// Cairn's own listen address(es): always denied, even when permitted, so a plugin
    /// cannot call the API that runs it.
    #[must_use]
    pub fn with_own_address(mut self, address: SocketAddr) -> Self {
        self.own.push(address);
        self
    }

    /// How long a DNS lookup may take before the request is refused.
    #[must_use]
    pub fn with_dns_timeout(mut self, timeout: Duration) -> Self {
        self.dns_timeout = timeout;
        self
    }

    /// The DNS lookup timeout.
    pub fn dns_timeout(&self) -> Duration {
        self.dns_timeout
    }

    /// Whether a request to `address` is under the ceiling. Checked on every request for
    /// every address it may connect to, IP literals included.
    pub fn check_address(&self, address: SocketAddr) -> Result<(), CeilingRule> {
        let ip = address.ip().to_canonical();
        // A wildcard listen address (`0.0.0.0`) means every local address; only the
        // loopback and unspecified ones are known here (the machine's others are not
        // enumerated: deny them in `denied_ranges`). Matching the port on every address
        // would refuse, say, all of HTTPS when Cairn listens on `0.0.0.0:443`.
        let is_own = |own: &SocketAddr| {
            own.port() == address.port()
                && (own.ip().to_canonical() == ip
                    || (own.ip().is_unspecified() && (ip.is_loopback() || ip.is_unspecified())))
        };
        if self.own.iter().any(is_own) {
            return Err(CeilingRule::OwnAddress);
        }
        // An address that embeds an IPv4 address (NAT64, IPv4-compatible) is judged by
        // both forms, so `64:ff9b::a9fe:a9fe` is the metadata service it translates to.
        for candidate in std::iter::once(ip).chain(embedded_v4(ip).map(IpAddr::V4)) {
            if self.permitted.iter().any(|r| r.contains(candidate)) {
                continue;
            }
            if let Some((range, name)) = self.denied.iter().find(|(r, _)| r.contains(candidate)) {
                return Err(CeilingRule::DeniedRange {
                    range: range.to_string(),
                    name: name.clone(),
                });
            }
        }
        Ok(())
    }

    /// Whether `scheme://host:port` is covered by the origin allow-list (always, when
    /// there is none).
    pub fn check_origin(&self, scheme: &str, host: &str, port: u16) -> Result<(), CeilingRule> {
        match &self.origins {
            Some(origins) if !origins.iter().any(|o| o.matches(scheme, host, port)) => {
                Err(self.not_allowed_origin())
            }
            _ => Ok(()),
        }
    }

    fn not_allowed_origin(&self) -> CeilingRule {
        let allowed = self
            .origins
            .iter()
            .flatten()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        CeilingRule::NotAllowedOrigin { allowed }
    }

    /// Refuses a manifest any of whose `outbound_hosts` the ceiling forbids: an address
    /// in a denied range, a `localhost` name, or an origin outside the allow-list. Names
    /// are not resolved here (the answer may change); every request is checked again.
    pub fn check_manifest(&self, manifest: &Manifest) -> Result<(), CeilingViolation> {
        for (index, pattern) in manifest.permissions.outbound_hosts.iter().enumerate() {
            let violation = |rule| CeilingViolation {
                target: pattern.to_string(),
                field: format!("permissions.outbound_hosts[{index}]"),
                rule,
            };
            match pattern.host() {
                HostMatch::Ip(ip) => self
                    .check_address(SocketAddr::new(*ip, pattern.port()))
                    .map_err(violation)?,
                HostMatch::Exact(name) | HostMatch::Wildcard(name)
                    if !self.denied.is_empty()
                        && (name == "localhost" || name.ends_with(".localhost")) =>
                {
                    return Err(violation(CeilingRule::LoopbackName));
                }
                _ => {}
            }
            if let Some(origins) = &self.origins
                && !origins.iter().any(|o| o.covers(pattern))
            {
                return Err(violation(self.not_allowed_origin()));
            }
        }
        Ok(())
    }
}

fn embedded_v4(ip: IpAddr) -> Option<Ipv4Addr> {
    let IpAddr::V6(v6) = ip else { return None };
    let s = v6.segments();
    let nat64 = s[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
    let compatible = s[..6] == [0; 6] && s[6] != 0;
    (nat64 || compatible).then(|| {
        let [a, b] = s[6].to_be_bytes();
        let [c, d] = s[7].to_be_bytes();
        Ipv4Addr::new(a, b, c, d)
    })
}

/// Which rule of the ceiling refused something. `Display` names the config key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
#[non_exhaustive]
pub enum CeilingRule {
    /// The address is in a range the operator denies.
    #[error(
        "the address is in {range} ({name}), which the operator's egress ceiling denies (egress.denied_ranges)"
    )]
    DeniedRange {
        /// The range, CIDR notation.
        range: String,
        /// What the range is.
        name: String,
    },
    /// The address is Cairn's own listen address.
    #[error("the address is Cairn's own listen address, which plugins may never reach")]
    OwnAddress,
    /// The name is `localhost` or under `.localhost`.
    #[error(
        "the name is the local machine (loopback), which the operator's egress ceiling denies (egress.denied_ranges)"
    )]
    LoopbackName,
    /// The origin is outside the operator's allow-list.
    #[error("the origin is not in the operator's egress.allowed_origins [{allowed}]")]
    NotAllowedOrigin {
        /// The allow-list, canonical spelling, comma-separated.
        allowed: String,
    },
}

/// A manifest entry outside the ceiling: which entry, where, and which rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[error("{field} {target:?}: {rule}")]
pub struct CeilingViolation {
    /// The `outbound_hosts` entry, canonical spelling.
    pub target: String,
    /// Where it is in the manifest, e.g. `permissions.outbound_hosts[0]`.
    pub field: String,
    /// The rule.
    pub rule: CeilingRule,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denied(ceiling: &EgressCeiling, addr: &str) -> Option<String> {
        ceiling
            .check_address(addr.parse().unwrap())
            .err()
            .map(|r| r.to_string())
    }

    #[test]
    fn default_ceiling_denies_internal_and_special_ranges() {
        let c = EgressCeiling::new();
        for addr in [
            "127.0.0.1:80",
            "10.0.0.5:8000",
            "169.254.169.254:80",
            "100.100.100.200:80",
            "192.0.0.170:80",
            "198.18.0.1:80",
            "198.19.255.255:443",
            "0.0.0.0:80",
            "[::1]:80",
            "[::ffff:127.0.0.1]:80",
            "[::ffff:169.254.169.254]:80",
            "[64:ff9b::a9fe:a9fe]:80",
            "[64:ff9b:1::1]:80",
            "[2002:a9fe:a9fe::1]:80",
            "[2001:0:4136:e378::1]:80",
            "[fd00:ec2::254]:80",
            "[fe80::1]:80",
            "[::127.0.0.1]:80",
        ] {
            assert!(denied(&c, addr).is_some(), "{addr} should be denied");
        }
        for addr in [
            "93.184.216.34:443",
            "[2606:4700::1111]:443",
            "[64:ff9b::5db8:d822]:443",
        ] {
            assert_eq!(denied(&c, addr), None, "{addr}");
        }
        let why = denied(&c, "169.254.169.254:80").unwrap();
        assert!(
            why.contains("169.254.0.0/16") && why.contains("egress.denied_ranges"),
            "{why}"
        );
    }

    #[test]
    fn permitted_ranges_carve_out_but_never_the_own_address() {
        let c = EgressCeiling::new()
            .with_permitted([
                "10.0.0.5/32".parse().unwrap(),
                "127.0.0.0/8".parse().unwrap(),
            ])
            .with_own_address("127.0.0.1:8080".parse().unwrap());
        assert_eq!(denied(&c, "10.0.0.5:8000"), None);
        assert!(denied(&c, "10.0.0.6:8000").is_some());
        assert_eq!(denied(&c, "127.0.0.1:9000"), None);
        assert_eq!(
            c.check_address("127.0.0.1:8080".parse().unwrap()),
            Err(CeilingRule::OwnAddress)
        );
        let any = EgressCeiling::unrestricted().with_own_address("0.0.0.0:8080".parse().unwrap());
        assert_eq!(
            any.check_address("127.0.0.1:8080".parse().unwrap()),
            Err(CeilingRule::OwnAddress)
        );
        assert_eq!(
            any.check_address("[::ffff:127.0.0.1]:8080".parse().unwrap()),
            Err(CeilingRule::OwnAddress)
        );
        assert_eq!(
            any.check_address("93.184.216.34:8080".parse().unwrap()),
            Ok(())
        );
        assert_eq!(any.check_address("127.0.0.1:443".parse().unwrap()), Ok(()));
    }

    #[test]
    fn ranges_parse_strictly() {
        assert_eq!(
            "10.0.0.0/8".parse::<IpRange>().unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!("::1".parse::<IpRange>().unwrap().to_string(), "::1/128");
        for bad in [
            "10.0.0.1/8",
            "10.0.0.0/33",
            "nope",
            "10.0.0.0/x",
            "",
            "::ffff:10.0.0.0/104",
        ] {
            assert!(bad.parse::<IpRange>().is_err(), "{bad}");
        }
    }

    fn manifest(hosts: &[&str]) -> Manifest {
        let mut m: Manifest = serde_json::from_value(serde_json::json!({
            "id": "probe", "version": "1.0.0", "publisher": "p", "description": "d",
            "tools": [{"name": "t", "description": "d", "input_schema": {"type": "object"},
                       "output_schema": {}, "annotations": {"read_only": true}}]
        }))
        .unwrap();
        m.permissions.outbound_hosts = hosts.iter().map(|h| h.parse().unwrap()).collect();
        m
    }

    #[test]
    fn manifests_outside_the_ceiling_are_refused_naming_the_entry_and_rule() {
        let c = EgressCeiling::new();
        c.check_manifest(&manifest(&[
            "https://api.example.com",
            "https://*.example.org",
        ]))
        .unwrap();
        let v = c
            .check_manifest(&manifest(&[
                "https://api.example.com",
                "http://169.254.169.254",
            ]))
            .unwrap_err();
        assert_eq!(v.field, "permissions.outbound_hosts[1]");
        assert!(v.to_string().contains("169.254.0.0/16"), "{v}");
        let v = c
            .check_manifest(&manifest(&["http://localhost:8080"]))
            .unwrap_err();
        assert_eq!(v.rule, CeilingRule::LoopbackName);
        assert!(
            c.check_manifest(&manifest(&["http://[::ffff:10.0.0.5]:8000"]))
                .is_err()
        );

        let only = EgressCeiling::new()
            .with_allowed_origins(Some(vec!["https://*.example.com".parse().unwrap()]));
        only.check_manifest(&manifest(&[
            "https://api.example.com",
            "https://*.a.example.com",
        ]))
        .unwrap();
        let v = only
            .check_manifest(&manifest(&["https://api.evil.example"]))
            .unwrap_err();
        assert!(v.to_string().contains("egress.allowed_origins"), "{v}");
        assert!(
            only.check_manifest(&manifest(&["http://api.example.com"]))
                .is_err()
        );
        assert!(only.check_origin("https", "x.example.com", 443).is_ok());
        assert!(only.check_origin("https", "example.com", 443).is_err());
    }
}
