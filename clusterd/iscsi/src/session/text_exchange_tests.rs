use super::*;
use proptest::prelude::*;

struct Ctx {
    params: SessionParams,
    kind: SessionType,
}

impl Ctx {
    fn new(max_xmit: u32) -> Self {
        let mut params = SessionParams::rfc_defaults(&TargetParams::default());
        params.max_xmit_data_segment_length = max_xmit;
        Ctx {
            params,
            kind: SessionType::Discovery,
        }
    }
}

impl TextContext for Ctx {
    fn session_type(&self) -> SessionType {
        self.kind
    }
    fn send_targets(&self, value: &str) -> Vec<(String, String)> {
        if value != "All" {
            return Vec::new();
        }
        (0..40)
            .flat_map(|i| {
                [
                    ("TargetName".to_string(), format!("iqn.2026-12.test:disk{i:03}")),
                    ("TargetAddress".to_string(), format!("192.0.2.{i}:3260,1")),
                ]
            })
            .collect()
    }
    fn params(&self) -> &SessionParams {
        &self.params
    }
}

fn req(itt: u32, ttt: u32, c: bool, f: bool) -> TextRequest {
    TextRequest {
        final_bit: f,
        continue_bit: c,
        itt,
        ttt,
        ..TextRequest::default()
    }
}

/// Number of key=value pairs (SendTargets answers repeat keys, which `parse_text` refuses).
fn pairs(text: &[u8]) -> usize {
    text.split(|b| *b == 0).filter(|p| p.contains(&b'=')).count()
}

fn counter() -> impl FnMut() -> u32 {
    let mut n = 0u32;
    move || {
        n += 1;
        n
    }
}

#[test]
fn send_targets_invalid_and_unknown_values_get_an_empty_response() {
    let ctx = Ctx::new(8192);
    let mut x = TextExchange::new();
    let mut ttt = counter();
    for value in ["Invalid", "", "iqn.2026-12.test:nonexistent", "all"] {
        let text = format!("SendTargets={value}\0");
        match x.step(&req(7, RESERVED_TAG, false, true), text.as_bytes(), &ctx, &mut ttt) {
            TextAnswer::Response(r, d) => {
                assert!(r.final_bit && r.ttt == RESERVED_TAG && r.itt == 7, "{r:?}");
                assert!(d.is_empty(), "{value}: {d:?}");
            }
            other => panic!("{value}: {other:?}"),
        }
    }
}

#[test]
fn unknown_keys_are_not_understood_and_operational_keys_rejected() {
    let ctx = Ctx::new(8192);
    let mut x = TextExchange::new();
    let answer = x.step(
        &req(1, RESERVED_TAG, false, true),
        b"X-com.example.Foo=bar\0MaxBurstLength=512\0",
        &ctx,
        &mut counter(),
    );
    let TextAnswer::Response(_, d) = answer else {
        panic!("{answer:?}")
    };
    assert_eq!(
        parse_text(&d).unwrap(),
        vec![
            ("X-com.example.Foo".to_string(), "NotUnderstood".to_string()),
            ("MaxBurstLength".to_string(), "Reject".to_string()),
        ]
    );
}

#[test]
fn malformed_text_is_rejected_not_ignored() {
    let ctx = Ctx::new(8192);
    for data in [&b"SendTargets=All"[..], b"=x\0", b"SendTargets=All\0SendTargets=All\0"] {
        let a = TextExchange::new().step(&req(1, RESERVED_TAG, false, true), data, &ctx, &mut counter());
        assert!(matches!(a, TextAnswer::Reject { .. }), "{data:?}: {a:?}");
    }
}

#[test]
fn continued_request_is_gathered_then_answered() {
    let ctx = Ctx::new(65536);
    let mut x = TextExchange::new();
    let mut ttt = counter();
    let TextAnswer::Response(r, d) = x.step(&req(3, RESERVED_TAG, true, false), b"SendTar", &ctx, &mut ttt)
    else {
        panic!()
    };
    assert!(d.is_empty() && !r.final_bit && r.ttt != RESERVED_TAG);
    let TextAnswer::Response(r2, d2) = x.step(&req(3, r.ttt, false, true), b"gets=All\0", &ctx, &mut ttt)
    else {
        panic!()
    };
    assert!(r2.final_bit);
    assert_eq!(pairs(&d2), 80);
    assert!(!x.in_progress());
}

#[test]
fn long_response_is_fetched_in_parts_with_the_ttt() {
    let ctx = Ctx::new(512);
    let mut x = TextExchange::new();
    let mut ttt = counter();
    let mut all = Vec::new();
    let mut next = req(9, RESERVED_TAG, false, true);
    let mut data: &[u8] = b"SendTargets=All\0";
    for _ in 0..100 {
        let TextAnswer::Response(r, d) = x.step(&next, data, &ctx, &mut ttt) else {
            panic!()
        };
        assert!(d.len() <= 512);
        all.extend_from_slice(&d);
        if r.final_bit {
            assert_eq!(r.ttt, RESERVED_TAG);
            break;
        }
        assert!(r.continue_bit && r.ttt != RESERVED_TAG);
        next = req(9, r.ttt, false, true);
        data = b"";
    }
    assert_eq!(pairs(&all), 80);
}

#[test]
fn unknown_ttt_and_c_with_f_are_rejected() {
    let ctx = Ctx::new(8192);
    let mut x = TextExchange::new();
    let a = x.step(&req(1, 42, false, true), b"", &ctx, &mut counter());
    assert!(matches!(a, TextAnswer::Reject { .. }));
    let a = x.step(&req(1, RESERVED_TAG, true, true), b"SendTargets=All\0", &ctx, &mut counter());
    assert!(matches!(a, TextAnswer::Reject { .. }));
}

#[test]
fn overlong_continued_request_is_reset() {
    let ctx = Ctx::new(8192);
    let mut x = TextExchange::new();
    let mut ttt = counter();
    let chunk = vec![b'a'; 16 * 1024];
    let TextAnswer::Response(mut r, _) = x.step(&req(1, RESERVED_TAG, true, false), &chunk, &ctx, &mut ttt)
    else {
        panic!()
    };
    for i in 0..10 {
        match x.step(&req(1, r.ttt, true, false), &chunk, &ctx, &mut ttt) {
            TextAnswer::Response(next, _) => r = next,
            TextAnswer::Reject { reason, .. } => {
                assert_eq!(reason, text_reject::NEGOTIATION_RESET);
                assert!(i >= 2 && !x.in_progress());
                return;
            }
        }
    }
    panic!("never reset");
}

proptest! {
    /// Whatever sequence of Text Requests arrives, each one gets exactly one answer, responses never
    /// exceed the initiator's limit, and the state stays bounded.
    #[test]
    fn every_text_request_gets_one_bounded_answer(
        steps in proptest::collection::vec(
            (any::<bool>(), any::<bool>(), 0u8..4, proptest::collection::vec(any::<u8>(), 0..300)),
            1..40,
        ),
        max in 512u32..2048,
    ) {
        let ctx = Ctx::new(max);
        let mut x = TextExchange::new();
        let mut ttt = counter();
        let mut last_ttt = RESERVED_TAG;
        for (c, f, ttt_kind, mut data) in steps {
            if data.len() % 3 == 0 {
                data = b"SendTargets=All\0".to_vec();
            }
            let t = match ttt_kind { 0 | 1 => RESERVED_TAG, 2 => last_ttt, _ => 77 };
            match x.step(&req(5, t, c, f), &data, &ctx, &mut ttt) {
                TextAnswer::Response(r, d) => {
                    prop_assert!(d.len() <= max as usize);
                    prop_assert!(!(r.final_bit && r.continue_bit));
                    last_ttt = r.ttt;
                }
                TextAnswer::Reject { .. } => {}
            }
            prop_assert!(x.request.as_ref().is_none_or(|p| p.text.len() <= MAX_REQUEST_TEXT));
        }
    }
}
