#!/usr/bin/env bash
# Benchmarks our iSCSI target against tgt with `qemu-img bench` through libiscsi.
#
# Both targets serve the same fully written 1 GiB file on 127.0.0.1 (tgt on 3261 with its own
# control port, ours on 3260), one at a time, and run: 4 KiB QD32 read/write, 1 MiB QD8 read/write.
# Prints: line, tgt, ours, ours/tgt (IOPS for 4 KiB, MiB/s for 1 MiB).
#
# Env: BENCH_DIR (scratch, default /var/tmp/iscsi-bench), COUNT_4K / COUNT_1M (requests per line),
#      OURS_CMD (command that serves $BENCH_FILE as LUN 0 of $OURS_IQN on 127.0.0.1:$OURS_PORT;
#      default: clusterd --release with a one-node config), CARGO_TARGET_DIR.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BENCH_DIR=${BENCH_DIR:-/var/tmp/iscsi-bench}
COUNT_4K=${COUNT_4K:-200000}
COUNT_1M=${COUNT_1M:-5000}
TGT_PORT=3261
TGT_CTL=${TGT_CTL:-3297}
TGT_IQN=iqn.2026-01.bench:tgt
export OURS_PORT=3260
export OURS_IQN=iqn.2026-01.bench:ours
export BENCH_FILE=$BENCH_DIR/disk.img
mkdir -p "$BENCH_DIR"

QEMU_IMG=$("$ROOT/tests/bench/qemu-iscsi.sh" | tail -n1)

if ! command -v tgtd >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y tgt >&2
fi

if [[ ! -f $BENCH_FILE || $(stat -c %s "$BENCH_FILE") -ne $((1 << 30)) ]]; then
    echo "writing 1 GiB backing file $BENCH_FILE" >&2
    dd if=/dev/zero of="$BENCH_FILE" bs=1M count=1024 conv=fsync status=none
fi

pids=()
cleanup() {
    # tgtd ignores SIGTERM while targets exist: ask it to shut down, then make sure.
    tgtadm -C "$TGT_CTL" --mode system --op delete --force >/dev/null 2>&1 || true
    for p in "${pids[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    sleep 1
    for p in "${pids[@]}"; do
        kill -KILL "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
}
trap cleanup EXIT INT TERM

wait_port() {
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "port $1 did not open" >&2
    return 1
}

# --- tgt -------------------------------------------------------------------------------------
# Started directly (no timeout wrapper) so the trap's KILL reaches tgtd itself.
tgtd -f -C "$TGT_CTL" --iscsi "portal=127.0.0.1:$TGT_PORT" >"$BENCH_DIR/tgtd.log" 2>&1 &
pids+=($!)
wait_port "$TGT_PORT"
tgtadm -C "$TGT_CTL" --lld iscsi --mode target --op new --tid 1 --targetname "$TGT_IQN"
# LUN 0 of a tgt target is its controller; the disk is LUN 1.
tgtadm -C "$TGT_CTL" --lld iscsi --mode logicalunit --op new --tid 1 --lun 1 --backing-store "$BENCH_FILE"
tgtadm -C "$TGT_CTL" --lld iscsi --mode target --op bind --tid 1 --initiator-address ALL

# --- ours ------------------------------------------------------------------------------------
if [[ -n ${OURS_CMD:-} ]]; then
    timeout 300 bash -c "$OURS_CMD" >"$BENCH_DIR/ours.log" 2>&1 &
else
    # The product: clusterd serving the file as a standalone target from a one-node ha.yaml. The LUN
    # reports a write-back cache (WCE=1; SYNCHRONIZE CACHE and FUA honoured), as tgt does by default,
    # so both targets give the same durability guarantees.
    export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
    (cd "$ROOT" && cargo build --quiet --release -p clusterd --bin clusterd)
    cat >"$BENCH_DIR/bench.yaml" <<YAML
nodes:
  - { name: bench, control-socket: $BENCH_DIR/clusterd.sock, state-dir: $BENCH_DIR/state }
targets:
  $OURS_IQN:
    portals: ["127.0.0.1:$OURS_PORT"]
    luns:
      0: { path: $BENCH_FILE, write-cache: ${WRITE_CACHE_YAML:-true} }
YAML
    RUST_LOG=warn timeout 300 "$CARGO_TARGET_DIR/release/clusterd" --config "$BENCH_DIR/bench.yaml" \
        >"$BENCH_DIR/ours.log" 2>&1 &
fi
pids+=($!)
wait_port "$OURS_PORT"

# Runs one qemu-img bench line; prints seconds.
run_bench() { # url count depth size write
    local url=$1 count=$2 depth=$3 size=$4 write=$5 args=()
    if [[ $write == 1 ]]; then args=(-w --pattern=0xa5); fi
    local out
    out=$(timeout 120 "$QEMU_IMG" bench -f raw -t none -c "$count" -d "$depth" -s "$size" "${args[@]}" "$url" 2>&1) || {
        echo "qemu-img bench failed on $url: $out" >&2
        echo 0
        return
    }
    sed -n 's/.*Run completed in \([0-9.]*\) seconds.*/\1/p' <<<"$out"
}

TGT_URL="iscsi://127.0.0.1:$TGT_PORT/$TGT_IQN/1"
OURS_URL="iscsi://127.0.0.1:$OURS_PORT/$OURS_IQN/0"

printf '%-15s %8s %10s %10s %9s\n' line unit tgt ours ours/tgt
for spec in "4k-qd32-read $COUNT_4K 32 4096 0 IOPS" "4k-qd32-write $COUNT_4K 32 4096 1 IOPS" \
    "1m-qd8-read $COUNT_1M 8 1M 0 MiB/s" "1m-qd8-write $COUNT_1M 8 1M 1 MiB/s"; do
    read -r name count depth size write unit <<<"$spec"
    t_tgt=$(run_bench "$TGT_URL" "$count" "$depth" "$size" "$write")
    t_ours=$(run_bench "$OURS_URL" "$count" "$depth" "$size" "$write")
    python3 - "$name" "$count" "$size" "$unit" "$t_tgt" "$t_ours" <<'PY'
import sys
name, count, size, unit, t_tgt, t_ours = sys.argv[1:]
count = int(count)
nbytes = 1 << 20 if size == "1M" else int(size)
def rate(t):
    t = float(t or 0)
    if t <= 0:
        return 0.0
    return count / t if unit == "IOPS" else count * nbytes / t / (1 << 20)
a, b = rate(t_tgt), rate(t_ours)
ratio = f"{b / a:.2f}x" if a > 0 else "n/a"
print(f"{name:<15} {unit:>8} {a:>10.0f} {b:>10.0f} {ratio:>9}")
PY
done
