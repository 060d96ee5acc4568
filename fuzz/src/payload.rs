//! `payload`: untrusted CBOR bodies, as a receiving node decodes them.
//!
//! Input: `[type index] body…`. The body is checked as the registered type
//! at that index of [`registered_types`] (or an unregistered tag, for the
//! index past the end), and also as every registered type when it is short,
//! and as a control message body. Checks:
//! - decoding is a typed result and allocates a bounded amount of memory
//!   (a length claimed by the input reserves nothing beyond serde's cap);
//! - [`check_payload`] agrees with decoding the Rust type;
//! - whatever decodes re-encodes to something that decodes to an equal value.

use std::collections::BTreeMap;
use std::fmt::Debug;

use reign_proto::codec::payload;
use reign_proto::control::Control;
use reign_proto::system::{ConnectionStatus, MailboxClosed, MultipleClaim};
use reign_proto::types::{check_payload, registered_types};
use reign_proto::{register_type_named, DecodeError, TypeTag};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::alloc_meter::peak_during;

/// A nested user type, registered by the harness, so the fuzzer reaches
/// maps, options, sequences, enums and nesting through the same path as
/// any application type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Nested {
    /// A string.
    pub name: String,
    /// Nested sequences.
    pub values: Vec<Vec<u64>>,
    /// A map of optional, recursive values.
    pub table: BTreeMap<String, Option<Box<Nested>>>,
    /// An enum.
    pub choice: Choice,
    /// A byte string.
    #[serde(with = "serde_bytes")]
    pub blob: Vec<u8>,
}

/// An enum of every shape, inside [`Nested`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Choice {
    /// A unit variant.
    Unit,
    /// A newtype variant.
    Signed(i64),
    /// A tuple variant.
    Pair(u8, String),
    /// A struct variant.
    Flag {
        /// A bool.
        on: bool,
    },
}

/// The wire name the harness registers [`Nested`] under.
pub const NESTED_NAME: &str = "reign.fuzz.Nested";

pub(crate) fn register_harness_types() {
    register_type_named::<Nested>(NESTED_NAME).expect("register the harness type");
}

/// Memory a body of `len` bytes may make a decoder allocate at once: serde
/// preallocates at most 1 MiB per sequence from a claimed length, and a
/// registered type nests a few sequences.
fn allocation_bound(len: usize) -> usize {
    4 * (1 << 20) + 64 * len
}

/// Decodes `body` as `T` (when `tag` is `T`'s) and checks it agrees with
/// `check_payload` and round-trips.
fn typed<T>(name: &str, tag: TypeTag, body: &[u8], checked: &Result<(), DecodeError>)
where
    T: DeserializeOwned + Serialize + Debug + PartialEq,
{
    if TypeTag::of_name(name) != tag {
        return;
    }
    let decoded = payload::decode::<T>(body);
    assert_eq!(
        decoded.is_ok(),
        checked.is_ok(),
        "check_payload and decoding {name} disagree on {body:?}"
    );
    if let Ok(value) = decoded {
        let again = payload::to_vec(&value);
        let back: T = payload::decode(&again)
            .unwrap_or_else(|e| panic!("{name} {value:?} re-encoded does not decode: {e}"));
        assert_eq!(back, value, "{name} does not round-trip");
    }
}

/// Floats compare by bits (NaN is a fine value on the wire).
fn float<T>(name: &str, tag: TypeTag, body: &[u8], checked: &Result<(), DecodeError>)
where
    T: DeserializeOwned + Serialize + Debug + Copy + Into<f64>,
{
    if TypeTag::of_name(name) != tag {
        return;
    }
    let decoded = payload::decode::<T>(body);
    assert_eq!(decoded.is_ok(), checked.is_ok());
    if let Ok(value) = decoded {
        let back: T = payload::decode(&payload::to_vec(&value)).expect("a float round-trips");
        let (a, b): (f64, f64) = (value.into(), back.into());
        assert!(a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()));
    }
}

fn check_one(tag: TypeTag, body: &[u8]) {
    let (checked, peak) = peak_during(|| check_payload(tag, body));
    assert!(
        peak <= allocation_bound(body.len()),
        "checking {} bytes as {tag:?} allocated {peak} bytes at once",
        body.len()
    );
    if let Err(e) = &checked {
        assert!(!e.to_string().is_empty());
    }
    typed::<()>("unit", tag, body, &checked);
    typed::<bool>("bool", tag, body, &checked);
    typed::<String>("string", tag, body, &checked);
    typed::<u8>("u8", tag, body, &checked);
    typed::<u16>("u16", tag, body, &checked);
    typed::<u32>("u32", tag, body, &checked);
    typed::<u64>("u64", tag, body, &checked);
    typed::<u128>("u128", tag, body, &checked);
    typed::<i8>("i8", tag, body, &checked);
    typed::<i16>("i16", tag, body, &checked);
    typed::<i32>("i32", tag, body, &checked);
    typed::<i64>("i64", tag, body, &checked);
    typed::<i128>("i128", tag, body, &checked);
    float::<f32>("f32", tag, body, &checked);
    float::<f64>("f64", tag, body, &checked);
    typed::<serde_bytes::ByteBuf>("bytes", tag, body, &checked);
    typed::<MailboxClosed>("reign.MailboxClosed", tag, body, &checked);
    typed::<MultipleClaim>("reign.MultipleClaim", tag, body, &checked);
    typed::<ConnectionStatus>("reign.ConnectionStatus", tag, body, &checked);
    typed::<Nested>(NESTED_NAME, tag, body, &checked);
}

/// Fuzzes payload and control-body decoding with `data` (see the module docs).
pub fn payload(data: &[u8]) {
    register_harness_types();
    let [index, body @ ..] = data else {
        return;
    };
    let types = registered_types();
    let tag = match types.get(*index as usize % (types.len() + 1)) {
        Some((tag, _)) => *tag,
        None => {
            let unknown = TypeTag(0x0bad_7a90_0bad_7a90);
            assert!(matches!(
                check_payload(unknown, body),
                Err(DecodeError::UnknownType(_))
            ));
            unknown
        }
    };
    check_one(tag, body);
    if body.len() <= 64 {
        for (tag, _) in &types {
            check_one(*tag, body);
        }
    }

    let (control, peak) = peak_during(|| Control::decode(body));
    assert!(
        peak <= allocation_bound(body.len()),
        "decoding {} bytes of control body allocated {peak} bytes at once",
        body.len()
    );
    if let Ok(control) = control {
        let again = control.encode();
        assert_eq!(
            Control::decode(&again).as_ref(),
            Ok(&control),
            "a control message does not round-trip"
        );
    }
}
