#!/usr/bin/env bash
# Replication engine benchmark (issue: replicated >= 0.8 x disconnected; unlimited resync >= 80 % of the
# disconnected write speed; a rate cap held within +-10 %). Release build; loopback only (127.0.0.1/.2).
# Online verify of the identical 1 GiB pair (issue 18: >= 400 MB/s), sha1 and crc32c, with the ratio
# against dd reading the Primary's file sequentially.
# Resync controller (issue 18): 4 KiB random writes paced at half the measured capacity during a 1 GiB
# full resync, controller on vs off: app p99 with/without (goal <= 1.2), resync vs spare (goal >= 0.8).
# `RESYNC_CTL_ONLY=1 tests/bench/replication.sh` runs only that section.
# Two passes: both replicas on the same disk (what one machine has), then the Secondary's replica on
# tmpfs, standing for the peer's own disk on a second machine (see repl_bench.rs for why).
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -q -p ha-tests --bin repl-bench
dir=$(mktemp -d /var/tmp/repl-bench.XXXXXX)
peer=$(mktemp -d /dev/shm/repl-bench-peer.XXXXXX)
trap 'rm -rf "$dir" "$peer"' EXIT
bench="${CARGO_TARGET_DIR:-target}/release/repl-bench"
# O_DIRECT on both replicas (same disk): through the page cache a 1 GiB resync takes well under a
# second on loopback, too short for any controller (or measurement) to act.
resync_ctl() {
    echo "== resync controller: both replicas on the same disk, direct I/O"
    "$bench" --dir "$dir/ctl" --direct true --resync-ctl true "$@"
}
if [ "${RESYNC_CTL_ONLY:-0}" = 1 ]; then
    resync_ctl "$@"
    exit 0
fi
echo "== pass 1: both replicas on the same disk"
"$bench" --dir "$dir/same" "$@"
echo
echo "== pass 2: the Secondary's replica on its own device (tmpfs)"
"$bench" --dir "$dir/split" --peer-dir "$peer/b" "$@"
echo
resync_ctl "$@"
