//! IP families and single addresses: parsing an address for a given family with upstream's rules,
//! and the `u128` arithmetic every other module builds on.
//!
//! Upstream (`pkg/ip/ip.go`) validates addresses with govalidator (`net.ParseIP` plus "contains a `.`"
//! for IPv4, "contains a `:`" for IPv6) and does arithmetic on 16-byte slices or `big.Int`s. Here an
//! address of either family is a `u128` (IPv4 uses the low 32 bits), so ranges and sets never
//! materialise individual addresses. Text output is Go's `net.IP.String()`, which for IPv6 is RFC 5952
//! and identical to Rust's `Display`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The IP family of a pool, subnet, range or address (`spec.ipVersion`: `4` or `6`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpVersion {
    V4,
    V6,
}

impl IpVersion {
    /// Maps the numeric `spec.ipVersion` value; anything but 4 or 6 is `None`.
    pub fn from_number(version: i64) -> Option<IpVersion> {
        match version {
            4 => Some(IpVersion::V4),
            6 => Some(IpVersion::V6),
            _ => None,
        }
    }

    /// The numeric value written to `spec.ipVersion`.
    pub fn number(self) -> u8 {
        match self {
            IpVersion::V4 => 4,
            IpVersion::V6 => 6,
        }
    }

    /// The family of an address.
    pub fn of(address: &IpAddr) -> IpVersion {
        match address {
            IpAddr::V4(_) => IpVersion::V4,
            IpAddr::V6(_) => IpVersion::V6,
        }
    }

    /// The largest address of the family as an integer.
    pub fn max_value(self) -> u128 {
        match self {
            IpVersion::V4 => u128::from(u32::MAX),
            IpVersion::V6 => u128::MAX,
        }
    }

    /// Address width in bits (32 or 128).
    pub fn bits(self) -> u8 {
        match self {
            IpVersion::V4 => 32,
            IpVersion::V6 => 128,
        }
    }

    /// The default route destination of the family (`0.0.0.0/0` or `::/0`).
    pub fn default_route_dst(self) -> &'static str {
        match self {
            IpVersion::V4 => "0.0.0.0/0",
            IpVersion::V6 => "::/0",
        }
    }

    /// Label value used by auto-created pools (`ipam.spidernet.io/ip-version`).
    pub fn label_value(self) -> &'static str {
        match self {
            IpVersion::V4 => "IPv4",
            IpVersion::V6 => "IPv6",
        }
    }
}

impl fmt::Display for IpVersion {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}", self.number())
    }
}

impl Serialize for IpVersion {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u8(self.number())
    }
}

impl<'de> Deserialize<'de> for IpVersion {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let number = i64::deserialize(deserializer)?;
        IpVersion::from_number(number).ok_or_else(|| {
            serde::de::Error::custom(format!("invalid IP version '{number}', expected 4 or 6"))
        })
    }
}

/// Parses an address of the given family with govalidator's `IsIPv4` / `IsIPv6` semantics.
///
/// IPv4 must be a plain dotted quad (Go and Rust both reject leading zeros). IPv6 is any RFC 4291
/// text form without a zone, except IPv4-mapped addresses (`::ffff:a.b.c.d`): Go treats those as IPv4
/// (`To4() != nil`), so they are never usable in an IPv6 pool.
pub fn parse_ip(version: IpVersion, text: &str) -> Option<IpAddr> {
    match version {
        IpVersion::V4 => text.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
        IpVersion::V6 => {
            let address = text.parse::<Ipv6Addr>().ok()?;
            if address.to_ipv4_mapped().is_some() {
                return None;
            }
            Some(IpAddr::V6(address))
        }
    }
}

/// Parses an address of either family (IPv4-mapped IPv6 text is read as the IPv4 address, like Go).
pub fn parse_any_ip(text: &str) -> Option<IpAddr> {
    if let Ok(address) = text.parse::<Ipv4Addr>() {
        return Some(IpAddr::V4(address));
    }
    let address = text.parse::<Ipv6Addr>().ok()?;
    match address.to_ipv4_mapped() {
        Some(mapped) => Some(IpAddr::V4(mapped)),
        None => Some(IpAddr::V6(address)),
    }
}

/// The integer value of an address (IPv4 in the low 32 bits).
pub fn to_u128(address: &IpAddr) -> u128 {
    match address {
        IpAddr::V4(v4) => u128::from(u32::from(*v4)),
        IpAddr::V6(v6) => u128::from(*v6),
    }
}

/// The address of the given family for an integer value; IPv4 values are truncated to 32 bits
/// (callers only pass values that came from IPv4 addresses).
pub fn from_u128(version: IpVersion, value: u128) -> IpAddr {
    match version {
        IpVersion::V4 => IpAddr::V4(Ipv4Addr::from((value & u128::from(u32::MAX)) as u32)),
        IpVersion::V6 => IpAddr::V6(Ipv6Addr::from(value)),
    }
}

/// Go's `net.IP.String()` for an address of the given family.
pub fn format_ip(version: IpVersion, value: u128) -> String {
    from_u128(version, value).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_text_with_leading_zeros_is_rejected_like_go() {
        assert_eq!(parse_ip(IpVersion::V4, "010.0.0.1"), None);
        assert!(parse_ip(IpVersion::V4, "10.0.0.1").is_some());
    }

    #[test]
    fn ipv6_text_is_printed_in_rfc_5952_form() {
        let address = parse_ip(IpVersion::V6, "2001:DB8:0:0:1:0:0:1");
        assert_eq!(
            address.map(|a| a.to_string()),
            Some("2001:db8::1:0:0:1".to_string())
        );
    }

    #[test]
    fn ipv4_mapped_ipv6_is_not_an_ipv6_pool_address() {
        assert_eq!(parse_ip(IpVersion::V6, "::ffff:1.2.3.4"), None);
        assert_eq!(
            parse_any_ip("::ffff:1.2.3.4"),
            Some(IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4)))
        );
    }

    #[test]
    fn family_mismatch_is_rejected() {
        assert_eq!(parse_ip(IpVersion::V4, "fd00::1"), None);
        assert_eq!(parse_ip(IpVersion::V6, "10.0.0.1"), None);
    }

    #[test]
    fn ip_version_round_trips_as_a_number() {
        assert_eq!(serde_json::to_string(&IpVersion::V6).ok(), Some("6".into()));
        let parsed: Result<IpVersion, _> = serde_json::from_str("4");
        assert_eq!(parsed.ok(), Some(IpVersion::V4));
        assert!(serde_json::from_str::<IpVersion>("5").is_err());
    }
}
