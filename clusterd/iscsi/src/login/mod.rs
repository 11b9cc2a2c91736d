//! Login and text negotiation: key=value text, operational keys, CHAP and the login state machine.

pub mod chap;
pub mod keys;
pub mod machine;
pub mod text;

pub use chap::{ChapAccount, ChapAlgorithm, ChapError};
pub use keys::{Digest, SessionParams, SessionType, TargetParams};
pub use machine::{
    LoginDirectory, LoginMachine, LoginOutcome, LoginResult, LoginStep, LoginTarget, TargetLookup,
    status,
};
pub use text::{TextError, encode_text, parse_text};
