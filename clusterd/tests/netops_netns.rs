//! clusterd::netops against real kernel state, inside throw-away network namespaces.
//!
//! Each test builds two namespaces joined by a veth pair (`veth0` on both sides, created from
//! inside namespace A so nothing ever appears in the root namespace), runs the function under
//! test on a dedicated thread that has `setns`-ed into a namespace, and inspects the result
//! with `ip -n`. A drop guard deletes both namespaces even when an assertion fails.
//! Needs root (CAP_SYS_ADMIN for namespaces) and the `nft` binary (Debian `nftables`).

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use clusterd::netops::{self, NetopsError, VipChange};

const CLONE_NEWNET: std::os::raw::c_int = 0x4000_0000;

unsafe extern "C" {
    /// glibc's `setns(2)` wrapper (std links glibc; the workspace's rustix lacks `thread`).
    fn setns(fd: std::os::raw::c_int, nstype: std::os::raw::c_int) -> std::os::raw::c_int;
}

static TOPOLOGY_SEQ: AtomicU32 = AtomicU32::new(0);

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

macro_rules! require_root {
    () => {
        if !running_as_root() {
            eprintln!("skipping: network namespace tests need root");
            return;
        }
    };
}

/// Runs `ip args...`, panicking with its stderr on failure.
fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Two namespaces `a` and `b` joined by `veth0` <-> `veth0`, 10.99.<subnet>.1/24 in `a` and .2 in
/// `b`, plus fd00:99::1/64 and ::2 (no DAD, so they are usable at once). Deleted on drop.
struct Topology {
    a: String,
    b: String,
    subnet: u8,
}

impl Topology {
    fn new() -> Topology {
        let seq = TOPOLOGY_SEQ.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let topo = Topology {
            a: format!("hatest-{pid}-{seq}-a"),
            b: format!("hatest-{pid}-{seq}-b"),
            subnet: u8::try_from(seq % 200).unwrap_or(0) + 1,
        };
        ip(&["netns", "add", &topo.a]);
        ip(&["netns", "add", &topo.b]);
        for ns in [&topo.a, &topo.b] {
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        ip(&[
            "-n", &topo.a, "link", "add", "veth0", "type", "veth", "peer", "name", "veth0",
            "netns", &topo.b,
        ]);
        for (ns, host) in [(&topo.a, 1), (&topo.b, 2)] {
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("10.99.{}.{host}/24", topo.subnet),
                "dev",
                "veth0",
            ]);
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("fd00:99::{host}/64"),
                "dev",
                "veth0",
                "nodad",
            ]);
            ip(&["-n", ns, "link", "set", "veth0", "up"]);
        }
        topo
    }

    fn v4(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 99, self.subnet, host)
    }

    fn mac_of_a(&self) -> String {
        let out = ip(&["-n", &self.a, "link", "show", "veth0"]);
        out.split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .expect("veth0 has a MAC")
            .to_string()
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Runs `make()` on a fresh thread moved into namespace `ns`, under a current-thread tokio
/// runtime, and returns its output (re-raising its panic, if any).
fn in_netns<F, Fut, T>(ns: &str, make: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    let path = format!("/run/netns/{ns}");
    let joined = std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("open netns file");
        // SAFETY: `file` is an open namespace descriptor for the whole call; setns only changes
        // this thread's network namespace.
        let rc = unsafe { setns(file.as_raw_fd(), CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns({path}): {}", std::io::Error::last_os_error());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        runtime.block_on(make())
    })
    .join();
    match joined {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

#[test]
fn vip_add_and_remove_are_idempotent_and_visible() {
    require_root!();
    let topo = Topology::new();
    let vip = IpAddr::V4(topo.v4(100));
    let vip6: IpAddr = "fd00:99::100".parse().unwrap();
    let shown = |ns: &str| ip(&["-n", ns, "addr", "show", "dev", "veth0"]);

    let (first, second, present) = in_netns(&topo.a, move || async move {
        let first = netops::vip_add("veth0", vip, 24).await.unwrap();
        let second = netops::vip_add("veth0", vip, 24).await.unwrap();
        let present = netops::vip_present("veth0", vip).await.unwrap();
        (first, second, present)
    });
    assert_eq!(
        (first, second, present),
        (VipChange::Changed, VipChange::Already, true)
    );
    assert!(
        shown(&topo.a).contains(&format!("inet {vip}/24")),
        "{}",
        shown(&topo.a)
    );
    assert!(!shown(&topo.b).contains(&vip.to_string()));

    let v6 = in_netns(&topo.a, move || async move {
        let added = netops::vip_add("veth0", vip6, 64).await.unwrap();
        let present = netops::vip_present("veth0", vip6).await.unwrap();
        let removed = netops::vip_remove("veth0", vip6, 64).await.unwrap();
        (added, present, removed)
    });
    assert_eq!(v6, (VipChange::Changed, true, VipChange::Changed));

    let (removed, again, present, missing) = in_netns(&topo.a, move || async move {
        let removed = netops::vip_remove("veth0", vip, 24).await.unwrap();
        let again = netops::vip_remove("veth0", vip, 24).await.unwrap();
        let present = netops::vip_present("veth0", vip).await.unwrap();
        let missing = netops::vip_add("nosuch0", vip, 24).await;
        (removed, again, present, missing)
    });
    assert_eq!(
        (removed, again, present),
        (VipChange::Changed, VipChange::Already, false)
    );
    assert!(
        matches!(missing, Err(NetopsError::NoSuchInterface(ref n)) if n == "nosuch0"),
        "{missing:?}"
    );
    let after = shown(&topo.a);
    assert!(
        !after.contains(&vip.to_string()) && !after.contains(&vip6.to_string()),
        "{after}"
    );
    // The interface's own address is untouched.
    assert!(
        after.contains(&format!("inet {}/24", topo.v4(1))),
        "{after}"
    );
}

#[test]
fn garp_updates_the_peers_stale_neighbour_entry() {
    require_root!();
    let topo = Topology::new();
    let vip = topo.v4(100);
    let vip_s = vip.to_string();
    in_netns(&topo.a, move || async move {
        netops::vip_add("veth0", IpAddr::V4(vip), 24).await.unwrap();
    });
    // An entry pointing at the "old owner". Linux updates an existing entry from a gratuitous
    // ARP even with the default net.ipv4.conf.*.arp_accept=0 (arp_accept only governs creating
    // new entries), so this test deliberately leaves arp_accept at its default.
    ip(&[
        "-n",
        &topo.b,
        "neigh",
        "replace",
        &vip_s,
        "lladdr",
        "02:00:00:00:00:99",
        "dev",
        "veth0",
        "nud",
        "stale",
    ]);
    let neigh = || ip(&["-n", &topo.b, "neigh", "show", &vip_s, "dev", "veth0"]);
    assert!(neigh().contains("02:00:00:00:00:99"), "{}", neigh());

    let sent = in_netns(&topo.a, move || async move {
        let missing = netops::send_garp("nosuch0", vip, 1, Duration::ZERO);
        assert!(
            matches!(missing, Err(NetopsError::NoSuchInterface(_))),
            "{missing:?}"
        );
        netops::send_garp("veth0", vip, 2, Duration::from_millis(50))
    });
    sent.unwrap();

    let mac = topo.mac_of_a();
    let deadline = Instant::now() + Duration::from_secs(2);
    while !neigh().contains(&mac) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        neigh().contains(&mac),
        "B's entry for {vip} should now be A's {mac}: {}",
        neigh()
    );
}

#[derive(Debug, PartialEq, Eq)]
enum ConnectOutcome {
    Connected,
    Refused,
    TimedOut,
    Other(String),
}

/// Connects from namespace `ns` to `target` with a bounded wait.
fn connect_from(ns: &str, target: SocketAddr) -> ConnectOutcome {
    in_netns(ns, move || async move {
        let attempt = tokio::net::TcpStream::connect(target);
        match tokio::time::timeout(Duration::from_secs(1), attempt).await {
            Err(_) => ConnectOutcome::TimedOut,
            Ok(Ok(_stream)) => ConnectOutcome::Connected,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                ConnectOutcome::Refused
            }
            Ok(Err(e)) => ConnectOutcome::Other(e.to_string()),
        }
    })
}

fn rules_for(ns: &str, needle: &str) -> usize {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "list", "ruleset"])
        .output()
        .expect("run nft");
    String::from_utf8_lossy(&out.stdout).matches(needle).count()
}

#[test]
fn portblock_drops_so_clients_time_out_instead_of_being_reset() {
    require_root!();
    let topo = Topology::new();
    let vip = IpAddr::V4(topo.v4(100));
    let served = SocketAddr::new(vip, 3260);
    let unserved = SocketAddr::new(vip, 3261);
    // The listener is created inside A and handed back: a socket stays in the namespace it was
    // created in. The kernel completes handshakes from the backlog without `accept`.
    let listener = in_netns(&topo.a, move || async move {
        netops::vip_add("veth0", vip, 24).await.unwrap();
        std::net::TcpListener::bind(served).unwrap()
    });

    assert_eq!(connect_from(&topo.b, served), ConnectOutcome::Connected);
    assert_eq!(connect_from(&topo.b, unserved), ConnectOutcome::Refused);

    in_netns(&topo.a, move || async move {
        assert!(!netops::is_blocked(vip, 3260).unwrap());
        netops::block(vip, 3260).unwrap();
        netops::block(vip, 3260).unwrap(); // idempotent: still one rule
        netops::PortBlock::new(vip, 3261).block().unwrap();
        assert!(netops::is_blocked(vip, 3260).unwrap());
    });
    let needle = format!("{}:3260", topo.v4(100));
    assert_eq!(rules_for(&topo.a, &needle), 1);
    assert_eq!(
        rules_for(&topo.b, "clusterd_portblock"),
        0,
        "rules must stay in A"
    );

    let started = Instant::now();
    assert_eq!(connect_from(&topo.b, served), ConnectOutcome::TimedOut);
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(
        connect_from(&topo.b, unserved),
        ConnectOutcome::TimedOut,
        "no RST while blocked"
    );

    in_netns(&topo.a, move || async move {
        netops::unblock(vip, 3260).unwrap();
        netops::unblock(vip, 3260).unwrap(); // idempotent
        assert!(!netops::is_blocked(vip, 3260).unwrap());
        assert!(netops::is_blocked(vip, 3261).unwrap());
    });
    assert_eq!(rules_for(&topo.a, &needle), 0);
    assert_eq!(connect_from(&topo.b, served), ConnectOutcome::Connected);
    assert_eq!(connect_from(&topo.b, unserved), ConnectOutcome::TimedOut);

    in_netns(&topo.a, || async {
        netops::clear_all_blocks().unwrap();
        netops::clear_all_blocks().unwrap();
        netops::unblock("10.1.2.3".parse().unwrap(), 1).unwrap(); // no table at all: a no-op
    });
    assert_eq!(rules_for(&topo.a, "clusterd_portblock"), 0);
    assert_eq!(connect_from(&topo.b, unserved), ConnectOutcome::Refused);
    drop(listener);
}

#[test]
fn ping_tells_a_live_peer_from_an_unused_address() {
    require_root!();
    let topo = Topology::new();
    // A keeps the namespace default ping_group_range ("1 0": ping sockets disabled), so it
    // probes through a raw socket; B allows ping sockets, exercising the unprivileged path.
    ip(&[
        "netns",
        "exec",
        &topo.b,
        "sysctl",
        "-q",
        "-w",
        "net.ipv4.ping_group_range=0 2147483647",
    ]);
    let (peer_b, unused) = (IpAddr::V4(topo.v4(2)), IpAddr::V4(topo.v4(77)));
    let peer_a = IpAddr::V4(topo.v4(1));
    let (peer_b6, peer_a6): (IpAddr, IpAddr) =
        ("fd00:99::2".parse().unwrap(), "fd00:99::1".parse().unwrap());

    let (b_up, b6_up, unused_up, unused_took) = in_netns(&topo.a, move || async move {
        let b_up = netops::ping(peer_b, Duration::from_secs(2)).await.unwrap();
        // IPv6 neighbour discovery may still be settling right after the veth came up (the link-local
        // address is tentative for a moment): allow a few probes, each with its own timeout.
        let mut b6_up = false;
        for _ in 0..5 {
            b6_up = netops::ping(peer_b6, Duration::from_secs(1)).await.unwrap();
            if b6_up {
                break;
            }
        }
        let started = Instant::now();
        let unused_up = netops::ping(unused, Duration::from_millis(500))
            .await
            .unwrap();
        (b_up, b6_up, unused_up, started.elapsed())
    });
    assert!(
        b_up && b6_up,
        "A must reach B over v4 ({b_up}) and v6 ({b6_up})"
    );
    assert!(!unused_up);
    assert!(
        unused_took < Duration::from_millis(1500),
        "bounded by the timeout: {unused_took:?}"
    );

    let (a_up, a6_up) = in_netns(&topo.b, move || async move {
        let a_up = netops::ping(peer_a, Duration::from_secs(2)).await.unwrap();
        let a6_up = netops::ping(peer_a6, Duration::from_secs(2)).await.unwrap();
        (a_up, a6_up)
    });
    assert!(
        a_up && a6_up,
        "B must reach A over v4 ({a_up}) and v6 ({a6_up})"
    );

    // With the link down, the same peer is reported unreachable.
    ip(&["-n", &topo.a, "link", "set", "veth0", "down"]);
    let down = in_netns(&topo.a, move || async move {
        netops::ping(peer_b, Duration::from_millis(500))
            .await
            .unwrap()
    });
    assert!(!down);
}
