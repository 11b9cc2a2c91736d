//! The libiscsi ALUA probe (tests/alua/alua-probe.c) against a real one-node clusterd serving a file
//! LUN on loopback, as the target is today: one port group, active/optimized, holding the nexus's
//! port. Checks what the ALUA end-to-end tests rely on: the probe surfaces unit attentions itself
//! (29/00 on a fresh nexus), INQUIRY's TPGS, VPD 0x83 agreeing with REPORT TARGET PORT GROUPS in
//! both header formats, data written through the probe landing in the backing file, the until-*
//! loops, a refused login, and a session lost when the daemon dies (no silent reconnect).

use anyhow::Result;
use ha_tests::alua_probe::{fnv1a64, AluaState, Data, Outcome, Probe, Sense};
use ha_tests::standalone::Standalone;
use std::io::{Read, Seek, SeekFrom};
use std::time::Duration;

const IQN: &str = "iqn.2026-11.org.example:alua-probe";
const IMAGE_SIZE: u64 = 16 << 20;

/// A standalone target on a free loopback port; `tpgt: 3` so the relative port id (= TPGT) is not
/// the default 1 and the probe's numbers are known to come from the nexus.
fn target() -> Result<Standalone> {
    let yaml = format!("  {IQN}:\n    tpgt: 3\n    portals: [\"127.0.0.1:PORT\"]\n    luns:\n      0: {{ path: lun0.img }}\n");
    let mut s = Standalone::new(&yaml, &[("lun0.img", IMAGE_SIZE)], &[])?;
    s.start()?;
    Ok(s)
}

#[test]
fn probe_reads_alua_state_and_moves_data_on_the_standalone_target() -> Result<()> {
    let s = target()?;
    let url = s.url(IQN, 0, None);
    let cmds = [
        "inq", "tur", "tur", "vpd83", "rtpg", "rtpg-len", "readcap", "write", "7", "0xa5", "read", "7", "read", "8",
    ];
    let run = Probe::new(&url).run(&cmds)?;
    run.completed()?;
    let log = || format!("probe:\n{}{}\ndaemon:\n{}", run.stdout, run.stderr, s.log());

    let inq = run.step(1)?.inquiry()?;
    assert_eq!((inq.vendor.as_str(), inq.product.as_str()), ("CLUSTERD", "HA-VOLUME"), "{}", log());
    assert_eq!(inq.tpgs, 1, "TPGS must say implicit ALUA: {}", log());
    // INQUIRY does not report unit attentions; the first TUR of the new nexus gets POWER ON, RESET.
    assert_eq!(run.step(2)?.outcome, Outcome::Check(Sense::POWER_ON_RESET), "{}", log());
    assert_eq!(run.step(3)?.outcome, Outcome::Ok(Data::None), "{}", log());

    let id = run.step(4)?.device_id()?;
    assert_eq!(id.relative_port, Some(3), "relative target port = TPGT: {}", log());
    let lu = id.lu.as_deref().unwrap_or_default();
    assert!(lu.starts_with("naa:6") && lu.len() == 4 + 32, "NAA IEEE Registered Extended designator: {}", log());
    assert_eq!(id.port_name.as_deref(), Some(format!("{IQN},t,0x0003").as_str()), "{}", log());
    assert_eq!(id.target_name.as_deref(), Some(IQN), "{}", log());

    for (seq, extended) in [(5, true), (6, false)] {
        let rtpg = run.step(seq)?.rtpg()?;
        assert_eq!(rtpg.extended, extended, "header format of command {seq}: {}", log());
        assert_eq!(rtpg.groups.len(), 1, "{}", log());
        let g = &rtpg.groups[0];
        assert_eq!(g.state, AluaState::ActiveOptimized, "{}", log());
        assert!(g.pref, "{}", log());
        assert_eq!(g.ports, vec![3], "the group holds the nexus's port: {}", log());
        assert_eq!(Some(g.id), id.port_group, "VPD 0x83 and RTPG name the same group: {}", log());
        assert!(g.supported.contains(&AluaState::ActiveOptimized), "{}", log());
        assert_eq!(rtpg.group_of_port(id.relative_port.unwrap_or(0)).map(|g| g.id), id.port_group);
    }

    assert_eq!(run.step(7)?.capacity()?, (IMAGE_SIZE / 512, 512), "{}", log());
    assert_eq!(run.step(8)?.data()?, &Data::Written { lba: 7, byte: 0xa5 }, "{}", log());
    let written = run.step(9)?.block()?;
    assert_eq!((written.lba, written.fill), (7, Some(0xa5)), "{}", log());
    assert_eq!(written.fnv, fnv1a64(&[0xa5; 512]), "{}", log());
    assert_eq!(written.head, vec![0xa5; 16]);
    let untouched = run.step(10)?.block()?;
    assert_eq!((untouched.fill, untouched.fnv), (Some(0), fnv1a64(&[0; 512])), "{}", log());

    // The WRITE reached the LUN's backing file, not just some cache of the probe's session.
    let mut f = std::fs::File::open(s.dir.path().join("lun0.img"))?;
    let mut block = [0u8; 512];
    f.seek(SeekFrom::Start(7 * 512))?;
    f.read_exact(&mut block)?;
    assert_eq!(block, [0xa5; 512], "block 7 of the backing file");
    Ok(())
}

#[test]
fn until_loops_match_time_out_and_report_what_they_saw() -> Result<()> {
    let s = target()?;
    let url = s.url(IQN, 0, None);
    // 29/00 is pending on the fresh nexus: until-ua matches it at once. Nothing changes the ALUA
    // state on this target, so waiting for 2A/06 must time out after ~300 ms having seen only GOOD.
    let run = Probe::new(&url).run(&["until-ua", "29", "00", "2000", "until-ua", "2a", "06", "300", "until-ok", "readcap", "1000", "sleep", "200"])?;
    run.completed()?;
    let log = || format!("probe:\n{}{}", run.stdout, run.stderr);
    let first = run.step(1)?;
    assert_eq!((first.sense(), first.tries), (Some(Sense::POWER_ON_RESET), Some(1)), "{}", log());
    let second = run.step(2)?;
    assert_eq!(second.outcome, Outcome::Timeout, "{}", log());
    assert_eq!(second.seen, vec![Outcome::Ok(Data::None)], "deduplicated intermediate results: {}", log());
    let ms = second.ms.unwrap_or(0);
    assert!((250..2000).contains(&ms) && second.tries.unwrap_or(0) >= 3, "bounded wait of ~300 ms: {}", log());
    assert_eq!(run.step(3)?.capacity()?, (IMAGE_SIZE / 512, 512), "{}", log());
    assert_eq!(run.step(4)?.data()?, &Data::Slept { ms: 200 }, "{}", log());

    // A fresh nexus again: until-check waits for the same UA by key; until-ok sees it on the way.
    let run = Probe::new(&url).initiator("iqn.2026-11.org.example:second").run(&["until-ok", "tur", "1000"])?;
    run.completed()?;
    let step = run.step(1)?;
    assert_eq!(step.seen, vec![Outcome::Check(Sense::POWER_ON_RESET)], "probe:\n{}", run.stdout);
    assert_eq!((step.outcome.clone(), step.tries), (Outcome::Ok(Data::None), Some(2)), "probe:\n{}", run.stdout);
    Ok(())
}

#[test]
fn refused_login_bad_usage_and_a_lost_session_have_their_exit_codes() -> Result<()> {
    let s = target()?;
    let unknown = Probe::new(&s.url("iqn.2026-11.org.example:no-such-target", 0, None)).run(&["tur"])?;
    assert_eq!(unknown.exit, Some(1), "login to an unknown target: {}{}", unknown.stdout, unknown.stderr);
    assert!(unknown.output.login.is_err() && unknown.output.steps.is_empty(), "{}", unknown.stdout);

    let usage = Probe::new(&s.url(IQN, 0, None)).run(&["read"])?;
    assert_eq!(usage.exit, Some(2), "{}{}", usage.stdout, usage.stderr);
    assert!(usage.stderr.contains("`read` is missing an argument"), "{}", usage.stderr);

    // The daemon dies while the probe sleeps on its session: the sleep notices, the probe says so and
    // exits 3 instead of reconnecting behind the test's back.
    let running = Probe::new(&s.url(IQN, 0, None)).limit(Duration::from_secs(30)).spawn(&["tur", "sleep", "3000", "tur", "tur"])?;
    std::thread::sleep(Duration::from_millis(800));
    drop(s); // kills clusterd
    let run = running.wait()?;
    assert_eq!(run.exit, Some(3), "probe:\n{}{}", run.stdout, run.stderr);
    assert_eq!(run.step(1)?.sense(), Some(Sense::POWER_ON_RESET));
    let lost = run.output.steps.last().map(|st| (st.seq, st.outcome.clone()));
    assert!(matches!(lost, Some((2 | 3, Outcome::Error(_)))), "the sleep or the next TUR reports the loss: {}", run.stdout);
    assert!(run.output.steps.iter().all(|st| st.seq <= 3), "nothing ran after the loss: {}", run.stdout);
    Ok(())
}
