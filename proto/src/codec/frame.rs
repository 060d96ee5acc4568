//! Frames: `len: u32 LE | kind: u8 | body`, where `len` counts the kind byte
//! and the body. Fixed binary headers for the hot frames (data, fragments,
//! pings); CBOR bodies for the rare ones (hello, control, goodbye), which the
//! layers above decode.

use std::fmt;

use bytes::Bytes;

use crate::id::MailboxId;
use crate::types::TypeTag;

/// Bytes of the length prefix.
pub const LEN_PREFIX: usize = 4;

/// Bytes before a data frame's payload: prefix, kind, destination, tag.
pub const DATA_HEADER_LEN: usize = LEN_PREFIX + 1 + MailboxId::WIRE_LEN + 8;

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
}

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
}

/// Malformed input at the framing layer. Any of these ends the connection.
#[derive(Clone, Debug, PartialEq, Eq)]
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
    put_prefix(out, FrameKind::Data, MailboxId::WIRE_LEN + 8 + payload_len);
    dest.write_to(out);
    out.extend_from_slice(&tag.0.to_le_bytes());
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
        })
    }
}
