//! Portal groups and ALUA end to end: one TargetServer listening on three loopback ports stands for
//! the two HA nodes' portals (group 1: port p1 plus a "peer" portal nobody binds, group 2: p2) and
//! an address in no group (p3). Checked over real TCP with the test initiator: SendTargets lists
//! every group's portals with their TPGTs, a login takes the TPGT of the portal it arrived on (and
//! is refused on p3), the nexus's relative port follows, and the ALUA state of each group decides
//! which session may read and write, switching with a 2A/06 unit attention.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::*;
use iscsi_target::login::TargetParams;
use iscsi_target::scsi::alua::{AccessState, Alua, PortGroupDef};
use iscsi_target::server::{Acl, PortalGroup, ServerConfig, TargetConfig, TargetServer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A portal of the peer node: advertised, never bound here.
const PEER_PORTAL: &str = "192.0.2.10:3260";

struct Lab {
    server: Arc<TargetServer>,
    p1: SocketAddr,
    p2: SocketAddr,
    p3: SocketAddr,
    alua: Arc<Alua>,
    shutdown: CancellationToken,
}

async fn lab() -> Lab {
    let mut listeners = Vec::new();
    for _ in 0..3 {
        listeners.push(TcpListener::bind("127.0.0.1:0").await.expect("bind"));
    }
    let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    let scsi = scsi_target(TARGET);
    let alua = Alua::new(
        vec![
            PortGroupDef {
                id: 1,
                relative_ports: vec![1],
                preferred: true,
            },
            PortGroupDef {
                id: 2,
                relative_ports: vec![2],
                preferred: false,
            },
        ],
        AccessState::ActiveOptimized,
    );
    scsi.set_alua(Arc::clone(&alua));
    alua.set_states(&[(2, AccessState::Standby)]);
    let target = TargetConfig {
        iqn: TARGET.into(),
        alias: None,
        tpgt: 1,
        scsi,
        acl: Acl::default(),
        chap: None,
        mutual_chap: None,
        params: TargetParams::default(),
        portal_groups: vec![
            PortalGroup {
                tpgt: 1,
                portals: vec![addrs[0], PEER_PORTAL.parse().unwrap()],
            },
            PortalGroup {
                tpgt: 2,
                portals: vec![addrs[1]],
            },
        ],
    };
    let server = Arc::new(TargetServer::new(ServerConfig::new(
        addrs.clone(),
        vec![target],
    )));
    let shutdown = CancellationToken::new();
    for l in listeners {
        tokio::spawn(server.clone().serve(l, shutdown.clone()));
    }
    Lab {
        server,
        p1: addrs[0],
        p2: addrs[1],
        p3: addrs[2],
        alua,
        shutdown,
    }
}

/// (sense key, ASC, ASCQ) of a CHECK CONDITION.
fn sense(r: &ScsiResult) -> (u8, u8, u8) {
    assert_eq!(r.status, 2, "expected CHECK CONDITION: {r:?}");
    (r.sense[2] & 0x0F, r.sense[12], r.sense[13])
}

async fn logged_in(addr: SocketAddr, isid_last: u8, expect_tpgt: &str) -> Initiator {
    let mut i = Initiator::connect(addr, isid_last).await;
    let (r, keys) = i.login_normal(&[]).await;
    assert_eq!((r.status_class, r.status_detail), (0, 0));
    assert_eq!(
        key(&keys, "TargetPortalGroupTag").as_deref(),
        Some(expect_tpgt)
    );
    // POWER ON, RESET (REQUEST SENSE takes it whatever the port's state).
    let r = i.scsi(&[0x03, 0, 0, 0, 18, 0], 18, &[], 0, 0).await;
    assert_eq!((r.status, r.data[2] & 0x0F, r.data[12]), (0, 6, 0x29));
    i
}

/// The RELATIVE TARGET PORT designator (type 4) of VPD 0x83.
async fn relative_port(i: &mut Initiator) -> u16 {
    let r = i.scsi(&[0x12, 1, 0x83, 1, 0, 0], 256, &[], 0, 0).await;
    assert_eq!(r.status, 0);
    let d = &r.data[4..];
    let mut pos = 0;
    while pos + 4 <= d.len() {
        if d[pos + 1] & 0x3F == 0x14 {
            return u16::from_be_bytes([d[pos + 6], d[pos + 7]]);
        }
        pos += 4 + usize::from(d[pos + 3]);
    }
    panic!("no relative target port designator");
}

#[tokio::test]
async fn send_targets_lists_every_group() {
    let lab = lab().await;
    let mut i = Initiator::connect(lab.p2, 1).await;
    let (r, _) = i
        .login_step(
            1,
            3,
            true,
            &[("InitiatorName", INITIATOR), ("SessionType", "Discovery")],
        )
        .await;
    assert_eq!(r.status_class, 0);
    let keys = i.text_all(&[("SendTargets", "All")]).await;
    let addresses: Vec<&str> = keys
        .iter()
        .filter(|(k, _)| k == "TargetAddress")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(
        addresses,
        vec![
            format!("{},1", lab.p1),
            format!("{PEER_PORTAL},1"),
            format!("{},2", lab.p2),
        ]
    );
    assert_eq!(key(&keys, "TargetName").as_deref(), Some(TARGET));
    lab.shutdown.cancel();
}

#[tokio::test]
async fn login_tpgt_follows_the_portal_and_alua_gates_io() {
    let lab = lab().await;
    let mut active = logged_in(lab.p1, 1, "1").await;
    let mut standby = logged_in(lab.p2, 2, "2").await;
    assert_eq!(relative_port(&mut active).await, 1);
    assert_eq!(relative_port(&mut standby).await, 2);
    let tpgts: Vec<u16> = lab.server.sessions().iter().map(|s| s.tpgt).collect();
    assert_eq!(tpgts.len(), 2);
    assert!(tpgts.contains(&1) && tpgts.contains(&2));

    // An address in no portal group: "not found" (02/03).
    let mut nowhere = Initiator::connect(lab.p3, 3).await;
    let (r, _) = nowhere.login_normal(&[]).await;
    assert_eq!((r.status_class, r.status_detail), (2, 3));
    assert!(nowhere.closed().await);

    // The standby path refuses reads and writes, and its write does not land.
    let old = pattern(512, 1);
    assert_eq!(active.scsi(&write10(0, 1), 512, &old, 0, 0).await.status, 0);
    let new = pattern(512, 2);
    let w = standby.scsi(&write10(0, 1), 512, &new, 0, 0).await;
    assert_eq!(sense(&w), (2, 0x04, 0x0B));
    assert_eq!(
        sense(&standby.scsi(&read10(0, 1), 512, &[], 0, 0).await),
        (2, 0x04, 0x0B)
    );
    assert_eq!(
        sense(&standby.scsi(&[0, 0, 0, 0, 0, 0], 0, &[], 0, 0).await),
        (2, 0x04, 0x0B)
    );
    assert_eq!(active.scsi(&read10(0, 1), 512, &[], 0, 0).await.data, old);

    // Failover: group 2 active, group 1 standby. Each session hears 2A/06 once.
    assert!(
        lab.alua
            .set_states(&[(1, AccessState::Standby), (2, AccessState::ActiveOptimized)])
    );
    for i in [&mut active, &mut standby] {
        assert_eq!(
            sense(&i.scsi(&read10(0, 1), 512, &[], 0, 0).await),
            (6, 0x2A, 0x06)
        );
    }
    assert_eq!(
        sense(&active.scsi(&read10(0, 1), 512, &[], 0, 0).await),
        (2, 0x04, 0x0B)
    );
    assert_eq!(
        standby.scsi(&write10(0, 1), 512, &new, 0, 0).await.status,
        0
    );
    assert_eq!(standby.scsi(&read10(0, 1), 512, &[], 0, 0).await.data, new);
    lab.shutdown.cancel();
}
