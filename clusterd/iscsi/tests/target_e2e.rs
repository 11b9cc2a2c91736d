//! End-to-end tests: a TargetServer on 127.0.0.1 with a memory LUN, driven by the test initiator.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use iscsi_target::login::ChapAccount;
use iscsi_target::pdu::*;

fn chap(user: &str, secret: &str) -> ChapAccount {
    ChapAccount {
        user: user.into(),
        secret: secret.into(),
    }
}

#[tokio::test]
async fn login_write_read_nop_logout() {
    let srv = start(|_| {}).await;
    let mut i = Initiator::connect(srv.addr, 1).await;
    let (r, keys) = i
        .login_normal(&[
            ("MaxRecvDataSegmentLength", "8192"),
            ("ImmediateData", "Yes"),
            ("InitialR2T", "No"),
            ("FirstBurstLength", "262144"),
        ])
        .await;
    assert_eq!((r.status_class, r.status_detail), (0, 0));
    assert_ne!(r.tsih, 0);
    assert_eq!(key(&keys, "TargetPortalGroupTag").as_deref(), Some("1"));
    assert!(
        r.max_cmd_sn.wrapping_sub(r.exp_cmd_sn) >= 63,
        "a deep CmdSN window is offered"
    );
    i.clear_unit_attention().await;

    // Immediate data only.
    let small = pattern(4096, 1);
    assert_eq!(
        i.scsi(&write10(0, 8), 4096, &small, 4096, 0).await.status,
        0
    );
    // Immediate + unsolicited Data-Out + R2T-solicited data (FirstBurst 262144 < 1 MiB).
    let big = pattern(1024 * 1024, 2);
    assert_eq!(
        i.scsi(
            &write10(100, 2048),
            big.len() as u32,
            &big,
            8192,
            262_144 - 8192
        )
        .await
        .status,
        0
    );

    let r = i.scsi(&read10(0, 8), 4096, &[], 0, 0).await;
    assert_eq!((r.status, r.residual), (0, (false, false, 0)));
    assert_eq!(r.data, small);
    // A read larger than the initiator's MRDSL arrives in many Data-In PDUs.
    let r = i
        .scsi(&read10(100, 2048), big.len() as u32, &[], 0, 0)
        .await;
    assert_eq!(r.status, 0);
    assert!(r.data == big, "read back what was written");

    // Underflow residual: EDTL larger than the CDB's transfer length.
    let r = i.scsi(&read10(0, 1), 1024, &[], 0, 0).await;
    assert_eq!((r.status, r.residual), (0, (false, true, 512)));

    // NOP-Out ping is echoed.
    let itt = i.next_itt();
    let nop = NopOut {
        immediate: true,
        itt,
        ttt: RESERVED_TAG,
        cmd_sn: i.cmd_sn,
        exp_stat_sn: i.exp_stat_sn,
        ..NopOut::default()
    };
    i.send(&Pdu::NopOut(nop), Bytes::from_static(b"ping")).await;
    let f = i.recv().await;
    let Pdu::NopIn(n) = f.pdu else {
        panic!("expected NOP-In")
    };
    assert_eq!(
        (n.itt, n.ttt, &f.data[..]),
        (itt, RESERVED_TAG, &b"ping"[..])
    );

    assert_eq!(srv.server.sessions().len(), 1);
    assert_eq!(srv.server.sessions()[0].initiator, INITIATOR);
    let lr = i.logout().await;
    assert_eq!(lr.response, 0);
    assert!(i.closed().await);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(srv.server.sessions().is_empty());
    srv.shutdown.cancel();
    srv.task.await.expect("join").expect("serve");
}

#[tokio::test]
async fn initial_r2t_and_digests() {
    let srv = start(|_| {}).await;
    let mut i = Initiator::connect(srv.addr, 2).await;
    let (r, keys) = i
        .login_normal(&[
            ("HeaderDigest", "CRC32C,None"),
            ("DataDigest", "CRC32C,None"),
            ("InitialR2T", "Yes"),
            ("ImmediateData", "No"),
            ("MaxBurstLength", "16384"),
            ("MaxOutstandingR2T", "4"),
        ])
        .await;
    assert_eq!(r.status_class, 0);
    assert_eq!(key(&keys, "HeaderDigest").as_deref(), Some("CRC32C"));
    assert!(i.digests.header && i.digests.data);
    i.clear_unit_attention().await;
    let data = pattern(65536, 3);
    assert_eq!(i.scsi(&write10(8, 128), 65536, &data, 0, 0).await.status, 0);
    let r = i.scsi(&read10(8, 128), 65536, &[], 0, 0).await;
    assert!(r.status == 0 && r.data == data);
    assert_eq!(i.logout().await.response, 0);
}

#[tokio::test]
async fn chap_one_way_mutual_and_wrong_secret() {
    let srv = start(|c| {
        c.targets[0].chap = Some(chap("alice", "alicesecret12"));
        c.targets[0].mutual_chap = Some(chap("target", "targetsecret1"));
    })
    .await;
    let mut i = Initiator::connect(srv.addr, 3).await;
    let (r, _) = i
        .login_chap(TARGET, "Normal", &chap("alice", "alicesecret12"), None)
        .await;
    assert_eq!((r.status_class, r.status_detail), (0, 0));
    assert!(r.transit && r.nsg == 3);
    i.logout().await;

    let mut i = Initiator::connect(srv.addr, 4).await;
    let (r, keys) = i
        .login_chap(
            TARGET,
            "Normal",
            &chap("alice", "alicesecret12"),
            Some(&[9u8; 16]),
        )
        .await;
    assert_eq!(r.status_class, 0);
    assert_eq!(key(&keys, "CHAP_N").as_deref(), Some("target"));
    assert!(key(&keys, "CHAP_R").is_some());

    let mut i = Initiator::connect(srv.addr, 5).await;
    let (r, _) = i
        .login_chap(TARGET, "Normal", &chap("alice", "wrongsecret!!"), None)
        .await;
    assert_eq!((r.status_class, r.status_detail), (2, 1));
    assert!(i.closed().await);

    // Skipping authentication is refused too.
    let mut i = Initiator::connect(srv.addr, 6).await;
    let (r, _) = i.login_normal(&[]).await;
    assert_eq!((r.status_class, r.status_detail), (2, 1));
}

#[tokio::test]
async fn discovery_send_targets_respects_acl() {
    let srv = start(|c| c.discovery_chap = Some(chap("disc", "discsecret123"))).await;
    let mut i = Initiator::connect(srv.addr, 7).await;
    let (r, _) = i
        .login_chap("", "Discovery", &chap("disc", "discsecret123"), None)
        .await;
    assert_eq!(r.status_class, 0);
    let keys = i.text(&[("SendTargets", "All")]).await;
    assert_eq!(key(&keys, "TargetName").as_deref(), Some(TARGET));
    assert_eq!(key(&keys, "TargetAddress"), Some(format!("{},1", srv.addr)));
    assert!(
        !keys.iter().any(|(_, v)| v == HIDDEN),
        "ACL-refused target must not be listed"
    );
    // SCSI commands are not allowed in a discovery session.
    let cmd = ScsiCommandPdu {
        final_bit: true,
        itt: 9,
        cmd_sn: i.cmd_sn,
        ..ScsiCommandPdu::default()
    };
    i.send(&Pdu::ScsiCommand(cmd), Bytes::new()).await;
    assert!(matches!(i.recv().await.pdu, Pdu::Reject(_)));
    assert_eq!(i.logout().await.response, 0);
}

#[tokio::test]
async fn login_refusals() {
    let srv = start(|_| {}).await;
    let mut i = Initiator::connect(srv.addr, 8).await;
    let keys = [
        ("InitiatorName", INITIATOR),
        ("SessionType", "Normal"),
        ("TargetName", HIDDEN),
    ];
    let (r, _) = i.login_step(1, 3, true, &keys).await;
    assert_eq!((r.status_class, r.status_detail), (2, 2));
    let mut i = Initiator::connect(srv.addr, 8).await;
    let keys = [
        ("InitiatorName", INITIATOR),
        ("SessionType", "Normal"),
        ("TargetName", "iqn.2026-01.nope:x"),
    ];
    let (r, _) = i.login_step(1, 3, true, &keys).await;
    assert_eq!((r.status_class, r.status_detail), (2, 3));
}

#[tokio::test]
async fn cmdsn_outside_window_is_silently_ignored() {
    let srv = start(|_| {}).await;
    let mut i = Initiator::connect(srv.addr, 9).await;
    i.login_normal(&[]).await;
    i.clear_unit_attention().await;
    for bad in [i.cmd_sn.wrapping_add(100_000), i.cmd_sn.wrapping_sub(1)] {
        let mut cdb = [0u8; 16];
        cdb[..10].copy_from_slice(&read10(0, 1));
        let itt = i.next_itt();
        let cmd = ScsiCommandPdu {
            final_bit: true,
            read: true,
            itt,
            expected_data_len: 512,
            cmd_sn: bad,
            cdb,
            ..ScsiCommandPdu::default()
        };
        i.send(&Pdu::ScsiCommand(cmd), Bytes::new()).await;
        assert!(
            i.try_recv(Duration::from_millis(300)).await.is_none(),
            "no reply for CmdSN {bad}"
        );
    }
    let r = i.scsi(&read10(0, 1), 512, &[], 0, 0).await;
    assert_eq!(r.status, 0, "connection still usable");
}

#[tokio::test]
async fn invalid_data_sn_fails_the_command() {
    let srv = start(|_| {}).await;
    let mut i = Initiator::connect(srv.addr, 10).await;
    i.login_normal(&[("InitialR2T", "Yes"), ("ImmediateData", "No")])
        .await;
    i.clear_unit_attention().await;
    let mut cdb = [0u8; 16];
    cdb[..10].copy_from_slice(&write10(0, 2));
    let itt = i.next_itt();
    let cmd = ScsiCommandPdu {
        final_bit: true,
        write: true,
        itt,
        expected_data_len: 1024,
        cmd_sn: i.cmd_sn,
        cdb,
        ..ScsiCommandPdu::default()
    };
    i.cmd_sn += 1;
    i.send(&Pdu::ScsiCommand(cmd), Bytes::new()).await;
    let Pdu::R2t(r2t) = i.recv().await.pdu else {
        panic!("expected R2T")
    };
    let d = DataOut {
        itt,
        ttt: r2t.ttt,
        data_sn: 27,
        buffer_offset: 0,
        final_bit: false,
        ..DataOut::default()
    };
    i.send(&Pdu::DataOut(d), Bytes::from(vec![0u8; 512])).await;
    let f = i.recv().await;
    let Pdu::ScsiResponse(r) = f.pdu else {
        panic!("expected SCSI Response, got {:?}", f.pdu)
    };
    assert_eq!((r.itt, r.status), (itt, 2), "never GOOD");
    assert_eq!(
        (f.data[2 + 2] & 0x0f, f.data[2 + 12]),
        (0x0b, 0x4b),
        "ABORTED COMMAND / DATA PHASE ERROR"
    );
    // The rest of the data for the failed command is dropped and the connection stays usable.
    let d = DataOut {
        itt,
        ttt: r2t.ttt,
        data_sn: 1,
        buffer_offset: 512,
        final_bit: true,
        ..DataOut::default()
    };
    i.send(&Pdu::DataOut(d), Bytes::from(vec![0u8; 512])).await;
    let data = pattern(1024, 5);
    assert_eq!(i.scsi(&write10(0, 2), 1024, &data, 0, 0).await.status, 0);
    assert_eq!(i.scsi(&read10(0, 2), 1024, &[], 0, 0).await.data, data);
}

#[tokio::test]
async fn abort_task_waiting_for_data() {
    let srv = start(|_| {}).await;
    let mut i = Initiator::connect(srv.addr, 11).await;
    i.login_normal(&[("InitialR2T", "Yes"), ("ImmediateData", "No")])
        .await;
    i.clear_unit_attention().await;
    let mut cdb = [0u8; 16];
    cdb[..10].copy_from_slice(&write10(0, 8));
    let itt = i.next_itt();
    let cmd_sn = i.cmd_sn;
    let cmd = ScsiCommandPdu {
        final_bit: true,
        write: true,
        itt,
        expected_data_len: 4096,
        cmd_sn,
        cdb,
        ..ScsiCommandPdu::default()
    };
    i.cmd_sn += 1;
    i.send(&Pdu::ScsiCommand(cmd), Bytes::new()).await;
    assert!(matches!(i.recv().await.pdu, Pdu::R2t(_)));
    let tmf = TaskMgmtRequest {
        immediate: true,
        function: 1,
        itt: i.next_itt(),
        referenced_task_tag: itt,
        cmd_sn: i.cmd_sn,
        ref_cmd_sn: cmd_sn,
        ..TaskMgmtRequest::default()
    };
    i.send(&Pdu::TaskMgmtRequest(tmf), Bytes::new()).await;
    let Pdu::TaskMgmtResponse(r) = i.recv().await.pdu else {
        panic!("expected TMF response")
    };
    assert_eq!(r.response, 0);
    // LUN RESET on an existing LUN, then on a missing one.
    for (lun, expected) in [(0u64, 0u8), (5u64 << 48, 2)] {
        let tmf = TaskMgmtRequest {
            immediate: true,
            function: 5,
            lun,
            itt: i.next_itt(),
            cmd_sn: i.cmd_sn,
            ..TaskMgmtRequest::default()
        };
        i.send(&Pdu::TaskMgmtRequest(tmf), Bytes::new()).await;
        let Pdu::TaskMgmtResponse(r) = i.recv().await.pdu else {
            panic!("expected TMF response")
        };
        assert_eq!(r.response, expected);
    }
    assert_eq!(i.logout().await.response, 0);
}

#[tokio::test]
async fn reinstatement_and_async_logout_request() {
    let srv = start(|_| {}).await;
    let mut a = Initiator::connect(srv.addr, 12).await;
    a.login_normal(&[]).await;
    let first_tsih = a.tsih;
    assert_eq!(srv.server.sessions().len(), 1);
    // Same initiator name and ISID with TSIH 0: the old session is closed first.
    let mut b = Initiator::connect(srv.addr, 12).await;
    let (r, _) = b.login_normal(&[]).await;
    assert_eq!(r.status_class, 0);
    assert!(a.closed().await, "old session closed on reinstatement");
    let sessions = srv.server.sessions();
    assert_eq!(sessions.len(), 1);
    assert_ne!(sessions[0].tsih, first_tsih);
    assert_eq!(srv.server.request_logout_all(3), 1);
    let Pdu::AsyncMessage(m) = b.recv().await.pdu else {
        panic!("expected async message")
    };
    assert_eq!((m.event, m.param3), (1, 3));
    assert_eq!(b.logout().await.response, 0);
}

#[tokio::test]
async fn idle_connection_is_pinged_and_dropped() {
    let srv = start(|c| {
        c.nop_interval = Duration::from_millis(200);
        c.nop_timeout = Duration::from_millis(600);
    })
    .await;
    let mut i = Initiator::connect(srv.addr, 13).await;
    i.login_normal(&[]).await;
    let f = i.try_recv(Duration::from_secs(3)).await.expect("ping");
    let Pdu::NopIn(n) = f.pdu else {
        panic!("expected NOP-In ping")
    };
    assert_ne!(n.ttt, RESERVED_TAG);
    // Never answered: the target drops the connection.
    assert!(i.wait_eof(Duration::from_secs(5)).await);
}
