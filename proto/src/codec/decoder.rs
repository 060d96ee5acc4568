//! Incremental frame decoding from arbitrary chunks.

use bytes::{Buf, BytesMut};

use super::frame::{Frame, FrameError, FrameKind, DATA_HEADER_LEN, LEN_PREFIX};
use crate::codec::TypeTag;
use crate::id::MailboxId;

/// Buffer growth step: one socket read's worth.
const READ_CHUNK: usize = 64 * 1024;

/// The first allocation of an empty decoder (new, or given back with
/// [`FrameDecoder::release`]): enough for the pings, pongs and small control
/// frames of an idle link, so an idle link never holds a whole read chunk.
/// A link that gets busy grows by [`READ_CHUNK`] from the second fill on.
const FIRST_FILL: usize = 512;

/// Splits a byte stream into frames.
///
/// Input may arrive in chunks of any size, one byte at a time included.
/// The length prefix is checked against the maximum before any space is
/// reserved for the frame, so a hostile peer cannot make the decoder allocate
/// more than one maximum frame plus one read chunk. Frames come out as
/// zero-copy slices of the internal buffer. After an error the decoder stays
/// failed: the stream has lost its framing and the connection must close.
///
/// ```
/// use reign_proto::codec::{Frame, FrameDecoder};
///
/// let mut wire = Vec::new();
/// Frame::Ping(7).encode(&mut wire);
/// Frame::Pong(7).encode(&mut wire);
///
/// let mut decoder = FrameDecoder::new(1024);
/// for byte in &wire {
///     decoder.feed(std::slice::from_ref(byte));
/// }
/// assert_eq!(decoder.next_frame().unwrap(), Some(Frame::Ping(7)));
/// assert_eq!(decoder.next_frame().unwrap(), Some(Frame::Pong(7)));
/// assert_eq!(decoder.next_frame().unwrap(), None);
/// ```
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    max_frame_len: usize,
    failed: Option<FrameError>,
}

impl FrameDecoder {
    /// A decoder that refuses frames whose length prefix exceeds `max_frame_len`.
    pub fn new(max_frame_len: usize) -> FrameDecoder {
        FrameDecoder {
            buf: BytesMut::new(),
            max_frame_len,
            failed: None,
        }
    }

    /// Appends received bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.buf.capacity() == 0 {
            self.buf.reserve(bytes.len().max(FIRST_FILL));
        } else if self.buf.capacity() - self.buf.len() < bytes.len() {
            // Grow by whole read chunks: frames handed out keep older
            // chunks alive, so the buffer moves on to fresh ones.
            self.buf.reserve(bytes.len().max(READ_CHUNK));
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Lets `read` write up to `max` bytes straight into the buffer (a TLS
    /// plaintext reader, for instance) and keeps what it wrote.
    pub fn fill_with<E>(
        &mut self,
        max: usize,
        read: impl FnOnce(&mut [u8]) -> Result<usize, E>,
    ) -> Result<usize, E> {
        let start = self.buf.len();
        if self.buf.capacity() - start < max {
            self.buf.reserve(max.max(READ_CHUNK));
        }
        self.buf.resize(start + max, 0);
        let result = read(&mut self.buf[start..]);
        let kept = match &result {
            Ok(n) => (*n).min(max),
            Err(_) => 0,
        };
        self.buf.truncate(start + kept);
        result.map(|_| kept)
    }

    /// The next complete frame, if one is buffered.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        match self.split_frame() {
            Ok(frame) => Ok(frame),
            Err(err) => {
                self.failed = Some(err.clone());
                self.buf = BytesMut::new();
                Err(err)
            }
        }
    }

    fn split_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if self.buf.len() < LEN_PREFIX {
            return Ok(None);
        }
        let len = u32::from_le_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len > self.max_frame_len {
            return Err(FrameError::TooLarge {
                len,
                max: self.max_frame_len,
            });
        }
        if len == 0 {
            return Err(FrameError::Empty);
        }
        let total = LEN_PREFIX + len;
        if self.buf.len() < total {
            // Safe to reserve: `len` is within the maximum.
            self.buf.reserve(total - self.buf.len());
            return Ok(None);
        }
        if self.buf[LEN_PREFIX] == FrameKind::Data as u8 && total >= DATA_HEADER_LEN {
            // The hot path: read the fixed header in place, and hand out the
            // payload with a single split (one reference count, no slices).
            let header = &self.buf[LEN_PREFIX + 1..DATA_HEADER_LEN];
            let dest = MailboxId::read_from(header).ok_or(FrameError::Empty)?;
            let tag = TypeTag(u64::from_le_bytes(
                header[MailboxId::WIRE_LEN..MailboxId::WIRE_LEN + 8]
                    .try_into()
                    .map_err(|_| FrameError::Empty)?,
            ));
            let mut payload = self.buf.split_to(total);
            payload.advance(DATA_HEADER_LEN);
            return Ok(Some(Frame::Data {
                dest,
                tag,
                payload: payload.freeze(),
            }));
        }
        let mut frame = self.buf.split_to(total);
        frame.advance(LEN_PREFIX);
        Frame::parse(frame.freeze()).map(Some)
    }

    /// Bytes received but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Bytes the decoder's buffer currently has room for; bounded by one
    /// maximum frame plus one read chunk.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Gives the buffer back to the allocator if it holds no partial frame
    /// (a link gone idle); the next [`feed`](FrameDecoder::feed) allocates
    /// again, small at first. Frames already handed out keep their own
    /// bytes alive. Whether the buffer was given back.
    pub fn release(&mut self) -> bool {
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            self.buf = BytesMut::new();
            true
        } else {
            false
        }
    }

    /// The configured maximum frame length.
    pub fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::frame::{FrameKind, PublishScope, ReplyStatus, TunnelOp};
    use crate::codec::TypeTag;
    use crate::id::{Incarnation, MailboxId, NodeId};
    use bytes::Bytes;
    use proptest::prelude::*;

    #[test]
    fn an_idle_decoder_gives_its_buffer_back_and_a_partial_frame_keeps_it() {
        let mut wire = Vec::new();
        Frame::Ping(1).encode(&mut wire);
        let mut decoder = FrameDecoder::new(1 << 20);
        assert_eq!(decoder.capacity(), 0, "a new decoder holds nothing");
        assert!(!decoder.release(), "nothing to give back");
        // A ping on an idle link takes the small first fill, not a read chunk.
        decoder.feed(&wire);
        assert_eq!(decoder.capacity(), FIRST_FILL);
        // Half a frame stays: releasing it would lose the stream's framing.
        let mut two = wire.clone();
        Frame::Pong(2).encode(&mut two);
        decoder.feed(&two[..wire.len() + 3]);
        assert_eq!(decoder.next_frame().unwrap(), Some(Frame::Ping(1)));
        assert_eq!(decoder.next_frame().unwrap(), Some(Frame::Ping(1)));
        assert_eq!(decoder.next_frame().unwrap(), None);
        assert!(!decoder.release());
        assert_eq!(decoder.buffered(), 3);
        decoder.feed(&two[wire.len() + 3..]);
        assert_eq!(decoder.next_frame().unwrap(), Some(Frame::Pong(2)));
        // Everything read: the buffer goes back, and the next frame still decodes.
        assert!(decoder.release());
        assert_eq!(decoder.capacity(), 0);
        decoder.feed(&wire);
        assert_eq!(decoder.next_frame().unwrap(), Some(Frame::Ping(1)));
        // A fill larger than the first step is taken whole.
        assert!(decoder.release());
        let big = vec![0u8; FIRST_FILL + 1];
        decoder.feed(&big);
        assert!(decoder.capacity() > FIRST_FILL);
    }

    fn arb_id() -> impl Strategy<Value = MailboxId> {
        (any::<u16>(), any::<u64>(), any::<u64>()).prop_map(|(n, i, s)| MailboxId {
            node: NodeId(n),
            incarnation: Incarnation(i),
            serial: s,
        })
    }

    fn arb_bytes(max: usize) -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
    }

    fn arb_frame() -> impl Strategy<Value = Frame> {
        prop_oneof![
            arb_bytes(64).prop_map(Frame::Hello),
            any::<u64>().prop_map(Frame::Ping),
            any::<u64>().prop_map(Frame::Pong),
            (arb_id(), any::<u64>(), arb_bytes(300)).prop_map(|(dest, tag, payload)| Frame::Data {
                dest,
                tag: TypeTag(tag),
                payload
            }),
            (arb_id(), any::<u64>(), any::<u64>(), arb_bytes(300)).prop_map(
                |(dest, tag, total_len, chunk)| Frame::FragmentStart {
                    dest,
                    tag: TypeTag(tag),
                    total_len,
                    chunk
                }
            ),
            (arb_id(), arb_bytes(300))
                .prop_map(|(dest, chunk)| Frame::FragmentCont { dest, chunk }),
            arb_bytes(300).prop_map(Frame::Control),
            arb_bytes(64).prop_map(Frame::Goodbye),
            (
                arb_id(),
                any::<u64>(),
                any::<u64>(),
                0..=crate::codec::frame::MAX_REMAINING_US,
                arb_bytes(300)
            )
                .prop_map(|(dest, corr, tag, remaining_us, payload)| {
                    Frame::Request {
                        dest,
                        corr,
                        tag: TypeTag(tag),
                        remaining_us,
                        payload,
                    }
                }),
            (any::<u64>(), 0u8..6, any::<u64>(), arb_bytes(300)).prop_map(
                |(corr, status, tag, payload)| {
                    let status = [
                        ReplyStatus::Ok,
                        ReplyStatus::RemoteError,
                        ReplyStatus::Refused,
                        ReplyStatus::NoMember,
                        ReplyStatus::Dropped,
                        ReplyStatus::Cancelled,
                    ][status as usize];
                    Frame::Reply {
                        corr,
                        status,
                        tag: TypeTag(tag),
                        payload,
                    }
                }
            ),
            (any::<bool>(), any::<u64>(), arb_bytes(40), arb_bytes(300)).prop_map(
                |(topic, tag, name, payload)| {
                    let scope = if topic {
                        PublishScope::Topic
                    } else {
                        PublishScope::Group
                    };
                    Frame::Publish {
                        scope,
                        tag: TypeTag(tag),
                        name,
                        payload,
                    }
                }
            ),
            (any::<u64>(), any::<bool>(), arb_tunnel_op()).prop_map(|(id, from_opener, op)| {
                Frame::Tunnel {
                    id,
                    from_opener,
                    op,
                }
            }),
        ]
    }

    fn arb_tunnel_op() -> impl Strategy<Value = TunnelOp> {
        prop_oneof![
            (arb_id(), any::<u32>()).prop_map(|(dest, credit)| TunnelOp::Open { dest, credit }),
            any::<u32>().prop_map(|credit| TunnelOp::Accept { credit }),
            arb_bytes(40).prop_map(|reason| TunnelOp::Reject { reason }),
            (any::<u8>(), arb_bytes(300))
                .prop_map(|(flags, chunk)| TunnelOp::Data { flags, chunk }),
            any::<u32>().prop_map(|bytes| TunnelOp::Credit { bytes }),
            arb_bytes(40).prop_map(|reason| TunnelOp::Close { reason }),
        ]
    }

    proptest! {
        #[test]
        fn every_frame_round_trips(frame in arb_frame()) {
            let wire = frame.to_vec();
            let mut decoder = FrameDecoder::new(4096);
            decoder.feed(&wire);
            prop_assert_eq!(decoder.next_frame().unwrap(), Some(frame));
            prop_assert_eq!(decoder.next_frame().unwrap(), None);
            prop_assert_eq!(decoder.buffered(), 0);
        }

        #[test]
        fn split_streams_decode_the_same(
            frames in proptest::collection::vec(arb_frame(), 0..20),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..30),
        ) {
            let mut wire = Vec::new();
            for frame in &frames {
                frame.encode(&mut wire);
            }
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(wire.len() + 1)).collect();
            points.push(0);
            points.push(wire.len());
            points.sort_unstable();
            let mut decoder = FrameDecoder::new(4096);
            let mut out = Vec::new();
            for pair in points.windows(2) {
                decoder.feed(&wire[pair[0]..pair[1]]);
                while let Some(frame) = decoder.next_frame().unwrap() {
                    out.push(frame);
                }
            }
            prop_assert_eq!(out, frames);
        }

        #[test]
        fn random_bytes_never_panic_or_overallocate(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..512), 0..40),
        ) {
            let max = 2048;
            let mut decoder = FrameDecoder::new(max);
            for chunk in &chunks {
                let n = decoder.fill_with(chunk.len(), |buf| {
                    buf.copy_from_slice(chunk);
                    Ok::<_, ()>(chunk.len())
                }).unwrap();
                prop_assert_eq!(n, chunk.len());
                while let Ok(Some(_)) = decoder.next_frame() {}
                prop_assert!(decoder.capacity() <= max + LEN_PREFIX + READ_CHUNK + 512,
                    "capacity {} too large", decoder.capacity());
            }
        }
    }

    #[test]
    fn oversized_prefix_is_refused_before_allocating() {
        let mut decoder = FrameDecoder::new(1024);
        decoder.feed(&u32::MAX.to_le_bytes());
        assert_eq!(
            decoder.next_frame(),
            Err(FrameError::TooLarge {
                len: u32::MAX as usize,
                max: 1024
            })
        );
        assert!(decoder.capacity() < 1024);
        // The decoder stays failed.
        decoder.feed(&Frame::Ping(1).to_vec());
        assert!(decoder.next_frame().is_err());
    }

    #[test]
    fn malformed_frames_are_typed_errors() {
        let mut decoder = FrameDecoder::new(1024);
        decoder.feed(&[0, 0, 0, 0]);
        assert_eq!(decoder.next_frame(), Err(FrameError::Empty));

        let mut decoder = FrameDecoder::new(1024);
        decoder.feed(&[1, 0, 0, 0, 99]);
        assert_eq!(decoder.next_frame(), Err(FrameError::UnknownKind(99)));

        let mut decoder = FrameDecoder::new(1024);
        decoder.feed(&[3, 0, 0, 0, FrameKind::Data as u8, 1, 2]);
        assert_eq!(
            decoder.next_frame(),
            Err(FrameError::Truncated {
                kind: FrameKind::Data,
                len: 3
            })
        );
    }
}
