//! Linux network operations clusterd needs to move a service address between nodes:
//! the virtual IP itself (netlink), gratuitous ARP so neighbours and switches learn the new
//! owner, a port block so clients see timeouts instead of TCP resets while the service is not
//! yet up, and an ICMP echo probe for ping nodes.
//!
//! Every function acts in the network namespace of the *calling thread* at the moment its
//! socket is opened (or its `nft` child is spawned). That is what makes the operations testable
//! inside throw-away namespaces, and it is why callers must not assume a shared global view.

mod garp;
mod ping;
mod portblock;
mod vip;

pub use garp::send_garp;
pub use ping::ping;
pub use portblock::{PortBlock, block, clear_all_blocks, is_blocked, unblock};
pub use vip::{VipChange, vip_add, vip_present, vip_remove};

/// Errors of the network operations. Callers branch on `NoSuchInterface` (configuration error,
/// never retried) and `NftMissing` (installation error) versus transient failures.
#[derive(Debug, thiserror::Error)]
pub enum NetopsError {
    /// The named interface does not exist in the calling thread's network namespace.
    #[error("no such network interface: {0}")]
    NoSuchInterface(String),
    /// The kernel refused or failed a netlink request.
    #[error("netlink: {0}")]
    Netlink(String),
    /// A socket or process operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The `nft` binary is not installed; port blocking needs it.
    #[error("the nft command was not found: install nftables (Debian package `nftables`)")]
    NftMissing,
    /// `nft` ran but reported a failure, or printed something we could not understand.
    #[error("nft: {0}")]
    Nft(String),
}

impl NetopsError {
    pub(crate) fn io(context: impl Into<String>, source: impl Into<std::io::Error>) -> Self {
        NetopsError::Io {
            context: context.into(),
            source: source.into(),
        }
    }
}
