//! Persistent reservations survive a failover (root only, network namespaces): three hosts of their
//! own in the client namespace, each one I_T nexus (fixed ISID) — A and B register, A holds WRITE
//! EXCLUSIVE REGISTRANTS ONLY, C never registers — then the cluster is hit: kill -9 of the serving
//! clusterd, standby/takeover, and a replication cut during which the reservation changes on the Primary,
//! followed by heal and a failover. After each, through the VIP on the other node:
//! - READ KEYS, READ RESERVATION, REPORT CAPABILITIES and READ FULL STATUS are byte-identical to what was
//!   acknowledged (PRgeneration included, so it never goes backwards);
//! - every host gets its unit attention and then goes on; C is still refused writes, B still writes;
//! - PREEMPT AND ABORT from B works there, after which A is told (REGISTRATIONS PREEMPTED) and refused.

use anyhow::{Result, ensure};
use ha_tests::initiator::InitiatorConfig;
use ha_tests::netlab::{IQN, NetLab, VIP, holder, phase};
use ha_tests::pr_host::{HostOp, Outcome, PrHost};
use ha_tests::{field, resource};
use std::time::Duration;

const FENCE: &str = "  guard: { fence-command: \"/bin/sh DIR/fence.sh\" }\n";
const DISK_SIZE: u64 = 32 << 20;
const WERO: u8 = 5;
const KEY_A: u64 = 0xAAAA_0001;
const KEY_B: u64 = 0xBBBB_0002;

mod sa {
    pub const REGISTER: u8 = 0;
    pub const RESERVE: u8 = 1;
    pub const RELEASE: u8 = 2;
    pub const PREEMPT_AND_ABORT: u8 = 5;
    pub const REGISTER_AND_IGNORE: u8 = 6;
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn host(lab: &NetLab, name: &str, isid_last: u8) -> Result<PrHost> {
    let mut cfg = InitiatorConfig::new(&format!("{VIP}:3260"), IQN);
    cfg.initiator_name = format!("iqn.2026-12.org.example:{name}");
    cfg.isid = [0x80, 0x00, 0x02, 0x3d, 0x00, isid_last];
    cfg.connect_timeout = Duration::from_millis(300);
    PrHost::spawn(Some(&lab.ns("client")), cfg)
}

fn prout(h: &PrHost, sa: u8, pr_type: u8, key: u64, sa_key: u64) -> Result<Outcome> {
    h.outcome(HostOp::Prout { sa, pr_type, key, sa_key, flags: 0 })
}

fn good(o: Outcome, what: &str) -> Result<Vec<u8>> {
    match o {
        Outcome::Good(d) => Ok(d),
        other => anyhow::bail!("{what}: {other:?}"),
    }
}

/// The four PERSISTENT RESERVE IN views, as host `h` reads them.
fn pr_view(h: &PrHost) -> Result<[Vec<u8>; 4]> {
    let mut v: [Vec<u8>; 4] = Default::default();
    for (i, slot) in v.iter_mut().enumerate() {
        *slot = good(h.outcome(HostOp::Prin(i as u8))?, &format!("PERSISTENT RESERVE IN {i}"))?;
    }
    Ok(v)
}

fn generation(view: &[Vec<u8>; 4]) -> u32 {
    view[0].get(..4).map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn holding(lab: &NetLab, i: usize, limit: Duration) -> Result<()> {
    let node = ["node1", "node2"][i];
    lab.wait_status(i, &format!("{node} holding the group"), limit, |s| holder(s) == node && phase(s) == "holding")?;
    Ok(())
}

/// Both nodes see r0 connected and both disks UpToDate (asked of both: right after a restart the
/// survivor may not have noticed the old connection is gone yet).
fn in_sync(lab: &NetLab) -> Result<()> {
    for i in 0..2 {
        lab.wait_status(i, "r0 connected and UpToDate on both", Duration::from_secs(60), |s| {
            let r = resource(s, "r0").unwrap_or_default();
            field(&r, "connection") == "Connected" && field(&r, "disk") == "UpToDate" && field(&r, "peer_disk") == "UpToDate"
        })?;
    }
    Ok(())
}

/// The access rules of WERO held by A with A and B registered: C refused, A and B write, all read.
fn check_wero_access(a: &PrHost, b: &PrHost, c: &PrHost, when: &str) -> Result<()> {
    ensure!(c.outcome(HostOp::Write(100))? == Outcome::ReservationConflict, "{when}: unregistered C was not refused a write");
    ensure!(matches!(c.outcome(HostOp::Read(100))?, Outcome::Good(_)), "{when}: C may read under WERO");
    ensure!(matches!(b.outcome(HostOp::Write(101))?, Outcome::Good(_)), "{when}: registered B was refused a write");
    ensure!(matches!(a.outcome(HostOp::Write(102))?, Outcome::Good(_)), "{when}: holder A was refused a write");
    Ok(())
}

/// Every page a multipath or Windows host identifies the disk by: standard INQUIRY and VPD 00, 80, 83,
/// B0, B1, B2, raw; plus iscsi-inq's view of each (libiscsi's decoder).
fn identity(lab: &NetLab, h: &PrHost) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    for page in [None, Some(0x00), Some(0x80), Some(0x83), Some(0xb0), Some(0xb1), Some(0xb2)] {
        let raw = good(h.outcome(HostOp::Inquiry(page))?, &format!("INQUIRY {page:?}"))?;
        out.push((format!("INQUIRY {page:02x?}"), raw));
    }
    let url = format!("iscsi://{VIP}/{IQN}/0");
    for page in ["0x00", "0x80", "0x83", "0xb0", "0xb1", "0xb2"] {
        let o = lab.exec("client", &["timeout", "20", "iscsi-inq", "-e", "1", "-c", page, &url])?;
        ensure!(o.status.success(), "iscsi-inq page {page}: {}", String::from_utf8_lossy(&o.stderr));
        out.push((format!("iscsi-inq {page}"), o.stdout));
    }
    Ok(out)
}

/// After a failover: every host's first command gets a unit attention (the new node's target starts
/// with a power-on reset), then the PR state read through the VIP is the acknowledged one, byte for byte.
fn check_after_failover(a: &PrHost, b: &PrHost, c: &PrHost, acked: &[Vec<u8>; 4], when: &str) -> Result<()> {
    for h in [a, b, c] {
        let r = h.run(HostOp::TestUnitReady)?;
        ensure!(r.outcome == Outcome::Good(Vec::new()), "{when}: {}: TEST UNIT READY: {:?}", h.name, r.outcome);
        ensure!(
            r.unit_attentions.iter().any(|ua| ua.0 == 0x29),
            "{when}: {} got no reset unit attention after the takeover: {:?} ({} logins)",
            h.name,
            r.unit_attentions,
            r.logins
        );
    }
    let now = pr_view(a)?;
    for (k, name) in ["READ KEYS", "READ RESERVATION", "REPORT CAPABILITIES", "READ FULL STATUS"].iter().enumerate() {
        ensure!(now[k] == acked[k], "{when}: {name} differs after the failover:\n before {:02x?}\n after  {:02x?}", acked[k], now[k]);
    }
    Ok(())
}

/// `haadm standby`/`takeover` on node `i`, retried while the sequencer still refuses on a peer state the
/// heartbeat has not refreshed yet (a resync that just finished), bounded.
fn hand_over(lab: &NetLab, i: usize, verb: &str) -> Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match lab.haadm_ok(i, &[verb]) {
            Ok(_) => return Ok(()),
            Err(e) if std::time::Instant::now() < deadline && e.to_string().contains("refused") => {
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => return Err(e),
        }
    }
}

#[test]
fn persistent_reservations_survive_kill_standby_and_a_replication_cut() -> Result<()> {
    if !is_root() {
        eprintln!("SKIPPED: needs root for network namespaces");
        return Ok(());
    }
    let mut lab = NetLab::new("pr", DISK_SIZE, FENCE)?;
    lab.bring_up_group()?;
    let (a, b, c) = (host(&lab, "host-a", 1)?, host(&lab, "host-b", 2)?, host(&lab, "host-c", 3)?);
    for h in [&a, &b, &c] {
        good(h.outcome(HostOp::TestUnitReady)?, "first TEST UNIT READY")?;
    }
    good(prout(&a, sa::REGISTER, 0, 0, KEY_A)?, "A REGISTER")?;
    good(prout(&b, sa::REGISTER, 0, 0, KEY_B)?, "B REGISTER")?;
    good(prout(&a, sa::RESERVE, WERO, KEY_A, 0)?, "A RESERVE WERO")?;
    check_wero_access(&a, &b, &c, "node1")?;
    let acked = pr_view(&a)?;
    let gen0 = generation(&acked);
    let identity_node1 = identity(&lab, &c)?;

    // 1. kill -9 of the serving clusterd: node2 takes over with the same reservation.
    lab.kill9(0);
    holding(&lab, 1, Duration::from_secs(30))?;
    check_after_failover(&a, &b, &c, &acked, "after kill -9 of node1")?;
    check_wero_access(&a, &b, &c, "node2 after kill -9")?;
    for ((what, one), (_, two)) in identity_node1.iter().zip(identity(&lab, &c)?.iter()) {
        ensure!(one == two, "{what} differs between node1 and node2:\n{one:02x?}\n{two:02x?}");
    }
    // fence_scsi's move on node2: B preempts A and aborts its tasks.
    good(prout(&b, sa::PREEMPT_AND_ABORT, WERO, KEY_B, KEY_A)?, "B PREEMPT AND ABORT")?;
    let r = a.run(HostOp::Write(103))?;
    ensure!(r.outcome == Outcome::ReservationConflict, "preempted A still writes: {r:?}");
    ensure!(r.unit_attentions.contains(&(0x2a, 0x05)), "A was not told REGISTRATIONS PREEMPTED: {r:?}");
    ensure!(c.outcome(HostOp::Write(104))? == Outcome::ReservationConflict, "C writes after the preemption");
    ensure!(matches!(b.outcome(HostOp::Write(105))?, Outcome::Good(_)), "the new holder B cannot write");
    let acked = pr_view(&b)?;
    ensure!(generation(&acked) > gen0, "PRgeneration did not advance with PREEMPT AND ABORT");
    lab.start(0)?;
    in_sync(&lab)?;

    // 2. standby on node2 hands the group back to node1; A unfences itself (REGISTER again) there.
    hand_over(&lab, 1, "standby")?;
    holding(&lab, 0, Duration::from_secs(30))?;
    check_after_failover(&a, &b, &c, &acked, "after standby of node2")?;
    good(prout(&a, sa::REGISTER_AND_IGNORE, 0, 0, KEY_A)?, "A registers again")?;
    ensure!(matches!(a.outcome(HostOp::Write(106))?, Outcome::Good(_)), "re-registered A refused under WERO");
    let acked = pr_view(&a)?;
    hand_over(&lab, 1, "takeover")?;
    holding(&lab, 1, Duration::from_secs(30))?;
    check_after_failover(&a, &b, &c, &acked, "after takeover by node2")?;
    hand_over(&lab, 0, "takeover")?;
    holding(&lab, 0, Duration::from_secs(30))?;
    in_sync(&lab)?;

    // 3. Replication cut: the reservation changes on the Primary while the peer cannot store it; after
    //    heal the peer catches up, and a failover then serves the changed state.
    lab.exec("node1", &["ip", "link", "set", "repl0", "down"])?;
    lab.wait_status(0, "r0 disconnected", Duration::from_secs(20), |s| {
        field(&resource(s, "r0").unwrap_or_default(), "connection") != "Connected"
    })?;
    good(prout(&b, sa::RELEASE, WERO, KEY_B, 0)?, "B RELEASE during the cut")?;
    good(prout(&a, sa::RESERVE, WERO, KEY_A, 0)?, "A RESERVE during the cut")?;
    let acked = pr_view(&a)?;
    lab.exec("node1", &["ip", "link", "set", "repl0", "up"])?;
    in_sync(&lab)?;
    lab.kill9(0);
    holding(&lab, 1, Duration::from_secs(30))?;
    check_after_failover(&a, &b, &c, &acked, "after the cut, heal and kill -9 of node1")?;
    check_wero_access(&a, &b, &c, "node2 after the cut")?;
    let s = lab.status(1)?;
    eprintln!("PR failover drill passed; final holder {}", holder(&s));
    Ok(())
}
