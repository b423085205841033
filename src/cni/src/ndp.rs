//! IPv6 Neighbor Discovery messages (RFC 4861) as plain bytes: the neighbour solicitations of the
//! coordinator's duplicate-address probe (RFC 4862 form: source `::`, no link-layer option) and gateway
//! check, the unsolicited neighbour advertisement that announces an address after a MAC change, and the
//! parsing of the advertisements that answer them. Whole IPv6 packets are built here, because a
//! duplicate-address probe must leave with the unspecified source address, which an `AF_INET6` socket
//! cannot send; [`crate::raw_link`] puts them on the wire.

use std::net::Ipv6Addr;

/// The all-nodes multicast group, destination of unsolicited advertisements.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

const IPV6_HEADER_LENGTH: usize = 40;
const NEXT_HEADER_ICMPV6: u8 = 58;
/// Neighbor Discovery messages carry hop limit 255 and receivers drop any other (RFC 4861 §7.1).
const HOP_LIMIT: u8 = 255;
const NEIGHBOUR_SOLICITATION: u8 = 135;
const NEIGHBOUR_ADVERTISEMENT: u8 = 136;
/// Type, code, checksum, reserved/flags and the target address.
const NDP_MESSAGE_LENGTH: usize = 24;
const SOURCE_LINK_ADDRESS: u8 = 1;
const TARGET_LINK_ADDRESS: u8 = 2;
const FLAG_ROUTER: u8 = 0x80;
const FLAG_SOLICITED: u8 = 0x40;
const FLAG_OVERRIDE: u8 = 0x20;

/// The solicited-node multicast group of `address`: `ff02::1:ff00:0/104` plus its low 24 bits.
pub fn solicited_node(address: Ipv6Addr) -> Ipv6Addr {
    let octets = address.octets();
    Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, octets[13], octets[14], octets[15],
    ])
}

/// The Ethernet address of an IPv6 multicast group: `33:33` plus the group's low 32 bits (RFC 2464 §7).
pub fn multicast_mac(group: Ipv6Addr) -> [u8; 6] {
    let octets = group.octets();
    [0x33, 0x33, octets[12], octets[13], octets[14], octets[15]]
}

/// The ICMPv6 checksum of `message` (RFC 4443 §2.3): the ones' complement of the ones' complement sum of
/// the pseudo-header (source, destination, upper-layer length, next header) and the message. A message
/// whose checksum field is already filled in sums to zero.
pub fn checksum(source: Ipv6Addr, destination: Ipv6Addr, message: &[u8]) -> u16 {
    let length = u32::try_from(message.len()).unwrap_or(u32::MAX);
    let mut pseudo_header = Vec::with_capacity(40);
    pseudo_header.extend_from_slice(&source.octets());
    pseudo_header.extend_from_slice(&destination.octets());
    pseudo_header.extend_from_slice(&length.to_be_bytes());
    pseudo_header.extend_from_slice(&[0, 0, 0, NEXT_HEADER_ICMPV6]);
    let mut sum: u32 = 0;
    for chunk in pseudo_header.chunks(2).chain(message.chunks(2)) {
        let word = match *chunk {
            [high, low] => u16::from_be_bytes([high, low]),
            [high] => u16::from_be_bytes([high, 0]),
            _ => 0,
        };
        sum += u32::from(word);
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv6 packet (hop limit 255, no extension headers) around the ICMPv6 `message`, its checksum set.
fn ipv6_packet(source: Ipv6Addr, destination: Ipv6Addr, mut message: Vec<u8>) -> Vec<u8> {
    message[2..4].fill(0);
    let sum = checksum(source, destination, &message);
    message[2..4].copy_from_slice(&sum.to_be_bytes());
    let payload_length = u16::try_from(message.len()).unwrap_or(u16::MAX);
    let mut packet = Vec::with_capacity(IPV6_HEADER_LENGTH + message.len());
    packet.extend_from_slice(&[0x60, 0, 0, 0]); // version 6, traffic class 0, flow label 0
    packet.extend_from_slice(&payload_length.to_be_bytes());
    packet.push(NEXT_HEADER_ICMPV6);
    packet.push(HOP_LIMIT);
    packet.extend_from_slice(&source.octets());
    packet.extend_from_slice(&destination.octets());
    packet.extend_from_slice(&message);
    packet
}

/// An ICMPv6 NS/NA message: type, code 0, checksum 0 (filled in later), the flags byte, the target and a
/// link-layer address option when `option` is given.
fn ndp_message(
    message_type: u8,
    flags: u8,
    target: Ipv6Addr,
    option: Option<(u8, [u8; 6])>,
) -> Vec<u8> {
    let mut message = vec![message_type, 0, 0, 0, flags, 0, 0, 0];
    message.extend_from_slice(&target.octets());
    if let Some((option_type, mac)) = option {
        message.extend_from_slice(&[option_type, 1]); // length in units of 8 octets
        message.extend_from_slice(&mac);
    }
    message
}

/// A packet ready to send and the Ethernet address it goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub packet: Vec<u8>,
    pub destination_mac: [u8; 6],
}

/// A neighbour solicitation for `target`, multicast to its solicited-node group. With an unspecified
/// `source` it is a duplicate-address probe, which must not carry a source link-layer address
/// (RFC 4862 §5.4.2); otherwise it carries `source_mac` so the target can answer directly.
pub fn solicitation(source: Ipv6Addr, source_mac: [u8; 6], target: Ipv6Addr) -> Outgoing {
    let group = solicited_node(target);
    let option = (!source.is_unspecified()).then_some((SOURCE_LINK_ADDRESS, source_mac));
    Outgoing {
        packet: ipv6_packet(
            source,
            group,
            ndp_message(NEIGHBOUR_SOLICITATION, 0, target, option),
        ),
        destination_mac: multicast_mac(group),
    }
}

/// An unsolicited neighbour advertisement to all nodes saying `address` is now at `mac`: override set,
/// solicited clear (RFC 4861 §7.2.6), so neighbours that cache `address` replace the old link address.
pub fn unsolicited_advertisement(address: Ipv6Addr, mac: [u8; 6]) -> Outgoing {
    Outgoing {
        packet: ipv6_packet(
            address,
            ALL_NODES,
            ndp_message(
                NEIGHBOUR_ADVERTISEMENT,
                FLAG_OVERRIDE,
                address,
                Some((TARGET_LINK_ADDRESS, mac)),
            ),
        ),
        destination_mac: multicast_mac(ALL_NODES),
    }
}

/// A decoded neighbour advertisement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Advertisement {
    pub source: Ipv6Addr,
    pub destination: Ipv6Addr,
    pub router: bool,
    pub solicited: bool,
    pub override_flag: bool,
    pub target: Ipv6Addr,
    /// The target link-layer address option, when present.
    pub target_mac: Option<[u8; 6]>,
}

fn ipv6_at(bytes: &[u8], start: usize) -> Option<Ipv6Addr> {
    let octets: [u8; 16] = bytes.get(start..start + 16)?.try_into().ok()?;
    Some(Ipv6Addr::from(octets))
}

/// Decode an IPv6 packet as a neighbour advertisement, applying the receiver's checks of RFC 4861 §7.1.2
/// that matter here: ICMPv6 directly after the IPv6 header, hop limit 255, code 0, a valid checksum, at
/// least 24 octets, well-formed options. Anything else is `None`.
pub fn parse_advertisement(packet: &[u8]) -> Option<Advertisement> {
    let header = packet.get(..IPV6_HEADER_LENGTH)?;
    if header[0] >> 4 != 6 || header[6] != NEXT_HEADER_ICMPV6 || header[7] != HOP_LIMIT {
        return None;
    }
    let payload_length = usize::from(u16::from_be_bytes([header[4], header[5]]));
    let message = packet.get(IPV6_HEADER_LENGTH..IPV6_HEADER_LENGTH + payload_length)?;
    let source = ipv6_at(header, 8)?;
    let destination = ipv6_at(header, 24)?;
    if message.len() < NDP_MESSAGE_LENGTH
        || message[0] != NEIGHBOUR_ADVERTISEMENT
        || message[1] != 0
        || checksum(source, destination, message) != 0
    {
        return None;
    }
    let mut target_mac = None;
    let mut options = &message[NDP_MESSAGE_LENGTH..];
    while !options.is_empty() {
        let option_length = usize::from(*options.get(1)?) * 8;
        if option_length == 0 || option_length > options.len() {
            return None;
        }
        if options[0] == TARGET_LINK_ADDRESS {
            target_mac = options.get(2..8)?.try_into().ok();
        }
        options = &options[option_length..];
    }
    let flags = message[4];
    Some(Advertisement {
        source,
        destination,
        router: flags & FLAG_ROUTER != 0,
        solicited: flags & FLAG_SOLICITED != 0,
        override_flag: flags & FLAG_OVERRIDE != 0,
        target: ipv6_at(message, 8)?,
        target_mac,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x02, 0x42, 0xac, 0x11, 0x00, 0x02];

    fn v6(text: &str) -> Ipv6Addr {
        text.parse().unwrap()
    }

    #[test]
    fn solicited_node_group_keeps_the_low_24_bits() {
        assert_eq!(solicited_node(v6("fd00:6::a8:ad")), v6("ff02::1:ffa8:ad"));
        assert_eq!(
            solicited_node(v6("2001:db8::1234:5678")),
            v6("ff02::1:ff34:5678")
        );
        assert_eq!(
            multicast_mac(v6("ff02::1:ff34:5678")),
            [0x33, 0x33, 0xff, 0x34, 0x56, 0x78]
        );
        assert_eq!(multicast_mac(ALL_NODES), [0x33, 0x33, 0, 0, 0, 1]);
    }

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|index| u8::from_str_radix(&text[index..index + 2], 16).unwrap())
            .collect()
    }

    /// The duplicate-address solicitation Linux 6.18 sent when `fd00:6::1` was added to a veth (captured
    /// with a packet socket on its peer). It carries a nonce option (RFC 7527), which ours leaves out.
    const KERNEL_PROBE: &str = "6000000000203aff00000000000000000000000000000000ff0200000000000000000001ff000001\
                                870076a100000000fd000006000000000000000000000001\
                                0e01caeb7e95af73";

    /// The advertisement Linux 6.18 answered a solicitation for `fd00:6::1` with (solicited, override, target
    /// link-layer address 02:42:ac:11:00:01), captured the same way.
    const KERNEL_ADVERTISEMENT: &str = "6000000000203afffd000006000000000000000000000001fd000006000000000000000000000002\
                                        8800703660000000fd000006000000000000000000000001\
                                        02010242ac110001";

    #[test]
    fn checksum_agrees_with_packets_written_by_the_kernel() {
        for packet in [hex(KERNEL_PROBE), hex(KERNEL_ADVERTISEMENT)] {
            let source = ipv6_at(&packet, 8).unwrap();
            let destination = ipv6_at(&packet, 24).unwrap();
            let message = &packet[IPV6_HEADER_LENGTH..];
            assert_eq!(checksum(source, destination, message), 0);
            let mut zeroed = message.to_vec();
            zeroed[2..4].fill(0);
            assert_eq!(
                checksum(source, destination, &zeroed).to_be_bytes(),
                [message[2], message[3]]
            );
        }
    }

    #[test]
    fn our_probe_is_the_kernels_without_the_nonce() {
        let kernel = hex(KERNEL_PROBE);
        let ours = solicitation(Ipv6Addr::UNSPECIFIED, MAC, v6("fd00:6::1")).packet;
        assert_eq!(ours.len(), 64);
        assert_eq!(ours[..4], kernel[..4]);
        assert_eq!(u16::from_be_bytes([ours[4], ours[5]]), 24);
        assert_eq!(
            ours[6..42],
            kernel[6..42],
            "next header, hop limit, addresses, type, code"
        );
        assert_eq!(ours[44..64], kernel[44..64], "reserved and target");
    }

    #[test]
    fn advertisement_written_by_the_kernel_is_parsed() {
        assert_eq!(
            parse_advertisement(&hex(KERNEL_ADVERTISEMENT)),
            Some(Advertisement {
                source: v6("fd00:6::1"),
                destination: v6("fd00:6::2"),
                router: false,
                solicited: true,
                override_flag: true,
                target: v6("fd00:6::1"),
                target_mac: Some([0x02, 0x42, 0xac, 0x11, 0x00, 0x01]),
            })
        );
    }

    #[test]
    fn duplicate_address_probe_has_the_rfc_4862_form() {
        let probe = solicitation(Ipv6Addr::UNSPECIFIED, MAC, v6("fd00:6::50"));
        let packet = &probe.packet;
        assert_eq!(probe.destination_mac, [0x33, 0x33, 0xff, 0, 0, 0x50]);
        assert_eq!(packet.len(), 40 + 24, "no source link-layer option");
        assert_eq!(packet[0] >> 4, 6);
        assert_eq!(u16::from_be_bytes([packet[4], packet[5]]), 24);
        assert_eq!((packet[6], packet[7]), (58, 255));
        assert_eq!(ipv6_at(packet, 8), Some(Ipv6Addr::UNSPECIFIED));
        assert_eq!(ipv6_at(packet, 24), Some(v6("ff02::1:ff00:50")));
        assert_eq!((packet[40], packet[41]), (135, 0));
        assert_eq!(ipv6_at(packet, 48), Some(v6("fd00:6::50")));
        assert_eq!(
            checksum(Ipv6Addr::UNSPECIFIED, v6("ff02::1:ff00:50"), &packet[40..]),
            0
        );
    }

    #[test]
    fn gateway_solicitation_carries_the_source_link_address() {
        let probe = solicitation(v6("fd00:6::50"), MAC, v6("fd00:6::1"));
        let packet = &probe.packet;
        assert_eq!(packet.len(), 40 + 24 + 8);
        assert_eq!(ipv6_at(packet, 8), Some(v6("fd00:6::50")));
        assert_eq!(ipv6_at(packet, 24), Some(v6("ff02::1:ff00:1")));
        assert_eq!(&packet[64..66], &[SOURCE_LINK_ADDRESS, 1]);
        assert_eq!(&packet[66..72], &MAC);
        assert_eq!(
            checksum(v6("fd00:6::50"), v6("ff02::1:ff00:1"), &packet[40..]),
            0
        );
        // A solicitation is not an advertisement.
        assert_eq!(parse_advertisement(packet), None);
    }

    #[test]
    fn unsolicited_advertisement_round_trips() {
        let announcement = unsolicited_advertisement(v6("fd00:6::50"), MAC);
        assert_eq!(announcement.destination_mac, [0x33, 0x33, 0, 0, 0, 1]);
        let parsed = parse_advertisement(&announcement.packet).unwrap();
        assert_eq!(
            parsed,
            Advertisement {
                source: v6("fd00:6::50"),
                destination: ALL_NODES,
                router: false,
                solicited: false,
                override_flag: true,
                target: v6("fd00:6::50"),
                target_mac: Some(MAC),
            }
        );
    }

    #[test]
    fn damaged_advertisements_are_rejected() {
        let good = unsolicited_advertisement(v6("fd00:6::50"), MAC).packet;
        assert!(parse_advertisement(&good).is_some());
        let damaged = |index: usize, value: u8| {
            let mut packet = good.clone();
            packet[index] = value;
            parse_advertisement(&packet)
        };
        assert_eq!(damaged(7, 64), None, "hop limit below 255");
        assert_eq!(damaged(6, 17), None, "not ICMPv6");
        assert_eq!(damaged(41, 1), None, "code not 0");
        assert_eq!(damaged(50, 0xee), None, "checksum no longer matches");
        assert_eq!(damaged(65, 0), None, "zero-length option");
        assert_eq!(damaged(5, 200), None, "payload longer than the packet");
        assert_eq!(parse_advertisement(&good[..60]), None, "truncated");
        assert_eq!(parse_advertisement(&[]), None);
    }

    #[test]
    fn advertisement_without_options_has_no_target_mac() {
        let packet = ipv6_packet(
            v6("fd00:6::1"),
            v6("fd00:6::50"),
            ndp_message(
                NEIGHBOUR_ADVERTISEMENT,
                FLAG_ROUTER | FLAG_SOLICITED,
                v6("fd00:6::1"),
                None,
            ),
        );
        let parsed = parse_advertisement(&packet).unwrap();
        assert!(parsed.router && parsed.solicited && !parsed.override_flag);
        assert_eq!(parsed.target_mac, None);
    }
}
