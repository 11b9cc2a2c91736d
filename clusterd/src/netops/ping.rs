//! ICMP echo probe for ping nodes (heartbeat's `ping`/`ping_group` pseudo-members): a node
//! that can still reach its upstream gateway is preferred as the service owner.
//!
//! Uses an unprivileged ping socket (`SOCK_DGRAM`/`IPPROTO_ICMP`) when
//! `net.ipv4.ping_group_range` allows it, else a raw ICMP socket (needs `CAP_NET_RAW`, which
//! clusterd has as root). No external `ping` command: its output and exit codes vary between
//! implementations. The socket is `connect`ed, so the kernel only hands us packets from the
//! probed address; we still match type, id (raw only), sequence number and a per-probe token.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use rustix::io::Errno;
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType, ipproto};
use tokio::io::unix::AsyncFd;

use super::NetopsError;

const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMPV6_ECHO_REQUEST: u8 = 128;
const ICMPV6_ECHO_REPLY: u8 = 129;
const ICMP_HEADER_LEN: usize = 8;
const TOKEN_LEN: usize = 16;

static SEQUENCE: AtomicU16 = AtomicU16::new(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SocketKind {
    /// Ping socket: the kernel sets the identifier and the checksum and strips the IP header.
    Datagram,
    /// Raw socket: IPv4 replies arrive with their IP header; we own the identifier.
    Raw,
}

/// What we sent, to recognise the matching reply.
struct Probe {
    is_v4: bool,
    kind: SocketKind,
    ident: u16,
    sequence: u16,
    token: [u8; TOKEN_LEN],
}

impl Probe {
    fn new(is_v4: bool, kind: SocketKind) -> Self {
        let sequence = SEQUENCE.fetch_add(1, Ordering::Relaxed);
        let ident = (std::process::id() as u16) ^ sequence.rotate_left(8);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let mut token = [0u8; TOKEN_LEN];
        token.copy_from_slice(&nanos.to_be_bytes());
        token[0..2].copy_from_slice(&sequence.to_be_bytes());
        Probe {
            is_v4,
            kind,
            ident,
            sequence,
            token,
        }
    }

    fn request(&self) -> [u8; ICMP_HEADER_LEN + TOKEN_LEN] {
        let mut p = [0u8; ICMP_HEADER_LEN + TOKEN_LEN];
        p[0] = if self.is_v4 {
            ICMP_ECHO_REQUEST
        } else {
            ICMPV6_ECHO_REQUEST
        };
        p[4..6].copy_from_slice(&self.ident.to_be_bytes());
        p[6..8].copy_from_slice(&self.sequence.to_be_bytes());
        p[8..].copy_from_slice(&self.token);
        // ICMPv6 checksums cover a pseudo-header and are always filled in by the kernel; for
        // IPv4 ping sockets the kernel recomputes it, for raw sockets it must be ours.
        if self.is_v4 {
            let sum = internet_checksum(&p);
            p[2..4].copy_from_slice(&sum.to_be_bytes());
        }
        p
    }

    /// Whether `packet` (as received from the socket) is the reply to this probe.
    fn matches(&self, packet: &[u8]) -> bool {
        let icmp = if self.is_v4 && self.kind == SocketKind::Raw {
            match ipv4_payload(packet) {
                Some(p) => p,
                None => return false,
            }
        } else {
            packet
        };
        let reply_type = if self.is_v4 {
            ICMP_ECHO_REPLY
        } else {
            ICMPV6_ECHO_REPLY
        };
        let (Some(&ty), Some(ident), Some(seq), Some(token)) = (
            icmp.first(),
            icmp.get(4..6),
            icmp.get(6..8),
            icmp.get(ICMP_HEADER_LEN..ICMP_HEADER_LEN + TOKEN_LEN),
        ) else {
            return false;
        };
        let ident_ok = self.kind == SocketKind::Datagram || ident == self.ident.to_be_bytes();
        ty == reply_type && ident_ok && seq == self.sequence.to_be_bytes() && token == self.token
    }
}

/// The ICMP message inside an IPv4 packet, honouring the header length field.
fn ipv4_payload(packet: &[u8]) -> Option<&[u8]> {
    let first = *packet.first()?;
    if first >> 4 != 4 {
        return None;
    }
    let header_len = usize::from(first & 0x0f) * 4;
    packet.get(header_len..)
}

/// RFC 1071 one's-complement checksum.
fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = match chunk {
            [hi, lo] => u16::from_be_bytes([*hi, *lo]),
            [hi] => u16::from_be_bytes([*hi, 0]),
            _ => 0,
        };
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn open_socket(addr: IpAddr) -> Result<(OwnedFd, SocketKind), NetopsError> {
    let (family, protocol) = match addr {
        IpAddr::V4(_) => (AddressFamily::INET, ipproto::ICMP),
        IpAddr::V6(_) => (AddressFamily::INET6, ipproto::ICMPV6),
    };
    let flags = SocketFlags::NONBLOCK | SocketFlags::CLOEXEC;
    match rustix::net::socket_with(family, SocketType::DGRAM, flags, Some(protocol)) {
        Ok(fd) => return Ok((fd, SocketKind::Datagram)),
        // Not in ping_group_range (EACCES) or ping sockets unsupported: fall back to raw.
        Err(Errno::ACCESS | Errno::PERM | Errno::PROTONOSUPPORT | Errno::AFNOSUPPORT) => {}
        Err(e) => return Err(NetopsError::io("opening ICMP ping socket", e)),
    }
    rustix::net::socket_with(family, SocketType::RAW, flags, Some(protocol))
        .map(|fd| (fd, SocketKind::Raw))
        .map_err(|e| {
            NetopsError::io(
                "opening raw ICMP socket (needs CAP_NET_RAW or net.ipv4.ping_group_range)",
                e,
            )
        })
}

/// Errors meaning "the address is not reachable", which is a `false` answer, not a failure.
fn is_unreachable(e: Errno) -> bool {
    matches!(
        e,
        Errno::HOSTUNREACH
            | Errno::NETUNREACH
            | Errno::CONNREFUSED
            | Errno::HOSTDOWN
            | Errno::NETDOWN
    )
}

/// Sends one ICMP echo request to `addr` and reports whether the matching reply arrived within
/// `timeout`. Unreachable errors from the kernel count as `false`; only local failures (no
/// permission, no sockets) are errors. Needs a tokio runtime with I/O and time enabled.
pub async fn ping(addr: IpAddr, timeout: Duration) -> Result<bool, NetopsError> {
    let (fd, kind) = open_socket(addr)?;
    let probe = Probe::new(addr.is_ipv4(), kind);
    match rustix::net::connect(&fd, &SocketAddr::new(addr, 0)) {
        Ok(()) => {}
        Err(e) if is_unreachable(e) => return Ok(false),
        Err(e) => {
            return Err(NetopsError::io(
                format!("connecting ICMP socket to {addr}"),
                e,
            ));
        }
    }
    // SAFETY: an `OwnedFd` always reports the same descriptor, and it stays open until the
    // `AsyncFd` that now owns it is dropped.
    let fd = unsafe { AsyncFd::register(fd) }
        .map_err(|e| NetopsError::io("registering ICMP socket", e.into_parts().1))?;
    match rustix::net::send(fd.get_ref(), &probe.request(), SendFlags::empty()) {
        Ok(_) => {}
        Err(e) if is_unreachable(e) => return Ok(false),
        Err(e) => return Err(NetopsError::io(format!("sending ICMP echo to {addr}"), e)),
    }
    match tokio::time::timeout(timeout, wait_for_reply(&fd, &probe, addr)).await {
        Ok(result) => result,
        Err(_elapsed) => Ok(false),
    }
}

async fn wait_for_reply(
    fd: &AsyncFd<OwnedFd>,
    probe: &Probe,
    addr: IpAddr,
) -> Result<bool, NetopsError> {
    // Room for an IPv4 header with options plus our echo message and some slack.
    let mut buf = [0u8; 256];
    loop {
        let mut guard = fd
            .readable()
            .await
            .map_err(|e| NetopsError::io("waiting on ICMP socket", e))?;
        let received = guard.try_io(|inner| {
            rustix::net::recv(inner.get_ref(), &mut buf[..], RecvFlags::empty())
                .map_err(std::io::Error::from)
        });
        match received {
            Err(_would_block) => continue,
            Ok(Ok((len, _full_len))) => {
                if buf.get(..len).is_some_and(|p| probe.matches(p)) {
                    return Ok(true);
                }
            }
            Ok(Err(e)) => {
                let errno = Errno::from_io_error(&e);
                if errno.is_some_and(is_unreachable) {
                    return Ok(false);
                }
                return Err(NetopsError::io(
                    format!("receiving ICMP reply from {addr}"),
                    e,
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_request_verifies_to_zero() {
        let probe = Probe::new(true, SocketKind::Raw);
        let request = probe.request();
        assert_eq!(internet_checksum(&request), 0);
        // RFC 1071 example words sum.
        assert_eq!(internet_checksum(&[0x00, 0x01, 0xf2, 0x03]), !0xf204);
    }

    #[test]
    fn reply_matching_checks_every_field() {
        let probe = Probe::new(true, SocketKind::Raw);
        let mut reply = probe.request();
        reply[0] = ICMP_ECHO_REPLY;
        let mut ip = vec![0x45u8; 1];
        ip.extend_from_slice(&[0u8; 19]);
        ip.extend_from_slice(&reply);
        assert!(probe.matches(&ip));
        let mut wrong_token = ip.clone();
        if let Some(last) = wrong_token.last_mut() {
            *last ^= 1;
        }
        assert!(!probe.matches(&wrong_token));
        let mut wrong_seq = ip.clone();
        wrong_seq[26] ^= 1;
        assert!(!probe.matches(&wrong_seq));
        // Our own request echoed back (raw sockets see it for local targets) is not a reply.
        let mut request = vec![0x45u8];
        request.extend_from_slice(&[0u8; 19]);
        request.extend_from_slice(&probe.request());
        assert!(!probe.matches(&request));
        assert!(!probe.matches(&ip[..30]));
        assert!(!probe.matches(&[]));

        let dgram = Probe::new(false, SocketKind::Datagram);
        let mut v6_reply = dgram.request();
        v6_reply[0] = ICMPV6_ECHO_REPLY;
        v6_reply[4] ^= 0xff; // the kernel rewrites the identifier of ping sockets
        assert!(dgram.matches(&v6_reply));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn loopback_answers() {
        let reachable = ping("127.0.0.1".parse().unwrap(), Duration::from_secs(2))
            .await
            .unwrap();
        assert!(reachable);
    }
}
