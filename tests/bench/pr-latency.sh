#!/usr/bin/env bash
# PERSISTENT RESERVE OUT latency, replicated versus standalone, in one run (tests/src/bin/pr_bench.rs):
# the same initiator changes its registration COUNT times (REGISTER AND IGNORE EXISTING KEY, every one a
# state change stored before GOOD) against
#   - ours standalone: clusterd serving a file on 127.0.0.1 (PR state in a local file: write, fsync,
#     rename, fsync the directory);
#   - ours replicated: the two-node lab's VIP (deploy/lab; PR state in both nodes' superblocks: a
#     synced superblock write here, the frame to the peer, its synced superblock write, its ack).
# Prints the latency table and the ratio. Needs root (the lab). Env: COUNT (default 2000), BENCH_DIR.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
COUNT=${COUNT:-2000}
BENCH_DIR=${BENCH_DIR:-/var/tmp/pr-bench}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
mkdir -p "$BENCH_DIR"
(cd "$ROOT" && cargo build --quiet --release -p clusterd -p ha-tests --bins)
BIN=$CARGO_TARGET_DIR/release
pid= lab_up=0
cleanup() {
    [[ -n $pid ]] && { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }
    [[ $lab_up == 1 ]] && { "$ROOT/deploy/lab" down >>"$BENCH_DIR/lab.log" 2>&1 || true; }
}
trap cleanup EXIT

IQN=iqn.2026-12.bench:pr
truncate -s 64M "$BENCH_DIR/disk.img"
cat >"$BENCH_DIR/bench.yaml" <<YAML
nodes:
  - { name: bench, control-socket: $BENCH_DIR/clusterd.sock, state-dir: $BENCH_DIR/state }
targets:
  $IQN:
    portals: ["127.0.0.1:3262"]
    luns:
      0: { path: $BENCH_DIR/disk.img }
YAML
RUST_LOG=warn "$BIN/clusterd" --config "$BENCH_DIR/bench.yaml" >"$BENCH_DIR/ours.log" 2>&1 &
pid=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/3262) 2>/dev/null && break; sleep 0.1; done
standalone=$("$BIN/pr-bench" 127.0.0.1:3262 "$IQN" "$COUNT")
kill "$pid"; wait "$pid" 2>/dev/null || true; pid=

if [[ -e /run/netns/ha-node1 || -e /var/tmp/ha-lab ]]; then
    echo "a lab already exists (deploy/lab status): not touching it" >&2
    exit 1
fi
lab_up=1
RUST_LOG=warn HA_LAB_BIN="$BIN" "$ROOT/deploy/lab" up --size 256M --no-build >"$BENCH_DIR/lab.log" 2>&1
replicated=$(ip netns exec ha-client "$BIN/pr-bench" 10.77.1.100:3260 iqn.2026-11.org.example:lab "$COUNT")

python3 - "$standalone" "$replicated" <<'PY'
import sys
def parse(line): return {k: float(v) for k, v in (kv.split("=") for kv in line.split())}
s, r = parse(sys.argv[1]), parse(sys.argv[2])
print(f"PERSISTENT RESERVE OUT latency ({int(s['count'])} state changes each)")
print(f"{'':24} {'mean µs':>9} {'p50 µs':>9} {'p99 µs':>9} {'max µs':>9} {'ops/s':>8}")
for name, d in (("standalone (file)", s), ("replicated (VIP)", r)):
    print(f"{name:24} {d['mean_us']:>9.0f} {d['p50_us']:>9.0f} {d['p99_us']:>9.0f} {d['max_us']:>9.0f} {d['ops_per_s']:>8.0f}")
print(f"replicated / standalone mean latency: {r['mean_us'] / s['mean_us']:.2f}x")
PY
