//! IPv4 ARP over an `AF_PACKET` socket: address-conflict probes (RFC 5227, sender address 0.0.0.0),
//! gateway reachability requests and gratuitous announcements.
//!
//! Open the socket on the thread that runs inside the pod's network namespace (see [`crate::netns`]); the
//! socket belongs to the namespace it was created in.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

const ETH_P_ARP: u16 = 0x0806;
const ARP_REQUEST: u16 = 1;
const ARP_REPLY: u16 = 2;
const BROADCAST: [u8; 6] = [0xff; 6];

/// An ARP packet socket bound to one interface.
pub struct ArpSocket {
    fd: OwnedFd,
    ifindex: i32,
    mac: [u8; 6],
}

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

fn link_address(ifindex: i32, destination: [u8; 6]) -> libc::sockaddr_ll {
    let mut address = libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as u16,
        sll_protocol: ETH_P_ARP.to_be(),
        sll_ifindex: ifindex,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 6,
        sll_addr: [0; 8],
    };
    address.sll_addr[..6].copy_from_slice(&destination);
    address
}

impl ArpSocket {
    /// Open a datagram packet socket for ARP on interface `ifindex` whose hardware address is `mac`.
    pub fn open(ifindex: u32, mac: [u8; 6]) -> io::Result<Self> {
        let ifindex =
            i32::try_from(ifindex).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: plain socket(2) call; the returned descriptor is owned below.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                i32::from(ETH_P_ARP.to_be()),
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh, valid descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let address = link_address(ifindex, [0; 6]);
        // SAFETY: `address` is a valid sockaddr_ll and the length matches it.
        let bound = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const address).cast::<libc::sockaddr>(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if bound < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { fd, ifindex, mac })
    }

    fn send(&self, packet: &[u8; 28], destination: [u8; 6]) -> io::Result<()> {
        let address = link_address(self.ifindex, destination);
        // SAFETY: buffer and address are valid for the given lengths.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&raw const address).cast::<libc::sockaddr>(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Wait until `deadline` for an incoming ARP packet accepted by `wanted`.
    fn wait_for(
        &self,
        deadline: Instant,
        wanted: &dyn Fn(&ArpPacket) -> bool,
    ) -> io::Result<Option<ArpPacket>> {
        let mut buffer = [0u8; 128];
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Ok(None);
            }
            let mut poll = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let millis = i32::try_from(remaining.as_millis().max(1)).unwrap_or(i32::MAX);
            // SAFETY: one valid pollfd.
            let ready = unsafe { libc::poll(&raw mut poll, 1, millis) };
            if ready < 0 {
                let error = io::Error::last_os_error();
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(error);
            }
            if ready == 0 {
                return Ok(None);
            }
            let mut from = link_address(0, [0; 6]);
            let mut from_length = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: buffer and address storage are valid for their lengths.
            let received = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buffer.as_mut_ptr().cast(),
                    buffer.len(),
                    libc::MSG_DONTWAIT,
                    (&raw mut from).cast::<libc::sockaddr>(),
                    &raw mut from_length,
                )
            };
            if received < 0 {
                let error = io::Error::last_os_error();
                if matches!(
                    error.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                ) {
                    continue;
                }
                return Err(error);
            }
            if from.sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            let length = usize::try_from(received).unwrap_or(0);
            if let Some(packet) = parse_arp(&buffer[..length.min(buffer.len())])
                && wanted(&packet)
            {
                return Ok(Some(packet));
            }
        }
    }

    /// RFC 5227 probe: is `address` used by another host? Returns that host's MAC.
    pub fn probe_conflict(
        &self,
        address: Ipv4Addr,
        tries: u32,
        per_try: Duration,
    ) -> io::Result<Option<[u8; 6]>> {
        let packet = arp_packet(
            ARP_REQUEST,
            self.mac,
            Ipv4Addr::UNSPECIFIED,
            [0; 6],
            address,
        );
        let own_mac = self.mac;
        for _ in 0..tries.max(1) {
            self.send(&packet, BROADCAST)?;
            let answer = self.wait_for(Instant::now() + per_try, &|reply| {
                reply.sender_ip == address && reply.sender_mac != own_mac
            })?;
            if let Some(answer) = answer {
                return Ok(Some(answer.sender_mac));
            }
        }
        Ok(None)
    }

    /// Ask for `gateway` from `source`; returns the gateway's MAC when it answers.
    pub fn resolve(
        &self,
        source: Ipv4Addr,
        gateway: Ipv4Addr,
        tries: u32,
        per_try: Duration,
    ) -> io::Result<Option<[u8; 6]>> {
        let packet = arp_packet(ARP_REQUEST, self.mac, source, [0; 6], gateway);
        for _ in 0..tries.max(1) {
            self.send(&packet, BROADCAST)?;
            let answer = self.wait_for(Instant::now() + per_try, &|reply| {
                reply.operation == ARP_REPLY && reply.sender_ip == gateway
            })?;
            if let Some(answer) = answer {
                return Ok(Some(answer.sender_mac));
            }
        }
        Ok(None)
    }

    /// Gratuitous ARP announcing that `address` now lives at this socket's MAC.
    pub fn announce(&self, address: Ipv4Addr) -> io::Result<()> {
        self.send(
            &arp_packet(ARP_REQUEST, self.mac, address, [0; 6], address),
            BROADCAST,
        )
    }
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
