//! Gratuitous ARP after taking over a VIP: neighbours and switches keep the old owner's MAC in
//! their caches until told otherwise, and the kernel does not announce an address on `ip addr
//! add` (`arp_notify` only covers link up / MAC change). Like IPaddr2 (`send_arp`, `-U`/`-A`)
//! we send both an unsolicited request and an unsolicited reply per round, because some
//! devices only update from one of the two forms.
//!
//! A `SOCK_DGRAM` packet socket is used so the kernel builds the Ethernet header from the
//! destination link-layer address; we only write the 28-byte ARP payload.

use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::time::Duration;

use rustix::net::addr::{SocketAddrArg, SocketAddrLen, SocketAddrOpaque};
use rustix::net::{AddressFamily, SendFlags, SocketFlags, SocketType};

use super::NetopsError;

const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV4: u16 = 0x0800;
const ARPHRD_ETHER: u16 = 1;
const ARP_OP_REQUEST: u16 = 1;
const ARP_OP_REPLY: u16 = 2;
const ETH_ALEN: usize = 6;
const BROADCAST_MAC: [u8; ETH_ALEN] = [0xff; ETH_ALEN];
const ENODEV: i32 = 19;
/// Size of the ARP payload for Ethernet/IPv4.
pub(crate) const ARP_PAYLOAD_LEN: usize = 28;

/// `struct sockaddr_ll` from `<linux/if_packet.h>`; rustix has no typed packet address.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct SockaddrLl {
    family: u16,
    /// Ethertype in network byte order.
    protocol: u16,
    ifindex: i32,
    hatype: u16,
    pkttype: u8,
    halen: u8,
    addr: [u8; 8],
}

impl SockaddrLl {
    fn new(ifindex: i32, dest: Option<[u8; ETH_ALEN]>) -> Self {
        let mut addr = [0u8; 8];
        let mut halen = 0;
        if let Some(mac) = dest {
            addr[..ETH_ALEN].copy_from_slice(&mac);
            halen = ETH_ALEN as u8;
        }
        SockaddrLl {
            family: AddressFamily::PACKET.as_raw(),
            protocol: ETH_P_ARP.to_be(),
            ifindex,
            hatype: 0,
            pkttype: 0,
            halen,
            addr,
        }
    }
}

// SAFETY: `f` receives a pointer to `self`, a fully initialised `#[repr(C)]` value laid out
// exactly like the kernel's `sockaddr_ll`, together with its exact size; the pointer is valid
// for the duration of the call because `self` is borrowed for it.
unsafe impl SocketAddrArg for SockaddrLl {
    unsafe fn with_sockaddr<R>(
        &self,
        f: impl FnOnce(*const SocketAddrOpaque, SocketAddrLen) -> R,
    ) -> R {
        let len = std::mem::size_of::<SockaddrLl>() as SocketAddrLen;
        f((self as *const SockaddrLl).cast(), len)
    }
}

/// Builds one ARP announcement: sender and target protocol address are both the VIP, the
/// sender hardware address is ours. Requests carry a zero target MAC (RFC 5227
/// announcement); replies carry our own MAC as `arping -A` does.
pub(crate) fn arp_announcement(
    op: u16,
    mac: [u8; ETH_ALEN],
    vip: Ipv4Addr,
) -> [u8; ARP_PAYLOAD_LEN] {
    let target_mac = if op == ARP_OP_REPLY {
        mac
    } else {
        [0u8; ETH_ALEN]
    };
    let mut p = [0u8; ARP_PAYLOAD_LEN];
    p[0..2].copy_from_slice(&ARPHRD_ETHER.to_be_bytes());
    p[2..4].copy_from_slice(&ETH_P_IPV4.to_be_bytes());
    p[4] = ETH_ALEN as u8;
    p[5] = 4;
    p[6..8].copy_from_slice(&op.to_be_bytes());
    p[8..14].copy_from_slice(&mac);
    p[14..18].copy_from_slice(&vip.octets());
    p[18..24].copy_from_slice(&target_mac);
    p[24..28].copy_from_slice(&vip.octets());
    p
}

/// Reads the interface MAC from the socket's own bound address (the kernel fills `sll_addr`
/// with the device address on `getsockname`), which avoids sysfs (not namespace-correct per
/// thread) and an ioctl rustix does not wrap.
fn bound_mac(fd: &OwnedFd, interface: &str) -> Result<[u8; ETH_ALEN], NetopsError> {
    let local = rustix::net::getsockname(fd)
        .map_err(|e| NetopsError::io(format!("getsockname on packet socket for {interface}"), e))?;
    let len = usize::try_from(local.addr_len()).unwrap_or(0);
    let len = len.min(std::mem::size_of::<SockaddrLl>());
    // SAFETY: `as_ptr` points at the address storage owned by `local`, which is at least
    // `sizeof(sockaddr_storage)` bytes; we read only `len` <= min(addr_len, 20) bytes of it
    // while `local` is alive.
    let bytes = unsafe { std::slice::from_raw_parts(local.as_ptr().cast::<u8>(), len) };
    let halen = bytes.get(11).copied().map(usize::from);
    match (halen, bytes.get(12..12 + ETH_ALEN)) {
        (Some(ETH_ALEN), Some(mac)) => {
            let mut out = [0u8; ETH_ALEN];
            out.copy_from_slice(mac);
            Ok(out)
        }
        _ => Err(NetopsError::io(
            format!("interface {interface} has no 6-byte hardware address"),
            std::io::Error::from(std::io::ErrorKind::Unsupported),
        )),
    }
}

/// Sends `count` rounds of gratuitous ARP (one request and one reply each, broadcast) for `addr`
/// out of `interface`, sleeping `interval` between rounds.
///
/// This is a blocking call lasting about `(count - 1) * interval`; from async code run it in
/// `tokio::task::spawn_blocking` (IPaddr2's defaults are 5 rounds at 200 ms).
pub fn send_garp(
    interface: &str,
    addr: Ipv4Addr,
    count: u32,
    interval: Duration,
) -> Result<(), NetopsError> {
    let fd = rustix::net::socket_with(
        AddressFamily::PACKET,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        Some(rustix::net::eth::ARP),
    )
    .map_err(|e| NetopsError::io("opening AF_PACKET socket (needs CAP_NET_RAW)", e))?;
    let ifindex = match rustix::net::netdevice::name_to_index(&fd, interface) {
        Ok(i) => i,
        Err(e) if e.raw_os_error() == ENODEV => {
            return Err(NetopsError::NoSuchInterface(interface.to_string()));
        }
        Err(e) => {
            return Err(NetopsError::io(
                format!("looking up interface {interface}"),
                e,
            ));
        }
    };
    let ifindex = i32::try_from(ifindex).map_err(|_| {
        NetopsError::io(
            format!("interface index of {interface} out of range"),
            std::io::Error::from(std::io::ErrorKind::InvalidData),
        )
    })?;
    rustix::net::bind(&fd, &SockaddrLl::new(ifindex, None))
        .map_err(|e| NetopsError::io(format!("binding packet socket to {interface}"), e))?;
    let mac = bound_mac(&fd, interface)?;
    let destination = SockaddrLl::new(ifindex, Some(BROADCAST_MAC));
    for round in 0..count {
        if round > 0 {
            std::thread::sleep(interval);
        }
        for op in [ARP_OP_REQUEST, ARP_OP_REPLY] {
            let frame = arp_announcement(op, mac, addr);
            rustix::net::sendto(&fd, &frame, SendFlags::empty(), &destination).map_err(|e| {
                NetopsError::io(
                    format!("sending gratuitous ARP for {addr} on {interface}"),
                    e,
                )
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddr_ll_matches_kernel_layout() {
        assert_eq!(std::mem::size_of::<SockaddrLl>(), 20);
    }

    #[test]
    fn announcement_layout() {
        let mac = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
        let vip = Ipv4Addr::new(10, 1, 2, 3);
        let req = arp_announcement(ARP_OP_REQUEST, mac, vip);
        assert_eq!(&req[0..8], &[0, 1, 8, 0, 6, 4, 0, 1]);
        assert_eq!(&req[8..14], &mac);
        assert_eq!(&req[14..18], &[10, 1, 2, 3]);
        assert_eq!(&req[18..24], &[0; 6]);
        assert_eq!(&req[24..28], &[10, 1, 2, 3]);
        let rep = arp_announcement(ARP_OP_REPLY, mac, vip);
        assert_eq!(&rep[6..8], &[0, 2]);
        assert_eq!(&rep[18..24], &mac);
    }
}
