//! Which addresses the host never reaches by name.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The class of an address the host refuses to reach through a DNS name, or `None` for
/// an ordinary public address. IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible and
/// NAT64 (`64:ff9b::/96`) forms are judged by the IPv4 address inside.
pub fn blocked_class(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => blocked_v4(v4),
        IpAddr::V6(v6) => blocked_v6(v6),
    }
}

fn blocked_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    Some(if ip.is_loopback() {
        "loopback"
    } else if ip.is_private() {
        "private"
    } else if ip.is_link_local() {
        "link-local"
    } else if ip.is_unspecified() || a == 0 {
        "unspecified"
    } else if ip.is_broadcast() {
        "broadcast"
    } else if a == 100 && (64..128).contains(&b) {
        "carrier-grade NAT"
    } else if ip.is_multicast() {
        "multicast"
    } else if a >= 240 {
        "reserved"
    } else {
        return None;
    })
}

fn blocked_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return blocked_v4(v4);
    }
    let segments = ip.segments();
    // NAT64 well-known prefix and the deprecated IPv4-compatible form (::a.b.c.d).
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || (segments[..6] == [0; 6] && segments[6] != 0)
    {
        let [a, b] = segments[6].to_be_bytes();
        let [c, d] = segments[7].to_be_bytes();
        return blocked_v4(Ipv4Addr::new(a, b, c, d));
    }
    Some(if ip.is_loopback() {
        "loopback"
    } else if ip.is_unspecified() {
        "unspecified"
    } else if segments[0] & 0xfe00 == 0xfc00 {
        "unique local (private)"
    } else if segments[0] & 0xffc0 == 0xfe80 {
        "link-local"
    } else if ip.is_multicast() {
        "multicast"
    } else {
        return None;
    })
}

#[cfg(test)]
mod tests {
    use super::blocked_class;

    #[test]
    fn classifies_addresses_the_host_must_not_reach_by_name() {
        for (addr, class) in [
            ("127.0.0.1", Some("loopback")),
            ("127.5.6.7", Some("loopback")),
            ("10.1.2.3", Some("private")),
            ("172.16.0.1", Some("private")),
            ("192.168.1.1", Some("private")),
            ("169.254.169.254", Some("link-local")),
            ("0.0.0.0", Some("unspecified")),
            ("255.255.255.255", Some("broadcast")),
            ("100.64.0.1", Some("carrier-grade NAT")),
            ("100.127.255.255", Some("carrier-grade NAT")),
            ("::1", Some("loopback")),
            ("::", Some("unspecified")),
            ("fc00::1", Some("unique local (private)")),
            ("fd12:3456::1", Some("unique local (private)")),
            ("fe80::1", Some("link-local")),
            ("::ffff:127.0.0.1", Some("loopback")),
            ("::ffff:10.0.0.1", Some("private")),
            ("64:ff9b::a9fe:a9fe", Some("link-local")),
            ("::127.0.0.1", Some("loopback")),
            ("93.184.216.34", None),
            ("100.128.0.1", None),
            ("2606:4700::1111", None),
            ("::ffff:93.184.216.34", None),
        ] {
            assert_eq!(blocked_class(addr.parse().unwrap()), class, "{addr}");
        }
    }
}
