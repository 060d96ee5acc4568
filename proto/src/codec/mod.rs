//! The wire codec: length-prefixed frames with a small fixed binary header
//! ([`frame`]), decoded incrementally from arbitrary chunks ([`decoder`]),
//! with CBOR bodies for control messages and user payloads ([`payload`]).

pub mod decoder;
pub mod frame;
pub mod payload;

pub use decoder::FrameDecoder;
pub use frame::{Frame, FrameError, FrameKind};
pub use payload::{Cbor, PayloadCodec};

/// The wire identity of a registered message type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TypeTag(pub u64);

impl TypeTag {
    /// The tag for a registered name: 64-bit FNV-1a of its UTF-8 bytes.
    pub const fn of_name(name: &str) -> TypeTag {
        let bytes = name.as_bytes();
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let mut i = 0;
        while i < bytes.len() {
            hash ^= bytes[i] as u64;
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
            i += 1;
        }
        TypeTag(hash)
    }
}

/// The protocol version spoken by this build. Peers with another version are
/// refused during the handshake.
pub const PROTOCOL_VERSION: u16 = 1;

/// The ALPN protocol reign speaks when the spec names none.
pub const DEFAULT_PROTOCOL: &str = "reign-rs/1";

/// The default hard maximum frame size (header included). Checked before any
/// allocation for the frame.
pub const DEFAULT_MAX_FRAME_LEN: usize = 1 << 20;

/// Messages larger than this are cut into fragments of this size so they
/// never hold up other traffic on the connection.
pub const FRAGMENT_LEN: usize = 64 * 1024;
