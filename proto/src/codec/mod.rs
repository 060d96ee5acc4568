//! The wire codec: length-prefixed frames with a small fixed binary header
//! ([`frame`]), decoded incrementally from arbitrary chunks ([`decoder`]),
//! with CBOR bodies for control messages and user payloads ([`payload`]).

pub mod decoder;
pub mod frame;
pub mod payload;

pub use decoder::FrameDecoder;
pub use frame::{Frame, FrameError, FrameKind};
pub use payload::{Cbor, PayloadCodec};

/// The protocol version spoken by this build. Peers with another version are
/// refused during the handshake.
pub const PROTOCOL_VERSION: u16 = 1;

/// The default hard maximum frame size (header included). Checked before any
/// allocation for the frame.
pub const DEFAULT_MAX_FRAME_LEN: usize = 1 << 20;

/// Messages larger than this are cut into fragments of this size so they
/// never hold up other traffic on the connection.
pub const FRAGMENT_LEN: usize = 64 * 1024;
