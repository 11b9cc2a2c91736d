//! Virtual IP add/remove/query over rtnetlink (the `ip addr add/del/show` equivalent).
//!
//! Each call opens its own netlink connection so it binds to the calling thread's network
//! namespace at call time; the connection task is aborted when the call returns.

use std::net::IpAddr;

use futures_util::TryStreamExt;
use netlink_packet_route::address::AddressMessage;
use rtnetlink::Handle;

use super::NetopsError;

const ENODEV: i32 = 19;
const EEXIST: i32 = 17;
const EADDRNOTAVAIL: i32 = 99;

/// Outcome of an idempotent VIP operation, so callers can log "took over" versus "already had".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VipChange {
    /// The address was added (by `vip_add`) or removed (by `vip_remove`).
    Changed,
    /// Nothing to do: the address was already present (add) or already absent (remove).
    Already,
}

/// A netlink connection whose background task is stopped when this is dropped.
struct Netlink {
    handle: Handle,
    task: tokio::task::JoinHandle<()>,
}

impl Netlink {
    fn open() -> Result<Self, NetopsError> {
        let (connection, handle, _messages) = rtnetlink::new_connection()
            .map_err(|e| NetopsError::io("opening rtnetlink socket", e))?;
        let task = tokio::spawn(connection);
        Ok(Netlink { handle, task })
    }

    async fn link_index(&self, interface: &str) -> Result<u32, NetopsError> {
        let result = self
            .handle
            .link()
            .get()
            .match_name(interface.to_string())
            .execute()
            .try_next()
            .await;
        match result {
            Ok(Some(link)) => Ok(link.header.index),
            Ok(None) => Err(NetopsError::NoSuchInterface(interface.to_string())),
            Err(e) if netlink_errno(&e) == Some(ENODEV) => {
                Err(NetopsError::NoSuchInterface(interface.to_string()))
            }
            Err(e) => Err(netlink_error(
                &format!("looking up interface {interface}"),
                &e,
            )),
        }
    }

    /// All address entries on `index` whose local address is `addr` (any prefix length).
    async fn find(&self, index: u32, addr: IpAddr) -> Result<Vec<AddressMessage>, NetopsError> {
        self.handle
            .address()
            .get()
            .set_link_index_filter(index)
            .set_address_filter(addr)
            .execute()
            .try_collect()
            .await
            .map_err(|e| netlink_error(&format!("listing addresses of link {index}"), &e))
    }
}

impl Drop for Netlink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn netlink_errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(msg) => msg.code.map(|c| c.get().saturating_abs()),
        _ => None,
    }
}

fn netlink_error(context: &str, e: &rtnetlink::Error) -> NetopsError {
    NetopsError::Netlink(format!("{context}: {e}"))
}

fn check_prefix(addr: IpAddr, prefix_len: u8) -> Result<(), NetopsError> {
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if prefix_len > max {
        return Err(NetopsError::Netlink(format!(
            "prefix length /{prefix_len} is invalid for {addr}"
        )));
    }
    Ok(())
}

/// Adds `addr/prefix_len` to `interface`. Returns `Already` when that exact address and
/// prefix are already configured (also when a concurrent caller added it between our check and
/// our request), so repeated takeovers are harmless.
pub async fn vip_add(
    interface: &str,
    addr: IpAddr,
    prefix_len: u8,
) -> Result<VipChange, NetopsError> {
    check_prefix(addr, prefix_len)?;
    let nl = Netlink::open()?;
    let index = nl.link_index(interface).await?;
    let existing = nl.find(index, addr).await?;
    if existing.iter().any(|m| m.header.prefix_len == prefix_len) {
        return Ok(VipChange::Already);
    }
    match nl
        .handle
        .address()
        .add(index, addr, prefix_len)
        .execute()
        .await
    {
        Ok(()) => Ok(VipChange::Changed),
        Err(e) if netlink_errno(&e) == Some(EEXIST) => Ok(VipChange::Already),
        Err(e) => Err(netlink_error(
            &format!("adding {addr}/{prefix_len} to {interface}"),
            &e,
        )),
    }
}

/// Removes `addr` from `interface`. Every entry with that address is removed whatever its
/// prefix length: a leftover copy with a wrong mask would still answer ARP for the VIP and
/// fight the other node. `prefix_len` is only validated. Returns `Already` when absent.
pub async fn vip_remove(
    interface: &str,
    addr: IpAddr,
    prefix_len: u8,
) -> Result<VipChange, NetopsError> {
    check_prefix(addr, prefix_len)?;
    let nl = Netlink::open()?;
    let index = nl.link_index(interface).await?;
    let existing = nl.find(index, addr).await?;
    if existing.is_empty() {
        return Ok(VipChange::Already);
    }
    let mut removed_any = false;
    for message in existing {
        match nl.handle.address().del(message).execute().await {
            Ok(()) => removed_any = true,
            // Someone else removed it between our listing and our request.
            Err(e) if netlink_errno(&e) == Some(EADDRNOTAVAIL) => {}
            Err(e) => {
                return Err(netlink_error(
                    &format!("removing {addr} from {interface}"),
                    &e,
                ));
            }
        }
    }
    Ok(if removed_any {
        VipChange::Changed
    } else {
        VipChange::Already
    })
}

/// Whether `addr` (with any prefix length) is configured on `interface`: the monitor check.
pub async fn vip_present(interface: &str, addr: IpAddr) -> Result<bool, NetopsError> {
    let nl = Netlink::open()?;
    let index = nl.link_index(interface).await?;
    Ok(!nl.find(index, addr).await?.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_length_is_validated_per_family() {
        assert!(check_prefix("10.0.0.1".parse().unwrap(), 32).is_ok());
        assert!(check_prefix("10.0.0.1".parse().unwrap(), 33).is_err());
        assert!(check_prefix("fd00::1".parse().unwrap(), 128).is_ok());
        assert!(check_prefix("fd00::1".parse().unwrap(), 129).is_err());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn missing_interface_is_reported_by_name() {
        let err = vip_present("nx-netops0", "10.0.0.1".parse().unwrap())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, NetopsError::NoSuchInterface(name) if name == "nx-netops0"),
            "{err}"
        );
    }
}
