#!/bin/sh
# The lab's fence command (cluster.guard.fence-command): emulates powering the peer off. clusterd runs it
# through `sh -c` with HA_NODE (this node) and HA_PEER (the node to fence) in the environment, and only
# takes the group over when it exits 0. "Powered off" here means: the peer's clusterd gets SIGKILL and
# the VIP leaves the peer's pub0 (a dead machine answers no ARP). The peer's namespace stays, so
# `deploy/lab start NODE` boots it again.
#   usage: fence.sh LAB_DIR        (deploy/lab copies this file into LAB_DIR and writes the command)
set -u
lab=${1:?usage: fence.sh LAB_DIR}
vip=${HA_LAB_VIP:-10.77.1.100/24}
case "${HA_PEER:-}" in
  node1|node2) ;;
  *) echo "fence.sh: HA_PEER='${HA_PEER:-}' is not node1 or node2" >&2; exit 1;;
esac
pidfile="$lab/$HA_PEER.pid"
if [ -f "$pidfile" ]; then
  pid=$(cat "$pidfile")
  # Only a clusterd: a stale pid file must never kill an unrelated process.
  if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = clusterd ]; then
    kill -9 "$pid" 2>/dev/null
  fi
  rm -f "$pidfile"
fi
ip -n "ha-$HA_PEER" addr del "$vip" dev pub0 2>/dev/null
echo "$(date '+%F %T.%3N') fenced $HA_PEER from ${HA_NODE:-?} (clusterd SIGKILL, VIP removed)" >>"$lab/fence.log"
exit 0
