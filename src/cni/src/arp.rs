//! IPv4 ARP messages (Ethernet/IPv4 only) as plain bytes: the requests of the coordinator's
//! address-conflict probe (RFC 5227, sender address 0.0.0.0) and gateway check, gratuitous
//! announcements, and the parsing of what answers them. [`crate::raw_link`] puts them on the wire
//! (the kernel adds the link-layer header).

use std::net::Ipv4Addr;

pub const ARP_REQUEST: u16 = 1;
pub const ARP_REPLY: u16 = 2;
/// Every ARP message here goes to the Ethernet broadcast address.
pub const BROADCAST: [u8; 6] = [0xff; 6];

/// Build an Ethernet/IPv4 ARP payload (without the link-layer header, which the kernel adds).
pub fn arp_packet(
    operation: u16,
    sender_mac: [u8; 6],
    sender_ip: Ipv4Addr,
    target_mac: [u8; 6],
    target_ip: Ipv4Addr,
) -> [u8; 28] {
    let mut packet = [0u8; 28];
    packet[0..2].copy_from_slice(&1u16.to_be_bytes()); // hardware type: Ethernet
    packet[2..4].copy_from_slice(&0x0800u16.to_be_bytes()); // protocol type: IPv4
    packet[4] = 6;
    packet[5] = 4;
    packet[6..8].copy_from_slice(&operation.to_be_bytes());
    packet[8..14].copy_from_slice(&sender_mac);
    packet[14..18].copy_from_slice(&sender_ip.octets());
    packet[18..24].copy_from_slice(&target_mac);
    packet[24..28].copy_from_slice(&target_ip.octets());
    packet
}

/// A decoded ARP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpPacket {
    pub operation: u16,
    pub sender_mac: [u8; 6],
    pub sender_ip: Ipv4Addr,
    pub target_mac: [u8; 6],
    pub target_ip: Ipv4Addr,
}

/// Decode an Ethernet/IPv4 ARP message; anything else is `None`.
pub fn parse_arp(bytes: &[u8]) -> Option<ArpPacket> {
    if bytes.len() < 28
        || bytes[0..2] != [0, 1]
        || bytes[2..4] != [8, 0]
        || bytes[4] != 6
        || bytes[5] != 4
    {
        return None;
    }
    let mac =
        |range: std::ops::Range<usize>| -> Option<[u8; 6]> { bytes.get(range)?.try_into().ok() };
    let ip = |start: usize| {
        Ipv4Addr::new(
            bytes[start],
            bytes[start + 1],
            bytes[start + 2],
            bytes[start + 3],
        )
    };
    Some(ArpPacket {
        operation: u16::from_be_bytes([bytes[6], bytes[7]]),
        sender_mac: mac(8..14)?,
        sender_ip: ip(14),
        target_mac: mac(18..24)?,
        target_ip: ip(24),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_round_trip() {
        let packet = arp_packet(
            ARP_REQUEST,
            [2, 0, 0, 0, 0, 1],
            Ipv4Addr::UNSPECIFIED,
            [0; 6],
            Ipv4Addr::new(10, 6, 168, 173),
        );
        let parsed = parse_arp(&packet).unwrap();
        assert_eq!(parsed.operation, ARP_REQUEST);
        assert_eq!(parsed.sender_ip, Ipv4Addr::UNSPECIFIED);
        assert_eq!(parsed.target_ip, Ipv4Addr::new(10, 6, 168, 173));
        assert_eq!(parsed.sender_mac, [2, 0, 0, 0, 0, 1]);
        assert!(parse_arp(&packet[..20]).is_none());
    }
}
