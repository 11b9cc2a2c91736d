//! Portal groups: TPGT by local address, SendTargets with both nodes' portals, login lookup, and
//! persistent reservations that name the peer node's target port.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::*;
use crate::backend::MemBackend;
use crate::scsi::{ItNexus, LogicalUnit, LunIdentity, MemPrStore, ScsiCommand, ScsiResponse};

const IQN: &str = "iqn.2026-12.test:pg";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn scsi() -> Arc<ScsiTarget> {
    let identity = LunIdentity {
        vendor: "TEST".into(),
        product: "PG".into(),
        revision: "0001".into(),
        serial: "SN-PG".into(),
        naa: 0x6001_4050_0000_0003,
        naa_ext: 3,
        target_port_group: 1,
        write_cache: false,
        thin: false,
    };
    let backend = Arc::new(MemBackend::new(1 << 20));
    let lu = LogicalUnit::new(identity, backend, 512, Arc::new(MemPrStore::new())).unwrap();
    let mut luns = BTreeMap::new();
    luns.insert(0, Arc::new(lu));
    Arc::new(ScsiTarget::new(IQN.into(), luns))
}

/// Node A: 10.0.0.1:3260 and a wildcard portal on 3261 (tpgt 1); node B: 10.0.0.2:3260 (tpgt 2).
fn two_node_target(scsi: Arc<ScsiTarget>) -> TargetConfig {
    TargetConfig {
        iqn: IQN.into(),
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
                portals: vec![addr("10.0.0.1:3260"), addr("0.0.0.0:3261")],
            },
            PortalGroup {
                tpgt: 2,
                portals: vec![addr("10.0.0.2:3260")],
            },
        ],
    }
}

#[test]
fn tpgt_by_local_address() {
    let t = two_node_target(scsi());
    assert_eq!(t.tpgt_for_local(addr("10.0.0.1:3260")), Some(1));
    assert_eq!(t.tpgt_for_local(addr("10.0.0.2:3260")), Some(2));
    assert_eq!(t.tpgt_for_local(addr("[::ffff:10.0.0.2]:3260")), Some(2));
    assert_eq!(
        t.tpgt_for_local(addr("10.9.9.9:3261")),
        Some(1),
        "wildcard by port"
    );
    assert_eq!(t.tpgt_for_local(addr("10.0.0.3:3260")), None);
    assert_eq!(t.tpgt_for_local(addr("10.0.0.1:3262")), None);
    // An exact portal wins over a wildcard on the same port.
    let mut w = two_node_target(scsi());
    w.portal_groups[0].portals = vec![addr("0.0.0.0:3260")];
    assert_eq!(w.tpgt_for_local(addr("10.0.0.2:3260")), Some(2));
    assert_eq!(w.tpgt_for_local(addr("10.0.0.7:3260")), Some(1));
    // No groups: every address has `tpgt`.
    let mut plain = two_node_target(scsi());
    plain.portal_groups.clear();
    plain.tpgt = 5;
    assert_eq!(plain.tpgt_for_local(addr("10.0.0.3:1")), Some(5));
    assert_eq!(plain.target_ports(), vec![TargetPort::for_tpgt(IQN, 5)]);
    let ports = two_node_target(scsi()).target_ports();
    assert_eq!(
        ports
            .iter()
            .map(|p| (p.tpgt, p.relative_id))
            .collect::<Vec<_>>(),
        vec![(1, 1), (2, 2)]
    );
}

#[test]
fn send_targets_lists_both_nodes() {
    let server = TargetServer::new(ServerConfig::new(
        vec![addr("10.0.0.1:3260")],
        vec![two_node_target(scsi())],
    ));
    let local = addr("10.0.0.1:3260");
    let got = server.send_targets("All", "iqn.i", "10.0.0.50".parse().unwrap(), local, None);
    let expected: Vec<(String, String)> = [
        ("TargetName", IQN.to_string()),
        ("TargetAddress", "10.0.0.1:3260,1".to_string()),
        ("TargetAddress", "10.0.0.1:3261,1".to_string()),
        ("TargetAddress", "10.0.0.2:3260,2".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(got, expected);
    // Without groups: the server's portals with `tpgt`, as before.
    let mut plain = two_node_target(scsi());
    plain.portal_groups.clear();
    let server = TargetServer::new(ServerConfig::new(vec![addr("0.0.0.0:3260")], vec![plain]));
    let got = server.send_targets(IQN, "iqn.i", "10.0.0.50".parse().unwrap(), local, None);
    assert_eq!(got[1], ("TargetAddress".into(), "10.0.0.1:3260,1".into()));
    assert_eq!(got.len(), 2);
}

#[test]
fn login_lookup_takes_the_group_tpgt() {
    let server = TargetServer::new(ServerConfig::new(vec![], vec![two_node_target(scsi())]));
    let peer: IpAddr = "10.0.0.50".parse().unwrap();
    let tpgt = |local: Option<&str>| match server.lookup_at(IQN, "iqn.i", peer, local.map(addr)) {
        TargetLookup::Found(t) => Some(t.tpgt),
        TargetLookup::NotFound => None,
        TargetLookup::Denied => panic!("denied"),
    };
    assert_eq!(tpgt(Some("10.0.0.2:3260")), Some(2));
    assert_eq!(tpgt(Some("10.0.0.1:3260")), Some(1));
    assert_eq!(tpgt(Some("10.0.0.3:3260")), None, "no group: not found");
    assert_eq!(tpgt(None), Some(1));
    assert!(matches!(
        server.lookup("iqn.other", "iqn.i", peer),
        TargetLookup::NotFound
    ));
}

fn nexus(initiator: &str, isid_last: u8, port: u16) -> ItNexus {
    ItNexus {
        initiator: initiator.into(),
        isid: [0x40, 0, 0, 0, 0, isid_last],
        target: IQN.into(),
        tpgt: port,
        relative_port: port,
    }
}

async fn run(t: &ScsiTarget, n: &ItNexus, cdb: &[u8], data: Vec<u8>) -> ScsiResponse {
    let mut c = [0u8; 16];
    c[..cdb.len()].copy_from_slice(cdb);
    t.execute(
        n,
        ScsiCommand {
            lun: 0,
            cdb: c,
            cdb_len: cdb.len(),
            expected_len: data.len() as u32,
            data_out: Bytes::from(data),
            task_attr: 0,
            task_tag: 1,
        },
    )
    .await
}

fn prout_basic(key: u64, sark: u64) -> Vec<u8> {
    let mut p = key.to_be_bytes().to_vec();
    p.extend_from_slice(&sark.to_be_bytes());
    p.extend_from_slice(&[0; 8]);
    p
}

/// REGISTER AND MOVE of a's WRITE EXCLUSIVE reservation to initiator b through relative port 2.
fn register_and_move_to_port_2(key: u64) -> (Vec<u8>, Vec<u8>) {
    let mut name = b"iqn.init-b,i,0x400000000002".to_vec();
    name.push(0);
    while !name.len().is_multiple_of(4) {
        name.push(0);
    }
    let mut tid = vec![0x45, 0];
    tid.extend_from_slice(&(name.len() as u16).to_be_bytes());
    tid.extend_from_slice(&name);
    let mut p = key.to_be_bytes().to_vec();
    p.extend_from_slice(&0xBu64.to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(&2u16.to_be_bytes());
    p.extend_from_slice(&(tid.len() as u32).to_be_bytes());
    p.extend_from_slice(&tid);
    let mut c = vec![0x5F, 0x07, 0x01, 0, 0, 0, 0, 0, 0, 0];
    c[5..9].copy_from_slice(&(p.len() as u32).to_be_bytes());
    (c, p)
}

/// The peer node's port (group 2) is known to the LU although no nexus arrived through it on
/// this node: REGISTER AND MOVE to it works, READ FULL STATUS reports it.
#[tokio::test]
async fn reservations_see_the_peer_port() {
    let target = scsi();
    let _server = TargetServer::new(ServerConfig::new(
        vec![],
        vec![two_node_target(Arc::clone(&target))],
    ));
    let a = nexus("iqn.init-a", 1, 1);
    target.nexus_added(&a);
    for _ in 0..2 {
        run(&target, &a, &[0x00, 0, 0, 0, 0, 0], vec![]).await;
    }
    let register = [0x5F, 0x00, 0, 0, 0, 0, 0, 0, 24, 0];
    assert_eq!(
        run(&target, &a, &register, prout_basic(0, 0xA))
            .await
            .status,
        0
    );
    let reserve = [0x5F, 0x01, 0x01, 0, 0, 0, 0, 0, 24, 0];
    assert_eq!(
        run(&target, &a, &reserve, prout_basic(0xA, 0)).await.status,
        0
    );
    let (c, p) = register_and_move_to_port_2(0xA);
    let r = run(&target, &a, &c, p).await;
    assert_eq!(r.status, 0, "{:?}", r.sense_code());
    let full = run(
        &target,
        &a,
        &[0x5E, 0x03, 0, 0, 0, 0, 0, 0x10, 0, 0],
        vec![],
    )
    .await;
    assert_eq!(full.status, 0);
    let d = &full.data_in;
    let mut entries = Vec::new();
    let mut pos = 8;
    while pos + 24 <= d.len() {
        let key = u64::from_be_bytes(d[pos..pos + 8].try_into().unwrap());
        let holder = d[pos + 12] & 0x01 != 0;
        let rtpi = u16::from_be_bytes([d[pos + 18], d[pos + 19]]);
        entries.push((key, holder, rtpi));
        pos += 24 + u32::from_be_bytes(d[pos + 20..pos + 24].try_into().unwrap()) as usize;
    }
    assert_eq!(entries, vec![(0xA, false, 1), (0xB, true, 2)]);
    // Without portal groups the LU knows only its own port: the same move is refused.
    let lone = scsi();
    let mut plain = two_node_target(Arc::clone(&lone));
    plain.portal_groups.clear();
    let _server = TargetServer::new(ServerConfig::new(vec![], vec![plain]));
    lone.nexus_added(&a);
    for _ in 0..2 {
        run(&lone, &a, &[0x00, 0, 0, 0, 0, 0], vec![]).await;
    }
    assert_eq!(
        run(&lone, &a, &register, prout_basic(0, 0xA)).await.status,
        0
    );
    assert_eq!(
        run(&lone, &a, &reserve, prout_basic(0xA, 0)).await.status,
        0
    );
    let (c, p) = register_and_move_to_port_2(0xA);
    assert_eq!(run(&lone, &a, &c, p).await.sense_code(), Some((5, 0x26, 0)));
}
