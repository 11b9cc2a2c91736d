//! Fuzz the replication frame decoder: parse frames off the input one after another, as a stream reader
//! would, and check that every frame that parses re-encodes to the same bytes and parses back to itself.
//! The stream decoder (`decode`) must agree with the slice parser (`parse`).
#![no_main]

use bytes::BytesMut;
use replicator::wire::frame::{decode, encode, parse};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    let mut stream = BytesMut::from(data);
    loop {
        let parsed = parse(rest);
        let streamed = decode(&mut stream);
        let (frame, used) = match parsed {
            Ok(Some(ok)) => ok,
            Ok(None) => {
                assert!(matches!(streamed, Ok(None)), "parse needs more bytes but decode disagrees");
                break;
            }
            Err(_) => {
                assert!(streamed.is_err(), "parse failed but decode did not");
                break;
            }
        };
        assert!(used <= rest.len(), "consumed more than the input");
        match streamed {
            Ok(Some(ref f)) => assert_eq!(f, &frame, "decode and parse disagree"),
            _ => panic!("parse produced a frame but decode did not"),
        }

        let mut again = BytesMut::new();
        encode(&frame, &mut again);
        assert_eq!(&again[..], &rest[..used], "the encoding of a parsed frame is not canonical");
        match parse(&again) {
            Ok(Some((reparsed, n))) => {
                assert_eq!(reparsed, frame, "re-encoded frame parses differently");
                assert_eq!(n, again.len());
            }
            other => panic!("re-encoded frame does not parse: {other:?}"),
        }

        rest = &rest[used..];
    }
});
