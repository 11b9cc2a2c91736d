#!/usr/bin/env bash
# What collecting metrics costs the data path: 4 KiB QD32 IOPS (qemu-img bench through libiscsi) of
# our target with metrics on (`metrics.listen` set: per-session counters and latency histograms on
# every command, and a scraper fetching /metrics every second plus the status page every two) and off
# (no `metrics` section: nothing counted, no listener), in one run. The two runs alternate, read and
# write, for ROUNDS rounds (the order flips every round so drift cancels out); the table shows the
# median IOPS of each and the ratio on/off (goal >= 0.98), and clusterd's own CPU time per command
# (user+system from /proc, which other load on a shared machine disturbs far less than IOPS).
#
# The same fully written 1 GiB file is served as a standalone LUN (write-back cache, as iscsi.sh)
# by a release clusterd on 127.0.0.1:$PORT. Takes /tmp/ha-exclusive.lock (the machine's convention
# for benchmarks and fixed ports), so it waits for other benchmarks instead of measuring them.
# Env: BENCH_DIR (default /var/tmp/metrics-bench), COUNT (requests per run, default 200000), ROUNDS
# (default 3), PORT (default 3262), METRICS_PORT (default 9942), BENCH_TIMEOUT (seconds per run).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BENCH_DIR=${BENCH_DIR:-/var/tmp/metrics-bench}
COUNT=${COUNT:-200000}
ROUNDS=${ROUNDS:-3}
PORT=${PORT:-3262}
METRICS_PORT=${METRICS_PORT:-9942}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-300}
IQN=iqn.2026-01.bench:metrics
FILE=$BENCH_DIR/disk.img
mkdir -p "$BENCH_DIR"

exec 9>/tmp/ha-exclusive.lock
if ! flock -n 9; then
    echo "waiting for /tmp/ha-exclusive.lock (another benchmark or fixed-port test runs)" >&2
    flock 9
fi

QEMU_IMG=$("$ROOT/tests/bench/qemu-iscsi.sh" | tail -n1)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
(cd "$ROOT" && cargo build --quiet --release -p clusterd --bins)
CLUSTERD=$CARGO_TARGET_DIR/release/clusterd

if [[ ! -f $FILE || $(stat -c %s "$FILE") -ne $((1 << 30)) ]]; then
    echo "writing 1 GiB backing file $FILE" >&2
    dd if=/dev/zero of="$FILE" bs=1M count=1024 conv=fsync status=none
fi

write_config() { # name with-metrics
    cat >"$BENCH_DIR/$1.yaml" <<YAML
nodes:
  - { name: bench, control-socket: $BENCH_DIR/$1.sock, state-dir: $BENCH_DIR/$1-state }
targets:
  $IQN:
    portals: ["127.0.0.1:$PORT"]
    luns:
      0: { path: $FILE }
YAML
    if [[ $2 == 1 ]]; then
        printf 'metrics:\n  listen: "127.0.0.1:%s"\n' "$METRICS_PORT" >>"$BENCH_DIR/$1.yaml"
    fi
}
write_config on 1
write_config off 0

daemon=""
scraper=""
stop_all() {
    [[ -n $scraper ]] && { kill "$scraper" 2>/dev/null || true; wait "$scraper" 2>/dev/null || true; scraper=""; }
    [[ -n $daemon ]] && { kill "$daemon" 2>/dev/null || true; wait "$daemon" 2>/dev/null || true; daemon=""; }
    return 0
}
trap stop_all EXIT
trap 'exit 130' INT TERM

wait_port() {
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "port $1 did not open" >&2
    return 1
}

# One measurement: start clusterd with config $1, bench (read or write), stop. Sets IOPS (not run in
# a subshell, so the EXIT trap can still stop what it started).
measure() { # on|off read|write
    local mode=$1 rw=$2 args=() out secs
    RUST_LOG=warn "$CLUSTERD" --config "$BENCH_DIR/$mode.yaml" >>"$BENCH_DIR/$mode.log" 2>&1 &
    daemon=$!
    wait_port "$PORT"
    if [[ $mode == on ]]; then
        wait_port "$METRICS_PORT"
        # A 1 s scrape interval (Prometheus' default is 15 s) and a status page refreshing every 2 s.
        (
            for i in $(seq 1 "$BENCH_TIMEOUT"); do
                curl -sf "http://127.0.0.1:$METRICS_PORT/metrics" >/dev/null || true
                ((i % 2 == 0)) && { curl -sf "http://127.0.0.1:$METRICS_PORT/" >/dev/null || true; }
                sleep 1
            done
        ) &
        scraper=$!
    fi
    [[ $rw == write ]] && args=(-w --pattern=0xa5)
    out=$(timeout "$BENCH_TIMEOUT" "$QEMU_IMG" bench -f raw -t none -c "$COUNT" -d 32 -s 4096 "${args[@]}" \
        "iscsi://127.0.0.1:$PORT/$IQN/0" 2>&1) || { echo "qemu-img bench failed: $out" >&2; stop_all; IOPS=0; return; }
    # clusterd's CPU time (user + system, clock ticks) for the whole run, startup included.
    local ticks
    ticks=$(awk '{print $14 + $15}' "/proc/$daemon/stat")
    CPU_US=$(python3 -c "print(f'{$ticks * 1e6 / $(getconf CLK_TCK) / $COUNT:.2f}')")
    if [[ $mode == on ]]; then
        # The counters saw the run: proof that "on" counted.
        curl -sf "http://127.0.0.1:$METRICS_PORT/metrics" | grep -E '^clusterd_iscsi_command_duration_seconds_count\{.*class="'"$rw"'"' >>"$BENCH_DIR/on-counts.txt" || true
    fi
    stop_all
    secs=$(sed -n 's/.*Run completed in \([0-9.]*\) seconds.*/\1/p' <<<"$out")
    IOPS=$(python3 -c "print(f'{$COUNT / $secs:.0f}')")
}

: >"$BENCH_DIR/on-counts.txt"
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)
echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs ($cpu), load $(cut -d' ' -f1-3 /proc/loadavg), $COUNT x 4 KiB QD32 per run, $ROUNDS rounds" >&2
declare -A R C
for round in $(seq 1 "$ROUNDS"); do
    if ((round % 2)); then order=(on off); else order=(off on); fi
    for rw in read write; do
        for mode in "${order[@]}"; do
            measure "$mode" "$rw"
            iops=$IOPS
            R[$mode-$rw]="${R[$mode-$rw]:-} $iops"
            C[$mode-$rw]="${C[$mode-$rw]:-} $CPU_US"
            echo "round $round $rw metrics $mode: $iops IOPS, clusterd CPU $CPU_US us per command" >&2
        done
    done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
echo "counters seen with metrics on:" >&2
cat "$BENCH_DIR/on-counts.txt" >&2

printf '%-14s %12s %12s %8s %20s %20s %10s\n' line "IOPS on" "IOPS off" "on/off" "CPU us/cmd on" "CPU us/cmd off" "on/off"
for rw in read write; do
    python3 - "$rw" "${R[on-$rw]}" "${R[off-$rw]}" "${C[on-$rw]}" "${C[off-$rw]}" <<'PY'
import statistics, sys
rw = sys.argv[1]
on, off, con, coff = ([float(x) for x in a.split()] for a in sys.argv[2:6])
m_on, m_off = statistics.median(on), statistics.median(off)
c_on, c_off = statistics.median(con), statistics.median(coff)
ratio = m_on / m_off if m_off else float("nan")
cratio = c_on / c_off if c_off else float("nan")
print(f"4k-qd32-{rw:<6} {m_on:>12.0f} {m_off:>12.0f} {ratio:>8.3f} {c_on:>20.2f} {c_off:>20.2f} {cratio:>10.3f}")
print(f"  IOPS on:  {' '.join(f'{x/1000:.1f}k' for x in on)}")
print(f"  IOPS off: {' '.join(f'{x/1000:.1f}k' for x in off)}")
PY
done
