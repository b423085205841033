//! CIDRs: parsing for a family (`IsCIDR`), the canonical-form check (`IsFormatCIDR`), the
//! `ipam.spidernet.io/ippool-cidr` / `subnet-cidr` label value, containment and overlap of subnets,
//! and address-in-subnet tests.
//!
//! Parsing follows Go's `net.ParseCIDR`: an address without zone, a `/`, and a decimal prefix length
//! (leading zeros allowed, no sign) not larger than the family width. The address part keeps its
//! host bits (`172.18.40.1/24` parses); [`check_canonical`] is what rejects such a subnet in a pool.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use thiserror::Error;

use crate::ip::{IpVersion, format_ip, from_u128, to_u128};
use crate::range::IpRange;

/// Errors of CIDR parsing and checks.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CidrError {
    /// Go's `net.ParseError` for a CIDR.
    #[error("invalid CIDR address: {0}")]
    Unparsable(String),
    /// Not a CIDR of the expected family (`ErrInvalidCIDRFormat`).
    #[error("invalid CIDR format in IPv{version} '{text}'")]
    InvalidFormat { version: IpVersion, text: String },
    /// Host bits set (`IsFormatCIDR`).
    #[error("unformatted subnet {given}, please change it to {canonical}")]
    Unformatted { given: String, canonical: String },
    /// Neither an address nor a prefix (`ParseIPOrCIDR`).
    #[error("invalid IP or CIDR '{0}'")]
    InvalidIpOrCidr(String),
}

impl CidrError {
    /// A stable category for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            CidrError::Unparsable(_) | CidrError::InvalidFormat { .. } => "invalid_cidr",
            CidrError::Unformatted { .. } => "unformatted_cidr",
            CidrError::InvalidIpOrCidr(_) => "invalid_ip_or_cidr",
        }
    }
}

/// A parsed CIDR: the address as written plus its prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    version: IpVersion,
    address: u128,
    prefix_len: u8,
}

impl Cidr {
    /// Go's `net.ParseCIDR` (either family); the error text is Go's.
    pub fn parse_any(text: &str) -> Result<Cidr, CidrError> {
        let unparsable = || CidrError::Unparsable(text.to_string());
        let (address_text, prefix_text) = text.split_once('/').ok_or_else(unparsable)?;
        let (version, address) = if let Ok(v4) = address_text.parse::<Ipv4Addr>() {
            (IpVersion::V4, u128::from(u32::from(v4)))
        } else {
            let v6 = address_text.parse::<Ipv6Addr>().map_err(|_| unparsable())?;
            // Go reports IPv4-mapped prefixes as IPv4 in one check and IPv6 in another; such a
            // subnet can never be used consistently, so it is refused outright.
            if v6.to_ipv4_mapped().is_some() {
                return Err(unparsable());
            }
            (IpVersion::V6, u128::from(v6))
        };
        if prefix_text.is_empty() || !prefix_text.bytes().all(|byte| byte.is_ascii_digit()) {
            return Err(unparsable());
        }
        let digits = prefix_text.trim_start_matches('0');
        if digits.len() > 3 {
            return Err(unparsable());
        }
        let prefix_len: u16 = if digits.is_empty() {
            0
        } else {
            digits.parse().map_err(|_| unparsable())?
        };
        if prefix_len > u16::from(version.bits()) {
            return Err(unparsable());
        }
        Ok(Cidr {
            version,
            address,
            prefix_len: prefix_len as u8,
        })
    }

    /// `IsCIDR` / `ParseCIDR`: a CIDR of the given family.
    pub fn parse(version: IpVersion, text: &str) -> Result<Cidr, CidrError> {
        match Cidr::parse_any(text) {
            Ok(cidr) if cidr.version == version => Ok(cidr),
            _ => Err(CidrError::InvalidFormat {
                version,
                text: text.to_string(),
            }),
        }
    }

    pub fn version(&self) -> IpVersion {
        self.version
    }

    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// The address as written (host bits kept).
    pub fn address(&self) -> IpAddr {
        from_u128(self.version, self.address)
    }

    fn host_mask(&self) -> u128 {
        let host_bits = u32::from(self.version.bits() - self.prefix_len);
        if host_bits >= 128 {
            u128::MAX
        } else {
            (1u128 << host_bits) - 1
        }
    }

    /// First address of the subnet as an integer.
    pub fn network_value(&self) -> u128 {
        self.address & !self.host_mask() & self.version.max_value()
    }

    /// Last address of the subnet as an integer.
    pub fn last_value(&self) -> u128 {
        self.network_value() | self.host_mask()
    }

    /// The network address.
    pub fn network(&self) -> IpAddr {
        from_u128(self.version, self.network_value())
    }

    /// All addresses of the subnet as a range.
    pub fn as_range(&self) -> IpRange {
        // network <= last always holds, so the constructor cannot fail.
        IpRange::new(self.version, self.network_value(), self.last_value())
            .unwrap_or_else(|| IpRange::single(self.network()))
    }

    /// Go's `IPNet.String()`: the network address and prefix length.
    pub fn canonical(&self) -> String {
        format!(
            "{}/{}",
            format_ip(self.version, self.network_value()),
            self.prefix_len
        )
    }

    /// Whether the address (of the same family) is inside the subnet.
    pub fn contains_ip(&self, address: &IpAddr) -> bool {
        IpVersion::of(address) == self.version && self.contains_value(to_u128(address))
    }

    pub(crate) fn contains_value(&self, value: u128) -> bool {
        self.network_value() <= value && value <= self.last_value()
    }

    /// `ContainsIPRange`: both ends of the range inside the subnet.
    pub fn contains_range(&self, range: &IpRange) -> bool {
        range.version() == self.version
            && self.contains_value(range.start())
            && self.contains_value(range.end())
    }

    /// `ContainsCIDR`: `self` includes `other`.
    pub fn contains_cidr(&self, other: &Cidr) -> bool {
        self.version == other.version
            && self.prefix_len <= other.prefix_len
            && self.contains_value(other.network_value())
    }

    /// `IsCIDROverlap`: either subnet contains the other.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.contains_cidr(other) || other.contains_cidr(self)
    }

    /// `<address>/<prefix length>` for an address of this subnet (the CNI / endpoint form).
    pub fn address_with_prefix(&self, address: &IpAddr) -> String {
        format!("{}/{}", address, self.prefix_len)
    }
}

impl fmt::Display for Cidr {
    /// The address as written plus prefix length (not masked).
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{}/{}",
            format_ip(self.version, self.address),
            self.prefix_len
        )
    }
}

/// `IsFormatCIDR`: the text must be exactly the canonical network form.
pub fn check_canonical(text: &str) -> Result<Cidr, CidrError> {
    let cidr = Cidr::parse_any(text)?;
    let canonical = cidr.canonical();
    if canonical != text {
        return Err(CidrError::Unformatted {
            given: text.to_string(),
            canonical,
        });
    }
    Ok(cidr)
}

/// `CIDRToLabelValue`: up to 3 `.` and up to 7 `:` replaced by `-`, then the `/`.
pub fn cidr_label_value(version: IpVersion, text: &str) -> Result<String, CidrError> {
    Cidr::parse(version, text)?;
    let value = replace_first_n(text, '.', 3);
    let value = replace_first_n(&value, ':', 7);
    Ok(replace_first_n(&value, '/', 1))
}

fn replace_first_n(text: &str, from: char, count: usize) -> String {
    let mut replaced = 0;
    text.chars()
        .map(|character| {
            if character == from && replaced < count {
                replaced += 1;
                '-'
            } else {
                character
            }
        })
        .collect()
}

/// An address with a prefix length, host bits kept (Go's `netip.Prefix`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpPrefix {
    pub address: IpAddr,
    pub prefix_len: u8,
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}/{}", self.address, self.prefix_len)
    }
}

/// `ParseIPOrCIDR`: a bare address becomes a /32 or /128; a prefix is kept as written.
pub fn parse_ip_or_cidr(text: &str) -> Result<IpPrefix, CidrError> {
    let invalid = || CidrError::InvalidIpOrCidr(text.to_string());
    if !text.contains('/') {
        let address: IpAddr = text.parse().map_err(|_| invalid())?;
        let prefix_len = match address {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        return Ok(IpPrefix {
            address,
            prefix_len,
        });
    }
    let (address_text, bits_text) = text.split_once('/').ok_or_else(invalid)?;
    let address: IpAddr = address_text.parse().map_err(|_| invalid())?;
    // netip.ParsePrefix: decimal, no sign, no leading zero (except "0" itself).
    if bits_text.is_empty()
        || !bits_text.bytes().all(|byte| byte.is_ascii_digit())
        || (bits_text.len() > 1 && bits_text.starts_with('0'))
    {
        return Err(invalid());
    }
    let prefix_len: u8 = bits_text.parse().map_err(|_| invalid())?;
    let max = match address {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    if prefix_len > max {
        return Err(invalid());
    }
    Ok(IpPrefix {
        address,
        prefix_len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // G7
    #[test]
    fn contains_ip_range_requires_both_ends_inside() {
        let v4 = Cidr::parse(IpVersion::V4, "172.18.40.0/24").unwrap();
        let outside = IpRange::parse(IpVersion::V4, "172.18.40.254-172.18.41.1").unwrap();
        let inside = IpRange::parse(IpVersion::V4, "172.18.40.1-172.18.40.2").unwrap();
        assert!(!v4.contains_range(&outside));
        assert!(v4.contains_range(&inside));
        let v6 = Cidr::parse(IpVersion::V6, "abcd:1234::/120").unwrap();
        let outside = IpRange::parse(IpVersion::V6, "abcd:1234::fd-abcd:1234::101").unwrap();
        assert!(!v6.contains_range(&outside));
    }

    // G11
    #[test]
    fn cidr_label_value_replaces_separators() {
        assert_eq!(
            cidr_label_value(IpVersion::V4, "172.18.40.0/24").unwrap(),
            "172-18-40-0-24"
        );
        assert_eq!(
            cidr_label_value(IpVersion::V6, "abcd:1234::/120").unwrap(),
            "abcd-1234---120"
        );
        assert_eq!(
            cidr_label_value(IpVersion::V6, "fd00::/64").unwrap(),
            "fd00---64"
        );
        assert_eq!(
            cidr_label_value(IpVersion::V4, "fd00::/64")
                .unwrap_err()
                .to_string(),
            "invalid CIDR format in IPv4 'fd00::/64'"
        );
    }

    // G17
    #[test]
    fn parse_ip_or_cidr_adds_host_prefix_to_bare_addresses() {
        assert_eq!(
            parse_ip_or_cidr("1.1.1.1").unwrap().to_string(),
            "1.1.1.1/32"
        );
        assert_eq!(
            parse_ip_or_cidr("fd00::1").unwrap().to_string(),
            "fd00::1/128"
        );
        assert_eq!(
            parse_ip_or_cidr("1.1.0.0/16").unwrap().to_string(),
            "1.1.0.0/16"
        );
        let error = parse_ip_or_cidr("invalid cir").unwrap_err();
        assert_eq!(error.metric_label(), "invalid_ip_or_cidr");
        assert!(parse_ip_or_cidr("1.1.0.0/33").is_err());
        assert!(parse_ip_or_cidr("1.1.0.0/016").is_err());
    }

    // G44
    #[test]
    fn non_canonical_subnet_names_the_canonical_form() {
        let error = check_canonical("172.18.40.1/24").unwrap_err();
        assert_eq!(
            error.to_string(),
            "unformatted subnet 172.18.40.1/24, please change it to 172.18.40.0/24"
        );
        assert_eq!(error.metric_label(), "unformatted_cidr");
        assert!(check_canonical("172.18.40.0/24").is_ok());
        assert!(check_canonical("fd00::/64").is_ok());
        assert_eq!(
            check_canonical("FD00::/64").unwrap_err().to_string(),
            "unformatted subnet FD00::/64, please change it to fd00::/64"
        );
        assert_eq!(
            check_canonical("10.0.0.0/024").unwrap_err().to_string(),
            "unformatted subnet 10.0.0.0/024, please change it to 10.0.0.0/24"
        );
    }

    #[test]
    fn parse_rejects_bad_prefixes_with_go_text() {
        for text in [
            "10.6.0.0/33",
            "10.6.0.0",
            "10.6.0.0/",
            "10.6.0.0/+8",
            "10.6.0.0/-1",
            "fd00::/129",
            "fe80::1%eth0/64",
        ] {
            assert_eq!(
                Cidr::parse_any(text).unwrap_err().to_string(),
                format!("invalid CIDR address: {text}")
            );
        }
        assert!(Cidr::parse_any("0.0.0.0/0").is_ok());
        assert!(Cidr::parse_any("::/0").is_ok());
    }

    #[test]
    fn subnet_containment_and_overlap() {
        let wide = Cidr::parse(IpVersion::V4, "172.18.40.0/24").unwrap();
        let narrow = Cidr::parse(IpVersion::V4, "172.18.40.0/25").unwrap();
        let other = Cidr::parse(IpVersion::V4, "172.18.41.0/24").unwrap();
        assert!(wide.contains_cidr(&narrow));
        assert!(!narrow.contains_cidr(&wide));
        assert!(wide.overlaps(&narrow) && narrow.overlaps(&wide));
        assert!(!wide.overlaps(&other));
        assert!(wide.contains_ip(&"172.18.40.255".parse().unwrap()));
        assert!(!wide.contains_ip(&"172.18.41.0".parse().unwrap()));
        assert!(!wide.contains_ip(&"::1".parse().unwrap()));
        let all = Cidr::parse(IpVersion::V6, "::/0").unwrap();
        assert_eq!(all.as_range().len(), u128::MAX);
        assert_eq!(
            wide.address_with_prefix(&"172.18.40.40".parse().unwrap()),
            "172.18.40.40/24"
        );
    }
}
