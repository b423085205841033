//! Neighbour probes on one interface, ARP for IPv4 ([`crate::arp`]) and NDP for IPv6 ([`crate::ndp`]):
//! is an address already held by another host, does a gateway answer, and the announcement of an address
//! after its link address changed. Each check is one [`Probe`] (what to send, where, and which answer
//! counts) run by one loop shared by both protocols: up to `tries` requests, each followed by a wait of
//! `per_try` for an answer.
//!
//! Where we differ from upstream's IPv6 checks (`pkg/networking/networking/ipam_detection.go`), on purpose:
//! * the duplicate-address probe is RFC 4862's (source `::`, no link-layer option), not a solicitation
//!   from the link-local address: it needs no usable address on the interface, so there is no wait for
//!   the link-local address to leave its tentative state (upstream waits up to 10 s), and it cannot make
//!   neighbours cache anything while the answer is still unknown;
//! * the gateway is asked from the pod's own address of the family, as for IPv4, not from the link-local;
//! * an answer counts when it is a well-formed advertisement (hop limit 255, valid checksum) for the
//!   address asked about; its link address is the target link-layer option or else the frame's source
//!   (upstream insists on exactly one option);
//! * the announcement after a MAC rewrite is a real unsolicited advertisement with the override flag
//!   (upstream sends a solicitation there, which does not replace a neighbour's cached link address).
//!
//! Call it on the thread that runs inside the pod's network namespace (see [`crate::netns`]).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use crate::arp::{ARP_REPLY, ARP_REQUEST, BROADCAST, arp_packet, parse_arp};
use crate::ndp::{parse_advertisement, solicitation, unsolicited_advertisement};
use crate::raw_link::{ETH_P_ARP, ETH_P_IPV6, RawLinkSocket};

/// Room for a whole frame of a jumbo-MTU link; the answers we look for are far smaller.
const RECEIVE_BUFFER: usize = 9216;

/// How often and how long a probe asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub tries: u32,
    pub per_try: Duration,
}

/// The protocol that probes `address`, for messages: `ARP` or `NDP`.
pub fn protocol(address: IpAddr) -> &'static str {
    match address {
        IpAddr::V4(_) => "ARP",
        IpAddr::V6(_) => "NDP",
    }
}

/// Which answer a probe waits for: given a received payload and the Ethernet source of its frame, the
/// hardware address of the neighbour that answered.
type AnswerFilter = Box<dyn Fn(&[u8], [u8; 6]) -> Option<[u8; 6]>>;

/// One request and how to recognise its answer: the part that differs between ARP and NDP.
pub struct Probe {
    ethertype: u16,
    request: Vec<u8>,
    destination: [u8; 6],
    answer: AnswerFilter,
}

impl Probe {
    /// The neighbour `answer` names for a payload received from `source_mac`, if it is an answer at all.
    pub fn answer(&self, payload: &[u8], source_mac: [u8; 6]) -> Option<[u8; 6]> {
        (self.answer)(payload, source_mac)
    }

    /// Duplicate-address probe for `address` from an interface whose hardware address is `own_mac`: an
    /// ARP probe (sender 0.0.0.0) answered by anyone claiming `address`, or an NDP solicitation from `::`
    /// answered by an advertisement for `address`, in both cases from another hardware address.
    pub fn conflict(own_mac: [u8; 6], address: IpAddr) -> Self {
        match address {
            IpAddr::V4(address) => Self {
                ethertype: ETH_P_ARP,
                request: arp_packet(ARP_REQUEST, own_mac, Ipv4Addr::UNSPECIFIED, [0; 6], address)
                    .to_vec(),
                destination: BROADCAST,
                answer: Box::new(move |payload, _| {
                    parse_arp(payload)
                        .filter(|reply| reply.sender_ip == address && reply.sender_mac != own_mac)
                        .map(|reply| reply.sender_mac)
                }),
            },
            IpAddr::V6(address) => {
                let outgoing = solicitation(Ipv6Addr::UNSPECIFIED, own_mac, address);
                Self {
                    ethertype: ETH_P_IPV6,
                    request: outgoing.packet,
                    destination: outgoing.destination_mac,
                    answer: Box::new(move |payload, source_mac| {
                        advertised_mac(payload, source_mac, address).filter(|mac| *mac != own_mac)
                    }),
                }
            }
        }
    }

    /// Reachability probe for `gateway`, asked from `source` (an address of the interface in the same
    /// family) at `own_mac`: an ARP request answered by an ARP reply from `gateway`, or an NDP
    /// solicitation answered by an advertisement for `gateway`.
    pub fn gateway(own_mac: [u8; 6], source: IpAddr, gateway: IpAddr) -> io::Result<Self> {
        match (source, gateway) {
            (IpAddr::V4(source), IpAddr::V4(gateway)) => Ok(Self {
                ethertype: ETH_P_ARP,
                request: arp_packet(ARP_REQUEST, own_mac, source, [0; 6], gateway).to_vec(),
                destination: BROADCAST,
                answer: Box::new(move |payload, _| {
                    parse_arp(payload)
                        .filter(|reply| reply.operation == ARP_REPLY && reply.sender_ip == gateway)
                        .map(|reply| reply.sender_mac)
                }),
            }),
            (IpAddr::V6(source), IpAddr::V6(gateway)) => {
                let outgoing = solicitation(source, own_mac, gateway);
                Ok(Self {
                    ethertype: ETH_P_IPV6,
                    request: outgoing.packet,
                    destination: outgoing.destination_mac,
                    answer: Box::new(move |payload, source_mac| {
                        advertised_mac(payload, source_mac, gateway)
                    }),
                })
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("source {source} and gateway {gateway} are of different families"),
            )),
        }
    }
}

/// The hardware address a neighbour advertisement for `target` names: its target link-layer option, or
/// the frame's source when the option is absent (allowed in answers to unicast solicitations).
fn advertised_mac(payload: &[u8], source_mac: [u8; 6], target: Ipv6Addr) -> Option<[u8; 6]> {
    parse_advertisement(payload)
        .filter(|advertisement| advertisement.target == target)
        .map(|advertisement| advertisement.target_mac.unwrap_or(source_mac))
}

/// The probes of one interface.
pub struct Neighbours {
    ifindex: u32,
    mac: [u8; 6],
    timing: Timing,
}

impl Neighbours {
    pub fn new(ifindex: u32, mac: [u8; 6], timing: Timing) -> Self {
        Self {
            ifindex,
            mac,
            timing,
        }
    }

    /// The hardware address of another host that holds `address`, if one answers.
    pub fn find_owner(&self, address: IpAddr) -> io::Result<Option<[u8; 6]>> {
        self.run(&Probe::conflict(self.mac, address))
    }

    /// The hardware address of `gateway` when it answers a request from `source`.
    pub fn resolve(&self, source: IpAddr, gateway: IpAddr) -> io::Result<Option<[u8; 6]>> {
        self.run(&Probe::gateway(self.mac, source, gateway)?)
    }

    /// Tell the link that `address` now lives at this interface's hardware address: a gratuitous ARP
    /// request for IPv4, an unsolicited neighbour advertisement (override set, to all nodes) for IPv6.
    pub fn announce(&self, address: IpAddr) -> io::Result<()> {
        let (ethertype, packet, destination) = match address {
            IpAddr::V4(address) => (
                ETH_P_ARP,
                arp_packet(ARP_REQUEST, self.mac, address, [0; 6], address).to_vec(),
                BROADCAST,
            ),
            IpAddr::V6(address) => {
                let outgoing = unsolicited_advertisement(address, self.mac);
                (ETH_P_IPV6, outgoing.packet, outgoing.destination_mac)
            }
        };
        RawLinkSocket::open(self.ifindex, ethertype)?.send(&packet, destination)
    }

    /// The loop both protocols share: send, wait up to `per_try` for an answer, try again.
    fn run(&self, probe: &Probe) -> io::Result<Option<[u8; 6]>> {
        let socket = RawLinkSocket::open(self.ifindex, probe.ethertype)?;
        let mut buffer = vec![0u8; RECEIVE_BUFFER];
        for _ in 0..self.timing.tries.max(1) {
            socket.send(&probe.request, probe.destination)?;
            let deadline = Instant::now() + self.timing.per_try;
            while let Some(received) = socket.receive(&mut buffer, deadline)? {
                if let Some(owner) = probe.answer(&buffer[..received.length], received.source_mac) {
                    return Ok(Some(owner));
                }
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ndp::{ALL_NODES, multicast_mac, solicited_node};

    const OWN: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
    const OTHER: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn advertisement(target: &str, mac: [u8; 6]) -> Vec<u8> {
        let IpAddr::V6(target) = ip(target) else {
            panic!("not IPv6")
        };
        unsolicited_advertisement(target, mac).packet
    }

    #[test]
    fn ipv6_conflict_probe_is_a_dad_solicitation_answered_by_another_mac() {
        let probe = Probe::conflict(OWN, ip("fd00:6::50"));
        assert_eq!(probe.ethertype, ETH_P_IPV6);
        let IpAddr::V6(address) = ip("fd00:6::50") else {
            unreachable!()
        };
        assert_eq!(probe.destination, multicast_mac(solicited_node(address)));
        assert_eq!(probe.request[8..24], Ipv6Addr::UNSPECIFIED.octets());
        assert_eq!(
            probe.answer(&advertisement("fd00:6::50", OTHER), OTHER),
            Some(OTHER)
        );
        assert_eq!(
            probe.answer(&advertisement("fd00:6::50", OWN), OWN),
            None,
            "our own address"
        );
        assert_eq!(
            probe.answer(&advertisement("fd00:6::51", OTHER), OTHER),
            None,
            "another target"
        );
        assert_eq!(probe.answer(&probe.request, OTHER), None, "a solicitation");
    }

    #[test]
    fn ipv4_conflict_probe_is_an_rfc_5227_probe_answered_by_another_mac() {
        let probe = Probe::conflict(OWN, ip("10.6.168.50"));
        assert_eq!((probe.ethertype, probe.destination), (ETH_P_ARP, BROADCAST));
        let request = parse_arp(&probe.request).unwrap();
        assert_eq!(request.sender_ip, Ipv4Addr::UNSPECIFIED);
        let reply = |mac| {
            arp_packet(
                ARP_REPLY,
                mac,
                Ipv4Addr::new(10, 6, 168, 50),
                OWN,
                Ipv4Addr::UNSPECIFIED,
            )
        };
        assert_eq!(probe.answer(&reply(OTHER), OTHER), Some(OTHER));
        assert_eq!(probe.answer(&reply(OWN), OWN), None);
        assert_eq!(probe.answer(&advertisement("fd00::1", OTHER), OTHER), None);
    }

    #[test]
    fn gateway_probes_accept_only_an_answer_from_the_gateway() {
        let probe = Probe::gateway(OWN, ip("fd00:6::50"), ip("fd00:6::1")).unwrap();
        assert_eq!(probe.request[8..24], ip_octets("fd00:6::50"));
        assert_eq!(
            probe.answer(&advertisement("fd00:6::1", OTHER), [9; 6]),
            Some(OTHER)
        );
        assert_eq!(
            probe.answer(&advertisement("fd00:6::2", OTHER), OTHER),
            None
        );

        let probe = Probe::gateway(OWN, ip("10.6.168.60"), ip("10.6.0.1")).unwrap();
        let gateway = Ipv4Addr::new(10, 6, 0, 1);
        let from_gateway = arp_packet(
            ARP_REPLY,
            OTHER,
            gateway,
            OWN,
            Ipv4Addr::new(10, 6, 168, 60),
        );
        assert_eq!(probe.answer(&from_gateway, OTHER), Some(OTHER));
        let request_from_gateway = arp_packet(ARP_REQUEST, OTHER, gateway, [0; 6], gateway);
        assert_eq!(probe.answer(&request_from_gateway, OTHER), None);

        assert!(Probe::gateway(OWN, ip("10.6.168.60"), ip("fd00:6::1")).is_err());
    }

    fn ip_octets(text: &str) -> [u8; 16] {
        match ip(text) {
            IpAddr::V6(address) => address.octets(),
            IpAddr::V4(address) => address.to_ipv6_mapped().octets(),
        }
    }

    #[test]
    fn protocols_are_named_by_family() {
        assert_eq!(protocol(ip("10.0.0.1")), "ARP");
        assert_eq!(protocol(IpAddr::V6(ALL_NODES)), "NDP");
    }
}
