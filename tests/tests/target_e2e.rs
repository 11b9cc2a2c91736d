//! The embedded iSCSI target served by a real one-node clusterd from ha.yaml, driven by libiscsi's
//! command-line initiators: plain login, one-way and mutual CHAP, a wrong secret, ACLs by initiator name
//! and by source network (refused at login and hidden from discovery), and `haadm target show`.

use anyhow::Result;
use ha_tests::standalone::{Standalone, run_tool};

const OPEN: &str = "iqn.2026-11.org.example:open";
const CHAP: &str = "iqn.2026-11.org.example:chap";
const BY_NAME: &str = "iqn.2026-11.org.example:by-name";
const BY_NET: &str = "iqn.2026-11.org.example:by-net";
const ALLOWED: &str = "iqn.2026-11.org.example:allowed-initiator";
const STRANGER: &str = "iqn.2026-11.org.example:stranger";
const ALICE_SECRET: &str = "alice-secret-0123";
const TARGET_SECRET: &str = "target-secret-4567";

fn targets_yaml() -> String {
    format!(
        r#"  {OPEN}:
    portals: ["127.0.0.1:PORT"]
    luns:
      0: {{ path: open.img }}
  {CHAP}:
    portals: ["127.0.0.1:PORT"]
    luns:
      0: {{ path: chap.img }}
    incoming-user: {{ name: alice, secret-file: alice.secret }}
    outgoing-user: {{ name: target1, secret-file: target.secret }}
  {BY_NAME}:
    portals: ["127.0.0.1:PORT"]
    luns:
      0: {{ path: name.img }}
    initiators: [{ALLOWED}]
  {BY_NET}:
    portals: ["127.0.0.1:PORT"]
    luns:
      0: {{ path: net.img }}
    networks: ["10.0.0.0/8"]
"#
    )
}

fn cluster() -> Result<Standalone> {
    let mut s = Standalone::new(
        &targets_yaml(),
        &[("open.img", 64 << 20), ("chap.img", 64 << 20), ("name.img", 64 << 20), ("net.img", 64 << 20)],
        &[("alice.secret", ALICE_SECRET), ("target.secret", TARGET_SECRET)],
    )?;
    s.start()?;
    Ok(s)
}

fn ok(out: &std::process::Output) -> bool {
    out.status.success()
}

fn text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn inquiry_discovery_and_target_show() -> Result<()> {
    let s = cluster()?;
    let inq = run_tool("iscsi-inq", &[&s.url(OPEN, 0, None)], &[])?;
    assert!(ok(&inq), "iscsi-inq on the open target failed: {}\n{}", text(&inq), s.log());
    assert!(text(&inq).contains("CLUSTERD"), "vendor missing from INQUIRY: {}", text(&inq));

    let ls = run_tool("iscsi-ls", &[&format!("iscsi://127.0.0.1:{}", s.port)], &[])?;
    assert!(ok(&ls), "iscsi-ls failed: {}", text(&ls));
    let listing = text(&ls);
    assert!(listing.contains(OPEN), "discovery does not list {OPEN}: {listing}");

    let show = s.haadm(&["target", "show"])?;
    assert!(ok(&show), "haadm target show failed: {}", text(&show));
    let shown = text(&show);
    for needle in [OPEN, CHAP, BY_NAME, "LUN: 0", "SCSI SN:", "alice", "target1 (outgoing)", "10.0.0.0/8", ALLOWED] {
        assert!(shown.contains(needle), "`{needle}` missing from target show:\n{shown}");
    }
    for secret in [ALICE_SECRET, TARGET_SECRET] {
        assert!(!shown.contains(secret), "target show printed a secret:\n{shown}");
        assert!(!s.log().contains(secret), "the daemon logged a secret");
    }
    let json = s.haadm(&["target", "show", "--json"])?;
    let v: serde_json::Value = serde_json::from_slice(&json.stdout)?;
    assert_eq!(v["targets"].as_array().map(|a| a.len()), Some(4), "{v}");
    Ok(())
}

#[test]
fn chap_one_way_mutual_and_wrong_secret() -> Result<()> {
    let s = cluster()?;
    let none = run_tool("iscsi-inq", &[&s.url(CHAP, 0, None)], &[])?;
    assert!(!ok(&none), "login without CHAP credentials was accepted: {}", text(&none));

    let one_way = run_tool("iscsi-inq", &[&s.url(CHAP, 0, Some(("alice", ALICE_SECRET)))], &[])?;
    assert!(ok(&one_way), "one-way CHAP failed: {}\n{}", text(&one_way), s.log());

    let wrong = run_tool("iscsi-inq", &[&s.url(CHAP, 0, Some(("alice", "not-the-secret-99")))], &[])?;
    assert!(!ok(&wrong), "a wrong CHAP secret was accepted: {}", text(&wrong));

    let mutual_env =
        [("LIBISCSI_CHAP_TARGET_USERNAME", "target1"), ("LIBISCSI_CHAP_TARGET_PASSWORD", TARGET_SECRET)];
    let mutual = run_tool("iscsi-inq", &[&s.url(CHAP, 0, Some(("alice", ALICE_SECRET)))], &mutual_env)?;
    assert!(ok(&mutual), "mutual CHAP failed: {}\n{}", text(&mutual), s.log());

    // The initiator must refuse a target that cannot prove it knows the initiator's idea of its secret.
    let bad_env =
        [("LIBISCSI_CHAP_TARGET_USERNAME", "target1"), ("LIBISCSI_CHAP_TARGET_PASSWORD", "someone-else-1234")];
    let bad = run_tool("iscsi-inq", &[&s.url(CHAP, 0, Some(("alice", ALICE_SECRET)))], &bad_env)?;
    assert!(!ok(&bad), "mutual CHAP with the wrong target secret succeeded: {}", text(&bad));
    Ok(())
}

#[test]
fn acl_refuses_login_and_hides_target() -> Result<()> {
    let s = cluster()?;
    let portal = format!("iscsi://127.0.0.1:{}", s.port);

    let allowed_ls = run_tool("iscsi-ls", &["-i", ALLOWED, &portal], &[])?;
    assert!(ok(&allowed_ls), "iscsi-ls as the allowed initiator failed: {}", text(&allowed_ls));
    assert!(text(&allowed_ls).contains(BY_NAME), "allowed initiator does not see {BY_NAME}: {}", text(&allowed_ls));

    let stranger_ls = run_tool("iscsi-ls", &["-i", STRANGER, &portal], &[])?;
    let listing = text(&stranger_ls);
    assert!(listing.contains(OPEN), "the stranger should still see the open target: {listing}");
    assert!(!listing.contains(BY_NAME), "discovery shows {BY_NAME} to an initiator outside its ACL: {listing}");
    assert!(!listing.contains(BY_NET), "discovery shows {BY_NET} to an address outside its ACL: {listing}");

    let allowed = run_tool("iscsi-inq", &["-i", ALLOWED, &s.url(BY_NAME, 0, None)], &[])?;
    assert!(ok(&allowed), "the allowed initiator cannot log in: {}\n{}", text(&allowed), s.log());
    let refused = run_tool("iscsi-inq", &["-i", STRANGER, &s.url(BY_NAME, 0, None)], &[])?;
    assert!(!ok(&refused), "an initiator outside the ACL logged in: {}", text(&refused));
    let by_net = run_tool("iscsi-inq", &["-i", ALLOWED, &s.url(BY_NET, 0, None)], &[])?;
    assert!(!ok(&by_net), "127.0.0.1 logged in to a target limited to 10.0.0.0/8: {}", text(&by_net));
    Ok(())
}

/// Large writes arrive as immediate data, unsolicited Data-Out and R2T-solicited Data-Out PDUs, whose
/// segments the target reads straight into the command's buffer: every byte must land where the
/// initiator put it (read back through the target and checked in the backing file).
#[test]
fn large_multi_pdu_writes_land_intact() -> Result<()> {
    use bytes::Bytes;
    use ha_tests::initiator::{Initiator, InitiatorConfig};
    use std::io::{Read, Seek, SeekFrom};
    let s = cluster()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let cfg = InitiatorConfig::new(&format!("127.0.0.1:{}", s.port), OPEN);
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut expected = Vec::new();
    rt.block_on(async {
        let mut ini = Initiator::connect(&cfg).await?;
        ini.test_unit_ready().await.ok(); // consumes the power-on unit attention
        // 1 MiB, just over the direct-collect threshold, an odd multiple of the segment size, 4 MiB.
        let mut lba = 8u32;
        for len in [1usize << 20, 96 * 1024, 3 * 256 * 1024 + 4096, 4 << 20] {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            ini.write10(lba, 512, Bytes::from(data.clone())).await?;
            let back = ini.read10(lba, 512, (len / 512) as u16).await?;
            anyhow::ensure!(back == data, "{len} bytes at LBA {lba} read back differently");
            expected.push((lba, data));
            lba += (len / 512) as u32 + 8;
        }
        ini.sync_cache().await?;
        anyhow::Ok(())
    })?;
    let mut f = std::fs::File::open(s.dir.path().join("open.img"))?;
    for (lba, data) in expected {
        let mut got = vec![0u8; data.len()];
        f.seek(SeekFrom::Start(u64::from(lba) * 512))?;
        f.read_exact(&mut got)?;
        anyhow::ensure!(got == data, "backing file differs at LBA {lba}");
    }
    Ok(())
}

/// An initiator that stops sending inside a large Data-Out PDU (whose segment the target reads straight
/// into the command's buffer) is dropped after the keepalive's allowance (ping interval + timeout), as
/// on the ordinary path, and the target serves new sessions afterwards.
#[test]
fn an_initiator_stalled_inside_a_data_out_pdu_is_dropped() -> Result<()> {
    use bytes::Bytes;
    use ha_tests::initiator::{Initiator, InitiatorConfig};
    use iscsi_target::pdu::{DataOut, DigestConfig, Pdu, encode};
    use std::time::{Duration, Instant};
    let images = [("open.img", 64 << 20), ("chap.img", 1 << 20), ("name.img", 1 << 20), ("net.img", 1 << 20)];
    let mut s = Standalone::new(&targets_yaml(), &images, &[("alice.secret", ALICE_SECRET), ("target.secret", TARGET_SECRET)])?;
    // A short keepalive, so the allowance is 2 s.
    let cfg_text = std::fs::read_to_string(&s.config)?;
    std::fs::write(&s.config, cfg_text.replace("targets:\n", "iscsi:\n  nop-interval: 1s\n  nop-timeout: 1s\ntargets:\n"))?;
    s.start()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let cfg = InitiatorConfig::new(&format!("127.0.0.1:{}", s.port), OPEN);
    rt.block_on(async {
        let mut ini = Initiator::connect(&cfg).await?;
        ini.test_unit_ready().await.ok();
        let r2t = ini.write10_until_r2t(0, 512, 2048).await?;
        anyhow::ensure!(r2t.desired_len >= 256 * 1024, "R2T for {} bytes", r2t.desired_len);
        let seg = 256 * 1024;
        let d = DataOut { final_bit: false, itt: r2t.itt, ttt: r2t.ttt, data_sn: 0, buffer_offset: r2t.buffer_offset, ..DataOut::default() };
        let pdu = encode(&Pdu::DataOut(d), Bytes::from(vec![0x5a; seg]), DigestConfig::default())?.to_vec();
        // The header and the first 8 KiB of the segment, then nothing.
        ini.send_raw(&pdu[..48 + 8192]).await?;
        let t0 = Instant::now();
        anyhow::ensure!(ini.closed_by_target_within(Duration::from_secs(10)).await, "the target kept a stalled connection");
        anyhow::ensure!(t0.elapsed() >= Duration::from_millis(1500), "dropped before the keepalive allowance: {:?}", t0.elapsed());
        let mut again = Initiator::connect(&cfg).await?;
        again.test_unit_ready().await.ok();
        again.write10(0, 512, Bytes::from(vec![1u8; 4096])).await?;
        anyhow::Ok(())
    })?;
    anyhow::ensure!(s.log().contains("stopped sending inside a Data-Out PDU"), "{}", s.log());
    Ok(())
}
