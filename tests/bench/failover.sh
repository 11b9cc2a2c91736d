#!/usr/bin/env bash
# Failover benchmark: KILLS (default 20) kill -9 of the clusterd holding the group while a writer keeps
# writing 4 KiB blocks through the VIP; prints every sample (kill -> first acknowledged write) and
# min / median / max / mean, then checks every acknowledged write on the final holder's disk.
# Runs tests/src/bin/failover_bench.rs (release) with the release clusterd/haadm next to it, in network
# namespaces it creates and deletes (two nodes, one client; keepalive 200 ms, deadtime 1 s). Needs root.
#
# Env: KILLS (1..=200), CARGO_TARGET_DIR, FAILOVER_TIMEOUT (seconds for the whole run, default 1800).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
[[ $(id -u) == 0 ]] || { echo "failover.sh: needs root (network namespaces)" >&2; exit 1; }
command -v iscsi-inq >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libiscsi-bin >&2
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
(cd "$ROOT" && cargo build --quiet --release -p ha-tests -p clusterd --bins)

# Every wait inside the binary is bounded and it deletes its namespaces when it returns, also on error.
# This outer limit is the last resort: if it fires (or on Ctrl-C), the binary is killed and its
# namespaces (named hat<pid % 100000>fb-*) are removed here.
pid=
cleanup() {
    [[ -n $pid ]] || return 0
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    local ns
    for ns in node1 node2 client; do
        ns="hat$((pid % 100000))fb-$ns"
        [[ -e /run/netns/$ns ]] || continue
        # shellcheck disable=SC2046
        kill -KILL $(ip netns pids "$ns") 2>/dev/null || true
        ip netns del "$ns" 2>/dev/null || true
    done
    pid=
}
trap 'cleanup; exit 130' INT TERM
trap cleanup EXIT

"$CARGO_TARGET_DIR/release/failover_bench" &
pid=$!
limit=$(( $(date +%s) + ${FAILOVER_TIMEOUT:-1800} ))
while kill -0 "$pid" 2>/dev/null; do
    if (( $(date +%s) >= limit )); then
        echo "failover.sh: gave up after ${FAILOVER_TIMEOUT:-1800} s" >&2
        cleanup
        exit 1
    fi
    sleep 1
done
rc=0
wait "$pid" || rc=$?
pid=
exit "$rc"
