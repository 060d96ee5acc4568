//! CBOR bodies for user payloads and control messages.
//!
//! Everything goes through [`PayloadCodec`] so that a faster encoder that
//! produces the same bytes could replace ciborium on the hot path without
//! touching callers. Untrusted input is decoded with a recursion limit.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::DecodeError;

/// Nesting depth allowed when decoding untrusted CBOR.
pub const RECURSION_LIMIT: usize = 64;

/// A serde format for payloads and control bodies.
pub trait PayloadCodec {
    /// Appends the encoding of `value` to `out`.
    fn encode<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), String>;
    /// Decodes exactly one value that fills `bytes`.
    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError>;
}

/// CBOR through ciborium, the codec reign speaks on the wire.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cbor;

impl PayloadCodec for Cbor {
    fn encode<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), String> {
        ciborium::into_writer(value, out).map_err(|e| e.to_string())
    }

    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
        let mut rest = bytes;
        let value = ciborium::de::from_reader_with_recursion_limit(&mut rest, RECURSION_LIMIT)
            .map_err(|e| DecodeError::Cbor(e.to_string()))?;
        if !rest.is_empty() {
            return Err(DecodeError::TrailingBytes(rest.len()));
        }
        Ok(value)
    }
}

/// Encodes with the wire codec.
pub fn encode<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), String> {
    Cbor::encode(value, out)
}

/// Encodes with the wire codec into a new vector.
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    // Serializing reign's own types into a Vec cannot fail.
    if let Err(e) = Cbor::encode(value, &mut out) {
        tracing::error!(error = %e, "failed to encode an internal value");
    }
    out
}

/// Decodes with the wire codec.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    Cbor::decode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_buffers_are_cbor_byte_strings() {
        let value = serde_bytes::ByteBuf::from(vec![1u8, 2, 3]);
        assert_eq!(to_vec(&value), vec![0x43, 1, 2, 3]);
    }

    #[test]
    fn deep_nesting_is_refused() {
        // 10,000 nested arrays: would overflow the stack without a limit.
        let bytes = vec![0x81u8; 10_000];
        assert!(matches!(
            decode::<ciborium::Value>(&bytes),
            Err(DecodeError::Cbor(_))
        ));
    }

    #[test]
    fn huge_declared_lengths_do_not_allocate() {
        // A byte string claiming 2^62 bytes, followed by nothing.
        let bytes = [0x5b, 0x40, 0, 0, 0, 0, 0, 0, 0];
        assert!(decode::<serde_bytes::ByteBuf>(&bytes).is_err());
        // An array claiming 2^62 elements.
        let bytes = [0x9b, 0x40, 0, 0, 0, 0, 0, 0, 0];
        assert!(decode::<Vec<u64>>(&bytes).is_err());
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        assert_eq!(
            decode::<u8>(&[0x01, 0x02]),
            Err(DecodeError::TrailingBytes(1))
        );
    }
}
