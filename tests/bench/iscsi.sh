#!/usr/bin/env bash
# Benchmarks our iSCSI target against tgt with `qemu-img bench` through libiscsi.
#
# Both targets serve the same fully written 1 GiB file on 127.0.0.1 (tgt on 3261 with its own
# control port, ours on 3260), one at a time, and run: 4 KiB QD32 read/write, 1 MiB QD8 read/write.
# Then (unless SKIP_REPLICATED=1) the same four lines from the lab's client namespace against our
# target at the VIP of the two-node lab (deploy/lab: protocol C replication to the other node over a
# veth, both 1 GiB data files fully written, LUN with write-cache: true like the standalone one).
# Prints one table: line, tgt, ours standalone, ours/tgt, ours replicated (VIP), replicated/tgt
# (IOPS for 4 KiB, MiB/s for 1 MiB), then the CPU time each target spent per request on each line
# (user + system of every thread, from /proc: unlike the rates it does not depend on what else runs
# on the machine; replicated: each node's clusterd and both together). Both targets run with their default write-back cache (WCE=1:
# SYNCHRONIZE CACHE and FUA honoured). A second table compares the write lines with no write cache on
# either side (like against like: tgt opening the file O_SYNC, `--bsoflags sync`; ours with
# `write-cache: false`, every WRITE stable when acknowledged), and shows what the cache is worth.
#
# Env: BENCH_DIR (scratch, default /var/tmp/iscsi-bench), COUNT_4K / COUNT_1M (requests per line),
#      OURS_CMD (command that serves $BENCH_FILE as LUN 0 of $OURS_IQN on 127.0.0.1:$OURS_PORT;
#      default: clusterd --release with a one-node config), CARGO_TARGET_DIR, SKIP_REPLICATED=1 (no
#      lab column), BENCH_TIMEOUT (seconds per qemu-img run, default 300). The replicated column needs
#      root and refuses to run if a lab (namespaces ha-*, /var/tmp/ha-lab) already exists.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BENCH_DIR=${BENCH_DIR:-/var/tmp/iscsi-bench}
COUNT_4K=${COUNT_4K:-200000}
COUNT_1M=${COUNT_1M:-5000}
COUNT_4K_WT=${COUNT_4K_WT:-20000}
COUNT_1M_WT=${COUNT_1M_WT:-1000}
SKIP_REPLICATED=${SKIP_REPLICATED:-0}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-300}
TGT_PORT=3261
TGT_CTL=${TGT_CTL:-3297}
TGT_IQN=iqn.2026-01.bench:tgt
TGT_IQN_WT=iqn.2026-01.bench:tgt-sync
LAB_IQN=iqn.2026-11.org.example:lab   # what deploy/lab configures
LAB_VIP=10.77.1.100
export OURS_PORT=3260
export OURS_IQN=iqn.2026-01.bench:ours
OURS_IQN_WT=iqn.2026-01.bench:ours-nocache
export BENCH_FILE=$BENCH_DIR/disk.img
# The write-through lines use their own copy: one file must not be two LUNs of one target (clusterd
# refuses that configuration), and tgt uses the same copy so both sides still serve like files.
BENCH_FILE_WT=$BENCH_DIR/disk-wt.img
mkdir -p "$BENCH_DIR"

QEMU_IMG=$("$ROOT/tests/bench/qemu-iscsi.sh" | tail -n1)

if ! command -v tgtd >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y tgt >&2
fi

if [[ ! -f $BENCH_FILE || $(stat -c %s "$BENCH_FILE") -ne $((1 << 30)) ]]; then
    echo "writing 1 GiB backing file $BENCH_FILE" >&2
    dd if=/dev/zero of="$BENCH_FILE" bs=1M count=1024 conv=fsync status=none
    rm -f "$BENCH_FILE_WT"
fi
if [[ ! -f $BENCH_FILE_WT || $(stat -c %s "$BENCH_FILE_WT") -ne $((1 << 30)) ]]; then
    echo "writing 1 GiB backing file $BENCH_FILE_WT" >&2
    dd if=/dev/zero of="$BENCH_FILE_WT" bs=1M count=1024 conv=fsync status=none
fi

pids=()
stop_local_targets() {
    [[ ${#pids[@]} -gt 0 ]] || return 0
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
    pids=()
}
lab_up=0
cleanup() {
    stop_local_targets
    if [[ $lab_up == 1 ]]; then
        lab_up=0
        "$ROOT/deploy/lab" down >>"$BENCH_DIR/lab.log" 2>&1 || echo "deploy/lab down failed (see $BENCH_DIR/lab.log)" >&2
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

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
# The same file without a write cache: opened O_SYNC, every WRITE durable when acknowledged.
tgtadm -C "$TGT_CTL" --lld iscsi --mode target --op new --tid 2 --targetname "$TGT_IQN_WT"
tgtadm -C "$TGT_CTL" --lld iscsi --mode logicalunit --op new --tid 2 --lun 1 --bsoflags sync --backing-store "$BENCH_FILE_WT"
tgtadm -C "$TGT_CTL" --lld iscsi --mode target --op bind --tid 2 --initiator-address ALL

# --- ours ------------------------------------------------------------------------------------
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
if [[ -z ${OURS_CMD:-} || $SKIP_REPLICATED != 1 ]]; then
    # clusterd for the standalone target; clusterd and haadm for the lab.
    (cd "$ROOT" && cargo build --quiet --release -p clusterd --bins)
fi
if [[ -n ${OURS_CMD:-} ]]; then
    timeout 300 bash -c "$OURS_CMD" >"$BENCH_DIR/ours.log" 2>&1 &
else
    # The product: clusterd serving the file as a standalone target from a one-node ha.yaml. The LUN
    # reports a write-back cache (WCE=1; SYNCHRONIZE CACHE and FUA honoured), as tgt does by default,
    # so both targets give the same durability guarantees.
    cat >"$BENCH_DIR/bench.yaml" <<YAML
nodes:
  - { name: bench, control-socket: $BENCH_DIR/clusterd.sock, state-dir: $BENCH_DIR/state }
targets:
  $OURS_IQN:
    portals: ["127.0.0.1:$OURS_PORT"]
    luns:
      0: { path: $BENCH_FILE }
  $OURS_IQN_WT:
    portals: ["127.0.0.1:$OURS_PORT"]
    luns:
      0: { path: $BENCH_FILE_WT, write-cache: false }
YAML
    RUST_LOG=warn timeout 300 "$CARGO_TARGET_DIR/release/clusterd" --config "$BENCH_DIR/bench.yaml" \
        >"$BENCH_DIR/ours.log" 2>&1 &
fi
pids+=($!)
wait_port "$OURS_PORT"

# Runs one qemu-img bench line; prints seconds (0 on failure). With NETNS set, inside that namespace.
run_bench() { # url count depth size write
    local url=$1 count=$2 depth=$3 size=$4 write=$5 args=() wrap=()
    if [[ $write == 1 ]]; then args=(-w --pattern=0xa5); fi
    if [[ -n ${NETNS:-} ]]; then wrap=(ip netns exec "$NETNS"); fi
    local out
    out=$(timeout "$BENCH_TIMEOUT" "${wrap[@]}" "$QEMU_IMG" bench -f raw -t none -c "$count" -d "$depth" -s "$size" \
        "${args[@]}" "$url" 2>&1) || {
        echo "qemu-img bench failed on $url: $out" >&2
        echo 0
        return
    }
    sed -n 's/.*Run completed in \([0-9.]*\) seconds.*/\1/p' <<<"$out"
}

# CPU time (clock ticks, user + system, all threads) of the given processes and their children: what
# a target spends per request, which other load on the machine does not change (unlike the rates).
cpu_ticks() {
    local total=0 p
    for p in "$@" $(for q in "$@"; do pgrep -P "$q"; done); do
        [[ -r /proc/$p/stat ]] || continue
        # Fields 14 and 15 after the ")" that ends the command name.
        total=$((total + $(sed 's/.*) //' "/proc/$p/stat" | awk '{print $12 + $13}')))
    done
    echo "$total"
}
declare -A CPU_TGT CPU_OURS CPU_REPL1 CPU_REPL2
# Runs run_bench: its seconds go to TIMES[NAME], the CPU ticks of PIDS during it to CPUS[NAME] (no
# subshell, so the arrays are the caller's).
measured_bench() { # TIMES CPUS name pids url count depth size write
    local -n times_=$1 cpus_=$2
    local name=$3 pids_=$4 c0
    shift 4
    c0=$(cpu_ticks $pids_)
    times_[$name]=$(run_bench "$@")
    cpus_[$name]=$(($(cpu_ticks $pids_) - c0))
}

TGT_URL="iscsi://127.0.0.1:$TGT_PORT/$TGT_IQN/1"
OURS_URL="iscsi://127.0.0.1:$OURS_PORT/$OURS_IQN/0"
LAB_URL="iscsi://$LAB_VIP/$LAB_IQN/0"
SPECS=("4k-qd32-read $COUNT_4K 32 4096 0 IOPS" "4k-qd32-write $COUNT_4K 32 4096 1 IOPS"
    "1m-qd8-read $COUNT_1M 8 1M 0 MiB/s" "1m-qd8-write $COUNT_1M 8 1M 1 MiB/s")
declare -A T_TGT T_OURS T_REPL

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)
echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs ($cpu), load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for spec in "${SPECS[@]}"; do
    read -r name count depth size write _ <<<"$spec"
    measured_bench T_TGT CPU_TGT "$name" "${pids[0]}" "$TGT_URL" "$count" "$depth" "$size" "$write"
    measured_bench T_OURS CPU_OURS "$name" "${pids[1]}" "$OURS_URL" "$count" "$depth" "$size" "$write"
    echo "$name: tgt ${T_TGT[$name]} s, ours standalone ${T_OURS[$name]} s" >&2
done
# Without a write cache on either side (write lines only; reads do not depend on it).
declare -A T_TGT_WT T_OURS_WT
SPECS_WT=("4k-qd32-write $COUNT_4K_WT 32 4096 1 IOPS" "1m-qd8-write $COUNT_1M_WT 8 1M 1 MiB/s")
if [[ -z ${OURS_CMD:-} ]]; then
    for spec in "${SPECS_WT[@]}"; do
        read -r name count depth size write _ <<<"$spec"
        T_TGT_WT[$name]=$(run_bench "iscsi://127.0.0.1:$TGT_PORT/$TGT_IQN_WT/1" "$count" "$depth" "$size" "$write")
        T_OURS_WT[$name]=$(run_bench "iscsi://127.0.0.1:$OURS_PORT/$OURS_IQN_WT/0" "$count" "$depth" "$size" "$write")
        echo "$name without write cache: tgt O_SYNC ${T_TGT_WT[$name]} s, ours ${T_OURS_WT[$name]} s" >&2
    done
fi
stop_local_targets

# --- ours replicated, at the lab's VIP -------------------------------------------------------
if [[ $SKIP_REPLICATED != 1 ]] &&
    [[ -e /run/netns/ha-node1 || -e /run/netns/ha-node2 || -e /run/netns/ha-client || -e ${HA_LAB_DIR:-/var/tmp/ha-lab} ]]; then
    echo "a lab already exists (deploy/lab status): not touching it, no replicated column" >&2
    SKIP_REPLICATED=1
fi
if [[ $SKIP_REPLICATED != 1 ]]; then
    # Both data files fully written (a sparse file would make the first pass pay for allocation, as
    # the standalone file does not), and the LUN with the same write-back cache as the standalone one.
    echo "bringing up the lab: deploy/lab up --size 1G --prefill (log $BENCH_DIR/lab.log)" >&2
    lab_up=1
    # Both nodes log at warn, like the standalone target.
    if ! RUST_LOG=warn HA_LAB_BIN="$CARGO_TARGET_DIR/release" "$ROOT/deploy/lab" up --size 1G --no-build --prefill \
        >"$BENCH_DIR/lab.log" 2>&1; then
        tail -n 30 "$BENCH_DIR/lab.log" >&2
        echo "the lab did not come up: no replicated column" >&2
        SPECS_REPL=()
    else
        SPECS_REPL=("${SPECS[@]}")
    fi
    for spec in "${SPECS_REPL[@]}"; do
        read -r name count depth size write _ <<<"$spec"
        if [[ $name == 4k-qd32-write ]]; then
            # Where the CPU goes during the replicated 4 KiB writes: every thread of both nodes and qemu-img.
            (sleep 3; timeout 20 top -b -H -n 2 -d 3 -w 200 >"$BENCH_DIR/top-replicated-4k-write.txt" 2>&1 || true) &
        fi
        # Each node's clusterd apart: node1 holds the VIP (preferred), node2 is its peer. On two
        # servers each would have its own CPUs.
        node1=$(pgrep -f -- "--config ${HA_LAB_DIR:-/var/tmp/ha-lab}/ha.yaml --node node1" | tr '\n' ' ')
        node2=$(pgrep -f -- "--config ${HA_LAB_DIR:-/var/tmp/ha-lab}/ha.yaml --node node2" | tr '\n' ' ')
        c2=$(cpu_ticks $node2)
        NETNS=ha-client measured_bench T_REPL CPU_REPL1 "$name" "$node1" "$LAB_URL" "$count" "$depth" "$size" "$write"
        CPU_REPL2[$name]=$(($(cpu_ticks $node2) - c2))
        echo "$name: ours replicated at the VIP ${T_REPL[$name]} s" >&2
    done
    wait
    cleanup
fi

printf '%-15s %6s %9s %16s %9s %22s %15s\n' line unit tgt "ours standalone" ours/tgt "ours replicated (VIP)" replicated/tgt
for spec in "${SPECS[@]}"; do
    read -r name count _ size _ unit <<<"$spec"
    python3 - "$name" "$count" "$size" "$unit" "${T_TGT[$name]}" "${T_OURS[$name]}" "${T_REPL[$name]:-}" <<'PY'
import sys
name, count, size, unit, t_tgt, t_ours, t_repl = sys.argv[1:]
count = int(count)
nbytes = 1 << 20 if size == "1M" else int(size)
def rate(t):
    t = float(t or 0)
    if t <= 0:
        return 0.0
    return count / t if unit == "IOPS" else count * nbytes / t / (1 << 20)
a, b = rate(t_tgt), rate(t_ours)
ratio = f"{b / a:.2f}x" if a > 0 else "n/a"
if t_repl:
    c = rate(t_repl)
    repl, repl_ratio = f"{c:.0f}", (f"{c / a:.2f}x" if a > 0 else "n/a")
else:
    repl, repl_ratio = "skipped", "-"
print(f"{name:<15} {unit:>6} {a:>9.0f} {b:>16.0f} {ratio:>9} {repl:>22} {repl_ratio:>15}")
PY
done

echo
echo "CPU time of the target per request (user + system, every thread; replicated: node1 holds the VIP, node2 is its peer)"
printf '%-15s %10s %16s %18s %14s %14s %14s\n' line tgt "ours standalone" "replicated (both)" "node1 alone" "node2 alone" node1/tgt
tick_us=$((1000000 / $(getconf CLK_TCK)))
for spec in "${SPECS[@]}"; do
    read -r name count _ <<<"$spec"
    python3 - "$name" "$count" "$tick_us" "${CPU_TGT[$name]:-0}" "${CPU_OURS[$name]:-0}" "${CPU_REPL1[$name]:-}" "${CPU_REPL2[$name]:-}" <<'PY'
import sys
name, count, tick_us, a, b, n1, n2 = sys.argv[1:]
per = lambda t: int(t) * int(tick_us) / int(count)
a, b = per(a), per(b)
if n1 == "":
    both = one = two = ratio = "skipped"
else:
    one, two = per(n1), per(n2 or 0)
    both, ratio = f"{one + two:.1f} us", (f"{one / a:.2f}x" if a > 0 else "n/a")
    one, two = f"{one:.1f} us", f"{two:.1f} us"
print(f"{name:<15} {a:>7.1f} us {b:>13.1f} us {both:>18} {one:>14} {two:>14} {ratio:>14}")
PY
done

[[ ${#T_OURS_WT[@]} -gt 0 ]] || exit 0
echo
echo "without a write cache (every WRITE stable when acknowledged): tgt --bsoflags sync vs ours write-cache: false"
printf '%-15s %6s %12s %17s %9s %26s\n' line unit "tgt O_SYNC" "ours no cache" ours/tgt "ours no cache / ours cache"
for spec in "${SPECS_WT[@]}"; do
    read -r name count _ size _ unit <<<"$spec"
    python3 - "$name" "$count" "$size" "$unit" "${T_TGT_WT[$name]}" "${T_OURS_WT[$name]}" "${T_OURS[$name]}" "$(grep -o "$name [0-9]*" <<<"${SPECS[*]}" | cut -d' ' -f2)" <<'PY'
import sys
name, count, size, unit, t_tgt, t_ours, t_cached, count_cached = sys.argv[1:]
nbytes = 1 << 20 if size == "1M" else int(size)
def rate(t, n):
    t = float(t or 0)
    if t <= 0:
        return 0.0
    return n / t if unit == "IOPS" else n * nbytes / t / (1 << 20)
a, b = rate(t_tgt, int(count)), rate(t_ours, int(count))
c = rate(t_cached, int(count_cached))
ratio = f"{b / a:.2f}x" if a > 0 else "n/a"
cost = f"{b / c:.2f}x" if c > 0 else "n/a"
print(f"{name:<15} {unit:>6} {a:>12.0f} {b:>17.0f} {ratio:>9} {cost:>26}")
PY
done
