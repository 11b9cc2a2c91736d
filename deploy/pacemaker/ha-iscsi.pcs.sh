#!/bin/sh
# The ha-iscsi stack under Pacemaker with pcs: the same configuration as ha-iscsi.crm. Run on one node
# once the cluster is up (pcs cluster setup/start). PCS_FILE=FILE applies it to a CIB file instead
# (`pcs -f`), to review it or push it in one step (`pcs cluster cib-push FILE`).
set -e
pcs() { command pcs ${PCS_FILE:+-f "$PCS_FILE"} "$@"; }

# STONITH: one device per node (replace with your agent and parameters).
pcs stonith create fence-node1 fence_ipmilan ip=10.10.3.1 username=admin \
    password_script="cat /etc/ha/ipmi.secret" lanplus=1 pcmk_host_list=node1 op monitor interval=60s
pcs stonith create fence-node2 fence_ipmilan ip=10.10.3.2 username=admin \
    password_script="cat /etc/ha/ipmi.secret" lanplus=1 pcmk_host_list=node2 op monitor interval=60s
pcs constraint location fence-node1 avoids node1
pcs constraint location fence-node2 avoids node2

# The replicated volume as a promotable clone.
pcs resource create vol-r0 ocf:ha-iscsi:volume resource=iscsi.target.0 config=/etc/ha/ha.yaml \
    op start timeout=60s op stop timeout=60s op promote timeout=90s op demote timeout=60s \
    op monitor interval=9s role=Promoted timeout=20s op monitor interval=10s role=Unpromoted timeout=20s \
    promotable promoted-max=1 promoted-node-max=1 clone-max=2 clone-node-max=1 notify=true

# Port block, VIP, target, port unblock: one group, in start order. protocol=6 is tcp: resource-agents
# 4.12's portblock finds its rule in `iptables -L` by the protocol column, which iptables 1.8.9 (Debian
# 12) prints as a number; with protocol=tcp unblock leaves the DROP in place.
pcs resource create iscsi-block ocf:heartbeat:portblock protocol=6 portno=3260 ip=10.10.1.250 action=block \
    op monitor interval=10s timeout=10s --group iscsi-group
pcs resource create iscsi-vip ocf:heartbeat:IPaddr2 ip=10.10.1.250 cidr_netmask=24 nic=bond0 arp_count=5 \
    op monitor interval=10s timeout=20s --group iscsi-group
pcs resource create iscsi-target ocf:ha-iscsi:target config=/etc/ha/ha.yaml \
    op start timeout=30s op stop timeout=30s op monitor interval=10s timeout=20s --group iscsi-group
pcs resource create iscsi-unblock ocf:heartbeat:portblock protocol=6 portno=3260 ip=10.10.1.250 action=unblock \
    op monitor interval=10s timeout=10s --group iscsi-group

# The group where the volume is Primary, after the promotion; its home is node1.
pcs constraint colocation add iscsi-group with Promoted vol-r0-clone INFINITY id=iscsi-with-primary
pcs constraint order promote vol-r0-clone then start iscsi-group id=iscsi-after-promote
pcs constraint location iscsi-group prefers node1=50

pcs property set stonith-enabled=true stonith-action=off
pcs resource defaults update resource-stickiness=100
