//! `haadm`: administration CLI for clusterd. The logic lives in `clusterd::haadm`; this only
//! parses the command line (after accepting drbdadm's `-- --overwrite-data-of-peer primary RES`
//! argument order) and hands over.

use clap::Parser;
use clusterd::haadm::{self, cli::Cli};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse_from(haadm::cli::normalize_args(std::env::args_os().collect()));
    haadm::run(cli)
}
