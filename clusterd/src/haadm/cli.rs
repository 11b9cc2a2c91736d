//! Command-line definitions of `haadm` (clap derive) and the drbdadm argument-order shim.

use clap::{Args, Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;

/// Default configuration file, shared by clusterd and haadm.
pub const DEFAULT_CONFIG: &str = "/etc/ha/ha.yaml";

/// Administer the local clusterd: replicated resources, roles, resync, metadata.
#[derive(Debug, Parser)]
#[command(
    name = "haadm",
    version,
    after_help = "drbdadm's order also works: haadm -- --overwrite-data-of-peer primary RES\n\
                  Exit status: 0 ok, 1 the verb failed, 2 usage error, 3 clusterd cannot be reached,\n\
                  4 wait-sync/wait-connect --timeout expired, 130 wait-sync/wait-connect interrupted (Ctrl-C)."
)]
pub struct Cli {
    /// Configuration file (ha.yaml) shared by both nodes [default: $HA_CONFIG, else /etc/ha/ha.yaml].
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// This node's name in the configuration [default: the host name].
    #[arg(long, global = true)]
    pub node: Option<String>,
    /// Control socket of clusterd [default: the node's `control-socket` from the configuration].
    #[arg(long, global = true)]
    pub socket: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

/// The verbs. Names follow drbdadm where a drbdadm verb exists.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Attach the disk and connect to the peer.
    Up(ResourceArg),
    /// Disconnect and detach (a Primary must be demoted first).
    Down(ResourceArg),
    /// Promote to Primary.
    Primary(PrimaryArgs),
    /// Demote to Secondary.
    Secondary(ResourceArg),
    /// Enable the replication link.
    Connect(ConnectArgs),
    /// Drop the replication link (StandAlone).
    Disconnect(ResourceArg),
    /// Discard local data and resync it from the peer.
    Invalidate(ResourceArg),
    /// Mark the peer's data out of sync and resync it from here.
    InvalidateRemote(ResourceArg),
    /// Online verify against the peer (marks differences; `--repair` resyncs them at once).
    Verify(VerifyArgs),
    /// Pause the running resync.
    PauseSync(ResourceArg),
    /// Resume a paused resync.
    ResumeSync(ResourceArg),
    /// Mark the local disk Outdated.
    Outdate(ResourceArg),
    /// Release the write acknowledgements held since the peer was lost (`fencing resource-and-stonith`);
    /// only when you know the peer cannot be promoted with stale data (it is off, or Outdated).
    ResumeIo(ResourceArg),
    /// Roles, disk and replication states, resync progress.
    Status(StatusArgs),
    /// Print state changes as they happen (events2 style).
    Events(EventsArgs),
    /// Wait until the resource is connected and in sync (progress bar on a terminal); exit 0 when in
    /// sync, 1 when it cannot get there without you (down, StandAlone, split brain), 4 on --timeout.
    WaitSync(WaitSyncArgs),
    /// Grow the volume online after both backing devices grew (the smaller of the two), or set it to
    /// --size; the new area resyncs from the Primary unless --assume-clean. Needs the peer connected.
    Resize(ResizeArgs),
    /// Move a failover group away from this node (default: every group it holds).
    Standby(GroupArg),
    /// Pull a failover group onto this node (default: every group the peer holds).
    Takeover(GroupArg),
    /// The embedded iSCSI target.
    Target {
        #[command(subcommand)]
        command: TargetCommand,
    },
    /// Write fresh metadata (for a resource clusterd does not have up on this node).
    CreateMd(CreateMdArgs),
    /// Print the on-disk metadata (for a resource clusterd does not have up on this node).
    DumpMd(ResourceArg),
    /// Print a shell completion script (bash by default).
    Completion(CompletionArgs),
    /// Re-read ha.yaml and apply the difference to the running node live (SIGHUP to clusterd does
    /// the same); refused, changing nothing, when a field cannot change while running.
    Adjust(AdjustArgs),
    /// Print the effective configuration with every default filled in (from ha.yaml; no daemon needed).
    Dump(DumpArgs),
    /// haadm's and this node's clusterd's versions, and the protocol versions clusterd speaks
    /// (control API, replication, heartbeat); exit 5 when clusterd is too old to tell (issue 15 upgrade).
    Version,
    // issue 15 split-brain
    /// Show both sides of a split brain (generations, changes, roles) and a recommended victim; with
    /// --keep NODE, resolve it from either node (on the victim: demote, optionally save its changed
    /// blocks, discard; on the survivor: the victim, once Secondary, discards by itself).
    SplitBrain(SplitBrainArgs),
    /// Wait until the replication link is Connected; exit 0 when it is, 1 when it cannot get there
    /// without you (down, StandAlone, split brain), 4 on --timeout, 130 on Ctrl-C.
    WaitConnect(WaitSyncArgs),
    // issue 15 new-current-uuid
    /// Start a new data generation; with --clear-bitmap skip the initial sync of two fresh, identical
    /// (zeroed or thin) disks: connected, both Inconsistent, before any sync — run it on the node
    /// that will be Primary.
    NewCurrentUuid(NewCurrentUuidArgs),
    // issue 15 detach
    /// Drop the local disk (Diskless, its files closed, e.g. to replace it); a Secondary stays
    /// connected and the Primary records what changes; a Primary serves through an UpToDate peer.
    Detach(ResourceArg),
    /// Re-open a detached disk from ha.yaml (the same one, or a replaced one after `create-md`) and
    /// reconnect: the peer resyncs what changed, or everything onto a fresh disk. Secondary only.
    Attach(ResourceArg),
}

/// `adjust [--dry-run] [RES|all]` (issue 15).
#[derive(Debug, Args)]
pub struct AdjustArgs {
    /// Print the plan, one line per change, and change nothing.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Resource name, or `all` (everything: resources, targets, iSCSI settings).
    #[arg(value_name = "RES|all", default_value = "all")]
    pub resource: String,
}

/// `dump [RES]` (issue 15).
#[derive(Debug, Args)]
pub struct DumpArgs {
    /// Only this resource (default: the whole configuration).
    #[arg(value_name = "RES")]
    pub resource: Option<String>,
}

// issue 15 new-current-uuid
#[derive(Debug, Args)]
pub struct NewCurrentUuidArgs {
    /// Resource name, or `all`.
    #[arg(value_name = "RES|all")]
    pub resource: String,
    /// Mark both disks UpToDate without a sync (only for disks that hold the same bytes).
    #[arg(long)]
    pub clear_bitmap: bool,
}

// issue 15 split-brain
#[derive(Debug, Args)]
pub struct SplitBrainArgs {
    /// Resource name [default: all].
    #[arg(value_name = "RES")]
    pub resource: Option<String>,
    /// Resolve: the node whose data survives (this node or the peer).
    #[arg(long, value_name = "NODE")]
    pub keep: Option<String>,
    /// With --keep, on the victim: first copy its changed blocks to FILE (a new sparse image of the
    /// volume's size holding only those blocks).
    #[arg(long, value_name = "FILE", requires = "keep")]
    pub save_victim: Option<PathBuf>,
}

/// A resource name or `all`.
#[derive(Debug, Args)]
pub struct ResourceArg {
    /// Resource name, or `all`.
    #[arg(value_name = "RES|all")]
    pub resource: String,
}

#[derive(Debug, Args)]
pub struct PrimaryArgs {
    /// Promote even with an Inconsistent/Outdated disk; this node's data becomes the sync source.
    #[arg(long, visible_alias = "overwrite-data-of-peer")]
    pub force: bool,
    /// Resource name, or `all`.
    #[arg(value_name = "RES|all")]
    pub resource: String,
}

#[derive(Debug, Args)]
pub struct ResizeArgs {
    /// Exact size (bytes, or with K/M/G/T suffix: 1024-based), a multiple of 4 KiB; smaller than now
    /// only with the resource Secondary on both nodes [default: the smaller backing device].
    #[arg(long, value_parser = parse_size)]
    pub size: Option<u64>,
    /// Do not resync the new area: both backing devices hold the same bytes there (e.g. zeroes).
    #[arg(long)]
    pub assume_clean: bool,
    /// Resource name, or `all`.
    #[arg(value_name = "RES|all")]
    pub resource: String,
}

/// `4096`, `64M`, `2G`, `1T` (1024-based, DRBD style).
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(format!("unknown size suffix `{c}` (K, M, G or T)")),
            };
            (&t[..i], shift)
        }
        _ => (t, 0),
    };
    let n: u64 = num.parse().map_err(|_| format!("`{s}` is not a size (bytes, or a number with K, M, G or T)"))?;
    n.checked_shl(shift).filter(|v| v >> shift == n).ok_or_else(|| format!("`{s}` is too large"))
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Resync the blocks found different from this node as soon as the verify ends, over the
    /// established link (default: `syncer.verify-repair`, off: only mark them).
    #[arg(long)]
    pub repair: bool,
    /// Resource name, or `all`.
    #[arg(value_name = "RES|all")]
    pub resource: String,
}

#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// Split-brain recovery on the victim: throw away local changes and resync from the peer.
    #[arg(long)]
    pub discard_my_data: bool,
    /// Resource name, or `all`.
    #[arg(value_name = "RES|all")]
    pub resource: String,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Resource name or `all`.
    #[arg(value_name = "RES|all", default_value = "all")]
    pub resource: String,
    /// Print the reply as JSON.
    #[arg(long)]
    pub json: bool,
    /// Add statistics, addresses and generation identifiers.
    #[arg(long, short)]
    pub verbose: bool,
    /// Keep watching: redraw in place with a progress bar per resync/verify on a terminal, print
    /// changed lines when piped; Ctrl-C ends it.
    #[arg(long, short, conflicts_with_all = ["json", "verbose", "shell"])]
    pub watch: bool,
    /// One `key=value` line per field of one resource, for scripts (the OCF agents).
    #[arg(long, conflicts_with_all = ["json", "verbose"])]
    pub shell: bool,
}

#[derive(Debug, Args)]
pub struct WaitSyncArgs {
    /// Resource name, or `all`.
    #[arg(value_name = "RES|all")]
    pub resource: String,
    /// Give up after this long (`90s`, `5m`, bare seconds) with exit status 4.
    #[arg(long, value_parser = super::watch::parse_timeout)]
    pub timeout: Option<std::time::Duration>,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Print the current state and exit instead of following changes.
    #[arg(long)]
    pub now: bool,
    /// Only events of this resource.
    #[arg(value_name = "RES")]
    pub resource: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum TargetCommand {
    /// Show targets, LUNs and sessions.
    Show {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Serve every target of this node (under `cluster.manager: pacemaker`: the target agent's start).
    Start,
    /// Stop serving them (sessions are asked to log out and drained first).
    Stop,
    /// Print `running` or `stopped`.
    State,
}

#[derive(Debug, Args)]
pub struct CreateMdArgs {
    /// Overwrite existing metadata (destroys the bitmap and generation identifiers).
    #[arg(long)]
    pub force: bool,
    /// Resource name, or `all`.
    #[arg(value_name = "RES|all")]
    pub resource: String,
}

/// `haadm completion SHELL`. Generated from this very clap definition, so the script cannot fall
/// behind the verbs.
#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// Shell to generate the script for.
    #[arg(value_enum, default_value_t = clap_complete::Shell::Bash)]
    pub shell: clap_complete::Shell,
}

impl Cli {
    /// The configuration file: `--config`, else `$HA_CONFIG`, else [`DEFAULT_CONFIG`]. (Resolved by
    /// hand rather than clap's `env` feature, which the workspace does not enable.)
    pub fn config_path(&self) -> PathBuf {
        self.config
            .clone()
            .or_else(|| std::env::var_os("HA_CONFIG").filter(|v| !v.is_empty()).map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG))
    }
}

/// Verb options that drbdadm users put before the verb (`drbdadm -- --overwrite-data-of-peer
/// primary r0`, as seed 004 does); clap only knows them after the verb.
const PASS_THROUGH_FLAGS: &[&str] = &["--overwrite-data-of-peer", "--force", "--discard-my-data"];

/// Global options that take a value in the next argument.
const VALUE_OPTIONS: &[&str] = &["--config", "--node", "--socket"];

/// Rewrites drbdadm's argument order into the one clap parses: a `--` that introduces verb options
/// is dropped and those options are moved right after the verb. `haadm -- --overwrite-data-of-peer
/// primary r0` becomes `haadm primary --overwrite-data-of-peer r0`. Anything else is left alone.
pub fn normalize_args(args: Vec<OsString>) -> Vec<OsString> {
    let mut out: Vec<OsString> = Vec::with_capacity(args.len());
    let mut moved: Vec<OsString> = Vec::new();
    let mut iter = args.into_iter().peekable();
    if let Some(program) = iter.next() {
        out.push(program);
    }
    while let Some(arg) = iter.next() {
        let text = arg.to_str().unwrap_or("");
        if VALUE_OPTIONS.contains(&text) {
            out.push(arg);
            if let Some(value) = iter.next() {
                out.push(value);
            }
            continue;
        }
        let next_is_pass_through =
            iter.peek().and_then(|a| a.to_str()).is_some_and(|a| PASS_THROUGH_FLAGS.contains(&a));
        if text == "--" && next_is_pass_through {
            continue;
        }
        if PASS_THROUGH_FLAGS.contains(&text) {
            moved.push(arg);
            continue;
        }
        let is_verb = !text.starts_with('-');
        out.push(arg);
        if is_verb {
            out.append(&mut moved);
            out.extend(iter);
            return out;
        }
    }
    // No verb found: put the flags back so clap reports the real problem.
    out.append(&mut moved);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(normalize_args(os(args))).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn drbdadm_pass_through_order() {
        assert_eq!(
            normalize_args(os(&["haadm", "--config", "c.yaml", "--", "--overwrite-data-of-peer", "primary", "r0"])),
            os(&["haadm", "--config", "c.yaml", "primary", "--overwrite-data-of-peer", "r0"])
        );
        let cli = parse(&["haadm", "--", "--overwrite-data-of-peer", "primary", "iscsi.config"]);
        match cli.command {
            Command::Primary(p) => {
                assert!(p.force);
                assert_eq!(p.resource, "iscsi.config");
            }
            other => panic!("{other:?}"),
        }
        let cli = parse(&["haadm", "--overwrite-data-of-peer", "primary", "all"]);
        assert!(matches!(cli.command, Command::Primary(PrimaryArgs { force: true, .. })));
    }

    #[test]
    fn normal_orders_parse() {
        let cli = parse(&["haadm", "--node", "node1", "primary", "--overwrite-data-of-peer", "r0"]);
        assert_eq!(cli.node.as_deref(), Some("node1"));
        assert!(matches!(cli.command, Command::Primary(PrimaryArgs { force: true, .. })));
        let cli = parse(&["haadm", "primary", "r0", "--force"]);
        assert!(matches!(cli.command, Command::Primary(PrimaryArgs { force: true, .. })));
        let cli = parse(&["haadm", "connect", "--discard-my-data", "r0", "--socket", "/tmp/s"]);
        assert_eq!(cli.socket, Some(PathBuf::from("/tmp/s")));
        assert!(matches!(cli.command, Command::Connect(ConnectArgs { discard_my_data: true, .. })));
        let cli = parse(&["haadm", "status"]);
        match cli.command {
            Command::Status(s) => assert_eq!((s.resource.as_str(), s.json, s.verbose, s.watch, s.shell), ("all", false, false, false, false)),
            other => panic!("{other:?}"),
        }
        let cli = parse(&["haadm", "invalidate-remote", "r0"]);
        assert!(matches!(cli.command, Command::InvalidateRemote(_)));
        let cli = parse(&["haadm", "resize", "--size", "2G", "--assume-clean", "r0"]);
        assert!(matches!(cli.command, Command::Resize(ResizeArgs { size: Some(s), assume_clean: true, .. }) if s == 2 << 30));
        let cli = parse(&["haadm", "resize", "r0"]);
        assert!(matches!(cli.command, Command::Resize(ResizeArgs { size: None, assume_clean: false, .. })));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("3X").unwrap_err().contains("suffix"));
        assert!(parse_size("99999999999T").unwrap_err().contains("too large"));
        assert!(Cli::try_parse_from(["haadm", "resize", "--size", "lots", "r0"]).is_err());
        let cli = parse(&["haadm", "create-md", "all", "--force"]);
        assert!(matches!(cli.command, Command::CreateMd(CreateMdArgs { force: true, .. })));
        let cli = parse(&["haadm", "target", "show"]);
        assert!(matches!(cli.command, Command::Target { command: TargetCommand::Show { json: false } }));
        let cli = parse(&["haadm", "target", "start"]);
        assert!(matches!(cli.command, Command::Target { command: TargetCommand::Start }));
        let cli = parse(&["haadm", "status", "r0", "--shell"]);
        assert!(matches!(cli.command, Command::Status(StatusArgs { shell: true, .. })));
        assert!(Cli::try_parse_from(os(&["haadm", "status", "r0", "--shell", "--json"])).is_err());
        let cli = parse(&["haadm", "events", "--now"]);
        assert!(matches!(cli.command, Command::Events(EventsArgs { now: true, resource: None })));
        let cli = parse(&["haadm", "status", "--watch", "r0"]);
        assert!(matches!(cli.command, Command::Status(StatusArgs { watch: true, .. })));
        assert!(Cli::try_parse_from(os(&["haadm", "status", "--watch", "--json"])).is_err());
        let cli = parse(&["haadm", "wait-sync", "r0", "--timeout", "90s"]);
        match cli.command {
            Command::WaitSync(w) => assert_eq!((w.resource.as_str(), w.timeout), ("r0", Some(std::time::Duration::from_secs(90)))),
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(os(&["haadm", "wait-sync", "r0", "--timeout", "soon"])).is_err());
        let cli = parse(&["haadm", "completion", "bash"]);
        assert!(matches!(cli.command, Command::Completion(CompletionArgs { shell: clap_complete::Shell::Bash })));
        let cli = parse(&["haadm", "completion"]);
        assert!(matches!(cli.command, Command::Completion(CompletionArgs { shell: clap_complete::Shell::Bash })));
        assert!(Cli::try_parse_from(os(&["haadm", "completion", "cmd.exe"])).is_err());
    }

    #[test]
    fn bash_completion_lists_every_verb() {
        let mut script = Vec::new();
        super::super::write_completion(clap_complete::Shell::Bash, &mut script).unwrap();
        let script = String::from_utf8(script).unwrap();
        assert!(script.contains("complete -F _haadm"), "{script}");
        for verb in Cli::command().get_subcommands().map(|c| c.get_name().to_string()) {
            assert!(script.contains(&format!("haadm,{verb})")), "verb {verb} missing from the bash completion");
        }
        assert!(script.contains("--overwrite-data-of-peer"));
    }

    #[test]
    fn misplaced_flags_are_still_rejected() {
        // --force before a verb that does not take it must not be silently accepted.
        assert!(Cli::try_parse_from(normalize_args(os(&["haadm", "--force", "status"]))).is_err());
        assert!(Cli::try_parse_from(normalize_args(os(&["haadm", "--force"]))).is_err());
        assert!(Cli::try_parse_from(os(&["haadm", "primary"])).is_err());
    }

    #[test]
    fn value_of_global_option_is_not_mistaken_for_verb() {
        assert_eq!(
            normalize_args(os(&["haadm", "--node", "primary", "--force", "primary", "r0"])),
            os(&["haadm", "--node", "primary", "primary", "--force", "r0"])
        );
    }

    // issue 15
    #[test]
    fn detach_and_attach_parse() {
        assert!(matches!(parse(&["haadm", "detach", "r0"]).command, Command::Detach(ResourceArg { resource }) if resource == "r0"));
        assert!(matches!(parse(&["haadm", "attach", "all"]).command, Command::Attach(ResourceArg { resource }) if resource == "all"));
        assert!(Cli::try_parse_from(["haadm", "attach"]).is_err(), "a resource is required");
    }

    #[test]
    fn split_brain_wait_connect_and_new_current_uuid_parse() {
        match parse(&["haadm", "split-brain", "r0", "--keep", "node2", "--save-victim", "v.img"]).command {
            Command::SplitBrain(a) => assert_eq!(
                (a.resource.as_deref(), a.keep.as_deref(), a.save_victim),
                (Some("r0"), Some("node2"), Some(PathBuf::from("v.img")))
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(parse(&["haadm", "split-brain"]).command, Command::SplitBrain(SplitBrainArgs { resource: None, keep: None, .. })));
        assert!(Cli::try_parse_from(os(&["haadm", "split-brain", "r0", "--save-victim", "v.img"])).is_err(), "--save-victim needs --keep");
        match parse(&["haadm", "wait-connect", "r0", "--timeout", "5s"]).command {
            Command::WaitConnect(w) => assert_eq!((w.resource.as_str(), w.timeout), ("r0", Some(std::time::Duration::from_secs(5)))),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(&["haadm", "new-current-uuid", "--clear-bitmap", "r0"]).command,
            Command::NewCurrentUuid(NewCurrentUuidArgs { clear_bitmap: true, .. })
        ));
        assert!(matches!(parse(&["haadm", "new-current-uuid", "r0"]).command, Command::NewCurrentUuid(NewCurrentUuidArgs { clear_bitmap: false, .. })));
    }
}

/// `standby` / `takeover`: which failover group.
#[derive(Debug, clap::Args)]
pub struct GroupArg {
    /// A group name from `groups:` (`default` for a single `group:`), or `all`.
    #[arg(default_value = "all")]
    pub group: String,
}
