//! Port blocking with nftables, the clusterd counterpart of `ocf:heartbeat:portblock`.
//!
//! While the VIP is up but the iSCSI target is not yet serving (or is being torn down), a
//! reconnecting initiator must see silence and retry, not a TCP RST, which many initiators
//! treat as "target gone" and give up on. So the rule DROPs (never rejects) TCP packets to
//! `addr:port`. Rules live in their own table `inet clusterd_portblock` so we never touch the
//! administrator's ruleset, and each rule carries a comment naming `addr:port` so it can be
//! found and removed again. nftables state is per network namespace; `nft` inherits the
//! calling thread's namespace.

use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};

use super::NetopsError;

const TABLE_FAMILY: &str = "inet";
const TABLE: &str = "clusterd_portblock";
const CHAIN: &str = "input";

/// One blocked TCP destination. `block`/`unblock` are idempotent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortBlock {
    pub addr: IpAddr,
    pub port: u16,
}

impl PortBlock {
    pub fn new(addr: IpAddr, port: u16) -> Self {
        PortBlock { addr, port }
    }

    /// The rule comment that identifies this block in the ruleset.
    fn comment(&self) -> String {
        format!("clusterd-portblock {}", self.key())
    }

    fn key(&self) -> String {
        match self.addr {
            IpAddr::V4(a) => format!("{a}:{}", self.port),
            IpAddr::V6(a) => format!("[{a}]:{}", self.port),
        }
    }

    /// The nft rule body; `ip`/`ip6` selects the address family inside the `inet` table.
    fn rule(&self) -> String {
        let family = if self.addr.is_ipv4() { "ip" } else { "ip6" };
        format!(
            "{family} daddr {} tcp dport {} drop comment \"{}\"",
            self.addr,
            self.port,
            self.comment()
        )
    }

    /// Starts dropping TCP packets to `addr:port`; a no-op if already blocked.
    pub fn block(&self) -> Result<(), NetopsError> {
        ensure_table()?;
        if !self.rule_handles()?.is_empty() {
            return Ok(());
        }
        let script = format!("add rule {TABLE_FAMILY} {TABLE} {CHAIN} {}\n", self.rule());
        run_nft_script(&script)
    }

    /// Stops dropping; removes every rule for `addr:port` (there is normally one, but two
    /// racing `block` calls could have added two). A no-op if not blocked.
    pub fn unblock(&self) -> Result<(), NetopsError> {
        let handles = self.rule_handles()?;
        if handles.is_empty() {
            return Ok(());
        }
        let mut script = String::new();
        for handle in handles {
            script.push_str(&format!(
                "delete rule {TABLE_FAMILY} {TABLE} {CHAIN} handle {handle}\n"
            ));
        }
        run_nft_script(&script)
    }

    /// Whether a drop rule for `addr:port` is installed.
    pub fn is_blocked(&self) -> Result<bool, NetopsError> {
        Ok(!self.rule_handles()?.is_empty())
    }

    /// Handles of the rules carrying this block's comment; empty if the table does not exist.
    fn rule_handles(&self) -> Result<Vec<u64>, NetopsError> {
        let Some(listing) = list_chain_json()? else {
            return Ok(Vec::new());
        };
        parse_rule_handles(&listing, &self.comment())
    }
}

/// Blocks TCP to `addr:port` (see [`PortBlock::block`]).
pub fn block(addr: IpAddr, port: u16) -> Result<(), NetopsError> {
    PortBlock::new(addr, port).block()
}

/// Unblocks TCP to `addr:port` (see [`PortBlock::unblock`]).
pub fn unblock(addr: IpAddr, port: u16) -> Result<(), NetopsError> {
    PortBlock::new(addr, port).unblock()
}

/// Whether TCP to `addr:port` is blocked.
pub fn is_blocked(addr: IpAddr, port: u16) -> Result<bool, NetopsError> {
    PortBlock::new(addr, port).is_blocked()
}

/// Removes the whole `inet clusterd_portblock` table: used at daemon start so a block left by a
/// crashed previous instance cannot keep a service unreachable. A no-op if it does not exist.
pub fn clear_all_blocks() -> Result<(), NetopsError> {
    if list_chain_json()?.is_none() {
        return Ok(());
    }
    run_nft_script(&format!("delete table {TABLE_FAMILY} {TABLE}\n"))
}

/// Creates the table and a filter chain on the input hook; `add` is a no-op for existing ones.
fn ensure_table() -> Result<(), NetopsError> {
    run_nft_script(&format!(
        "add table {TABLE_FAMILY} {TABLE}\n\
         add chain {TABLE_FAMILY} {TABLE} {CHAIN} {{ type filter hook input priority filter; policy accept; }}\n"
    ))
}

fn nft_command() -> Command {
    let mut cmd = Command::new("nft");
    // We match on an error message when the table is missing; keep it untranslated.
    cmd.env("LC_ALL", "C");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn spawn_error(e: std::io::Error) -> NetopsError {
    if e.kind() == std::io::ErrorKind::NotFound {
        NetopsError::NftMissing
    } else {
        NetopsError::io("running nft", e)
    }
}

/// Applies a script atomically with `nft -f -` (one transaction: all lines or none).
fn run_nft_script(script: &str) -> Result<(), NetopsError> {
    let mut cmd = nft_command();
    cmd.args(["-f", "-"]).stdin(Stdio::piped());
    let mut child = cmd.spawn().map_err(spawn_error)?;
    let write_result = match child.stdin.take() {
        Some(mut stdin) => stdin.write_all(script.as_bytes()),
        None => Ok(()),
    };
    let output = child
        .wait_with_output()
        .map_err(|e| NetopsError::io("waiting for nft", e))?;
    if !output.status.success() {
        return Err(NetopsError::Nft(format!(
            "`{}` failed ({}): {}",
            script.trim().replace('\n', "; "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    write_result.map_err(|e| NetopsError::io("writing nft script", e))
}

/// JSON listing of our chain, or `None` when the table/chain does not exist.
fn list_chain_json() -> Result<Option<String>, NetopsError> {
    let output = nft_command()
        .args(["-j", "-a", "list", "chain", TABLE_FAMILY, TABLE, CHAIN])
        .output()
        .map_err(spawn_error)?;
    if output.status.success() {
        return String::from_utf8(output.stdout)
            .map(Some)
            .map_err(|_| NetopsError::Nft("nft printed non-UTF-8 JSON".to_string()));
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    if stderr.contains("No such file or directory") {
        Ok(None)
    } else {
        Err(NetopsError::Nft(format!(
            "listing {TABLE_FAMILY} {TABLE} {CHAIN} failed ({}): {}",
            output.status,
            stderr.trim()
        )))
    }
}

/// Extracts the handles of rules whose comment equals `comment` from `nft -j -a list chain`.
fn parse_rule_handles(listing: &str, comment: &str) -> Result<Vec<u64>, NetopsError> {
    let value: serde_json::Value = serde_json::from_str(listing)
        .map_err(|e| NetopsError::Nft(format!("unparsable nft JSON: {e}")))?;
    let items = value
        .get("nftables")
        .and_then(|v| v.as_array())
        .ok_or_else(|| NetopsError::Nft("nft JSON has no `nftables` array".to_string()))?;
    let mut handles = Vec::new();
    for item in items {
        let Some(rule) = item.get("rule") else {
            continue;
        };
        if rule.get("comment").and_then(|c| c.as_str()) != Some(comment) {
            continue;
        }
        let handle = rule
            .get("handle")
            .and_then(|h| h.as_u64())
            .ok_or_else(|| NetopsError::Nft("nft JSON rule without a handle".to_string()))?;
        handles.push(handle);
    }
    Ok(handles)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_text_uses_family_and_drop() {
        let v4 = PortBlock::new("10.0.0.5".parse().unwrap(), 3260);
        assert_eq!(
            v4.rule(),
            "ip daddr 10.0.0.5 tcp dport 3260 drop comment \"clusterd-portblock 10.0.0.5:3260\""
        );
        let v6 = PortBlock::new("fd00::5".parse().unwrap(), 3260);
        assert!(
            v6.rule()
                .starts_with("ip6 daddr fd00::5 tcp dport 3260 drop ")
        );
        assert!(v6.rule().contains("[fd00::5]:3260"));
    }

    #[test]
    fn handles_are_found_by_comment() {
        let listing = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
            {"chain": {"family": "inet", "table": "clusterd_portblock", "name": "input", "handle": 1}},
            {"rule": {"family": "inet", "table": "clusterd_portblock", "chain": "input", "handle": 4,
                      "comment": "clusterd-portblock 10.0.0.5:3260", "expr": []}},
            {"rule": {"family": "inet", "table": "clusterd_portblock", "chain": "input", "handle": 5,
                      "comment": "clusterd-portblock 10.0.0.5:3261", "expr": []}},
            {"rule": {"family": "inet", "table": "clusterd_portblock", "chain": "input", "handle": 7,
                      "comment": "clusterd-portblock 10.0.0.5:3260", "expr": []}}]}"#;
        let handles = parse_rule_handles(listing, "clusterd-portblock 10.0.0.5:3260").unwrap();
        assert_eq!(handles, vec![4, 7]);
        assert!(parse_rule_handles(listing, "other").unwrap().is_empty());
        assert!(parse_rule_handles("not json", "x").is_err());
        assert!(parse_rule_handles(r#"{"nftables": [{"rule": {"comment": "x"}}]}"#, "x").is_err());
    }
}
