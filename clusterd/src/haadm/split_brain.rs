//! `haadm split-brain [RES]` and `haadm split-brain RES --keep NODE [--save-victim FILE]` (issue 15):
//! the client side. The server decides (`clusterd/src/control/split_brain.rs`); this prints.

use super::{HaadmError, STATUS_TIMEOUT};
use proto::control::control_client::ControlClient;
use proto::control::{GenerationUuids, SplitBrainReply, SplitBrainRequest, SplitBrainSide, SplitBrainView};
use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;
use std::time::Duration;
use tonic::transport::Channel;

/// A resolution demotes, may copy a volume's worth of blocks, and waits for the survivor.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(600);

fn mib(blocks: u64) -> String {
    format!("{:.1} MiB", (blocks * 4096) as f64 / (1 << 20) as f64)
}

fn tuple(u: Option<&GenerationUuids>) -> String {
    let u = u.cloned().unwrap_or_default();
    format!("{:016X}:{:016X}:{:016X}:{:016X}", u.current, u.bitmap, u.history0, u.history1)
}

fn side_line(which: &str, s: &SplitBrainSide) -> String {
    format!(
        "  {which:<5} {:<10} {:<9} {}  {} blocks ({})\n",
        s.node,
        s.role,
        tuple(s.uuids.as_ref()),
        s.changed_blocks,
        mib(s.changed_blocks)
    )
}

/// The text of one resource's view.
pub fn render_view(v: &SplitBrainView) -> String {
    let mut s = String::new();
    if !v.recorded {
        let now = if v.split_brain { "split brain flagged, sides not recorded (reconnect to see them)" } else { "no split brain recorded" };
        let _ = writeln!(s, "{}: {now} (connection {})", v.resource, v.connection);
        return s;
    }
    let state = if v.split_brain { "SPLIT BRAIN, unresolved" } else { "last split brain (resolution under way)" };
    let _ = writeln!(s, "{}: {state} (connection {})", v.resource, v.connection);
    let ancestor = if v.common_ancestor == 0 { "none in the tuples (full resync on resolution)".to_string() } else { format!("{:016X}", v.common_ancestor) };
    let _ = writeln!(s, "  diverged from generation {ancestor}");
    let _ = writeln!(s, "  {:<5} {:<10} {:<9} {:<67}  changed since", "side", "node", "role", "generations current:bitmap:history:history");
    if let Some(l) = &v.local {
        s.push_str(&side_line("this", l));
    }
    if let Some(p) = &v.peer {
        s.push_str(&side_line("peer", p));
    }
    let _ = writeln!(s, "  recommended victim: {} ({})", v.victim, v.reason);
    let keep = [v.local.as_ref(), v.peer.as_ref()].into_iter().flatten().map(|x| x.node.as_str()).find(|n| *n != v.victim).unwrap_or("NODE");
    let _ = writeln!(s, "  resolve on {}: haadm split-brain {} --keep {keep} [--save-victim FILE]", v.victim, v.resource);
    s
}

pub async fn run(
    client: &mut ControlClient<Channel>,
    socket: &Path,
    args: &super::cli::SplitBrainArgs,
    out: &mut dyn Write,
) -> Result<(), HaadmError> {
    let save_victim = match &args.save_victim {
        // clusterd has another working directory: send an absolute path.
        Some(p) => std::path::absolute(p).map_err(|e| HaadmError::VerbFailed(format!("--save-victim {}: {e}", p.display())))?.display().to_string(),
        None => String::new(),
    };
    let req = SplitBrainRequest { resource: args.resource.clone().unwrap_or_default(), keep: args.keep.clone().unwrap_or_default(), save_victim };
    let (what, limit) = if req.keep.is_empty() { ("split-brain", STATUS_TIMEOUT) } else { ("split-brain --keep", RESOLVE_TIMEOUT) };
    let reply: SplitBrainReply = match tokio::time::timeout(limit, client.split_brain(req)).await {
        Ok(r) => r?.into_inner(),
        Err(_) => return Err(HaadmError::Timeout { socket: socket.to_path_buf(), what, timeout: limit }),
    };
    if args.keep.is_none() {
        let text: String = reply.views.iter().map(render_view).collect();
        return out.write_all(text.as_bytes()).map_err(HaadmError::Output);
    }
    if !reply.ok {
        return Err(HaadmError::VerbFailed(reply.message));
    }
    writeln!(out, "{}", reply.message).map_err(HaadmError::Output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_split_brain_shows_both_sides_and_the_command() {
        let side = |n: &str, blocks| SplitBrainSide {
            node: n.into(),
            uuids: Some(GenerationUuids { current: 0xAB1, bitmap: 0x50, history0: 0, history1: 0 }),
            role: "Primary".into(),
            changed_blocks: blocks,
        };
        let v = SplitBrainView {
            resource: "r0".into(),
            split_brain: true,
            recorded: true,
            local: Some(side("node1", 3)),
            peer: Some(side("node2", 256)),
            common_ancestor: 0x50,
            victim: "node1".into(),
            reason: "node1 changed less".into(),
            connection: "StandAlone".into(),
        };
        let t = render_view(&v);
        assert!(t.contains("SPLIT BRAIN") && t.contains("0000000000000050"), "{t}");
        assert!(t.contains("node2") && t.contains("256 blocks (1.0 MiB)"), "{t}");
        assert!(t.contains("recommended victim: node1") && t.contains("--keep node2"), "{t}");
        let none = render_view(&SplitBrainView { resource: "r0".into(), connection: "Connected".into(), ..Default::default() });
        assert_eq!(none, "r0: no split brain recorded (connection Connected)\n");
    }
}
