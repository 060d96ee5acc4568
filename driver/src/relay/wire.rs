//! The Iris relay protocol v1.0-draft2 on the wire: opcodes, the four field
//! encodings (varint, binary, string, bool), an encoder of whole packets
//! into a byte buffer and a bounded, buffered decoder over a runtime's
//! socket.
//!
//! Packets have no length prefix: a packet is its opcode followed by its
//! fields, so the decoder reads field by field. Every variable-length field
//! is checked against the bound the caller names *before* anything is
//! allocated for it, and the bytes of a long field are read into a buffer
//! that grows only as they arrive: a client that announces a large field
//! and sends nothing costs the read buffer, no more.

use std::io;

use crate::runtime::Runtime;

/// Client → relay: connection initiation; relay → client: acceptance.
pub const OP_INIT: u8 = 0x00;
/// Relay → client: connection refusal (a version the relay does not speak).
pub const OP_DENY: u8 = 0x01;
/// Client → relay: tear-down; relay → client: tear-down notice ("" = ack).
pub const OP_CLOSE: u8 = 0x02;
/// A broadcast to a cluster (out) or its delivery (in).
pub const OP_BROADCAST: u8 = 0x03;
/// A request to a cluster (out) or its delivery to a member (in).
pub const OP_REQUEST: u8 = 0x04;
/// A member's reply (out) or its delivery to the caller (in).
pub const OP_REPLY: u8 = 0x05;
/// Client → relay: subscribe to a topic.
pub const OP_SUBSCRIBE: u8 = 0x06;
/// Client → relay: unsubscribe from a topic.
pub const OP_UNSUBSCRIBE: u8 = 0x07;
/// A publication to a topic (out) or its delivery (in).
pub const OP_PUBLISH: u8 = 0x08;
/// Client → relay: open a tunnel; relay → client: a tunnel offered.
pub const OP_TUN_INIT: u8 = 0x09;
/// Client → relay: accept an offered tunnel; relay → client: an open's result.
pub const OP_TUN_CONFIRM: u8 = 0x0a;
/// Byte credit for a tunnel, both ways.
pub const OP_TUN_ALLOW: u8 = 0x0b;
/// One chunk of a tunnel message, both ways.
pub const OP_TUN_TRANSFER: u8 = 0x0c;
/// Client → relay: close a tunnel; relay → client: a tunnel closed (reason).
pub const OP_TUN_CLOSE: u8 = 0x0d;

/// The protocol version this relay speaks.
pub const PROTOCOL_VERSION: &str = "v1.0-draft2";
/// The string a client's init packet starts with.
pub const CLIENT_MAGIC: &str = "iris-client-magic";
/// The string the relay's answer starts with.
pub const RELAY_MAGIC: &str = "iris-relay-magic";

/// The longest varint: ten 7-bit groups hold 64 bits; an eleventh byte
/// (or a tenth above 1) is not a `u64`.
const MAX_VARINT_BYTES: usize = 10;

/// Bytes read from the socket at a time: enough for a burst of small
/// packets in one read, small enough that thousands of idle clients cost
/// little (the relay keeps one such buffer per client).
pub const READ_BUFFER: usize = 16 << 10;

/// Why reading a packet failed.
#[derive(Debug)]
pub enum WireError {
    /// The socket failed.
    Io(io::Error),
    /// The client closed its side (cleanly between packets or not).
    Eof,
    /// The client broke the protocol; the text says how.
    Violation(String),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Io(e) => write!(f, "socket error: {e}"),
            WireError::Eof => write!(f, "the client closed its connection"),
            WireError::Violation(why) => write!(f, "protocol violation: {why}"),
        }
    }
}

/// Builds one packet; [`Packet::finish`] hands over its bytes.
#[derive(Default)]
pub struct Packet {
    bytes: Vec<u8>,
}

impl Packet {
    /// A packet starting with opcode `op`.
    pub fn new(op: u8) -> Packet {
        let mut bytes = Vec::with_capacity(16);
        bytes.push(op);
        Packet { bytes }
    }

    /// Appends an unsigned LEB128 varint.
    pub fn varint(mut self, mut value: u64) -> Packet {
        while value > 127 {
            self.bytes.push(0x80 | (value & 0x7f) as u8);
            value >>= 7;
        }
        self.bytes.push(value as u8);
        self
    }

    /// Appends a length-prefixed byte string.
    pub fn binary(self, data: &[u8]) -> Packet {
        let mut packet = self.varint(data.len() as u64);
        packet.bytes.extend_from_slice(data);
        packet
    }

    /// Appends a length-prefixed UTF-8 string.
    pub fn string(self, text: &str) -> Packet {
        self.binary(text.as_bytes())
    }

    /// Appends a boolean (one byte, 0 or 1).
    pub fn bool(mut self, value: bool) -> Packet {
        self.bytes.push(u8::from(value));
        self
    }

    /// The packet's bytes.
    pub fn finish(self) -> Vec<u8> {
        self.bytes
    }
}

/// Decodes fields from a runtime's socket through a fixed buffer.
pub struct Reader<R: Runtime> {
    socket: R::Reader,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl<R: Runtime> Reader<R> {
    /// A decoder over `socket`.
    pub fn new(socket: R::Reader) -> Reader<R> {
        Reader {
            socket,
            buf: vec![0; READ_BUFFER].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    /// Reads more bytes into the (empty) buffer.
    async fn fill(&mut self) -> Result<(), WireError> {
        debug_assert_eq!(self.start, self.end);
        let (socket, buf) = (&mut self.socket, &mut self.buf);
        let n = std::future::poll_fn(|cx| R::poll_read(socket, cx, buf)).await;
        match n {
            Ok(0) => Err(WireError::Eof),
            Ok(n) => {
                self.start = 0;
                self.end = n;
                Ok(())
            }
            Err(e) => Err(WireError::Io(e)),
        }
    }

    /// One byte.
    pub async fn byte(&mut self) -> Result<u8, WireError> {
        if self.start == self.end {
            self.fill().await?;
        }
        let b = self.buf[self.start];
        self.start += 1;
        Ok(b)
    }

    /// A boolean: 0 or 1, anything else is a violation.
    pub async fn bool(&mut self) -> Result<bool, WireError> {
        match self.byte().await? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(WireError::Violation(format!("invalid boolean byte {b}"))),
        }
    }

    /// An unsigned LEB128 varint of at most 64 bits.
    pub async fn varint(&mut self) -> Result<u64, WireError> {
        let mut value: u64 = 0;
        for i in 0..MAX_VARINT_BYTES {
            let b = self.byte().await?;
            let group = u64::from(b & 0x7f);
            if i == MAX_VARINT_BYTES - 1 && group > 1 {
                return Err(WireError::Violation("varint over 64 bits".into()));
            }
            value |= group << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(WireError::Violation("varint over 64 bits".into()))
    }

    /// A varint that must fit `max` (inclusive); `what` names it in the error.
    pub async fn varint_max(&mut self, max: u64, what: &str) -> Result<u64, WireError> {
        let value = self.varint().await?;
        if value > max {
            return Err(WireError::Violation(format!(
                "{what} of {value} is over the limit of {max}"
            )));
        }
        Ok(value)
    }

    /// A byte string of at most `max` bytes, checked before any allocation;
    /// the buffer grows as the bytes arrive.
    pub async fn binary(&mut self, max: usize, what: &str) -> Result<Vec<u8>, WireError> {
        let len = self.varint_max(max as u64, what).await? as usize;
        let mut out = Vec::with_capacity(len.min(READ_BUFFER));
        while out.len() < len {
            if self.start == self.end {
                self.fill().await?;
            }
            let take = (len - out.len()).min(self.end - self.start);
            out.extend_from_slice(&self.buf[self.start..self.start + take]);
            self.start += take;
        }
        Ok(out)
    }

    /// A UTF-8 string of at most `max` bytes.
    pub async fn string(&mut self, max: usize, what: &str) -> Result<String, WireError> {
        let bytes = self.binary(max, what).await?;
        String::from_utf8(bytes).map_err(|_| WireError::Violation(format!("{what} is not UTF-8")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_encode_as_leb128() {
        assert_eq!(Packet::new(1).varint(0).finish(), [1, 0]);
        assert_eq!(Packet::new(1).varint(127).finish(), [1, 127]);
        assert_eq!(Packet::new(1).varint(128).finish(), [1, 0x80, 1]);
        assert_eq!(Packet::new(1).varint(300).finish(), [1, 0xac, 2]);
        let max = Packet::new(1).varint(u64::MAX).finish();
        assert_eq!(max.len(), 1 + MAX_VARINT_BYTES);
        assert_eq!(*max.last().unwrap(), 1);
    }

    #[test]
    fn strings_and_bools_are_length_prefixed_and_single_bytes() {
        let p = Packet::new(OP_INIT)
            .string(RELAY_MAGIC)
            .bool(true)
            .bool(false)
            .finish();
        assert_eq!(p[0], OP_INIT);
        assert_eq!(p[1] as usize, RELAY_MAGIC.len());
        assert_eq!(&p[2..2 + RELAY_MAGIC.len()], RELAY_MAGIC.as_bytes());
        assert_eq!(&p[2 + RELAY_MAGIC.len()..], [1, 0]);
    }
}
