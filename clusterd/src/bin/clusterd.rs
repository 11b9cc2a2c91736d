//! `clusterd --config FILE [--node NAME]`: the per-node HA daemon.

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "clusterd", version, about = "Two-node HA iSCSI storage daemon (replication, control API)")]
struct Args {
    /// The cluster configuration (one file for both nodes).
    #[arg(long, default_value = "/etc/ha/ha.yaml")]
    config: PathBuf,
    /// This node's name in the configuration (default: the host name).
    #[arg(long)]
    node: Option<String>,
    /// `text` (default) or `json`: one JSON object per line, event fields at the top level (every
    /// state change carries `node` and `resource` or `link`), for journald/Loki pipelines.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).with_current_span(false).with_span_list(false).init(),
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("clusterd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(clusterd::daemon::run(args.config, args.node)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("clusterd: {e:#}");
            ExitCode::from(2)
        }
    }
}
