//! A real two-node Corosync 3 + Pacemaker 2.1 cluster (Debian's packages) on one machine, on the
//! [`NetLab`] network: each node's corosync, pacemakerd (and its daemons) and clusterd run in that
//! node's network namespace plus a mount, UTS and PID namespace of their own.
//!
//! Why each namespace: libqb's IPC (corosync's cmap/cpg/quorum, every Pacemaker daemon) uses abstract
//! Unix sockets, which belong to the network namespace, and ring buffers in /dev/shm; corosync locks
//! /run/corosync.pid; Pacemaker keeps its CIB in /var/lib/pacemaker. The node's mount namespace gets
//! its own /dev/shm and /run (tmpfs), /var/lib/pacemaker and /var/lib/corosync (bind mounts of its
//! directory in the lab), and read-only overlays that add the agents under test to
//! /usr/lib/ocf/resource.d and the test fence agent to /usr/sbin. The UTS namespace gives it its host
//! name (Pacemaker's node name). The PID namespace makes "kill -9 of the node" one signal: killing its
//! init kills corosync, every Pacemaker daemon and clusterd at once, like pulling the power.
//!
//! Fencing: `fence_hatest` (written here) asks this harness, through files in the lab directory, to
//! power a node off; the harness kills that node's namespaces' processes and confirms. Nothing outside
//! the namespaces is touched: no address or route in the root namespace, no file outside the lab
//! directory (the overlays are read-only and live only in the node's mount namespace).

use crate::netlab::{NODES, NetLab, VIP};
use crate::{bin, poll_until};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Corosync's totem timings used by the lab (named in the drill's report): a node is declared lost
/// after `token` without the token, and the new membership forms after `consensus` more.
pub const TOKEN_MS: u64 = 1000;
pub const CONSENSUS_MS: u64 = 1200;

/// Node processes, shared with the fence thread.
type Nodes = Arc<Mutex<[Option<Child>; 2]>>;

pub struct PmLab {
    pub lab: NetLab,
    nodes: Nodes,
    /// Fences the harness carried out: (node, when).
    pub fences: Arc<Mutex<Vec<(String, Instant)>>>,
    stop_fencer: Arc<std::sync::atomic::AtomicBool>,
    fencer: Option<std::thread::JoinHandle<()>>,
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

impl PmLab {
    /// The network and backing files of a [`NetLab`], a pacemaker-mode ha.yaml, corosync.conf, the node
    /// start script, the agents and the test fence agent. Nothing runs yet.
    pub fn new(size: u64) -> Result<PmLab> {
        let lab = NetLab::new("pm", size, "")?;
        let d = lab.dir.path().to_path_buf();
        // Pacemaker's daemons run as hacluster and read agents and write logs under the lab directory.
        set_mode(&d, 0o755)?;
        write_files(&d, &lab.prefix)?;
        let nodes: Nodes = Arc::new(Mutex::new([None, None]));
        let fences = Arc::new(Mutex::new(Vec::new()));
        let stop_fencer = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let fencer = {
            let (nodes, fences, stop, d, prefix) = (Arc::clone(&nodes), Arc::clone(&fences), Arc::clone(&stop_fencer), d.clone(), lab.prefix.clone());
            std::thread::spawn(move || fence_service(&d, &prefix, &nodes, &fences, &stop))
        };
        Ok(PmLab { lab, nodes, fences, stop_fencer, fencer: Some(fencer) })
    }

    pub fn dir(&self) -> &Path {
        self.lab.dir.path()
    }

    /// Starts node i: corosync, pacemakerd and clusterd in the node's namespaces.
    pub fn start_node(&self, i: usize) -> Result<()> {
        let n = NODES[i];
        // Powered on again: the fence agent's status must no longer report it off.
        let _ = std::fs::remove_file(self.dir().join(format!("fence/done-{n}")));
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir().join(format!("{n}/init.log")))?;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.lab.ns(n)])
            .args(["unshare", "--mount", "--uts", "--pid", "--fork", "--kill-child", "--mount-proc", "--propagation", "private"])
            .arg("/bin/sh")
            .arg(self.dir().join("node-init.sh"))
            .arg(n)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("start a node's namespaces")?;
        lock(&self.nodes)[i] = Some(child);
        // clusterd answering means the node's mounts are in place and its daemons were started.
        poll_until(Duration::from_secs(30), || self.lab.haadm(i, &["status"]).ok().filter(|o| o.status.success()))
            .with_context(|| format!("{n} did not come up: {}", self.node_log(i)))?;
        Ok(())
    }

    /// kill -9 of everything node i runs (its PID namespace's init, so corosync, Pacemaker, clusterd).
    pub fn kill_node(&self, i: usize) {
        kill_node(&self.lab.prefix, &self.nodes, i);
    }

    /// Runs a command inside node i's namespaces (as root), e.g. `crm_mon`, `crm`, `pcs`, `cibadmin`.
    pub fn node_exec(&self, i: usize, args: &[&str]) -> Result<Output> {
        let init = self.init_pid(i).with_context(|| format!("{} is not running", NODES[i]))?;
        Command::new("nsenter")
            .args(["-t", &init.to_string(), "-m", "-u", "-n", "-p", "--"])
            .args(args)
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .output()
            .with_context(|| format!("nsenter {args:?}"))
    }

    pub fn node_ok(&self, i: usize, args: &[&str]) -> Result<String> {
        let o = self.node_exec(i, args)?;
        if !o.status.success() {
            bail!("{} on {}: {}", args.join(" "), NODES[i], text(&o));
        }
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    }

    /// The host PID of node i's namespace init (the child of `unshare`).
    fn init_pid(&self, i: usize) -> Option<u32> {
        let unshare = lock(&self.nodes)[i].as_ref()?.id();
        let children = std::fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children")).ok()?;
        children.split_whitespace().next()?.parse().ok()
    }

    /// `crm_mon` as XML from node i.
    pub fn crm_mon(&self, i: usize) -> Result<String> {
        self.node_ok(i, &["crm_mon", "-1", "--output-as=xml"])
    }

    /// Waits (bounded) until node i's `crm_mon` satisfies `pred`.
    pub fn wait_crm(&self, i: usize, what: &str, limit: Duration, pred: impl Fn(&str) -> bool) -> Result<String> {
        let mut last = String::new();
        poll_until(limit, || {
            let x = self.crm_mon(i).ok()?;
            if pred(&x) {
                return Some(x);
            }
            last = x;
            None
        })
        .ok_or_else(|| anyhow::anyhow!("{}: timed out after {limit:?} waiting for {what}; crm_mon:\n{last}\n{}", NODES[i], self.logs()))
    }

    pub fn node_log(&self, i: usize) -> String {
        let n = NODES[i];
        let read = |f: &str| tail(&std::fs::read_to_string(self.dir().join(n).join(f)).unwrap_or_default(), 40);
        format!("--- {n} init ---\n{}\n--- {n} clusterd ---\n{}\n--- {n} pacemaker ---\n{}", read("init.log"), read("clusterd.log"), read("pacemaker.log"))
    }

    pub fn logs(&self) -> String {
        format!("{}\n{}", self.node_log(0), self.node_log(1))
    }

    /// Applies the README's crm configuration (deploy/pacemaker/ha-iscsi.crm) with the lab's names.
    pub fn load_crm_config(&self, i: usize, source: &Path) -> Result<()> {
        let cfg = lab_config_text(&std::fs::read_to_string(source).with_context(|| format!("read {}", source.display()))?, self.dir(), &self.lab.config);
        let file = self.dir().join("ha-iscsi.crm");
        std::fs::write(&file, cfg)?;
        let path = file.display().to_string();
        self.node_ok(i, &["crm", "-F", "configure", "load", "update", &path]).map(|_| ())
    }
}

/// The README's Pacemaker configuration with the lab's names: the test fence agent for fence_ipmilan,
/// the lab's VIP, interface, resource and ha.yaml, and the haadm under test.
pub fn lab_config_text(readme: &str, dir: &Path, config: &Path) -> String {
    let bin_dir = bin("haadm").parent().map(Path::to_path_buf).unwrap_or_default();
    readme
        .replace("fence_ipmilan", "fence_hatest")
        .replace("10.10.1.250", VIP)
        .replace("nic=bond0", "nic=pub0")
        .replace("iscsi.target.0", "r0")
        .replace("config=/etc/ha/ha.yaml", &format!("config={} haadm={}/haadm", config.display(), bin_dir.display()))
        .replace("cat /etc/ha/ipmi.secret", &format!("cat {}/ipmi.secret", dir.display()))
}

impl Drop for PmLab {
    fn drop(&mut self) {
        for i in 0..2 {
            self.kill_node(i);
        }
        // PM_LOGS=DIR keeps every node's logs (corosync, pacemaker, clusterd) for a post-mortem.
        if let Some(keep) = std::env::var_os("PM_LOGS") {
            for n in NODES {
                let to = PathBuf::from(&keep).join(n);
                let _ = std::fs::create_dir_all(&to);
                for f in ["init.log", "corosync.log", "pacemaker.log", "clusterd.log", "pacemakerd.out"] {
                    let _ = std::fs::copy(self.dir().join(n).join(f), to.join(f));
                }
            }
        }
        self.stop_fencer.store(true, std::sync::atomic::Ordering::Release);
        if let Some(t) = self.fencer.take() {
            let _ = t.join();
        }
        // NetLab's drop kills whatever is left in the namespaces and deletes them.
    }
}

fn lock(nodes: &Nodes) -> std::sync::MutexGuard<'_, [Option<Child>; 2]> {
    nodes.lock().unwrap_or_else(|p| p.into_inner())
}

fn kill_node(prefix: &str, nodes: &Nodes, i: usize) {
    if let Some(mut c) = lock(nodes)[i].take() {
        // --kill-child: the namespace's init gets SIGKILL when unshare dies, and with it every process
        // of the PID namespace.
        let _ = c.kill();
        let _ = c.wait();
    }
    let ns = format!("{prefix}-{}", NODES[i]);
    let empty = poll_until(Duration::from_secs(10), || {
        let out = Command::new("ip").args(["netns", "pids", &ns]).output().ok()?;
        let pids = String::from_utf8_lossy(&out.stdout).split_whitespace().map(str::to_string).collect::<Vec<_>>();
        for p in &pids {
            let _ = Command::new("kill").args(["-9", p]).stderr(Stdio::null()).status();
        }
        pids.is_empty().then_some(())
    });
    if empty.is_none() {
        eprintln!("pacemaker lab: processes left in {ns} after kill -9");
    }
    // A node that loses power loses the addresses its agents added at run time; its network
    // namespace, which stands for the NIC here, would keep the VIP, and the node's first probe after
    // it comes back would find the VIP active on both nodes (Pacemaker's multiple-active recovery).
    drop_runtime_addresses(&ns);
}

/// Removes the VIP (however it was added: any prefix length, any interface) from namespace `ns`.
fn drop_runtime_addresses(ns: &str) {
    let Ok(out) = Command::new("ip").args(["-n", ns, "-o", "-4", "addr", "show"]).output() else { return };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (Some(dev), Some(pos)) = (words.get(1).and_then(|d| d.trim_end_matches(':').split('@').next()), words.iter().position(|w| *w == "inet")) else { continue };
        let Some(cidr) = words.get(pos + 1) else { continue };
        if cidr.split('/').next() == Some(VIP) {
            let _ = Command::new("ip").args(["-n", ns, "addr", "del", cidr, "dev", dev]).status();
        }
    }
}

/// The harness side of `fence_hatest`: a request file `fence/req-NODE` → kill that node → `fence/done-NODE`.
fn fence_service(dir: &Path, prefix: &str, nodes: &Nodes, fences: &Mutex<Vec<(String, Instant)>>, stop: &std::sync::atomic::AtomicBool) {
    let fdir = dir.join("fence");
    // Bounded by the lab's lifetime: the drop sets `stop`.
    while !stop.load(std::sync::atomic::Ordering::Acquire) {
        for (i, n) in NODES.iter().enumerate() {
            let req = fdir.join(format!("req-{n}"));
            if req.exists() {
                kill_node(prefix, nodes, i);
                let _ = std::fs::remove_file(&req);
                let _ = std::fs::write(fdir.join(format!("done-{n}")), "off\n");
                fences.lock().unwrap_or_else(|p| p.into_inner()).push((n.to_string(), Instant::now()));
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn set_mode(p: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).with_context(|| format!("chmod {}", p.display()))
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn write_exec(path: &Path, body: &str) -> Result<()> {
    std::fs::write(path, body).with_context(|| format!("write {}", path.display()))?;
    set_mode(path, 0o755)
}

/// The files every node reads: ha.yaml (pacemaker mode), corosync.conf, the start script, agents.
fn write_files(d: &Path, prefix: &str) -> Result<()> {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    for n in NODES {
        std::fs::create_dir_all(d.join(n))?;
    }
    std::fs::create_dir_all(d.join("fence"))?;
    crate::write_secret(&d.join("ipmi.secret"), "not-used-by-the-test-agent")?;
    // The agents under test, as the package installs them: resource.d/ha-iscsi and lib/ha-iscsi.
    let ocf = d.join("ocf-extra/ha-iscsi");
    std::fs::create_dir_all(&ocf)?;
    for a in ["volume", "target"] {
        let src = repo.join("deploy/ocf/resource.d/ha-iscsi").join(a);
        std::fs::copy(&src, ocf.join(a)).with_context(|| format!("copy {}", src.display()))?;
        set_mode(&ocf.join(a), 0o755)?;
    }
    std::fs::create_dir_all(d.join("ocf-lib"))?;
    let handler = d.join("ocf-lib/crm-fence-peer");
    std::fs::copy(repo.join("deploy/ocf/lib/ha-iscsi/crm-fence-peer"), &handler)?;
    set_mode(&handler, 0o755)?;
    std::fs::create_dir_all(d.join("sbin-extra"))?;
    write_exec(&d.join("sbin-extra/fence_hatest"), &FENCE_AGENT.replace("@DIR@", &d.display().to_string()))?;

    let yaml = format!(
        r#"nodes:
  - {{ name: node1, control-socket: {d}/node1.sock, state-dir: {d}/node1-state }}
  - {{ name: node2, control-socket: {d}/node2.sock, state-dir: {d}/node2-state }}
cluster:
  manager: pacemaker
resources:
  r0:
    protocol: C
    device: ha0
    disk: {{ fencing: resource-and-stonith }}
    handlers: {{ fence-peer: {handler} }}
    net: {{ cram-hmac-alg: sha1, shared-secret-file: r0.secret, timeout: 800ms, ping-int: 1s, ping-timeout: 500ms, connect-int: 200ms }}
    syncer: {{ rate: unlimited, al-extents: 257 }}
    on:
      node1: {{ disk: node1-data.img, address: "10.66.2.1:7788", meta-disk: node1-meta.img }}
      node2: {{ disk: node2-data.img, address: "10.66.2.2:7788", meta-disk: node2-meta.img }}
targets:
  {iqn}:
    portals: ["{VIP}:3260"]
    luns:
      0: {{ resource: r0 }}
"#,
        d = d.display(),
        handler = handler.display(),
        iqn = crate::netlab::IQN,
    );
    std::fs::write(d.join("ha.yaml"), yaml)?;
    let corosync = format!(
        "totem {{\n  version: 2\n  cluster_name: hatest{prefix}\n  transport: knet\n  token: {TOKEN_MS}\n  consensus: {CONSENSUS_MS}\n  \
         crypto_cipher: none\n  crypto_hash: none\n}}\nnodelist {{\n  node {{\n    name: node1\n    nodeid: 1\n    ring0_addr: 10.66.1.1\n    ring1_addr: 10.66.2.1\n  }}\n  \
         node {{\n    name: node2\n    nodeid: 2\n    ring0_addr: 10.66.1.2\n    ring1_addr: 10.66.2.2\n  }}\n}}\nquorum {{\n  provider: corosync_votequorum\n  two_node: 1\n}}\n\
         logging {{\n  to_stderr: no\n  to_syslog: no\n  to_logfile: yes\n  logfile: {d}/COROSYNC_LOG\n  timestamp: hires\n}}\n",
        d = d.display()
    );
    for n in NODES {
        std::fs::write(d.join(format!("{n}/corosync.conf")), corosync.replace("COROSYNC_LOG", &format!("{n}/corosync.log")))?;
    }
    write_exec(&d.join("node-init.sh"), &NODE_INIT.replace("@DIR@", &d.display().to_string()).replace("@CLUSTERD@", &bin("clusterd").display().to_string()))?;
    Ok(())
}

/// PID 1 of a node: its private mounts, then corosync, pacemakerd and clusterd; it waits for them.
const NODE_INIT: &str = r#"#!/bin/sh
# $1: the node name. Runs as PID 1 of the node's PID namespace, in its own mount and UTS namespaces.
set -eu
N=$1
D=@DIR@
ND=$D/$N
hostname "$N"
mkdir -p "$ND/lib-pacemaker/cib" "$ND/lib-pacemaker/pengine" "$ND/lib-pacemaker/blackbox" "$ND/lib-pacemaker/cores" "$ND/lib-corosync"
chown -R hacluster:haclient "$ND/lib-pacemaker"
touch "$ND/pacemaker.log"
chown hacluster:haclient "$ND/pacemaker.log"
mount --bind "$ND/lib-pacemaker" /var/lib/pacemaker
mount --bind "$ND/lib-corosync" /var/lib/corosync
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /run/crm /run/resource-agents /run/lock /run/pacemaker
chown hacluster:haclient /run/crm /run/pacemaker
# pcs and crmsh read the node's corosync.conf from its usual place.
[ -e /etc/corosync/corosync.conf ] && mount --bind "$ND/corosync.conf" /etc/corosync/corosync.conf
mount -t overlay overlay -o "lowerdir=$D/ocf-extra:/usr/lib/ocf/resource.d" /usr/lib/ocf/resource.d
mount -t overlay overlay -o "lowerdir=$D/sbin-extra:/usr/sbin" /usr/sbin
corosync -f -c "$ND/corosync.conf" >"$ND/corosync.out" 2>&1 &
i=0
until corosync-cfgtool -s >/dev/null 2>&1; do
    i=$((i + 1)); [ $i -lt 100 ] || { echo "corosync did not start"; exit 1; }; sleep 0.1
done
PCMK_logfile=$ND/pacemaker.log PCMK_logfacility=none pacemakerd >"$ND/pacemakerd.out" 2>&1 &
RUST_LOG=info @CLUSTERD@ --config "$D/ha.yaml" --node "$N" >>"$ND/clusterd.log" 2>&1 &
wait
"#;

/// The test fence agent: fence-agents' stdin protocol; off/reboot ask the harness to kill the node.
const FENCE_AGENT: &str = r#"#!/bin/sh
# fence_hatest: powers off a node of the ha-iscsi Pacemaker drill by asking the drill harness (outside
# the node namespaces) to kill every process of that node; exit 0 once the harness confirms.
D=@DIR@
action=; node=
for a in "$@"; do case $a in -o) ;; --action=*) action=${a#--action=} ;; metadata|off|on|reboot|status|monitor|list) action=$a ;; esac; done
if [ -z "$action" ]; then
    while IFS='=' read -r k v; do
        case $k in action|option) action=$v ;; port|plug|nodename) node=$v ;; esac
    done
fi
case $action in
metadata)
    cat <<'XML'
<?xml version="1.0" ?>
<resource-agent name="fence_hatest" shortdesc="ha-iscsi drill fence agent">
<longdesc>Powers off a node of the namespace lab through the drill harness.</longdesc>
<parameters>
<parameter name="action" unique="0" required="1"><getopt mixed="-o, --action=[action]"/><content type="string" default="off"/><shortdesc lang="en">Fencing action</shortdesc></parameter>
<parameter name="port" unique="0" required="0"><getopt mixed="-n, --plug=[name]"/><content type="string"/><shortdesc lang="en">Node to fence</shortdesc></parameter>
<parameter name="ip" unique="0" required="0"><content type="string"/><shortdesc lang="en">Ignored (the README's fence_ipmilan parameters)</shortdesc></parameter>
<parameter name="username" unique="0" required="0"><content type="string"/><shortdesc lang="en">Ignored</shortdesc></parameter>
<parameter name="password_script" unique="0" required="0"><content type="string"/><shortdesc lang="en">Ignored</shortdesc></parameter>
<parameter name="lanplus" unique="0" required="0"><content type="boolean"/><shortdesc lang="en">Ignored</shortdesc></parameter>
</parameters>
<actions>
<action name="on"/><action name="off"/><action name="reboot"/><action name="status"/><action name="monitor"/><action name="list"/><action name="metadata"/>
</actions>
</resource-agent>
XML
    exit 0 ;;
monitor|list) [ "$action" = list ] && printf 'node1\nnode2\n'; exit 0 ;;
on) exit 0 ;;
status) [ -e "$D/fence/done-$node" ] && exit 2; exit 0 ;;
off|reboot)
    [ -n "$node" ] || exit 1
    rm -f "$D/fence/done-$node"
    echo "$action" > "$D/fence/req-$node"
    i=0
    while [ ! -e "$D/fence/done-$node" ]; do
        i=$((i + 1)); [ $i -lt 600 ] || exit 1; sleep 0.05
    done
    exit 0 ;;
*) exit 1 ;;
esac
"#;
