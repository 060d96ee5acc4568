//! A client speaking the Iris relay protocol v1.0-draft2 byte by byte over
//! a real socket, written from the protocol notes (not from any binding):
//! the relay's tests drive `reign node --relay` and `Reign::serve_relay`
//! with it, one field at a time.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// How long a read waits before the test fails.
pub const READ_WAIT: Duration = Duration::from_secs(15);

/// Appends an unsigned LEB128 varint.
pub fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v > 127 {
        out.push(0x80 | (v & 0x7f) as u8);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends a length-prefixed byte string.
pub fn binary(out: &mut Vec<u8>, data: &[u8]) {
    varint(out, data.len() as u64);
    out.extend_from_slice(data);
}

/// A raw relay client on a loopback socket.
pub struct Raw {
    /// The socket.
    pub stream: TcpStream,
}

impl Raw {
    /// Connects to the relay on `port` (no handshake yet).
    pub fn connect(port: u16) -> Raw {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(READ_WAIT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Raw { stream }
    }

    /// Connects and completes the handshake as `cluster` ("" = a client).
    pub fn attach(port: u16, cluster: &str) -> Raw {
        let mut raw = Raw::connect(port);
        raw.send(&init("iris-client-magic", "v1.0-draft2", cluster));
        let mut accept = vec![0x00];
        binary(&mut accept, b"iris-relay-magic");
        binary(&mut accept, b"v1.0-draft2");
        assert_eq!(raw.read_n(accept.len()), accept, "the relay's acceptance");
        raw
    }

    /// Writes bytes as they are.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Reads exactly `n` bytes.
    pub fn read_n(&mut self, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        self.stream.read_exact(&mut buf).unwrap();
        buf
    }

    /// Reads one byte.
    pub fn byte(&mut self) -> u8 {
        self.read_n(1)[0]
    }

    /// Reads a varint.
    pub fn varint(&mut self) -> u64 {
        let mut v = 0u64;
        for i in 0..10 {
            let b = self.byte();
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                break;
            }
        }
        v
    }

    /// Reads a length-prefixed byte string.
    pub fn binary(&mut self) -> Vec<u8> {
        let n = self.varint() as usize;
        self.read_n(n)
    }

    /// Reads a length-prefixed UTF-8 string.
    pub fn string(&mut self) -> String {
        String::from_utf8(self.binary()).unwrap()
    }

    /// Expects opcode `op` next.
    pub fn expect_op(&mut self, op: u8) {
        let got = self.byte();
        assert_eq!(got, op, "expected opcode {op:#04x}, got {got:#04x}");
    }

    /// Reads to the end of the stream: what the relay sent before closing.
    pub fn rest(&mut self) -> Vec<u8> {
        let mut all = Vec::new();
        let _ = self.stream.read_to_end(&mut all);
        all
    }

    /// Sends `opRequest(id, cluster, body, timeout_ms)`, as a client does.
    pub fn request(&mut self, id: u64, cluster: &str, body: &[u8], timeout_ms: u64) {
        self.send(&packet(0x04, |p| {
            varint(p, id);
            binary(p, cluster.as_bytes());
            binary(p, body);
            varint(p, timeout_ms);
        }));
    }

    /// Expects `opRequest(relay id, body, timeout_ms)`, as a member gets it.
    pub fn expect_request(&mut self) -> (u64, Vec<u8>, u64) {
        self.expect_op(0x04);
        let id = self.varint();
        let body = self.binary();
        (id, body, self.varint())
    }

    /// Sends a member's `opReply(relay id, success, reply or fault)`.
    pub fn reply(&mut self, id: u64, outcome: Result<&[u8], &str>) {
        self.send(&packet(0x05, |p| {
            varint(p, id);
            match outcome {
                Ok(reply) => {
                    p.push(1);
                    binary(p, reply);
                }
                Err(fault) => {
                    p.push(0);
                    binary(p, fault.as_bytes());
                }
            }
        }));
    }

    /// Expects the caller's `opReply(id, timed out, success, reply or
    /// fault)` for request `id`: `None` when it timed out, else the reply
    /// or the fault's text.
    pub fn expect_reply(&mut self, id: u64) -> Option<Result<Vec<u8>, String>> {
        self.expect_op(0x05);
        assert_eq!(self.varint(), id, "the reply's request id");
        if self.byte() == 1 {
            return None;
        }
        Some(match self.byte() {
            1 => Ok(self.binary()),
            _ => Err(self.string()),
        })
    }

    /// Sends `opTunInit(id, cluster, timeout_ms)`, as an opener does.
    pub fn tunnel_init(&mut self, id: u64, cluster: &str, timeout_ms: u64) {
        self.send(&packet(0x09, |p| {
            varint(p, id);
            binary(p, cluster.as_bytes());
            varint(p, timeout_ms);
        }));
    }

    /// Expects the offer of a tunnel to a member, `opTunInit(build id,
    /// chunk limit)`; returns both.
    pub fn expect_tunnel_offer(&mut self) -> (u64, u64) {
        self.expect_op(0x09);
        let build = self.varint();
        (build, self.varint())
    }

    /// Sends the member's `opTunConfirm(build id, its own tunnel id)`.
    pub fn tunnel_confirm(&mut self, build: u64, id: u64) {
        self.send(&packet(0x0a, |p| {
            varint(p, build);
            varint(p, id);
        }));
    }

    /// Expects `opTunAllow(id, credit)`; returns the credit.
    pub fn expect_tunnel_allow(&mut self, id: u64) -> u64 {
        self.expect_op(0x0b);
        assert_eq!(self.varint(), id, "the tunnel the credit is for");
        self.varint()
    }

    /// Expects `opClose(reason)` and the end of the stream; returns the reason.
    pub fn expect_dropped(&mut self) -> String {
        self.expect_op(0x02);
        let reason = self.string();
        assert!(self.rest().is_empty(), "nothing after the close");
        reason
    }
}

/// A packet from the relay to a client, decoded ([`Raw::next_packet`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FromRelay {
    /// `opClose(reason)`: "" acknowledges the client's own close.
    Close(String),
    /// `opBroadcast(message)`.
    Broadcast(Vec<u8>),
    /// `opRequest(relay id, body, timeout_ms)`, to a member.
    Request {
        /// The relay's id for the reply.
        id: u64,
        /// The request's bytes.
        body: Vec<u8>,
        /// The caller's timeout.
        timeout_ms: u64,
    },
    /// `opReply(id, …)`, to a caller: `None` when it timed out, else the
    /// reply or the fault's text.
    Reply {
        /// The caller's request id.
        id: u64,
        /// What came of it.
        outcome: Option<Result<Vec<u8>, String>>,
    },
    /// `opPublish(topic, event)`, to a subscriber.
    Publish {
        /// The topic.
        topic: String,
        /// The event's bytes.
        event: Vec<u8>,
    },
    /// `opTunInit(build id, chunk limit)`: a tunnel offered to a member.
    TunnelOffer {
        /// The relay's build id, to confirm.
        build: u64,
        /// The largest chunk the relay takes.
        chunk_limit: u64,
    },
    /// `opTunConfirm(id, …)`: the result of the client's open; `None`
    /// when it timed out (Iris's answer to every failed open), else the
    /// relay's chunk limit.
    TunnelConfirm {
        /// The client's tunnel id.
        id: u64,
        /// The chunk limit of an open tunnel.
        chunk_limit: Option<u64>,
    },
    /// `opTunAllow(id, space)`: credit for the client's chunks.
    TunnelAllow {
        /// The tunnel.
        id: u64,
        /// Bytes granted.
        space: u64,
    },
    /// `opTunTransfer(id, sizeOrCont, chunk)`.
    TunnelTransfer {
        /// The tunnel.
        id: u64,
        /// The message's total size on its first chunk, 0 after.
        size_or_cont: u64,
        /// The chunk's bytes.
        chunk: Vec<u8>,
    },
    /// `opTunClose(id, reason)`.
    TunnelClose {
        /// The tunnel.
        id: u64,
        /// Why ("" for a plain close).
        reason: String,
    },
}

impl Raw {
    /// Reads and decodes the next packet from the relay.
    ///
    /// # Panics
    /// On an opcode a relay does not send, or a read that fails or waits
    /// past [`READ_WAIT`].
    pub fn next_packet(&mut self) -> FromRelay {
        match self.byte() {
            0x02 => FromRelay::Close(self.string()),
            0x03 => FromRelay::Broadcast(self.binary()),
            0x04 => {
                let id = self.varint();
                let body = self.binary();
                FromRelay::Request {
                    id,
                    body,
                    timeout_ms: self.varint(),
                }
            }
            0x05 => {
                let id = self.varint();
                let outcome = if self.byte() == 1 {
                    None
                } else if self.byte() == 1 {
                    Some(Ok(self.binary()))
                } else {
                    Some(Err(self.string()))
                };
                FromRelay::Reply { id, outcome }
            }
            0x08 => {
                let topic = self.string();
                FromRelay::Publish {
                    topic,
                    event: self.binary(),
                }
            }
            0x09 => {
                let build = self.varint();
                FromRelay::TunnelOffer {
                    build,
                    chunk_limit: self.varint(),
                }
            }
            0x0a => {
                let id = self.varint();
                let chunk_limit = if self.byte() == 1 {
                    None
                } else {
                    Some(self.varint())
                };
                FromRelay::TunnelConfirm { id, chunk_limit }
            }
            0x0b => {
                let id = self.varint();
                FromRelay::TunnelAllow {
                    id,
                    space: self.varint(),
                }
            }
            0x0c => {
                let id = self.varint();
                let size_or_cont = self.varint();
                FromRelay::TunnelTransfer {
                    id,
                    size_or_cont,
                    chunk: self.binary(),
                }
            }
            0x0d => {
                let id = self.varint();
                FromRelay::TunnelClose {
                    id,
                    reason: self.string(),
                }
            }
            op => panic!("opcode {op:#04x} from the relay"),
        }
    }

    /// Sends `opClose`, as a binding closing its connection does.
    pub fn close(&mut self) {
        self.send(&[0x02]);
    }

    /// Sends `opBroadcast(cluster, message)`.
    pub fn broadcast(&mut self, cluster: &str, message: &[u8]) {
        self.send(&packet(0x03, |p| {
            binary(p, cluster.as_bytes());
            binary(p, message);
        }));
    }

    /// Sends `opSubscribe(topic)`.
    pub fn subscribe(&mut self, topic: &str) {
        self.send(&subscribe_packet(topic));
    }

    /// Sends `opUnsubscribe(topic)`.
    pub fn unsubscribe(&mut self, topic: &str) {
        self.send(&packet(0x07, |p| binary(p, topic.as_bytes())));
    }

    /// Sends `opPublish(topic, event)`.
    pub fn publish(&mut self, topic: &str, event: &[u8]) {
        self.send(&packet(0x08, |p| {
            binary(p, topic.as_bytes());
            binary(p, event);
        }));
    }

    /// Sends `opTunAllow(id, space)`: credit for the relay's chunks.
    pub fn tunnel_allow(&mut self, id: u64, space: u64) {
        self.send(&packet(0x0b, |p| {
            varint(p, id);
            varint(p, space);
        }));
    }

    /// Sends `opTunTransfer(id, sizeOrCont, chunk)`.
    pub fn tunnel_transfer(&mut self, id: u64, size_or_cont: u64, chunk: &[u8]) {
        self.send(&packet(0x0c, |p| {
            varint(p, id);
            varint(p, size_or_cont);
            binary(p, chunk);
        }));
    }

    /// Sends `opTunClose(id)`.
    pub fn tunnel_close(&mut self, id: u64) {
        self.send(&packet(0x0d, |p| varint(p, id)));
    }

    /// Reads packets until `opClose`, skipping the others, then expects
    /// the end of the stream; returns the close's reason ("" after the
    /// client's own close).
    pub fn until_closed(&mut self) -> String {
        loop {
            if let FromRelay::Close(reason) = self.next_packet() {
                assert!(self.rest().is_empty(), "nothing after the close");
                return reason;
            }
        }
    }
}

/// The bytes of `opRequest(id, cluster, body, timeout_ms)`, to send many
/// in one write.
pub fn request_packet(id: u64, cluster: &str, body: &[u8], timeout_ms: u64) -> Vec<u8> {
    packet(0x04, |p| {
        varint(p, id);
        binary(p, cluster.as_bytes());
        binary(p, body);
        varint(p, timeout_ms);
    })
}

/// The bytes of `opSubscribe(topic)`.
pub fn subscribe_packet(topic: &str) -> Vec<u8> {
    packet(0x06, |p| binary(p, topic.as_bytes()))
}

/// The bytes of `opTunInit(id, cluster, timeout_ms)`.
pub fn tunnel_init_packet(id: u64, cluster: &str, timeout_ms: u64) -> Vec<u8> {
    packet(0x09, |p| {
        varint(p, id);
        binary(p, cluster.as_bytes());
        varint(p, timeout_ms);
    })
}

/// The init packet: the magic, the version, the cluster ("" = a client).
pub fn init(magic: &str, version: &str, cluster: &str) -> Vec<u8> {
    let mut p = vec![0x00];
    binary(&mut p, magic.as_bytes());
    binary(&mut p, version.as_bytes());
    binary(&mut p, cluster.as_bytes());
    p
}

/// A packet: `op`, then what `fill` appends.
pub fn packet(op: u8, fill: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut p = vec![op];
    fill(&mut p);
    p
}
