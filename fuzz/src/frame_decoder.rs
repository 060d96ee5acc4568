//! `frame_decoder`: a byte stream cut into arbitrary chunks.
//!
//! Input: `[max selector][chunk selector][seed lo][seed hi] stream…`. The
//! stream goes to a [`FrameDecoder`] in chunks (through `feed` and
//! `fill_with`, including reads that fail or fill less than asked) whose
//! sizes come from the seed. Checks:
//! - the decoder's capacity stays within one maximum frame, the length
//!   prefix, one read chunk and one fill request;
//! - the chunked decode gives exactly the frames and error of decoding the
//!   whole stream at once;
//! - every frame re-encodes to exactly the bytes it came from, which decode
//!   back to an equal frame;
//! - after an error the decoder stays failed with the same error.

use reign_proto::codec::frame::LEN_PREFIX;
use reign_proto::codec::{Frame, FrameDecoder, FrameError, DEFAULT_MAX_FRAME_LEN};

use crate::Choices;

/// The decoder's private growth step (one socket read).
const READ_CHUNK: usize = 64 * 1024;

const MAX_FRAME: [usize; 4] = [32, 300, 4096, DEFAULT_MAX_FRAME_LEN];
const MAX_CHUNK: [usize; 6] = [1, 3, 17, 512, 4096, 70_000];

fn decode_whole(stream: &[u8], max: usize) -> (Vec<Frame>, Option<FrameError>) {
    let mut decoder = FrameDecoder::new(max);
    decoder.feed(stream);
    let mut frames = Vec::new();
    loop {
        match decoder.next_frame() {
            Ok(Some(frame)) => frames.push(frame),
            Ok(None) => return (frames, None),
            Err(e) => return (frames, Some(e)),
        }
    }
}

/// Fuzzes [`FrameDecoder`] with `data` (see the module docs for the layout).
pub fn frame_decoder(data: &[u8]) {
    let [max_sel, chunk_sel, lo, hi, stream @ ..] = data else {
        return;
    };
    let max = MAX_FRAME[*max_sel as usize % MAX_FRAME.len()];
    let max_chunk = MAX_CHUNK[*chunk_sel as usize % MAX_CHUNK.len()];
    let mut choices = Choices::new(u64::from(u16::from_le_bytes([*lo, *hi])));

    let (whole_frames, whole_error) = decode_whole(stream, max);

    let mut decoder = FrameDecoder::new(max);
    let mut fed = 0;
    let mut consumed = 0;
    let mut frames = Vec::new();
    let mut error = None;
    let mut largest_request = 0;
    'feed: while fed < stream.len() {
        let n = choices.up_to(max_chunk).min(stream.len() - fed);
        let chunk = &stream[fed..fed + n];
        match choices.next() % 4 {
            0 => decoder.feed(chunk),
            1 => {
                // A read that fails after scribbling on the buffer keeps nothing.
                let before = decoder.buffered();
                let ask = n + 1;
                largest_request = largest_request.max(ask);
                let r = decoder.fill_with(ask, |buf| {
                    buf.fill(0xa5);
                    Err::<usize, ()>(())
                });
                assert!(r.is_err());
                assert_eq!(decoder.buffered(), before, "a failed read kept bytes");
                continue;
            }
            _ => {
                // Ask for more than the read gives, sometimes.
                let ask = n + choices.up_to(8);
                largest_request = largest_request.max(ask);
                let got = decoder
                    .fill_with(ask, |buf| {
                        buf[..n].copy_from_slice(chunk);
                        Ok::<usize, ()>(n)
                    })
                    .expect("the read succeeds");
                assert_eq!(got, n);
            }
        }
        fed += n;
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    let wire = frame.to_vec();
                    assert_eq!(
                        stream.get(consumed..consumed + wire.len()),
                        Some(&wire[..]),
                        "{frame:?} does not re-encode to the bytes it came from"
                    );
                    consumed += wire.len();
                    let mut again = FrameDecoder::new(max.max(wire.len()));
                    again.feed(&wire);
                    assert_eq!(again.next_frame(), Ok(Some(frame.clone())));
                    assert_eq!(again.next_frame(), Ok(None));
                    frames.push(frame);
                }
                Ok(None) => break,
                Err(e) => {
                    // The decoder drops its buffer and stays failed, whatever
                    // comes next.
                    assert_eq!(decoder.buffered(), 0, "a failed decoder holds bytes");
                    decoder.feed(&Frame::Ping(1).to_vec());
                    assert_eq!(decoder.next_frame(), Err(e.clone()));
                    error = Some(e);
                    break 'feed;
                }
            }
        }
        assert_eq!(decoder.buffered(), fed - consumed);
        let bound = max + LEN_PREFIX + READ_CHUNK + largest_request.max(max_chunk);
        assert!(
            decoder.capacity() <= bound,
            "decoder capacity {} over the bound {bound} (max frame {max})",
            decoder.capacity()
        );
    }
    assert_eq!(frames, whole_frames, "chunking changed the frames");
    if error.is_some() || fed == stream.len() {
        assert_eq!(error, whole_error, "chunking changed the error");
    }
}
