//! One connection: its rustls session over in-memory buffers, the frame
//! decoder, the handshake, and its timers.

use std::collections::BTreeMap;
use std::io::{self, BufRead, Write};
use std::time::Instant;

use bytes::Bytes;

use crate::close::CloseReason;
use crate::codec::{Frame, FrameDecoder};
use crate::handshake::Handshake;
use crate::id::{MailboxId, NodeId};
use crate::types::TypeTag;

/// Identifies a connection between the core and its driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "conn#{}", self.0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Dialled; the driver has not connected the socket yet.
    Dialing,
    /// TLS and then the reign handshake are in progress.
    Handshaking,
    /// Authenticated: this is the connection to `peer`.
    Up { peer: NodeId },
}

/// A large message being put back together.
pub(crate) struct Reassembly {
    pub(crate) tag: TypeTag,
    pub(crate) total: usize,
    pub(crate) buf: Vec<u8>,
}

pub(crate) struct Conn {
    pub(crate) id: ConnId,
    /// What the driver told us about the other end, for logs.
    pub(crate) label: String,
    pub(crate) tls: Transport,
    pub(crate) handshake: Handshake,
    /// Whether the dialer's opening hello has been queued.
    pub(crate) hello_sent: bool,
    pub(crate) decoder: FrameDecoder,
    pub(crate) phase: Phase,
    /// The node this connection was dialled to, if we dialled.
    pub(crate) dialed: Option<NodeId>,
    pub(crate) opened_at: Instant,
    pub(crate) last_recv: Instant,
    pub(crate) next_ping: Instant,
    pub(crate) ping_outstanding: bool,
    pub(crate) ping_failures: u32,
    pub(crate) ping_nonce: u64,
    /// The nonce and send time of the last timer ping, for the round trip.
    pub(crate) ping_sent: Option<(u64, Instant)>,
    /// Ciphertext handed to the driver and not yet reported written.
    pub(crate) in_flight: usize,
    /// Encoded frames the core itself generated (hello, pings, pongs,
    /// control answers and user threads' control frames), sent before any
    /// user data.
    pub(crate) control_bytes: Vec<u8>,
    /// Small-frame chunks taken from the outbox and written, to hand back
    /// to it for reuse at the next drain.
    pub(crate) spare_chunks: Vec<Vec<u8>>,
    pub(crate) reassembly: BTreeMap<MailboxId, Reassembly>,
    pub(crate) reassembly_bytes: usize,
    /// Plaintext bytes received, for the peer's counters.
    pub(crate) plaintext_in: u64,
    /// The connection's tracing span (`conn{id, peer}`): what the core logs
    /// while handling the connection's input is logged inside it. `peer` is
    /// known from the start on a dialled connection, from the hello on an
    /// accepted one.
    pub(crate) span: tracing::Span,
}

/// What carries a connection's frames.
pub(crate) enum Transport {
    /// A rustls session over in-memory buffers.
    Tls(Box<rustls::Connection>),
    /// Plaintext from a peer taken as already authenticated. Only fuzz
    /// builds have it, to reach the layers above TLS with arbitrary frames.
    #[cfg(fuzzing)]
    Plain {
        /// Frames "sent" to the fuzzer's peer.
        out: Vec<u8>,
    },
}

impl From<rustls::Connection> for Transport {
    fn from(tls: rustls::Connection) -> Transport {
        Transport::Tls(Box::new(tls))
    }
}

impl Transport {
    fn tls_mut(&mut self) -> Option<&mut rustls::Connection> {
        match self {
            Transport::Tls(tls) => Some(tls),
            #[cfg(fuzzing)]
            Transport::Plain { .. } => None,
        }
    }

    pub(crate) fn is_handshaking(&self) -> bool {
        match self {
            Transport::Tls(tls) => tls.is_handshaking(),
            #[cfg(fuzzing)]
            Transport::Plain { .. } => false,
        }
    }

    pub(crate) fn send_close_notify(&mut self) {
        match self {
            Transport::Tls(tls) => tls.send_close_notify(),
            #[cfg(fuzzing)]
            Transport::Plain { .. } => {}
        }
    }
}

/// Whether the peer's certificate names `node`.
pub(crate) fn cert_names(transport: &Transport, node: NodeId) -> bool {
    match transport {
        Transport::Tls(tls) => tls
            .peer_certificates()
            .and_then(|certs| certs.first())
            .is_some_and(|cert| crate::tls::cert_names_node(cert, node)),
        #[cfg(fuzzing)]
        Transport::Plain { .. } => true,
    }
}

/// Bytes of plaintext pulled from rustls per decoder fill.
const PLAINTEXT_CHUNK: usize = 64 * 1024;

impl Conn {
    pub(crate) fn new(
        id: ConnId,
        label: String,
        tls: Transport,
        handshake: Handshake,
        max_frame_len: usize,
        dialed: Option<NodeId>,
        now: Instant,
    ) -> Conn {
        let span = tracing::info_span!("conn", id = %id, peer = dialed.map(|n| n.0));
        Conn {
            span,
            id,
            label,
            tls,
            handshake,
            hello_sent: false,
            decoder: FrameDecoder::new(max_frame_len),
            phase: if dialed.is_some() {
                Phase::Dialing
            } else {
                Phase::Handshaking
            },
            dialed,
            opened_at: now,
            last_recv: now,
            next_ping: now,
            ping_outstanding: false,
            ping_failures: 0,
            ping_nonce: 0,
            ping_sent: None,
            in_flight: 0,
            control_bytes: Vec::new(),
            spare_chunks: Vec::new(),
            reassembly: BTreeMap::new(),
            reassembly_bytes: 0,
            plaintext_in: 0,
        }
    }

    pub(crate) fn peer(&self) -> Option<NodeId> {
        match self.phase {
            Phase::Up { peer } => Some(peer),
            _ => None,
        }
    }

    /// Feeds ciphertext to rustls, a record at a time, calling `on_plaintext`
    /// whenever decrypted bytes have been moved into the frame decoder, so
    /// the caller can take frames out before more arrive (memory stays
    /// bounded by one read chunk plus one frame).
    pub(crate) fn receive(
        &mut self,
        mut ciphertext: &[u8],
        mut on_plaintext: impl FnMut(&mut Conn) -> bool,
    ) -> Result<(), rustls::Error> {
        #[cfg(fuzzing)]
        if let Transport::Plain { .. } = self.tls {
            self.decoder.feed(ciphertext);
            self.plaintext_in += ciphertext.len() as u64;
            on_plaintext(self);
            return Ok(());
        }
        loop {
            let Some(tls) = self.tls.tls_mut() else {
                return Ok(());
            };
            if !ciphertext.is_empty() {
                match tls.read_tls(&mut ciphertext) {
                    Ok(_) => {}
                    Err(e) => return Err(rustls::Error::General(e.to_string())),
                }
            }
            let state = tls.process_new_packets()?;
            let mut available = state.plaintext_bytes_to_read();
            while available > 0 {
                let Some(tls) = self.tls.tls_mut() else {
                    return Ok(());
                };
                // Copy straight out of rustls' buffer: no zeroing, one copy.
                let mut reader = tls.reader();
                let got = match reader.fill_buf() {
                    Ok(chunk) => {
                        let n = chunk.len().min(PLAINTEXT_CHUNK);
                        self.decoder.feed(&chunk[..n]);
                        n
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                    Err(e) => return Err(rustls::Error::General(e.to_string())),
                };
                if got == 0 {
                    break;
                }
                reader.consume(got);
                self.plaintext_in += got as u64;
                available -= got.min(available);
                if !on_plaintext(self) {
                    return Ok(());
                }
            }
            if ciphertext.is_empty() {
                return Ok(());
            }
        }
    }

    /// Gives back the buffers an idle connection does not need (called at
    /// each ping): the decoder's buffer if it holds no partial frame, the
    /// control buffer if it is empty, and the spare outbox chunks. A buffer
    /// that holds something stays; an empty one goes back even on a busy
    /// connection, which grows it again (once per ping interval, a cost
    /// too small to measure). A quiet connection holds none of them until
    /// it has something to read or send again. What stays is rustls' own
    /// (its receive buffer shrinks to 4 KiB by itself when nothing is
    /// pending).
    pub(crate) fn release_idle(&mut self) {
        self.decoder.release();
        if self.control_bytes.is_empty() {
            self.control_bytes = Vec::new();
        }
        self.spare_chunks = Vec::new();
    }

    /// Bytes of buffer capacity the connection holds outside rustls (see
    /// [`release_idle`](Conn::release_idle)).
    pub(crate) fn buffer_capacity(&self) -> usize {
        self.decoder.capacity()
            + self.control_bytes.capacity()
            + self.spare_chunks.iter().map(Vec::capacity).sum::<usize>()
            + self
                .reassembly
                .values()
                .map(|r| r.buf.capacity())
                .sum::<usize>()
    }

    /// Queues a core-generated frame.
    pub(crate) fn queue_frame(&mut self, frame: &Frame) {
        frame.encode(&mut self.control_bytes);
    }

    /// Encrypts plaintext for sending.
    pub(crate) fn write_plaintext(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        match &mut self.tls {
            Transport::Tls(tls) => {
                // The send buffer limit is lifted at creation, so rustls takes it all.
                if let Err(e) = tls.writer().write_all(data) {
                    tracing::error!(conn = %self.id, error = %e, "rustls refused plaintext");
                }
            }
            #[cfg(fuzzing)]
            Transport::Plain { out } => out.extend_from_slice(data),
        }
    }

    /// Takes all ciphertext ready to go, written into `out` (a recycled
    /// buffer, so steady-state transmits do not allocate).
    pub(crate) fn take_ciphertext(&mut self, mut out: Vec<u8>) -> Result<Vec<u8>, Vec<u8>> {
        out.clear();
        match &mut self.tls {
            Transport::Tls(tls) => {
                while tls.wants_write() {
                    match tls.write_tls(&mut out) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
            }
            #[cfg(fuzzing)]
            Transport::Plain { out: plain } => out.append(plain),
        }
        if out.is_empty() {
            Err(out)
        } else {
            Ok(out)
        }
    }

    /// Pushes a chunk of core frames and takes the core frame buffer out.
    pub(crate) fn flush_control(&mut self) {
        if !self.control_bytes.is_empty() {
            let frames = std::mem::take(&mut self.control_bytes);
            self.write_plaintext(&frames);
            self.control_bytes = frames;
            self.control_bytes.clear();
        }
    }

    /// Adds a fragment to a reassembly; the whole message when complete.
    pub(crate) fn reassemble(
        &mut self,
        dest: MailboxId,
        start: Option<(TypeTag, u64)>,
        chunk: Bytes,
        max_message_len: usize,
        max_reassembly: usize,
    ) -> Result<Option<(TypeTag, Bytes)>, CloseReason> {
        if let Some((tag, total)) = start {
            if self.reassembly.contains_key(&dest) {
                return Err(CloseReason::Protocol(format!(
                    "a second fragmented message to {dest:?} began before the first ended"
                )));
            }
            if total as usize > max_message_len || total == 0 {
                return Err(CloseReason::Protocol(format!(
                    "fragmented message of {total} bytes (maximum {max_message_len})"
                )));
            }
            self.reassembly.insert(
                dest,
                Reassembly {
                    tag,
                    total: total as usize,
                    // Grow as data arrives: a peer's claim alone reserves nothing.
                    buf: Vec::new(),
                },
            );
        }
        let Some(entry) = self.reassembly.get_mut(&dest) else {
            return Err(CloseReason::Protocol(format!(
                "a fragment to {dest:?} with no message begun"
            )));
        };
        if entry.buf.len() + chunk.len() > entry.total {
            return Err(CloseReason::Protocol(format!(
                "fragments to {dest:?} exceed the announced {} bytes",
                entry.total
            )));
        }
        self.reassembly_bytes += chunk.len();
        if self.reassembly_bytes > max_reassembly {
            return Err(CloseReason::Protocol(format!(
                "partial messages hold {} bytes, over the limit of {max_reassembly}",
                self.reassembly_bytes
            )));
        }
        entry.buf.extend_from_slice(&chunk);
        if entry.buf.len() < entry.total {
            return Ok(None);
        }
        let done = self.reassembly.remove(&dest).expect("entry exists");
        self.reassembly_bytes -= done.total;
        Ok(Some((done.tag, Bytes::from(done.buf))))
    }
}
