#!/usr/bin/env bash
# Replication engine benchmark (issue: replicated >= 0.8 x disconnected; unlimited resync >= 80 % of the
# disconnected write speed; a rate cap held within +-10 %). Release build; loopback only (127.0.0.1/.2).
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -q -p ha-tests --bin repl-bench
dir=$(mktemp -d /var/tmp/repl-bench.XXXXXX)
trap 'rm -rf "$dir"' EXIT
"${CARGO_TARGET_DIR:-target}/release/repl-bench" --dir "$dir" "$@"
