//! Follows a client's WebSocket frames as the socket reads them, to find the messages whose
//! request `id` JSON-RPC cannot answer (an object, an array, a boolean, a fraction, a negative
//! number, one beyond `u64`).
//!
//! Over HTTP such a body is refused before jsonrpsee sees it (`http_limits`). Over WebSocket
//! jsonrpsee reads each message itself, fails to parse it as a call, parses it as a
//! notification — which must not be answered — and our RPC middleware then sees a notification
//! without its `id`. So the socket (`socket::GuardedIo`) passes every byte it reads from an
//! upgraded connection through a [`WsInspector`] as well: it parses the frame headers, unmasks
//! the payload of data frames into one message buffer (at most `message_bytes_max`; a longer
//! message is not checked), and when a message is complete checks its ids exactly as HTTP
//! does. A message jsonrpsee will hand to the middleware as a notification (or a batch holding
//! such an entry) is counted on the connection; the middleware answers that many
//! notifications (or batches) with `-32600` and `id: null` instead of silence.
//!
//! The bytes themselves are passed on unchanged: the inspector only looks. It stops looking at
//! the first frame that breaks the protocol (unmasked, reserved bits, unknown opcode) — soketto
//! closes such a connection anyway.

use std::borrow::Cow;

use serde_json::value::RawValue;

use crate::http_limits::check_ids;

/// What a complete message turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Nothing for us to answer: jsonrpsee answers it (or, a true notification, nobody does).
    Fine,
    /// A request object whose `id` cannot be answered, which jsonrpsee will take for a
    /// notification: the middleware must answer one notification with -32600.
    BadId,
    /// A batch with such an entry: the middleware must refuse one batch whole with -32600.
    BadBatch,
}

#[derive(Debug)]
enum Frame {
    /// Collecting a frame header (2 to 14 bytes).
    Header { bytes: [u8; 14], have: usize },
    /// Inside a frame's payload.
    Payload {
        remaining: u64,
        mask: [u8; 4],
        offset: usize,
        data: bool,
        fin: bool,
    },
}

/// The state of one WebSocket connection's inbound stream. See the module documentation.
#[derive(Debug)]
pub(crate) struct WsInspector {
    frame: Frame,
    in_message: bool,
    message: Vec<u8>,
    message_bytes_max: usize,
    oversized: bool,
    batches: bool,
    batch_len_max: usize,
    broken: bool,
}

impl WsInspector {
    /// An inspector at the start of the WebSocket stream. `batch_len_max` 0: batches disabled.
    pub(crate) fn new(message_bytes_max: usize, batch_len_max: usize) -> WsInspector {
        WsInspector {
            frame: Frame::Header {
                bytes: [0; 14],
                have: 0,
            },
            in_message: false,
            message: Vec::new(),
            message_bytes_max,
            oversized: false,
            batches: batch_len_max > 0,
            batch_len_max,
            broken: false,
        }
    }

    /// Takes the next bytes read from the client; `verdict` is called once per complete data
    /// message that needs an answer from us.
    pub(crate) fn feed(&mut self, mut input: &[u8], mut verdict: impl FnMut(Verdict)) {
        while !input.is_empty() && !self.broken {
            match &mut self.frame {
                Frame::Header { bytes, have } => {
                    // How long this header is, once its first two bytes are here.
                    let needed = if *have < 2 { 2 } else { header_len(bytes[1]) };
                    let take = (needed - *have).min(input.len());
                    bytes[*have..*have + take].copy_from_slice(&input[..take]);
                    *have += take;
                    input = &input[take..];
                    if *have == needed && (needed > 2 || header_len(bytes[1]) == 2) {
                        let header = *bytes;
                        self.start_frame(&header, &mut verdict);
                    }
                }
                Frame::Payload {
                    remaining,
                    mask,
                    offset,
                    data,
                    fin,
                } => {
                    let take = usize::try_from(*remaining)
                        .unwrap_or(usize::MAX)
                        .min(input.len());
                    let (chunk, rest) = input.split_at(take);
                    input = rest;
                    *remaining -= take as u64;
                    if *data && !self.oversized {
                        if self.message.len() + chunk.len() > self.message_bytes_max {
                            // Too long to check: jsonrpsee refuses or answers it itself.
                            self.oversized = true;
                            self.message = Vec::new();
                        } else {
                            self.message.extend(
                                chunk
                                    .iter()
                                    .enumerate()
                                    .map(|(i, byte)| byte ^ mask[(*offset + i) % 4]),
                            );
                        }
                    }
                    *offset = (*offset + take) % 4;
                    if *remaining == 0 {
                        let (data, fin) = (*data, *fin);
                        self.end_frame(data, fin, &mut verdict);
                    }
                }
            }
        }
    }

    fn start_frame(&mut self, header: &[u8; 14], verdict: &mut impl FnMut(Verdict)) {
        let fin = header[0] & 0x80 != 0;
        let opcode = header[0] & 0x0f;
        let masked = header[1] & 0x80 != 0;
        if header[0] & 0x70 != 0 || !masked {
            self.broken = true;
            return;
        }
        let (len, mask_at) = match header[1] & 0x7f {
            126 => (u64::from(u16::from_be_bytes([header[2], header[3]])), 4),
            127 => {
                let mut len = [0u8; 8];
                len.copy_from_slice(&header[2..10]);
                (u64::from_be_bytes(len), 10)
            }
            len => (u64::from(len), 2),
        };
        let mut mask = [0u8; 4];
        mask.copy_from_slice(&header[mask_at..mask_at + 4]);
        let data = match opcode {
            // Continuation of the current message.
            0 if self.in_message => true,
            // Text or binary: a new message (not inside another).
            1 | 2 if !self.in_message => {
                self.in_message = true;
                self.oversized = false;
                self.message.clear();
                true
            }
            // Close, ping, pong: between or inside a message's frames, never part of it.
            8..=10 if fin && len <= 125 => false,
            _ => {
                self.broken = true;
                return;
            }
        };
        self.frame = Frame::Payload {
            remaining: len,
            mask,
            offset: 0,
            data,
            fin,
        };
        if len == 0 {
            self.end_frame(data, fin, verdict);
        }
    }

    fn end_frame(&mut self, data: bool, fin: bool, verdict: &mut impl FnMut(Verdict)) {
        self.frame = Frame::Header {
            bytes: [0; 14],
            have: 0,
        };
        if data && fin {
            self.in_message = false;
            if !self.oversized {
                let found = classify(&self.message, self.batches, self.batch_len_max);
                if found != Verdict::Fine {
                    verdict(found);
                }
            }
            // Keep a small buffer for the next message, not the largest one seen.
            if self.message.capacity() > 64 * 1024 {
                self.message = Vec::new();
            } else {
                self.message.clear();
            }
        }
    }
}

/// Header length from its second byte: 2, plus the extended length, plus the mask key.
fn header_len(second: u8) -> usize {
    let extended = match second & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if second & 0x80 != 0 { 4 } else { 0 };
    2 + extended + mask
}

/// What jsonrpsee's WebSocket loop does with `message`, and whether we must answer for it.
/// It mirrors `jsonrpsee_server::server::handle_rpc_call`: an object is tried as a call, then
/// as a notification; an array is a batch when it parses and is not too long.
pub(crate) fn classify(message: &[u8], batches: bool, batch_len_max: usize) -> Verdict {
    let start = message
        .iter()
        .take(128)
        .position(|b| !b.is_ascii_whitespace());
    let Some(start) = start else {
        return Verdict::Fine;
    };
    let body = &message[start..];
    if check_ids(body).is_ok() {
        return Verdict::Fine;
    }
    match body.first() {
        // Anything but a notification jsonrpsee answers itself (a parse error with id null).
        Some(b'{') if route(body) == Route::Notification => Verdict::BadId,
        // A batch reaches the middleware with its connection only through an entry that is a
        // call or a notification; one with none is answered entry by entry by jsonrpsee.
        Some(b'[') if batches => match serde_json::from_slice::<Vec<&RawValue>>(body) {
            Ok(entries)
                if entries.len() <= batch_len_max
                    && entries
                        .iter()
                        .any(|entry| route(entry.get().as_bytes()) != Route::Invalid) =>
            {
                Verdict::BadBatch
            }
            _ => Verdict::Fine,
        },
        _ => Verdict::Fine,
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Route {
    Call,
    Notification,
    Invalid,
}

/// How jsonrpsee takes one request object: a call, else a notification, else invalid.
fn route(object: &[u8]) -> Route {
    if serde_json::from_slice::<jsonrpsee_types::Request<'_>>(object).is_ok() {
        Route::Call
    } else if serde_json::from_slice::<
        jsonrpsee_types::Notification<'_, Option<Cow<'_, RawValue>>>,
    >(object)
    .is_ok()
    {
        Route::Notification
    } else {
        Route::Invalid
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // test frames: lengths checked by the match arms
mod tests {
    use super::{classify, Verdict, WsInspector};

    /// A client frame: masked with a fixed key.
    fn frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            len @ 0..=125 => out.push(0x80 | len as u8),
            len @ 126..=65535 => {
                out.push(0x80 | 126);
                out.extend((len as u16).to_be_bytes());
            }
            len => {
                out.push(0x80 | 127);
                out.extend((len as u64).to_be_bytes());
            }
        }
        out.extend(key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        out
    }

    fn verdicts(stream: &[u8], step: usize) -> Vec<Verdict> {
        let mut inspector = WsInspector::new(1 << 20, 100);
        let mut found = Vec::new();
        for chunk in stream.chunks(step) {
            inspector.feed(chunk, |v| found.push(v));
        }
        found
    }

    #[test]
    fn messages_are_classified_across_frames_and_reads() {
        let bad = br#"{"jsonrpc":"2.0","id":{"a":1},"method":"mesh_status"}"#;
        let good = br#"{"jsonrpc":"2.0","id":1,"method":"mesh_status"}"#;
        let batch =
            br#"[{"jsonrpc":"2.0","id":1,"method":"m"},{"jsonrpc":"2.0","id":true,"method":"m"}]"#;
        let long = format!(
            r#"{{"jsonrpc":"2.0","method":"m","params":["{}"],"id":1.5}}"#,
            "a".repeat(70_000)
        );
        let mut stream = Vec::new();
        stream.extend(frame(1, true, bad));
        stream.extend(frame(1, true, good));
        stream.extend(frame(9, true, b"ping"));
        // One message in three frames with a ping between them.
        stream.extend(frame(1, false, &bad[..10]));
        stream.extend(frame(10, true, b""));
        stream.extend(frame(0, false, &bad[10..20]));
        stream.extend(frame(0, true, &bad[20..]));
        stream.extend(frame(1, true, batch));
        stream.extend(frame(2, true, long.as_bytes()));
        let expected = vec![
            Verdict::BadId,
            Verdict::BadId,
            Verdict::BadBatch,
            Verdict::BadId,
        ];
        for step in [1, 3, 7, 100, 1 << 20] {
            assert_eq!(verdicts(&stream, step), expected, "reads of {step} bytes");
        }
    }

    #[test]
    fn what_jsonrpsee_answers_itself_is_not_counted() {
        for fine in [
            r#"{"jsonrpc":"2.0","id":1,"method":"m"}"#,
            r#"{"jsonrpc":"2.0","method":"m"}"#,
            // No method: jsonrpsee answers a parse error itself.
            r#"{"jsonrpc":"2.0","id":{}}"#,
            r#"{"jsonrpc":"1.0","id":true,"method":"m"}"#,
            "not json",
            "   ",
        ] {
            assert_eq!(
                classify(fine.as_bytes(), true, 100),
                Verdict::Fine,
                "{fine}"
            );
        }
        let batch = r#"[{"jsonrpc":"2.0","id":[],"method":"m"}]"#;
        // Batches disabled, or too long: jsonrpsee refuses them itself.
        assert_eq!(classify(batch.as_bytes(), false, 0), Verdict::Fine);
        let two = r#"[{"jsonrpc":"2.0","id":[],"method":"m"},1]"#;
        assert_eq!(classify(two.as_bytes(), true, 1), Verdict::Fine);
        assert_eq!(classify(two.as_bytes(), true, 2), Verdict::BadBatch);
        // No entry jsonrpsee takes for a call or a notification: it answers each itself.
        let invalid = r#"[{"id":true},{"jsonrpc":"2.0","id":{}}]"#;
        assert_eq!(classify(invalid.as_bytes(), true, 100), Verdict::Fine);
    }

    #[test]
    fn an_oversized_message_or_a_broken_stream_is_not_checked() {
        let bad = br#"{"jsonrpc":"2.0","id":false,"method":"m","params":["xxxxxxxxxxxxxxxx"]}"#;
        let mut inspector = WsInspector::new(16, 100);
        let mut found = Vec::new();
        inspector.feed(&frame(1, true, bad), |v| found.push(v));
        assert!(found.is_empty());
        // Unmasked: the inspector stops looking.
        let mut inspector = WsInspector::new(1 << 20, 100);
        let mut unmasked = vec![0x81, bad.len() as u8];
        unmasked.extend_from_slice(bad);
        unmasked.extend(frame(1, true, bad));
        inspector.feed(&unmasked, |v| found.push(v));
        assert!(found.is_empty());
    }
}
