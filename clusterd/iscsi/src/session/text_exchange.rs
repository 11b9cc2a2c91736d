//! Text requests of the full feature phase (RFC 7143 §6.2, §11.10–§11.11) as a pure state machine.
//!
//! The rule this type exists for: **every Text Request gets exactly one answer** — a Text Response
//! (possibly empty, possibly one part of a longer text) or a Reject PDU — whatever the request carries.
//! The connection only moves the PDUs; the decisions are here, so they can be unit-tested and fuzzed
//! without sockets.
//!
//! What the target supports in this phase: `SendTargets` (discovery and normal sessions) and the
//! continuation rules in both directions (C bit on requests, long responses split by the initiator's
//! MaxRecvDataSegmentLength with a TTT to fetch the rest). Renegotiating operational keys is refused
//! (`key=Reject`), unknown keys are `NotUnderstood`.

use bytes::{Bytes, BytesMut};

use crate::login::keys::{KeyAnswer, negotiate_key};
use crate::login::{SessionParams, SessionType, TargetParams, encode_text, parse_text};
use crate::pdu::{RESERVED_TAG, TextRequest, TextResponse};

/// Most request text gathered across C-bit PDUs: far beyond any real request (SendTargets is one key),
/// small enough that an initiator cannot make the target buffer much.
pub const MAX_REQUEST_TEXT: usize = 64 * 1024;

/// Reject reasons a text exchange uses (RFC 7143 §11.17.1).
pub mod text_reject {
    pub const PROTOCOL_ERROR: u8 = 0x04;
    pub const INVALID_PDU_FIELD: u8 = 0x09;
    pub const NEGOTIATION_RESET: u8 = 0x0b;
}

/// What the target answers to one Text Request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextAnswer {
    /// A Text Response (sequence numbers are stamped by the writer).
    Response(TextResponse, Bytes),
    /// A Reject PDU with this reason, carrying the request's header.
    Reject { reason: u8, why: &'static str },
}

/// Session facts the answers depend on.
pub trait TextContext {
    fn session_type(&self) -> SessionType;
    /// The `TargetName=`/`TargetAddress=` pairs for a `SendTargets=value` request.
    fn send_targets(&self, value: &str) -> Vec<(String, String)>;
    /// The negotiated parameters (MaxRecvDataSegmentLength of the initiator bounds each response).
    fn params(&self) -> &SessionParams;
}

#[derive(Debug)]
struct PartialRequest {
    itt: u32,
    ttt: u32,
    text: BytesMut,
}

#[derive(Debug)]
struct PartialResponse {
    itt: u32,
    ttt: u32,
    rest: Bytes,
}

/// One connection's text negotiation state.
#[derive(Debug, Default)]
pub struct TextExchange {
    request: Option<PartialRequest>,
    response: Option<PartialResponse>,
}

impl TextExchange {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether a multi-PDU exchange is in progress (the initiator owes the next PDU).
    pub fn in_progress(&self) -> bool {
        self.request.is_some() || self.response.is_some()
    }

    /// Answers one Text Request. `alloc_ttt` hands out connection-unique target transfer tags.
    pub fn step(
        &mut self,
        req: &TextRequest,
        data: &[u8],
        ctx: &dyn TextContext,
        alloc_ttt: &mut dyn FnMut() -> u32,
    ) -> TextAnswer {
        if req.continue_bit && req.final_bit {
            self.reset();
            return reject(text_reject::PROTOCOL_ERROR, "Text Request with both C and F set");
        }
        if req.ttt != RESERVED_TAG {
            return self.follow_up(req, data, ctx, alloc_ttt);
        }
        // A reserved TTT starts a new exchange and resets any unfinished one (RFC 7143 §11.10.4).
        self.reset();
        if req.continue_bit {
            return self.gather(req.itt, data, alloc_ttt);
        }
        self.answer(req.itt, data, ctx, alloc_ttt)
    }

    fn reset(&mut self) {
        self.request = None;
        self.response = None;
    }

    /// A request carrying a TTT the target handed out: more request text, or "send the rest".
    fn follow_up(
        &mut self,
        req: &TextRequest,
        data: &[u8],
        ctx: &dyn TextContext,
        alloc_ttt: &mut dyn FnMut() -> u32,
    ) -> TextAnswer {
        if let Some(p) = self.request.as_mut().filter(|p| p.ttt == req.ttt && p.itt == req.itt) {
            if p.text.len() + data.len() > MAX_REQUEST_TEXT {
                self.reset();
                return reject(text_reject::NEGOTIATION_RESET, "request text too long");
            }
            p.text.extend_from_slice(data);
            if req.continue_bit {
                let ttt = alloc_ttt();
                p.ttt = ttt;
                return empty_continue(req.itt, ttt);
            }
            let text = self.request.take().map(|p| p.text.freeze()).unwrap_or_default();
            return self.answer(req.itt, &text, ctx, alloc_ttt);
        }
        if let Some(r) = self.response.take().filter(|r| r.ttt == req.ttt && r.itt == req.itt) {
            if !data.is_empty() || req.continue_bit {
                return reject(
                    text_reject::PROTOCOL_ERROR,
                    "new text while fetching the rest of a response",
                );
            }
            return self.respond(req.itt, r.rest, ctx, alloc_ttt);
        }
        self.reset();
        reject(text_reject::INVALID_PDU_FIELD, "Text Request with an unknown TTT")
    }

    fn gather(&mut self, itt: u32, data: &[u8], alloc_ttt: &mut dyn FnMut() -> u32) -> TextAnswer {
        if data.len() > MAX_REQUEST_TEXT {
            return reject(text_reject::NEGOTIATION_RESET, "request text too long");
        }
        let ttt = alloc_ttt();
        self.request = Some(PartialRequest {
            itt,
            ttt,
            text: BytesMut::from(data),
        });
        empty_continue(itt, ttt)
    }

    /// A complete request: answer every key.
    fn answer(
        &mut self,
        itt: u32,
        text: &[u8],
        ctx: &dyn TextContext,
        alloc_ttt: &mut dyn FnMut() -> u32,
    ) -> TextAnswer {
        let pairs = match parse_text(text) {
            Ok(p) => p,
            Err(_) => return reject(text_reject::INVALID_PDU_FIELD, "malformed request text"),
        };
        let mut reply = Vec::new();
        for (k, v) in pairs {
            if k == "SendTargets" {
                reply.extend(ctx.send_targets(&v));
                continue;
            }
            // Renegotiation in the full feature phase is not supported: known keys are refused.
            let mut scratch = ctx.params().clone();
            let answer = match negotiate_key(
                &k,
                &v,
                &TargetParams::default(),
                ctx.session_type(),
                &mut scratch,
            ) {
                KeyAnswer::Reply(a) if a == "NotUnderstood" => a,
                _ => "Reject".to_string(),
            };
            reply.push((k, answer));
        }
        self.respond(itt, Bytes::from(encode_text(&reply)), ctx, alloc_ttt)
    }

    /// Sends `data`, split at the initiator's receive limit (the rest is fetched with the TTT).
    fn respond(
        &mut self,
        itt: u32,
        data: Bytes,
        ctx: &dyn TextContext,
        alloc_ttt: &mut dyn FnMut() -> u32,
    ) -> TextAnswer {
        let max = ctx.params().max_xmit_data_segment_length.max(512) as usize;
        if data.len() <= max {
            let pdu = TextResponse {
                final_bit: true,
                itt,
                ttt: RESERVED_TAG,
                ..TextResponse::default()
            };
            return TextAnswer::Response(pdu, data);
        }
        let ttt = alloc_ttt();
        self.response = Some(PartialResponse {
            itt,
            ttt,
            rest: data.slice(max..),
        });
        let pdu = TextResponse {
            continue_bit: true,
            itt,
            ttt,
            ..TextResponse::default()
        };
        TextAnswer::Response(pdu, data.slice(..max))
    }
}

fn reject(reason: u8, why: &'static str) -> TextAnswer {
    TextAnswer::Reject { reason, why }
}

/// The answer to a request with the C bit: no data, F=0, and a TTT for the next part.
fn empty_continue(itt: u32, ttt: u32) -> TextAnswer {
    TextAnswer::Response(
        TextResponse {
            itt,
            ttt,
            ..TextResponse::default()
        },
        Bytes::new(),
    )
}

#[cfg(test)]
#[path = "text_exchange_tests.rs"]
mod tests;
