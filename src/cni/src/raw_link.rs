//! A datagram `AF_PACKET` socket bound to one interface and one EtherType: the only place of the crate
//! with `unsafe` code, because neither `nix` nor `socket2` can build a `sockaddr_ll` safely. The kernel
//! writes and strips the Ethernet header; callers send and receive the payload (an ARP message, an IPv6
//! packet) and name the peer by its hardware address.
//!
//! Open the socket on the thread that runs inside the pod's network namespace (see [`crate::netns`]):
//! a socket belongs to the namespace it was created in.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Instant;

/// EtherType of ARP.
pub const ETH_P_ARP: u16 = 0x0806;
/// EtherType of IPv6.
pub const ETH_P_IPV6: u16 = 0x86dd;

/// A packet socket for one EtherType on one interface.
pub struct RawLinkSocket {
    fd: OwnedFd,
    ifindex: i32,
    ethertype: u16,
}

/// A frame received by [`RawLinkSocket::receive`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Hardware address the frame came from (the Ethernet source).
    pub source_mac: [u8; 6],
    /// Bytes of the payload written to the caller's buffer.
    pub length: usize,
}

fn link_address(ifindex: i32, ethertype: u16, destination: [u8; 6]) -> libc::sockaddr_ll {
    let mut address = libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as u16,
        sll_protocol: ethertype.to_be(),
        sll_ifindex: ifindex,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 6,
        sll_addr: [0; 8],
    };
    address.sll_addr[..6].copy_from_slice(&destination);
    address
}

const LINK_ADDRESS_LENGTH: libc::socklen_t =
    std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;

impl RawLinkSocket {
    /// Open a socket that sends and receives frames of `ethertype` on interface `ifindex`.
    pub fn open(ifindex: u32, ethertype: u16) -> io::Result<Self> {
        let ifindex =
            i32::try_from(ifindex).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: plain socket(2) call; the returned descriptor is owned below.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                i32::from(ethertype.to_be()),
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh, valid descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let address = link_address(ifindex, ethertype, [0; 6]);
        // SAFETY: `address` is a valid sockaddr_ll and the length matches it.
        let bound = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const address).cast::<libc::sockaddr>(),
                LINK_ADDRESS_LENGTH,
            )
        };
        if bound < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            fd,
            ifindex,
            ethertype,
        })
    }

    /// Send `payload` to the hardware address `destination` (broadcast or multicast included).
    pub fn send(&self, payload: &[u8], destination: [u8; 6]) -> io::Result<()> {
        let address = link_address(self.ifindex, self.ethertype, destination);
        // SAFETY: buffer and address are valid for the given lengths.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                payload.as_ptr().cast(),
                payload.len(),
                0,
                (&raw const address).cast::<libc::sockaddr>(),
                LINK_ADDRESS_LENGTH,
            )
        };
        if sent < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Wait until `deadline` for the next incoming frame (frames this host sends are skipped) and copy
    /// its payload into `buffer`, truncated to the buffer's length. `None` when the deadline passes.
    pub fn receive(&self, buffer: &mut [u8], deadline: Instant) -> io::Result<Option<Received>> {
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
            let mut from = link_address(0, 0, [0; 6]);
            let mut from_length = LINK_ADDRESS_LENGTH;
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
            let mut source_mac = [0u8; 6];
            source_mac.copy_from_slice(&from.sll_addr[..6]);
            return Ok(Some(Received {
                source_mac,
                length: usize::try_from(received).unwrap_or(0).min(buffer.len()),
            }));
        }
    }
}
