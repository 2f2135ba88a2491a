//! Outbound host patterns: the entries of `permissions.outbound_hosts`.
//!
//! A pattern is `scheme://host[:port]` and nothing else. The host's egress hook checks
//! every request and every redirect against these with [`HostPattern::matches`], so the
//! parser is strict: anything it cannot give one clear meaning to is rejected with the
//! reason, rather than guessed at.

use std::borrow::Cow;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// The URL scheme a [`HostPattern`] allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// `http`: plain text; meant for local development services.
    Http,
    /// `https`.
    Https,
}

impl Scheme {
    /// The scheme as written in a URL.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    /// The port used when a pattern names none: 80 for http, 443 for https.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which hosts a [`HostPattern`] matches.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum HostMatch {
    /// Exactly this DNS name (lowercase, no trailing dot).
    Exact(String),
    /// `*.example.com`, stored as the suffix `example.com`: matches names one or more
    /// labels below it (`a.example.com`, `a.b.example.com`), never `example.com` itself.
    Wildcard(String),
    /// An IP address named explicitly. IPv4-mapped IPv6 addresses are stored as IPv4.
    Ip(IpAddr),
}

/// One allowed outbound destination: `https://host[:port]`, e.g.
/// `https://api.example.com`, `https://*.example.com:8443`, `http://127.0.0.1:8080`,
/// `https://[2001:db8::1]`.
///
/// The canonical spelling ([`fmt::Display`], and what serialisation writes) always names
/// the port: `https://api.example.com:443`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HostPattern {
    scheme: Scheme,
    host: HostMatch,
    port: u16,
}

/// Why a string is not a valid [`HostPattern`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid host pattern \"{input}\": {kind}")]
pub struct HostPatternError {
    input: String,
    kind: HostPatternErrorKind,
}

impl HostPatternError {
    /// The rejected input (control characters escaped).
    pub fn input(&self) -> &str {
        &self.input
    }

    /// What is wrong with it.
    pub fn kind(&self) -> &HostPatternErrorKind {
        &self.kind
    }
}

/// What is wrong with a host pattern. The messages are meant for the manifest's author.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HostPatternErrorKind {
    /// The string is empty.
    #[error("it is empty; write scheme://host[:port], e.g. \"https://api.example.com\"")]
    Empty,
    /// The string contains whitespace or control characters.
    #[error("it contains whitespace or control characters")]
    Whitespace,
    /// There is no `scheme://`.
    #[error("the scheme is missing; write \"https://{0}\" (or \"http://{0}\")")]
    MissingScheme(String),
    /// The scheme is not http or https.
    #[error("scheme \"{0}\" is not allowed; use \"https\" (or \"http\")")]
    UnsupportedScheme(String),
    /// `user:password@` before the host.
    #[error("user info (\"...@\") is not allowed; credentials never go in the manifest")]
    Userinfo,
    /// A path after the host, even a lone `/`.
    #[error("the path \"{0}\" is not allowed; a host pattern is scheme://host[:port] only")]
    Path(String),
    /// A `?query`.
    #[error("a query (\"?...\") is not allowed; a host pattern is scheme://host[:port] only")]
    Query,
    /// A `#fragment`.
    #[error("a fragment (\"#...\") is not allowed; a host pattern is scheme://host[:port] only")]
    Fragment,
    /// `https://` or `https://:443`.
    #[error("the host is missing")]
    EmptyHost,
    /// The port is not a number from 1 to 65535.
    #[error("port \"{0}\" is not a number from 1 to 65535")]
    InvalidPort(String),
    /// `*` appears other than as the whole leftmost label.
    #[error("a wildcard must be the whole leftmost label, as in \"*.example.com\"")]
    BadWildcard,
    /// `*.com`: a wildcard over a single label.
    #[error(
        "\"*.{0}\" is too broad; a wildcard needs at least two labels after \"*.\", \
         as in \"*.example.com\""
    )]
    WildcardTooBroad(String),
    /// A wildcard over an IP address.
    #[error("a wildcard cannot apply to an IP address")]
    WildcardIp,
    /// A character other than ASCII letters, digits, `-` and `.` in a host name.
    #[error(
        "host names must be ASCII (letters, digits, '-' and '.'); internationalised \
         names are not supported"
    )]
    NonAscii,
    /// A label starting `xn--`.
    #[error("punycode labels (\"xn--...\") are not supported")]
    Punycode,
    /// A malformed DNS name (empty label, label too long, leading or trailing `-`, ...).
    #[error("\"{host}\" is not a valid host name: {reason}")]
    InvalidHostName {
        /// The host part.
        host: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A name whose last label is numeric, like `127.1` or `0x7f.1`: URL parsers read
    /// those as IPv4 addresses, so the name would not mean what it says.
    #[error(
        "\"{0}\" looks like an IPv4 address but is not in dotted-decimal form \
         (a.b.c.d without leading zeros)"
    )]
    AmbiguousIpv4(String),
    /// Something in brackets that is not an IPv6 address, or an IPv6 address without them.
    #[error(
        "\"{0}\" is not a valid IPv6 address; write IPv6 addresses in brackets, as in \"https://[2001:db8::1]\""
    )]
    InvalidIpv6(String),
}

impl HostPattern {
    /// Parses `scheme://host[:port]`.
    ///
    /// `scheme` is `https` or `http`; the port defaults to 443 or 80. The host is a DNS
    /// name (ASCII letters, digits and `-`; matched without regard to case), a wildcard
    /// `*.example.com`, an IPv4 address or an IPv6 address in brackets. Paths (even
    /// `/`), queries, fragments and user info are rejected.
    pub fn parse(s: &str) -> Result<HostPattern, HostPatternError> {
        parse(s).map_err(|kind| HostPatternError {
            input: s.escape_debug().to_string(),
            kind,
        })
    }

    /// The allowed scheme.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The hosts this pattern matches.
    pub fn host(&self) -> &HostMatch {
        &self.host
    }

    /// The allowed port (explicit, or the scheme's default).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address this pattern names explicitly, if it names one. The egress policy uses
    /// it to allow a loopback or private address that would otherwise be refused.
    pub fn names_ip(&self) -> Option<IpAddr> {
        match self.host {
            HostMatch::Ip(ip) => Some(ip),
            _ => None,
        }
    }

    /// Whether every request `other` allows is also allowed by `self`: same scheme and
    /// port, and `self`'s hosts include `other`'s (`*.example.com` covers
    /// `api.example.com` and `*.api.example.com`). The operator's origin allow-list uses
    /// it to judge a manifest's `outbound_hosts` before any request is made.
    pub fn covers(&self, other: &HostPattern) -> bool {
        if self.scheme != other.scheme || self.port != other.port {
            return false;
        }
        let under = |name: &str, suffix: &str| {
            name.strip_suffix(suffix)
                .is_some_and(|prefix| prefix.len() > 1 && prefix.ends_with('.'))
        };
        match (&self.host, &other.host) {
            (HostMatch::Ip(a), HostMatch::Ip(b)) => a == b,
            (HostMatch::Exact(a), HostMatch::Exact(b)) => a == b,
            (HostMatch::Wildcard(suffix), HostMatch::Exact(name)) => under(name, suffix),
            (HostMatch::Wildcard(suffix), HostMatch::Wildcard(inner)) => {
                suffix == inner || under(inner, suffix)
            }
            _ => false,
        }
    }

    /// Whether a request to `scheme://host:port` is allowed by this pattern.
    ///
    /// `scheme` is compared without regard to case. `host` is a DNS name (any case, one
    /// trailing dot ignored) or an IP literal (IPv6 with or without brackets). An IP
    /// literal only matches a pattern that names that address; a name never matches an
    /// IP pattern. Anything that is not a well-formed host does not match.
    pub fn matches(&self, scheme: &str, host: &str, port: u16) -> bool {
        if !scheme.eq_ignore_ascii_case(self.scheme.as_str()) || port != self.port {
            return false;
        }
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return matches!(self.host, HostMatch::Ip(p) if p == ip.to_canonical());
        }
        if bare.len() != host.len() {
            return false; // brackets around something that is not an IPv6 address
        }
        let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        if check_dns_name(&name, true).is_err() {
            return false;
        }
        match &self.host {
            HostMatch::Exact(exact) => *exact == name,
            HostMatch::Wildcard(suffix) => name
                .strip_suffix(suffix.as_str())
                .is_some_and(|prefix| prefix.len() > 1 && prefix.ends_with('.')),
            HostMatch::Ip(_) => false,
        }
    }
}

fn parse(s: &str) -> Result<HostPattern, HostPatternErrorKind> {
    use HostPatternErrorKind as K;
    if s.is_empty() {
        return Err(K::Empty);
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(K::Whitespace);
    }
    let Some((scheme, rest)) = s.split_once("://") else {
        return Err(K::MissingScheme(s.to_owned()));
    };
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "https" => Scheme::Https,
        "http" => Scheme::Http,
        _ => return Err(K::UnsupportedScheme(scheme.to_owned())),
    };
    // The authority ends at the first '/', '?' or '#'; anything after it is refused.
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if authority.contains('@') {
        return Err(K::Userinfo);
    }
    match tail.as_bytes().first() {
        None => {}
        Some(b'/') => {
            let path_end = tail.find(['?', '#']).unwrap_or(tail.len());
            return Err(K::Path(tail[..path_end].to_owned()));
        }
        Some(b'?') => return Err(K::Query),
        Some(_) => return Err(K::Fragment),
    }
    let (host, port) = split_port(authority)?;
    let port = match port {
        None => scheme.default_port(),
        Some(p) => parse_port(p)?,
    };
    let host = parse_host(host)?;
    Ok(HostPattern { scheme, host, port })
}

/// Splits `host[:port]`, minding the colons inside `[IPv6]`.
fn split_port(authority: &str) -> Result<(&str, Option<&str>), HostPatternErrorKind> {
    if authority.starts_with('[') {
        let Some(close) = authority.find(']') else {
            return Err(HostPatternErrorKind::InvalidIpv6(authority.to_owned()));
        };
        let (host, after) = authority.split_at(close + 1);
        return match after {
            "" => Ok((host, None)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((host, Some(port))),
                None => Err(HostPatternErrorKind::InvalidIpv6(authority.to_owned())),
            },
        };
    }
    match authority.matches(':').count() {
        0 => Ok((authority, None)),
        1 => {
            let (host, port) = authority.split_once(':').unwrap_or((authority, ""));
            Ok((host, Some(port)))
        }
        _ => Err(HostPatternErrorKind::InvalidIpv6(authority.to_owned())),
    }
}

fn parse_port(p: &str) -> Result<u16, HostPatternErrorKind> {
    let invalid = || HostPatternErrorKind::InvalidPort(p.to_owned());
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|c| c.is_ascii_digit()) {
        return Err(invalid());
    }
    match p.parse::<u32>() {
        Ok(n @ 1..=65535) => Ok(n as u16),
        _ => Err(invalid()),
    }
}

fn parse_host(host: &str) -> Result<HostMatch, HostPatternErrorKind> {
    use HostPatternErrorKind as K;
    if host.is_empty() {
        return Err(K::EmptyHost);
    }
    if let Some(inner) = host.strip_prefix('[') {
        let inner = inner.strip_suffix(']').unwrap_or(inner);
        if inner.contains('%') {
            return Err(K::InvalidIpv6(inner.to_owned()));
        }
        return inner
            .parse::<Ipv6Addr>()
            .map(|ip| HostMatch::Ip(IpAddr::V6(ip).to_canonical()))
            .map_err(|_| K::InvalidIpv6(inner.to_owned()));
    }
    if !host.is_ascii() {
        return Err(K::NonAscii);
    }
    let host = host.to_ascii_lowercase();
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Ok(HostMatch::Ip(IpAddr::V4(ip)));
    }
    if let Some(suffix) = host.strip_prefix("*.") {
        if suffix.contains('*') {
            return Err(K::BadWildcard);
        }
        if suffix.parse::<Ipv4Addr>().is_ok() {
            return Err(K::WildcardIp);
        }
        check_dns_name(suffix, false)?;
        if !suffix.contains('.') {
            return Err(K::WildcardTooBroad(suffix.to_owned()));
        }
        return Ok(HostMatch::Wildcard(suffix.to_owned()));
    }
    if host.contains('*') {
        return Err(K::BadWildcard);
    }
    check_dns_name(&host, false)?;
    Ok(HostMatch::Exact(host))
}

/// Checks a lowercase ASCII DNS name: letters, digits and `-` in labels of 1 to 63
/// characters, no leading or trailing `-`, at most 253 characters, and a last label
/// that a URL parser would not read as part of an IPv4 address. Punycode labels are
/// refused in patterns but accepted in requests (`allow_punycode`), where they can only
/// match a wildcard's subdomains.
fn check_dns_name(name: &str, allow_punycode: bool) -> Result<(), HostPatternErrorKind> {
    use HostPatternErrorKind as K;
    let bad = |reason| K::InvalidHostName {
        host: name.to_owned(),
        reason,
    };
    if name.len() > 253 {
        return Err(bad("it is longer than 253 characters"));
    }
    if name.ends_with('.') {
        return Err(bad("it ends with '.'; drop the trailing dot"));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(bad("it has an empty label (\"..\" or a leading '.')"));
        }
        if label.len() > 63 {
            return Err(bad("a label is longer than 63 characters"));
        }
        if !label
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        {
            return Err(if label.is_ascii() {
                bad("labels may only hold letters, digits and '-'")
            } else {
                K::NonAscii
            });
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(bad("a label starts or ends with '-'"));
        }
        if !allow_punycode && label.starts_with("xn--") {
            return Err(K::Punycode);
        }
    }
    let last = name.rsplit('.').next().unwrap_or(name);
    let hex = last
        .strip_prefix("0x")
        .is_some_and(|h| h.bytes().all(|c| c.is_ascii_hexdigit()));
    if last.bytes().all(|c| c.is_ascii_digit()) || hex {
        return Err(K::AmbiguousIpv4(name.to_owned()));
    }
    Ok(())
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.scheme)?;
        match &self.host {
            HostMatch::Exact(name) => f.write_str(name)?,
            HostMatch::Wildcard(suffix) => write!(f, "*.{suffix}")?,
            HostMatch::Ip(IpAddr::V4(ip)) => write!(f, "{ip}")?,
            HostMatch::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]")?,
        }
        write!(f, ":{}", self.port)
    }
}

impl FromStr for HostPattern {
    type Err = HostPatternError;
    fn from_str(s: &str) -> Result<Self, HostPatternError> {
        HostPattern::parse(s)
    }
}

impl TryFrom<String> for HostPattern {
    type Error = HostPatternError;
    fn try_from(s: String) -> Result<Self, HostPatternError> {
        HostPattern::parse(&s)
    }
}

impl From<HostPattern> for String {
    fn from(p: HostPattern) -> String {
        p.to_string()
    }
}

impl JsonSchema for HostPattern {
    fn schema_name() -> Cow<'static, str> {
        "HostPattern".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "An allowed outbound destination: scheme://host[:port], where \
                scheme is https or http, host is a DNS name, \"*.\" followed by a name of \
                two or more labels, an IPv4 address or an IPv6 address in brackets, and \
                port defaults to 443 (https) or 80 (http). No path, query or user info.",
            "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://[^/?#@\\s]+$",
            "examples": ["https://api.example.com", "https://*.example.com:8443", "http://127.0.0.1:8080"]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use HostPatternErrorKind as K;

    fn p(s: &str) -> HostPattern {
        HostPattern::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    fn err(s: &str) -> HostPatternErrorKind {
        HostPattern::parse(s).expect_err(s).kind
    }

    #[test]
    fn canonical_spelling() {
        for (input, canonical) in [
            ("https://api.example.com", "https://api.example.com:443"),
            ("HTTPS://API.Example.COM", "https://api.example.com:443"),
            ("http://localhost", "http://localhost:80"),
            ("https://*.example.com:8443", "https://*.example.com:8443"),
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
            ("https://[::1]", "https://[::1]:443"),
            (
                "https://[2001:DB8:0:0::1]:9000",
                "https://[2001:db8::1]:9000",
            ),
            ("https://[::ffff:10.0.0.1]", "https://10.0.0.1:443"),
            ("https://a-b.c0.example", "https://a-b.c0.example:443"),
        ] {
            let pattern = p(input);
            assert_eq!(pattern.to_string(), canonical, "{input}");
            assert_eq!(p(canonical), pattern, "canonical spelling parses back");
        }
    }

    #[test]
    fn parts() {
        let w = p("https://*.example.com:8443");
        assert_eq!(w.scheme(), Scheme::Https);
        assert_eq!(w.host(), &HostMatch::Wildcard("example.com".into()));
        assert_eq!(w.port(), 8443);
        assert_eq!(w.names_ip(), None);
        assert_eq!(
            p("http://127.0.0.1:8080").names_ip(),
            Some("127.0.0.1".parse().unwrap())
        );
        assert_eq!(
            p("http://[fe80::1]").names_ip(),
            Some("fe80::1".parse().unwrap())
        );
        assert_eq!(
            p("https://x.example").host(),
            &HostMatch::Exact("x.example".into())
        );
    }

    #[test]
    fn rejections_say_why() {
        assert_eq!(err(""), K::Empty);
        assert_eq!(err("https://a.com /"), K::Whitespace);
        assert_eq!(
            err("api.example.com"),
            K::MissingScheme("api.example.com".into())
        );
        assert_eq!(err("ftp://example.com"), K::UnsupportedScheme("ftp".into()));
        assert_eq!(err("wss://example.com"), K::UnsupportedScheme("wss".into()));
        assert_eq!(err("https://user:pw@example.com"), K::Userinfo);
        assert_eq!(err("https://user@example.com/x"), K::Userinfo);
        assert_eq!(err("https://example.com/"), K::Path("/".into()));
        assert_eq!(err("https://example.com/api?x=1"), K::Path("/api".into()));
        assert_eq!(err("https://example.com?x=1"), K::Query);
        assert_eq!(err("https://example.com#top"), K::Fragment);
        assert_eq!(err("https://"), K::EmptyHost);
        assert_eq!(err("https://:443"), K::EmptyHost);
        assert_eq!(err("https://example.com:0"), K::InvalidPort("0".into()));
        assert_eq!(
            err("https://example.com:65536"),
            K::InvalidPort("65536".into())
        );
        assert_eq!(
            err("https://example.com:99999999999"),
            K::InvalidPort("99999999999".into())
        );
        assert_eq!(err("https://example.com:"), K::InvalidPort("".into()));
        assert_eq!(err("https://example.com:+80"), K::InvalidPort("+80".into()));
        assert_eq!(err("https://*example.com"), K::BadWildcard);
        assert_eq!(err("https://api.*.example.com"), K::BadWildcard);
        assert_eq!(err("https://*.*.example.com"), K::BadWildcard);
        assert_eq!(err("https://*"), K::BadWildcard);
        assert_eq!(err("https://*.com"), K::WildcardTooBroad("com".into()));
        assert_eq!(err("https://*.10.0.0.1"), K::WildcardIp);
        assert_eq!(err("https://bücher.example"), K::NonAscii);
        assert_eq!(err("https://xn--bcher-kva.example"), K::Punycode);
        assert_eq!(err("https://127.1"), K::AmbiguousIpv4("127.1".into()));
        assert_eq!(err("https://0x7f.1"), K::AmbiguousIpv4("0x7f.1".into()));
        assert_eq!(
            err("https://010.0.0.1"),
            K::AmbiguousIpv4("010.0.0.1".into())
        );
        assert_eq!(
            err("https://2130706433"),
            K::AmbiguousIpv4("2130706433".into())
        );
        assert!(matches!(
            err("https://example.com."),
            K::InvalidHostName { .. }
        ));
        assert!(matches!(err("https://a..com"), K::InvalidHostName { .. }));
        assert!(matches!(err("https://-a.com"), K::InvalidHostName { .. }));
        assert!(matches!(err("https://a_b.com"), K::InvalidHostName { .. }));
        assert!(matches!(
            err(&format!("https://{}.com", "a".repeat(64))),
            K::InvalidHostName { .. }
        ));
        assert!(matches!(err("https://[::1"), K::InvalidIpv6(_)));
        assert!(matches!(err("https://[::1]x"), K::InvalidIpv6(_)));
        assert!(matches!(err("https://[fe80::1%eth0]"), K::InvalidIpv6(_)));
        assert!(matches!(err("https://[example.com]"), K::InvalidIpv6(_)));
        assert!(matches!(err("https://::1"), K::InvalidIpv6(_)));
        assert_eq!(
            HostPattern::parse("ftp://x.com").unwrap_err().to_string(),
            "invalid host pattern \"ftp://x.com\": scheme \"ftp\" is not allowed; use \"https\" (or \"http\")"
        );
    }

    #[test]
    fn exact_matching() {
        let pat = p("https://api.example.com");
        assert!(pat.matches("https", "api.example.com", 443));
        assert!(pat.matches("HTTPS", "API.Example.com", 443));
        assert!(pat.matches("https", "api.example.com.", 443));
        assert!(!pat.matches("http", "api.example.com", 443));
        assert!(!pat.matches("https", "api.example.com", 8443));
        assert!(!pat.matches("https", "x.api.example.com", 443));
        assert!(!pat.matches("https", "example.com", 443));
        assert!(!pat.matches("https", "api.example.com.evil.com", 443));
        assert!(!pat.matches("https", "api.example.com:443", 443));
        assert!(!pat.matches("https", "", 443));
    }

    #[test]
    fn wildcard_matching() {
        let pat = p("https://*.example.com:8443");
        assert!(pat.matches("https", "a.example.com", 8443));
        assert!(pat.matches("https", "a.b.example.com", 8443));
        assert!(pat.matches("https", "A.EXAMPLE.COM", 8443));
        assert!(!pat.matches("https", "example.com", 8443), "never the apex");
        assert!(!pat.matches("https", ".example.com", 8443));
        assert!(!pat.matches("https", "badexample.com", 8443));
        assert!(!pat.matches("https", "a.example.com", 443));
        assert!(!pat.matches("https", "a.example.com.evil.net", 8443));
        assert!(!pat.matches("https", "a/x.example.com", 8443));
        assert!(!pat.matches("https", "a..example.com", 8443));
    }

    #[test]
    fn ip_matching() {
        let v4 = p("http://127.0.0.1:8080");
        assert!(v4.matches("http", "127.0.0.1", 8080));
        assert!(
            v4.matches("http", "[::ffff:127.0.0.1]", 8080),
            "mapped address is the same host"
        );
        assert!(!v4.matches("http", "127.0.0.2", 8080));
        assert!(!v4.matches("http", "localhost", 8080));
        let v6 = p("https://[2001:db8::1]");
        assert!(v6.matches("https", "[2001:db8::1]", 443));
        assert!(v6.matches("https", "2001:DB8:0::1", 443));
        assert!(!v6.matches("https", "[2001:db8::2]", 443));
        // A name pattern never matches an address, even one the name resolves to.
        assert!(!p("http://localhost").matches("http", "127.0.0.1", 80));
        assert!(!p("https://*.example.com").matches("https", "10.0.0.1", 443));
    }

    #[test]
    fn serde_uses_canonical_spelling() {
        let pat: HostPattern = serde_json::from_str("\"https://API.example.com\"").unwrap();
        assert_eq!(
            serde_json::to_string(&pat).unwrap(),
            "\"https://api.example.com:443\""
        );
        let e = serde_json::from_str::<HostPattern>("\"https://x.com/\"").unwrap_err();
        assert!(
            e.to_string().contains("the path \"/\" is not allowed"),
            "{e}"
        );
    }

    #[test]
    fn covers_compares_patterns_not_requests() {
        let p = |s: &str| HostPattern::parse(s).unwrap();
        assert!(p("https://*.example.com").covers(&p("https://api.example.com")));
        assert!(p("https://*.example.com").covers(&p("https://*.a.example.com")));
        assert!(p("https://*.example.com").covers(&p("https://*.example.com")));
        assert!(!p("https://*.example.com").covers(&p("https://example.com")));
        assert!(!p("https://*.example.com").covers(&p("https://api.example.com:8443")));
        assert!(!p("https://*.example.com").covers(&p("http://api.example.com")));
        assert!(!p("https://api.example.com").covers(&p("https://*.example.com")));
        assert!(!p("https://*.example.com").covers(&p("https://badexample.com")));
        assert!(p("http://10.0.0.5:80").covers(&p("http://10.0.0.5")));
    }
}
