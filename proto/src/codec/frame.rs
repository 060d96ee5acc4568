//! Frames: `len: u32 LE | kind: u8 | body`, where `len` counts the kind byte
//! and the body. Fixed binary headers for the hot frames (data, fragments,
//! pings); CBOR bodies for the rare ones (hello, control, goodbye), which the
//! layers above decode.

use std::fmt;

use bytes::Bytes;

use crate::codec::TypeTag;
use crate::id::MailboxId;

/// Bytes of the length prefix.
pub const LEN_PREFIX: usize = 4;

/// Bytes before a data frame's payload: prefix, kind, destination, tag.
pub const DATA_HEADER_LEN: usize = LEN_PREFIX + 1 + MailboxId::WIRE_LEN + 8;

/// The largest time remaining a request frame may carry, in microseconds
/// (30 days). A request's deadline travels as the time left when it was sent,
/// not as an instant, because the two nodes' clocks need not agree; the cap
/// keeps `now + remaining` far from overflowing an `Instant` on the member's
/// node, and a caller that waits longer than this has its request treated
/// as one that waits 30 days. A frame over it is malformed.
pub const MAX_REMAINING_US: u64 = 30 * 24 * 3600 * 1_000_000;

/// The kind byte of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// The post-TLS handshake (CBOR body).
    Hello = 1,
    /// A liveness probe carrying a nonce.
    Ping = 2,
    /// The answer to a ping, echoing its nonce.
    Pong = 3,
    /// A whole user message to one mailbox.
    Data = 4,
    /// The first piece of a fragmented message, with its total length.
    FragmentStart = 5,
    /// A further piece of the fragmented message in flight to a mailbox.
    FragmentCont = 6,
    /// A control message of the protocol layers above (CBOR body).
    Control = 7,
    /// The sender is closing the connection, with a reason (CBOR body).
    Goodbye = 8,
    /// A request to one mailbox, with a correlation id for its reply.
    Request = 9,
    /// The reply to a request.
    Reply = 10,
    /// A broadcast to a service group or a publication on a topic, fanned
    /// out by the receiving node.
    Publish = 11,
    /// A tunnel operation.
    Tunnel = 12,
}

/// How a request ended, in a reply frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ReplyStatus {
    /// The payload is the reply value.
    Ok = 0,
    /// The payload is an application error (CBOR string).
    RemoteError = 1,
    /// The member is over its limits (CBOR string reason).
    Refused = 2,
    /// The target mailbox does not exist (any more).
    NoMember = 3,
    /// The member dropped the request without replying.
    Dropped = 4,
    /// The other way, from the caller's node to the member's: the caller
    /// gave up (dropped its future before the deadline), so the request is
    /// discarded if it still waits for a handler. Nothing answers it.
    Cancelled = 5,
}

impl ReplyStatus {
    fn from_u8(b: u8) -> Option<ReplyStatus> {
        Some(match b {
            0 => ReplyStatus::Ok,
            1 => ReplyStatus::RemoteError,
            2 => ReplyStatus::Refused,
            3 => ReplyStatus::NoMember,
            4 => ReplyStatus::Dropped,
            5 => ReplyStatus::Cancelled,
            _ => return None,
        })
    }
}

/// What a publish frame fans out to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum PublishScope {
    /// Every member of a service group (broadcast).
    Group = 0,
    /// Every subscriber of a topic (pub/sub).
    Topic = 1,
}

/// One step of a tunnel's protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TunnelOp {
    /// Opens a tunnel to mailbox `dest`, granting `credit` bytes.
    Open {
        /// The member that should accept it.
        dest: MailboxId,
        /// Bytes the acceptor may send before more credit.
        credit: u32,
    },
    /// The member accepted, granting `credit` bytes.
    Accept {
        /// Bytes the opener may send before more credit.
        credit: u32,
    },
    /// The member refused the tunnel.
    Reject {
        /// Why (UTF-8).
        reason: Bytes,
    },
    /// A piece of a message.
    Data {
        /// Bit 0: last piece of a message. Bit 1: abort the partial message.
        flags: u8,
        /// The piece.
        chunk: Bytes,
    },
    /// The receiver consumed `bytes`; the sender may send that much more.
    Credit {
        /// Bytes returned.
        bytes: u32,
    },
    /// The tunnel is closed; an empty reason is a normal close.
    Close {
        /// Why (UTF-8).
        reason: Bytes,
    },
}

/// Tunnel data flag: the last piece of a message.
pub const TUNNEL_LAST: u8 = 1;
/// Tunnel data flag: discard the partial message (its sender gave up).
pub const TUNNEL_ABORT: u8 = 2;

impl FrameKind {
    fn from_u8(byte: u8) -> Option<FrameKind> {
        Some(match byte {
            1 => FrameKind::Hello,
            2 => FrameKind::Ping,
            3 => FrameKind::Pong,
            4 => FrameKind::Data,
            5 => FrameKind::FragmentStart,
            6 => FrameKind::FragmentCont,
            7 => FrameKind::Control,
            8 => FrameKind::Goodbye,
            9 => FrameKind::Request,
            10 => FrameKind::Reply,
            11 => FrameKind::Publish,
            12 => FrameKind::Tunnel,
            _ => return None,
        })
    }
}

/// One decoded frame. Payloads are zero-copy slices of the receive buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// The post-TLS handshake.
    Hello(Bytes),
    /// A liveness probe.
    Ping(u64),
    /// The answer to a ping.
    Pong(u64),
    /// A whole message.
    Data {
        /// The target mailbox.
        dest: MailboxId,
        /// The registered type of the payload.
        tag: TypeTag,
        /// The encoded payload.
        payload: Bytes,
    },
    /// The first piece of a large message.
    FragmentStart {
        /// The target mailbox.
        dest: MailboxId,
        /// The registered type of the whole payload.
        tag: TypeTag,
        /// Length of the whole payload.
        total_len: u64,
        /// The first piece.
        chunk: Bytes,
    },
    /// A further piece of the large message in flight to `dest`.
    FragmentCont {
        /// The target mailbox.
        dest: MailboxId,
        /// The piece.
        chunk: Bytes,
    },
    /// A control message body.
    Control(Bytes),
    /// A closing reason body.
    Goodbye(Bytes),
    /// A request.
    Request {
        /// The mailbox that should answer.
        dest: MailboxId,
        /// Correlates the reply (unique per sending node).
        corr: u64,
        /// The registered type of the payload.
        tag: TypeTag,
        /// Microseconds the caller still waits, when the frame was written
        /// (at most [`MAX_REMAINING_US`]): the member's node discards the
        /// request if it is still queued that long after it arrived.
        remaining_us: u64,
        /// The encoded request.
        payload: Bytes,
    },
    /// A reply (or, with [`ReplyStatus::Cancelled`], the caller's node
    /// calling a request off).
    Reply {
        /// The request's correlation id.
        corr: u64,
        /// How the request ended.
        status: ReplyStatus,
        /// The registered type of the payload (for `Ok`).
        tag: TypeTag,
        /// The encoded reply or error.
        payload: Bytes,
    },
    /// A broadcast or publication.
    Publish {
        /// Group or topic.
        scope: PublishScope,
        /// The registered type of the payload.
        tag: TypeTag,
        /// The group or topic name (UTF-8).
        name: Bytes,
        /// The encoded message.
        payload: Bytes,
    },
    /// A tunnel operation.
    Tunnel {
        /// The tunnel's id, chosen by the node that opened it.
        id: u64,
        /// Whether the frame's sender opened the tunnel.
        from_opener: bool,
        /// The operation.
        op: TunnelOp,
    },
}

/// Malformed input at the framing layer. Any of these ends the connection.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// The length prefix announces a frame over the maximum.
    TooLarge {
        /// The announced length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// A frame with no kind byte.
    Empty,
    /// An unknown kind byte.
    UnknownKind(u8),
    /// A field holds a value no frame of this kind may have.
    BadField {
        /// The kind.
        kind: FrameKind,
        /// The field.
        field: &'static str,
    },
    /// A frame too short for its kind's fixed header.
    Truncated {
        /// The kind.
        kind: FrameKind,
        /// The frame's length.
        len: usize,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLarge { len, max } => {
                write!(f, "frame of {len} bytes exceeds the maximum of {max}")
            }
            FrameError::Empty => write!(f, "empty frame"),
            FrameError::UnknownKind(k) => write!(f, "unknown frame kind {k}"),
            FrameError::BadField { kind, field } => {
                write!(f, "{kind:?} frame with an invalid {field}")
            }
            FrameError::Truncated { kind, len } => {
                write!(
                    f,
                    "{kind:?} frame of {len} bytes is shorter than its header"
                )
            }
        }
    }
}

impl std::error::Error for FrameError {}

fn put_prefix(out: &mut Vec<u8>, kind: FrameKind, body_len: usize) {
    let len = u32::try_from(body_len + 1).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.push(kind as u8);
}

/// Writes the header of a data frame whose `payload_len` payload bytes the
/// caller appends next. Lets a sender encode straight into a shared buffer.
pub fn put_data_header(out: &mut Vec<u8>, dest: MailboxId, tag: TypeTag, payload_len: usize) {
    // The hottest header of all: assembled on the stack, appended at once.
    let len = u32::try_from(1 + MailboxId::WIRE_LEN + 8 + payload_len).unwrap_or(u32::MAX);
    let mut header = [0u8; DATA_HEADER_LEN];
    header[0..4].copy_from_slice(&len.to_le_bytes());
    header[4] = FrameKind::Data as u8;
    header[5..7].copy_from_slice(&dest.node.0.to_le_bytes());
    header[7..15].copy_from_slice(&dest.incarnation.0.to_le_bytes());
    header[15..23].copy_from_slice(&dest.serial.to_le_bytes());
    header[23..31].copy_from_slice(&tag.0.to_le_bytes());
    out.extend_from_slice(&header);
}

/// Bytes of a request frame's header after the length prefix and kind:
/// destination, correlation id, tag and time remaining.
pub const REQUEST_HEADER_BODY_LEN: usize = MailboxId::WIRE_LEN + 24;

/// Writes the header of a request frame; `payload_len` payload bytes follow.
/// `remaining_us` is capped at [`MAX_REMAINING_US`].
pub fn put_request_header(
    out: &mut Vec<u8>,
    dest: MailboxId,
    corr: u64,
    tag: TypeTag,
    remaining_us: u64,
    payload_len: usize,
) {
    put_prefix(
        out,
        FrameKind::Request,
        REQUEST_HEADER_BODY_LEN + payload_len,
    );
    dest.write_to(out);
    out.extend_from_slice(&corr.to_le_bytes());
    out.extend_from_slice(&tag.0.to_le_bytes());
    out.extend_from_slice(&remaining_us.min(MAX_REMAINING_US).to_le_bytes());
}

/// Writes the header of a reply frame; `payload_len` payload bytes follow.
pub fn put_reply_header(
    out: &mut Vec<u8>,
    corr: u64,
    status: ReplyStatus,
    tag: TypeTag,
    payload_len: usize,
) {
    put_prefix(out, FrameKind::Reply, 17 + payload_len);
    out.extend_from_slice(&corr.to_le_bytes());
    out.push(status as u8);
    out.extend_from_slice(&tag.0.to_le_bytes());
}

/// Writes the header of a publish frame; `payload_len` payload bytes follow.
pub fn put_publish_header(
    out: &mut Vec<u8>,
    scope: PublishScope,
    tag: TypeTag,
    name: &str,
    payload_len: usize,
) {
    let name = &name.as_bytes()[..name.len().min(u16::MAX as usize)];
    put_prefix(out, FrameKind::Publish, 11 + name.len() + payload_len);
    out.push(scope as u8);
    out.extend_from_slice(&tag.0.to_le_bytes());
    out.extend_from_slice(&(name.len() as u16).to_le_bytes());
    out.extend_from_slice(name);
}

fn tunnel_body_len(op: &TunnelOp) -> usize {
    10 + match op {
        TunnelOp::Open { .. } => MailboxId::WIRE_LEN + 4,
        TunnelOp::Accept { .. } | TunnelOp::Credit { .. } => 4,
        TunnelOp::Reject { reason } | TunnelOp::Close { reason } => reason.len(),
        TunnelOp::Data { chunk, .. } => 1 + chunk.len(),
    }
}

fn tunnel_op_code(op: &TunnelOp) -> u8 {
    match op {
        TunnelOp::Open { .. } => 1,
        TunnelOp::Accept { .. } => 2,
        TunnelOp::Reject { .. } => 3,
        TunnelOp::Data { .. } => 4,
        TunnelOp::Credit { .. } => 5,
        TunnelOp::Close { .. } => 6,
    }
}

/// Writes the header of a fragment start frame; `chunk_len` bytes follow.
pub fn put_fragment_start_header(
    out: &mut Vec<u8>,
    dest: MailboxId,
    tag: TypeTag,
    total_len: u64,
    chunk_len: usize,
) {
    put_prefix(
        out,
        FrameKind::FragmentStart,
        MailboxId::WIRE_LEN + 16 + chunk_len,
    );
    dest.write_to(out);
    out.extend_from_slice(&tag.0.to_le_bytes());
    out.extend_from_slice(&total_len.to_le_bytes());
}

/// Writes the header of a fragment continuation frame; `chunk_len` bytes follow.
pub fn put_fragment_cont_header(out: &mut Vec<u8>, dest: MailboxId, chunk_len: usize) {
    put_prefix(
        out,
        FrameKind::FragmentCont,
        MailboxId::WIRE_LEN + chunk_len,
    );
    dest.write_to(out);
}

impl Frame {
    /// The frame's kind.
    pub fn kind(&self) -> FrameKind {
        match self {
            Frame::Hello(_) => FrameKind::Hello,
            Frame::Ping(_) => FrameKind::Ping,
            Frame::Pong(_) => FrameKind::Pong,
            Frame::Data { .. } => FrameKind::Data,
            Frame::FragmentStart { .. } => FrameKind::FragmentStart,
            Frame::FragmentCont { .. } => FrameKind::FragmentCont,
            Frame::Control(_) => FrameKind::Control,
            Frame::Goodbye(_) => FrameKind::Goodbye,
            Frame::Request { .. } => FrameKind::Request,
            Frame::Reply { .. } => FrameKind::Reply,
            Frame::Publish { .. } => FrameKind::Publish,
            Frame::Tunnel { .. } => FrameKind::Tunnel,
        }
    }

    /// Appends the frame's wire form to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Frame::Hello(body) | Frame::Control(body) | Frame::Goodbye(body) => {
                put_prefix(out, self.kind(), body.len());
                out.extend_from_slice(body);
            }
            Frame::Ping(nonce) | Frame::Pong(nonce) => {
                put_prefix(out, self.kind(), 8);
                out.extend_from_slice(&nonce.to_le_bytes());
            }
            Frame::Data { dest, tag, payload } => {
                put_data_header(out, *dest, *tag, payload.len());
                out.extend_from_slice(payload);
            }
            Frame::FragmentStart {
                dest,
                tag,
                total_len,
                chunk,
            } => {
                put_fragment_start_header(out, *dest, *tag, *total_len, chunk.len());
                out.extend_from_slice(chunk);
            }
            Frame::FragmentCont { dest, chunk } => {
                put_fragment_cont_header(out, *dest, chunk.len());
                out.extend_from_slice(chunk);
            }
            Frame::Request {
                dest,
                corr,
                tag,
                remaining_us,
                payload,
            } => {
                put_request_header(out, *dest, *corr, *tag, *remaining_us, payload.len());
                out.extend_from_slice(payload);
            }
            Frame::Reply {
                corr,
                status,
                tag,
                payload,
            } => {
                put_reply_header(out, *corr, *status, *tag, payload.len());
                out.extend_from_slice(payload);
            }
            Frame::Publish {
                scope,
                tag,
                name,
                payload,
            } => {
                put_prefix(out, FrameKind::Publish, 11 + name.len() + payload.len());
                out.push(*scope as u8);
                out.extend_from_slice(&tag.0.to_le_bytes());
                out.extend_from_slice(&(name.len() as u16).to_le_bytes());
                out.extend_from_slice(name);
                out.extend_from_slice(payload);
            }
            Frame::Tunnel {
                id,
                from_opener,
                op,
            } => {
                put_prefix(out, FrameKind::Tunnel, tunnel_body_len(op));
                out.push(tunnel_op_code(op));
                out.push(u8::from(*from_opener));
                out.extend_from_slice(&id.to_le_bytes());
                match op {
                    TunnelOp::Open { dest, credit } => {
                        dest.write_to(out);
                        out.extend_from_slice(&credit.to_le_bytes());
                    }
                    TunnelOp::Accept { credit } => out.extend_from_slice(&credit.to_le_bytes()),
                    TunnelOp::Credit { bytes } => out.extend_from_slice(&bytes.to_le_bytes()),
                    TunnelOp::Reject { reason } | TunnelOp::Close { reason } => {
                        out.extend_from_slice(reason)
                    }
                    TunnelOp::Data { flags, chunk } => {
                        out.push(*flags);
                        out.extend_from_slice(chunk);
                    }
                }
            }
        }
    }

    /// The frame's wire form in a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    /// Parses one frame from `frame`, which holds exactly the bytes after the
    /// length prefix (kind byte first).
    pub fn parse(frame: Bytes) -> Result<Frame, FrameError> {
        let len = frame.len();
        let Some(&kind_byte) = frame.first() else {
            return Err(FrameError::Empty);
        };
        let kind = FrameKind::from_u8(kind_byte).ok_or(FrameError::UnknownKind(kind_byte))?;
        let body = frame.slice(1..);
        let truncated = || FrameError::Truncated { kind, len };
        let u64_at = |at: usize| -> Option<u64> {
            body.get(at..at + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
        };
        const ID: usize = MailboxId::WIRE_LEN;
        Ok(match kind {
            FrameKind::Hello => Frame::Hello(body),
            FrameKind::Control => Frame::Control(body),
            FrameKind::Goodbye => Frame::Goodbye(body),
            FrameKind::Ping | FrameKind::Pong => {
                if body.len() != 8 {
                    return Err(truncated());
                }
                let nonce = u64_at(0).ok_or_else(truncated)?;
                if kind == FrameKind::Ping {
                    Frame::Ping(nonce)
                } else {
                    Frame::Pong(nonce)
                }
            }
            FrameKind::Data => {
                let dest = MailboxId::read_from(&body).ok_or_else(truncated)?;
                let tag = TypeTag(u64_at(ID).ok_or_else(truncated)?);
                Frame::Data {
                    dest,
                    tag,
                    payload: body.slice(ID + 8..),
                }
            }
            FrameKind::FragmentStart => {
                let dest = MailboxId::read_from(&body).ok_or_else(truncated)?;
                let tag = TypeTag(u64_at(ID).ok_or_else(truncated)?);
                let total_len = u64_at(ID + 8).ok_or_else(truncated)?;
                Frame::FragmentStart {
                    dest,
                    tag,
                    total_len,
                    chunk: body.slice(ID + 16..),
                }
            }
            FrameKind::FragmentCont => {
                let dest = MailboxId::read_from(&body).ok_or_else(truncated)?;
                Frame::FragmentCont {
                    dest,
                    chunk: body.slice(ID..),
                }
            }
            FrameKind::Request => {
                let dest = MailboxId::read_from(&body).ok_or_else(truncated)?;
                let corr = u64_at(ID).ok_or_else(truncated)?;
                let tag = TypeTag(u64_at(ID + 8).ok_or_else(truncated)?);
                let remaining_us = u64_at(ID + 16).ok_or_else(truncated)?;
                if remaining_us > MAX_REMAINING_US {
                    return Err(FrameError::BadField {
                        kind,
                        field: "remaining_us",
                    });
                }
                Frame::Request {
                    dest,
                    corr,
                    tag,
                    remaining_us,
                    payload: body.slice(REQUEST_HEADER_BODY_LEN..),
                }
            }
            FrameKind::Reply => {
                let corr = u64_at(0).ok_or_else(truncated)?;
                let status_byte = *body.get(8).ok_or_else(truncated)?;
                let status = ReplyStatus::from_u8(status_byte).ok_or(FrameError::BadField {
                    kind,
                    field: "status",
                })?;
                let tag = TypeTag(u64_at(9).ok_or_else(truncated)?);
                Frame::Reply {
                    corr,
                    status,
                    tag,
                    payload: body.slice(17..),
                }
            }
            FrameKind::Publish => {
                let scope = match body.first() {
                    Some(0) => PublishScope::Group,
                    Some(1) => PublishScope::Topic,
                    Some(_) => {
                        return Err(FrameError::BadField {
                            kind,
                            field: "scope",
                        })
                    }
                    None => return Err(truncated()),
                };
                let tag = TypeTag(u64_at(1).ok_or_else(truncated)?);
                let name_len = body
                    .get(9..11)
                    .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
                    .ok_or_else(truncated)?;
                if body.len() < 11 + name_len {
                    return Err(truncated());
                }
                Frame::Publish {
                    scope,
                    tag,
                    name: body.slice(11..11 + name_len),
                    payload: body.slice(11 + name_len..),
                }
            }
            FrameKind::Tunnel => {
                let code = *body.first().ok_or_else(truncated)?;
                let from_opener = match body.get(1) {
                    Some(0) => false,
                    Some(1) => true,
                    Some(_) => {
                        return Err(FrameError::BadField {
                            kind,
                            field: "from_opener",
                        })
                    }
                    None => return Err(truncated()),
                };
                let id = u64_at(2).ok_or_else(truncated)?;
                let rest = body.slice(10..);
                let u32_at = |at: usize| -> Option<u32> {
                    rest.get(at..at + 4)
                        .and_then(|b| b.try_into().ok())
                        .map(u32::from_le_bytes)
                };
                let op = match code {
                    1 => TunnelOp::Open {
                        dest: MailboxId::read_from(&rest).ok_or_else(truncated)?,
                        credit: u32_at(ID).ok_or_else(truncated)?,
                    },
                    2 => TunnelOp::Accept {
                        credit: u32_at(0).ok_or_else(truncated)?,
                    },
                    3 => TunnelOp::Reject {
                        reason: rest.clone(),
                    },
                    4 => TunnelOp::Data {
                        flags: *rest.first().ok_or_else(truncated)?,
                        chunk: rest.slice(1..),
                    },
                    5 => TunnelOp::Credit {
                        bytes: u32_at(0).ok_or_else(truncated)?,
                    },
                    6 => TunnelOp::Close {
                        reason: rest.clone(),
                    },
                    _ => return Err(FrameError::BadField { kind, field: "op" }),
                };
                let exact = match &op {
                    TunnelOp::Open { .. } => rest.len() == ID + 4,
                    TunnelOp::Accept { .. } | TunnelOp::Credit { .. } => rest.len() == 4,
                    _ => true,
                };
                if !exact {
                    return Err(truncated());
                }
                Frame::Tunnel {
                    id,
                    from_opener,
                    op,
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{Incarnation, NodeId};

    const DEST: MailboxId = MailboxId {
        node: NodeId(3),
        incarnation: Incarnation(7),
        serial: 9,
    };

    fn request(remaining_us: u64) -> Frame {
        Frame::Request {
            dest: DEST,
            corr: 42,
            tag: TypeTag(5),
            remaining_us,
            payload: Bytes::from_static(b"payload"),
        }
    }

    fn parse(bytes: &[u8]) -> Result<Frame, FrameError> {
        Frame::parse(Bytes::copy_from_slice(&bytes[LEN_PREFIX..]))
    }

    #[test]
    fn the_time_remaining_round_trips_up_to_its_cap() {
        for remaining in [0, 1, 999, MAX_REMAINING_US - 1, MAX_REMAINING_US] {
            let frame = request(remaining);
            assert_eq!(parse(&frame.to_vec()), Ok(frame));
        }
    }

    #[test]
    fn a_time_remaining_over_the_cap_is_malformed_and_never_written() {
        // Read: one past the cap is a typed error, as is the largest value.
        for remaining in [MAX_REMAINING_US + 1, u64::MAX] {
            let mut bytes = request(0).to_vec();
            let at = LEN_PREFIX + 1 + REQUEST_HEADER_BODY_LEN - 8;
            bytes[at..at + 8].copy_from_slice(&remaining.to_le_bytes());
            assert_eq!(
                parse(&bytes),
                Err(FrameError::BadField {
                    kind: FrameKind::Request,
                    field: "remaining_us",
                })
            );
        }
        // Written: capped, so a node never sends what a peer refuses.
        let mut out = Vec::new();
        put_request_header(&mut out, DEST, 1, TypeTag(1), u64::MAX, 0);
        assert_eq!(
            parse(&out),
            Ok(Frame::Request {
                dest: DEST,
                corr: 1,
                tag: TypeTag(1),
                remaining_us: MAX_REMAINING_US,
                payload: Bytes::new(),
            })
        );
    }

    #[test]
    fn a_request_header_cut_anywhere_is_truncated() {
        let bytes = request(5).to_vec();
        for cut in 1..1 + REQUEST_HEADER_BODY_LEN {
            assert!(
                matches!(
                    Frame::parse(Bytes::copy_from_slice(&bytes[LEN_PREFIX..LEN_PREFIX + cut])),
                    Err(FrameError::Truncated { .. })
                ),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn a_cancelled_status_round_trips_and_the_next_is_malformed() {
        let frame = Frame::Reply {
            corr: 8,
            status: ReplyStatus::Cancelled,
            tag: TypeTag(0),
            payload: Bytes::new(),
        };
        let mut bytes = frame.to_vec();
        assert_eq!(parse(&bytes), Ok(frame));
        bytes[LEN_PREFIX + 1 + 8] = ReplyStatus::Cancelled as u8 + 1;
        assert_eq!(
            parse(&bytes),
            Err(FrameError::BadField {
                kind: FrameKind::Reply,
                field: "status",
            })
        );
    }
}
