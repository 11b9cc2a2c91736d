//! `haadm adjust` and `haadm dump` (issue 15).

use super::cli::{AdjustArgs, Cli};
use super::HaadmError;
use crate::config::{HaConfig, dump_yaml};
use proto::control::AdjustRequest;
use proto::control::control_client::ControlClient;
use std::io::Write;
use std::path::Path;
use std::time::Duration;
use tonic::transport::Channel;

/// Bringing a new resource up or reopening LUNs may take a while, not forever.
const ADJUST_TIMEOUT: Duration = Duration::from_secs(120);

/// `haadm dump [RES]`: computed here from ha.yaml, so it works with clusterd stopped.
pub fn dump(cli: &Cli, resource: Option<&str>, out: &mut dyn Write) -> Result<(), HaadmError> {
    let config = HaConfig::load(&cli.config_path())?;
    let text = dump_yaml(&config, resource).map_err(HaadmError::VerbFailed)?;
    out.write_all(text.as_bytes()).map_err(HaadmError::Output)
}

/// `haadm adjust [--dry-run] [RES|all]`: clusterd plans (and applies) against the file it was
/// started with. Before applying, a peer known to run a configuration other than the new one is
/// reported on stderr: adjust has to be run there too.
pub async fn adjust(
    client: &mut ControlClient<Channel>,
    socket: &Path,
    args: &AdjustArgs,
    out: &mut dyn Write,
) -> Result<(), HaadmError> {
    let call = |dry_run: bool| AdjustRequest { resource: args.resource.clone(), dry_run };
    let timeout = |what| HaadmError::Timeout { socket: socket.to_path_buf(), what, timeout: ADJUST_TIMEOUT };
    let plan = tokio::time::timeout(ADJUST_TIMEOUT, client.adjust(call(true)))
        .await
        .map_err(|_| timeout("adjust --dry-run"))??
        .into_inner();
    if args.dry_run {
        let text = if plan.changes.is_empty() { "nothing to adjust\n".to_string() } else { lines(&plan.changes) };
        return out.write_all(text.as_bytes()).map_err(HaadmError::Output);
    }
    if !plan.peer_digest.is_empty() && plan.peer_digest != plan.new_digest {
        eprintln!(
            "haadm: warning: {} runs a different config ({} vs {} in this ha.yaml); copy ha.yaml there and run adjust on it too",
            plan.peer, plan.peer_digest, plan.new_digest
        );
    }
    let done = tokio::time::timeout(ADJUST_TIMEOUT, client.adjust(call(false)))
        .await
        .map_err(|_| timeout("adjust"))??
        .into_inner();
    let text = if done.changes.is_empty() { "nothing to adjust\n".to_string() } else { lines(&done.changes) };
    out.write_all(text.as_bytes()).map_err(HaadmError::Output)
}

fn lines(changes: &[String]) -> String {
    changes.iter().map(|c| format!("{c}\n")).collect()
}
